"""The DBA's answer: every metric of docs/metrics.md for every tutor and window as one hand-written
SQL statement that scans each table once inside PostgreSQL, and optionally upserts the rows.

Float arithmetic is done in float8 in the engine's order, and rounded like `engine.round2`
(x·100 to 7 decimals, then half away from zero), so the rows are the engine's rows exactly and
the benchmark compares speed, not definitions. The tier is the docs/metrics.md default rule set.
The window starts are bound as instants (see `bounds`), and JIT is off (see `render`): the two
things a DBA tuning this statement would do first.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa


def _round2(expr: str) -> str:
    return f"(round(round((({expr}) * 100)::numeric, 7), 0) / 100)::float8"


def _ratio(num: str, den: str, scale: str = "100.0::float8") -> str:
    return f"CASE WHEN {den} > 0 THEN {scale} * {num}::float8 / {den}::float8 END"


def _flag(col: str, direction: str, green: float, red: float) -> str:
    if direction == "higher":
        return f"CASE WHEN {col} >= {green} THEN 1 WHEN {col} < {red} THEN -1 ELSE 0 END"
    return f"CASE WHEN {col} <= {green} THEN 1 WHEN {col} > {red} THEN -1 ELSE 0 END"


FLAGS = [
    ("avg_rating", "higher", 4.5, 3.5),
    ("first_session_success_rate", "higher", 85, 70),
    ("reschedule_rate", "lower", 10, 15),
    ("no_show_count", "lower", 0, 3),
    ("engagement_score", "higher", 80, 60),
    ("learning_objectives_met_pct", "higher", 90, 80),
]

_greens = " + ".join(f"({_flag(*f)} = 1)::int" for f in FLAGS)
_reds = " + ".join(f"({_flag(*f)} = -1)::int" for f in FLAGS)

_WINDOWS = (("7day", 7), ("30day", 30), ("90day", 90))

_SESSION_AGGS = (
    ("n", "count(*)", None),
    ("completed", "count(*)", "NOT s.no_show AND s.actual_start IS NOT NULL"),
    ("first_n", "count(*)", "s.session_number = 1"),
    ("resched", "count(*)", "s.tutor_initiated_reschedule"),
    ("noshow", "count(*)", "s.no_show"),
    ("fb_n", "count(f.overall_rating)", None),
    ("fb_sum", "sum(f.overall_rating)", None),
    ("ffb_n", "count(*)", "s.session_number = 1 AND f.overall_rating IS NOT NULL"),
    ("ffb_ok", "count(*)", "s.session_number = 1 AND f.overall_rating >= 4"),
    ("eng_n", "count(s.engagement_score)", None),
    ("eng_sum", "sum(s.engagement_score)", None),
    ("on_time", "count(*)", "s.late_start_minutes <= 10"),
    ("lo_n", "count(s.learning_objectives_met)", None),
    ("lo_true", "count(*)", "s.learning_objectives_met"),
)
_EVENT_AGGS = (
    ("logins", "count(*)", "e.event_type = 'login'"),
    ("resp_n", "count(x.rt)", None),
    ("resp_sum", "sum(x.rt)", None),
)


def _filtered(aggs: tuple[tuple[str, str, str | None], ...], ts: str) -> str:
    """Each aggregate once per window, as FILTER clauses of one GROUP BY tutor_id."""
    out = []
    for _window, days in _WINDOWS:
        since = f"{ts} >= CAST(:t{days} AS timestamptz)"
        for name, agg, cond in aggs:
            where = since if cond is None else f"{since} AND {cond}"
            out.append(f"{agg} FILTER (WHERE {where}) AS {name}_{days}")
    return ",\n    ".join(out)


def _unpivot(aggs: tuple[tuple[str, str, str | None], ...], alias: str) -> str:
    """One row per window from the per-window columns."""
    rows = []
    for window, days in _WINDOWS:
        cols = ", ".join(f"{alias}.{name}_{days}" for name, _, _ in aggs)
        rows.append(f"('{window}', {cols})")
    names = ", ".join(name for name, _, _ in aggs)
    return f'(VALUES {", ".join(rows)}) AS {alias}w("window", {names})'


SELECT_SQL = f"""
WITH sp AS (
  SELECT s.tutor_id,
    {_filtered(_SESSION_AGGS, "s.scheduled_start")}
  FROM sessions s
  LEFT JOIN student_feedback f ON f.session_id = s.session_id
  WHERE s.scheduled_start >= CAST(:t90 AS timestamptz)
    AND s.scheduled_start < CAST(:t AS timestamptz)
  GROUP BY s.tutor_id
),
ev AS (
  SELECT e.tutor_id,
    {_filtered(_EVENT_AGGS, "e.event_timestamp")}
  FROM tutor_events e
  CROSS JOIN LATERAL (SELECT CASE WHEN e.event_type = 'message_response'
      AND jsonb_typeof(e.metadata -> 'response_time_minutes') = 'number'
      THEN (e.metadata ->> 'response_time_minutes')::float8 END AS rt) x
  WHERE e.event_timestamp >= CAST(:t90 AS timestamptz)
    AND e.event_timestamp < CAST(:t AS timestamptz)
    AND e.event_type IN ('login', 'message_response')
  GROUP BY e.tutor_id
),
m AS (
  SELECT sp.tutor_id, spw."window",
    spw.n AS sessions_scheduled, spw.completed AS sessions_completed,
    {_round2(_ratio("spw.fb_sum", "spw.fb_n", "1.0::float8"))} AS avg_rating,
    {_round2(_ratio("spw.ffb_ok", "spw.ffb_n"))} AS first_session_success_rate,
    spw.first_n AS first_sessions_count,
    {_round2(_ratio("spw.resched", "spw.n"))} AS reschedule_rate,
    spw.resched AS reschedule_count, spw.noshow AS no_show_count,
    {_round2(_ratio("spw.noshow", "spw.n"))} AS no_show_rate,
    CASE WHEN spw.n > 0 THEN {
    _round2(
        "0.4::float8 * least(100.0::float8, 100.0::float8 * coalesce(evw.logins, 0)::float8"
        " / spw.n::float8) + 0.4::float8 * coalesce("
        + _ratio("spw.eng_sum", "spw.eng_n")
        + ", 50.0)"
        " + 0.2::float8 * (100.0::float8 * spw.on_time::float8 / spw.n::float8)"
    )
} END AS engagement_score,
    {_round2(_ratio("spw.lo_true", "spw.lo_n"))} AS learning_objectives_met_pct,
    {_round2(_ratio("evw.resp_sum", "evw.resp_n", "1.0::float8"))} AS response_time_avg_minutes
  FROM sp CROSS JOIN LATERAL {_unpivot(_SESSION_AGGS, "sp")}
  LEFT JOIN ev ON ev.tutor_id = sp.tutor_id
  LEFT JOIN LATERAL (SELECT * FROM {_unpivot(_EVENT_AGGS, "ev")}
                     WHERE evw."window" = spw."window") evw ON true
)
SELECT md5(m.tutor_id || chr(31) || m."window" || chr(31)
           || ((CAST(:t AS timestamptz) - interval '1 microsecond') AT TIME ZONE 'UTC')::date)
         AS metric_id,
       m.tutor_id, m."window",
       ((CAST(:t AS timestamptz) - interval '1 microsecond') AT TIME ZONE 'UTC')::date
         AS metric_date,
       CAST(:t AS timestamptz) AS calculation_date,
       m.sessions_scheduled, m.sessions_completed, m.avg_rating, m.first_session_success_rate,
       m.first_sessions_count, m.reschedule_rate, m.reschedule_count, m.no_show_count,
       m.no_show_rate, m.engagement_score, m.learning_objectives_met_pct,
       m.response_time_avg_minutes,
       CASE WHEN g.greens >= 5 AND g.reds = 0 THEN 'Exemplary'
            WHEN g.reds >= 3 THEN 'At Risk'
            WHEN g.reds >= 1 THEN 'Needs Attention'
            WHEN g.greens >= 3 THEN 'Strong'
            ELSE 'Developing' END AS performance_tier
FROM m CROSS JOIN LATERAL (SELECT {_greens} AS greens, {_reds} AS reds) g
"""
"""Every metric row as of `:t`, with the deterministic `metric_id` of `store/save.py`."""

_COLS = (
    'metric_id, tutor_id, "window", metric_date, calculation_date, sessions_scheduled, '
    "sessions_completed, avg_rating, first_session_success_rate, first_sessions_count, "
    "reschedule_rate, reschedule_count, no_show_count, no_show_rate, engagement_score, "
    "learning_objectives_met_pct, response_time_avg_minutes, performance_tier"
)
_UPDATABLE = [c.strip() for c in _COLS.split(",")[4:]]

UPSERT_SQL = (
    f"INSERT INTO tutor_performance_metrics ({_COLS}) {SELECT_SQL} "
    'ON CONFLICT (tutor_id, "window", metric_date) DO UPDATE SET '
    + ", ".join(f"{c} = excluded.{c}" for c in _UPDATABLE)
    + ", updated_at = now()"
)
"""The same statement writing its rows, as a cron job of plain SQL would."""


def bounds(as_of: datetime) -> dict[str, datetime]:
    """`:t` and the window starts `:t7`, `:t30`, `:t90` as instants: computed once, not per row
    (`timestamptz - interval` is only STABLE, so PostgreSQL would evaluate it for every row in
    every FILTER clause, and it would follow the session's time zone across DST)."""
    return {"t": as_of, **{f"t{d}": as_of - timedelta(days=d) for _, d in _WINDOWS}}


def render(as_of: datetime, *, write: bool = True, jit: bool = False) -> str:
    """The statement with its instants as literals, ready for `psql -c` (a DBA's cron job).
    With `jit` false it starts with `SET jit = off`: these wide aggregates cross PostgreSQL's
    JIT cost thresholds and compiling them then costs more than running them."""
    sql = UPSERT_SQL if write else SELECT_SQL
    for name, moment in sorted(bounds(as_of).items(), key=lambda kv: -len(kv[0])):
        sql = sql.replace(f"CAST(:{name} AS timestamptz)", f"timestamptz '{moment.isoformat()}'")
    return sql if jit else "SET jit = off; " + sql


def run(engine: sa.Engine, as_of: datetime, *, write: bool) -> int:
    """Execute the statement; returns the rows it produced."""
    with engine.begin() as conn:
        conn.execute(sa.text("SET LOCAL jit = off"))
        if write:
            return conn.execute(sa.text(UPSERT_SQL), bounds(as_of)).rowcount
        return len(conn.execute(sa.text(SELECT_SQL), bounds(as_of)).all())
