"""Bulk reads of the metric inputs into polars frames, one query per table per batch.

PostgreSQL: `COPY (SELECT …) TO STDOUT` as CSV with timestamps as epoch microseconds, parsed by
polars' CSV reader — the fastest path measured (see `bench/load_paths.py` and the README).
SQLite: one plain query per table, timestamps parsed in polars from whatever ISO-8601 text the
writer used (with or without `T`, fraction or offset).
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import polars as pl
import sqlalchemy as sa

from tutormax_cli.metrics import frames, partials
from tutormax_cli.metrics.partials import RELEVANT_EVENTS_SQL, event_rows_sql, response_time_sql
from tutormax_cli.metrics.windows import WINDOWS, as_utc
from tutormax_cli.store.db import is_postgres


@dataclass(frozen=True)
class MetricInputs:
    """The engine's three inputs for one slice of time and tutors."""

    sessions: pl.DataFrame
    feedback: pl.DataFrame
    events: pl.DataFrame

    @property
    def rows(self) -> int:
        """Rows read in all, for progress and summaries."""
        return self.sessions.height + self.feedback.height + self.events.height


def parse_utc(expr: pl.Expr) -> pl.Expr:
    """ISO-8601 text (space or `T`, optional fraction, optional `Z`/offset) -> UTC datetime.

    Text without an offset is UTC, as SQLAlchemy writes it on SQLite.
    """
    text = (
        expr.str.strip_chars().str.replace("T", " ", literal=True).str.replace(r"[zZ]$", "+00:00")
    )
    aware = text.str.strptime(frames.TS, "%Y-%m-%d %H:%M:%S%.f%#z", strict=False)
    naive = text.str.strptime(pl.Datetime("us"), "%Y-%m-%d %H:%M:%S%.f", strict=False)
    date_only = text.str.strptime(pl.Datetime("us"), "%Y-%m-%d", strict=False)
    return pl.coalesce(
        aware, naive.dt.replace_time_zone("UTC"), date_only.dt.replace_time_zone("UTC")
    )


# -- SQL, written once with dialect-specific fragments ------------------------------------------

_SESSION_COLS = (
    "s.session_id",
    "s.tutor_id",
    "s.session_number",
    "{ts:s.scheduled_start} AS scheduled_start",
    "{ts:s.actual_start} AS actual_start",
    "{b:s.tutor_initiated_reschedule} AS tutor_initiated_reschedule",
    "{b:s.no_show} AS no_show",
    "s.late_start_minutes",
    "s.engagement_score",
    "{b:s.learning_objectives_met} AS learning_objectives_met",
)


def _render(template: str, pg: bool) -> str:
    """Expand `{ts:col}` and `{b:col}` into the dialect's timestamp/boolean extraction."""
    out = []
    for part in template.split("{"):
        if "}" not in part:
            out.append(part)
            continue
        spec, rest = part.split("}", 1)
        kind, col = spec.split(":", 1)
        if kind == "ts":
            out.append(f"(extract(epoch from {col}) * 1000000)::int8" if pg else col)
        else:
            out.append(f"{col}::int" if pg else col)
        out.append(rest)
    return "".join(out)


def _any_tutor(column: str, pg: bool = True) -> str:
    """` AND column is one of :tutors` (a list on PostgreSQL, a JSON array on SQLite, so any
    number of tutors binds as one parameter)."""
    if pg:
        return f" AND {column} = ANY(:tutors)"
    return f" AND {column} IN (SELECT value FROM json_each(:tutors))"


def _queries(pg: bool, has_tutors: bool) -> dict[str, str]:
    where = "s.scheduled_start >= :start AND s.scheduled_start < :end"
    if has_tutors:
        where += _any_tutor("s.tutor_id", pg)
    sessions = f"SELECT {', '.join(_SESSION_COLS)} FROM sessions s WHERE {where}"
    feedback = (
        "SELECT f.session_id, f.overall_rating FROM student_feedback f "
        f"JOIN sessions s ON s.session_id = f.session_id WHERE {where}"
    )
    ev_where = (
        "e.event_timestamp >= :start AND e.event_timestamp < :end "
        f"AND e.event_type IN {RELEVANT_EVENTS_SQL}"
    )
    if has_tutors:
        ev_where += _any_tutor("e.tutor_id", pg)
    events = (
        f"SELECT e.tutor_id, e.event_type, {{ts:e.event_timestamp}} AS event_timestamp, "
        f"{response_time_sql(pg)} AS response_time_minutes FROM tutor_events e WHERE {ev_where}"
    )
    return {
        "sessions": _render(sessions, pg),
        "feedback": feedback,
        "events": _render(events, pg),
    }


_SCHEMAS = {"sessions": frames.SESSIONS, "feedback": frames.FEEDBACK, "events": frames.EVENTS}
_TS_COLS = {
    "sessions": ("scheduled_start", "actual_start"),
    "feedback": (),
    "events": ("event_timestamp",),
}


def _pg_copy(conn: sa.Connection, sql: str, params: dict[str, Any], name: str) -> pl.DataFrame:
    """Raw rows through `_copy_frame`: timestamps arrive as epoch microseconds, booleans as
    0/1, and are cast to the engine's types here."""
    schema = _SCHEMAS[name]
    raw_schema: dict[str, pl.DataType] = {
        col: (pl.Int64() if col in _TS_COLS[name] else pl.Int8() if dtype == pl.Boolean else dtype)
        for col, dtype in schema.items()
    }
    df = _copy_frame(conn, sql, params, raw_schema)
    return df.with_columns(
        [pl.col(c).cast(frames.TS) for c in _TS_COLS[name]]
        + [pl.col(c).cast(pl.Boolean) for c, t in schema.items() if t == pl.Boolean]
    )


def _sqlite_query(conn: sa.Connection, sql: str, params: dict[str, Any], name: str) -> pl.DataFrame:
    result = conn.execute(sa.text(sql), params)
    schema = _SCHEMAS[name]
    raw_schema = {
        col: (pl.String if col in _TS_COLS[name] else dtype) for col, dtype in schema.items()
    }
    df = pl.DataFrame(result.fetchall(), schema=raw_schema, orient="row")
    return df.with_columns([parse_utc(pl.col(c)).alias(c) for c in _TS_COLS[name]])


def _sqlite_bound(moment: datetime, days: int) -> str:
    """A loose text bound, the date `days` from `moment`: SQLite holds ISO-8601 text in any
    offset and with `T` or a space, so SQL narrows by day and polars applies the exact bound
    after parsing. Text in an offset sorts up to 14 hours away from its UTC instant and the date
    drops up to a day, so an upper bound needs 2 days (+14:00 text of 18:00Z is the next day's
    08:00, past a bound of 1 day) and a lower one 1.
    """
    return (as_utc(moment) + timedelta(days=days)).strftime("%Y-%m-%d")


def load_metric_inputs(
    conn: sa.Connection,
    start: datetime,
    end: datetime,
    tutors: Sequence[str] | None = None,
) -> MetricInputs:
    """Sessions with `start ≤ scheduled_start < end` (optionally of `tutors` only), the feedback
    of those sessions, and the login/message_response events in the same interval."""
    pg = is_postgres(conn)
    queries = _queries(pg, tutors is not None)
    if pg:
        params: dict[str, Any] = {"start": as_utc(start), "end": as_utc(end)}
        if tutors is not None:
            params["tutors"] = list(tutors)
        read = _pg_copy
    else:
        params = {"start": _sqlite_bound(start, -1), "end": _sqlite_bound(end, 2)}
        if tutors is not None:
            params["tutors"] = json.dumps(list(tutors))
        read = _sqlite_query
    loaded = {name: read(conn, sql, params, name) for name, sql in queries.items()}
    if not pg:
        lo, hi = as_utc(start), as_utc(end)
        loaded["sessions"] = loaded["sessions"].filter(
            pl.col("scheduled_start").is_between(lo, hi, closed="left")
        )
        loaded["events"] = loaded["events"].filter(
            pl.col("event_timestamp").is_between(lo, hi, closed="left")
        )
    return MetricInputs(**loaded)


# -- tutor sets -----------------------------------------------------------------------------------


def load_tutor_ids(conn: sa.Connection, start: datetime, end: datetime) -> list[str]:
    """The tutors with a session in `start ≤ scheduled_start < end`, sorted: the tutor set a
    recompute splits into chunks. On SQLite the bounds are a day loose (a superset: a tutor
    with no session in the exact range simply gets no rows)."""
    pg = is_postgres(conn)
    sql = (
        "SELECT DISTINCT s.tutor_id FROM sessions s "
        "WHERE s.scheduled_start >= :start AND s.scheduled_start < :end"
    )
    if pg:
        params: dict[str, Any] = {"start": as_utc(start), "end": as_utc(end)}
    else:
        params = {"start": _sqlite_bound(start, -1), "end": _sqlite_bound(end, 2)}
    return sorted(str(row[0]) for row in conn.execute(sa.text(sql), params))


def load_changed_tutor_ids(conn: sa.Connection, since: datetime) -> list[str]:
    """The tutors whose sessions, feedback or events were created or updated at or after
    `since`, sorted. Feedback counts for the tutor of its session (docs/metrics.md §1).

    `created_at`/`updated_at` are the database's own clock (server defaults), so `since`
    should be a mark read from the same clock. On SQLite, where the stamps are text in any
    ISO-8601 form, SQL narrows by day and polars applies the exact bound.
    """
    pg = is_postgres(conn)
    sources = (
        "SELECT s.tutor_id, s.created_at AS c, s.updated_at AS u FROM sessions s "
        "WHERE s.created_at >= :since OR s.updated_at >= :since",
        "SELECT s.tutor_id, f.created_at AS c, NULL AS u FROM student_feedback f "
        "JOIN sessions s ON s.session_id = f.session_id WHERE f.created_at >= :since",
        "SELECT e.tutor_id, e.created_at AS c, NULL AS u FROM tutor_events e "
        "WHERE e.created_at >= :since",
    )
    if pg:
        ids = " UNION ".join(f"SELECT tutor_id FROM ({q}) x" for q in sources)
        return sorted(str(r[0]) for r in conn.execute(sa.text(ids), {"since": as_utc(since)}))
    rows = conn.execute(
        sa.text(" UNION ALL ".join(sources)), {"since": _sqlite_bound(since, -1)}
    ).fetchall()
    df = pl.DataFrame(
        [tuple(r) for r in rows],
        schema={"tutor_id": pl.String, "c": pl.String, "u": pl.String},
        orient="row",
    )
    bound = as_utc(since)
    late = (parse_utc(pl.col("c")) >= bound) | (parse_utc(pl.col("u")) >= bound)
    return sorted(df.filter(late.fill_null(False))["tutor_id"].unique().to_list())


# -- partials aggregated in PostgreSQL ------------------------------------------------------------
#
# The engine reduces every metric to additive partials (`metrics/partials.py`). On PostgreSQL the
# database computes them where the rows live and ships one row per tutor (as-of) or per tutor and
# day (backfill) instead of every session and event: the transfer and parsing of ~1.5M raw rows
# was most of a recompute's time. Every aggregate below is generated from the declaration of its
# partial (`partials.sql_aggregate`), next to its polars twin; the spec tests run over both.


@dataclass(frozen=True)
class Partials:
    """Partials aggregated by the database, and how many rows were fetched to get them."""

    frame: pl.DataFrame
    rows_read: int


def partial_sources(has_tutors: bool) -> tuple[str, str]:
    """FROM … WHERE clauses of the session (+ rating) and event aggregates over [start, end)."""
    tutors_s = _any_tutor("s.tutor_id") if has_tutors else ""
    tutors_e = _any_tutor("e.tutor_id") if has_tutors else ""
    sessions = (
        "FROM sessions s LEFT JOIN student_feedback f ON f.session_id = s.session_id "
        f"WHERE s.scheduled_start >= :start AND s.scheduled_start < :end{tutors_s}"
    )
    window = " AND e.event_timestamp >= :start AND e.event_timestamp < :end"
    events = f"FROM {event_rows_sql(window + tutors_e)}"
    return sessions, events


def _copy_frame(
    conn: sa.Connection,
    sql: str,
    params: dict[str, Any],
    schema: dict[str, pl.DataType],
    settings: str = "",
) -> pl.DataFrame:
    """Run `sql` through COPY … TO STDOUT (CSV) and read it with polars as `schema` (the
    result's columns, in order): the fastest way psycopg2 has to hand rows to polars."""
    raw: Any = conn.connection.dbapi_connection
    assert raw is not None
    with raw.cursor() as cursor:
        # For this transaction only: floats that round-trip exactly; no JIT (these wide FILTER
        # aggregates cross PostgreSQL's JIT cost thresholds on large tables, and compiling
        # them then takes longer than running them: seconds to tens of seconds); and enough
        # work_mem for the per-day group-by to sort in memory instead of spilling to disk.
        cursor.execute(
            "SET LOCAL extra_float_digits = 3; SET LOCAL jit = off; "
            f"SET LOCAL work_mem = '64MB'; {settings}"
        )
        bound = cursor.mogrify(sa.text(sql).compile(dialect=conn.dialect).string, params)
        buffer = io.BytesIO()
        cursor.copy_expert(
            f"COPY ({bound.decode()}) TO STDOUT WITH (FORMAT csv, HEADER true)", buffer
        )
    buffer.seek(0)
    return pl.read_csv(buffer, schema=schema)


def long_partials(
    wide: pl.DataFrame, column: str, keys: Sequence[str], names: Sequence[str]
) -> pl.DataFrame:
    """`tutor_id`, `column`, `names` from a frame with one `name@key` column per range: the
    FILTER-per-range aggregates of one statement, one row per (tutor, range)."""
    return pl.concat(
        [
            wide.select(
                "tutor_id", pl.lit(k).alias(column), *[pl.col(f"{n}@{k}").alias(n) for n in names]
            )
            for k in keys
        ]
    )


def load_window_partials(
    conn: sa.Connection, as_of: datetime, tutors: Sequence[str] | None = None
) -> Partials:
    """PostgreSQL only. Per (tutor, window) partials as of `as_of`, for every tutor with a
    session in the longest window (optionally only `tutors`): one statement, one scan per
    table, the windows as FILTER clauses."""
    t = as_utc(as_of)
    sessions, events = partial_sources(tutors is not None)
    session_aggs, event_aggs = [], []
    schema: dict[str, pl.DataType] = {"tutor_id": pl.String()}
    event_schema: dict[str, pl.DataType] = {}
    params: dict[str, Any] = {"start": t - timedelta(days=max(WINDOWS.values())), "end": t}
    for window, days in WINDOWS.items():
        params[f"w{days}"] = t - timedelta(days=days)
        for p in partials.SESSION_PARTIALS:
            expr = partials.sql_aggregate(p, f"s.scheduled_start >= :w{days}")
            session_aggs.append(f'{expr} AS "{p.name}@{window}"')
            schema[f"{p.name}@{window}"] = p.dtype
        for p in partials.EVENT_PARTIALS:
            expr = partials.sql_aggregate(p, f"e.event_timestamp >= :w{days}")
            event_aggs.append(f'{expr} AS "{p.name}@{window}"')
            event_schema[f"{p.name}@{window}"] = p.dtype
    if tutors is not None:
        params["tutors"] = list(tutors)
    sql = (
        f"WITH sp AS (SELECT s.tutor_id, {', '.join(session_aggs)} {sessions} "
        "GROUP BY s.tutor_id), "
        f"ep AS (SELECT e.tutor_id, {', '.join(event_aggs)} {events} GROUP BY e.tutor_id) "
        "SELECT * FROM sp LEFT JOIN ep USING (tutor_id)"
    )
    wide = _copy_frame(conn, sql, params, {**schema, **event_schema}).fill_null(0)  # no events
    return Partials(long_partials(wide, "window", list(WINDOWS), partials.NAMES), wide.height)


def utc_midnight(day: date) -> datetime:
    """The first instant of a UTC day."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


DAY_NUMBER_SQL = "(({ts} AT TIME ZONE 'UTC')::date - DATE '1970-01-01')"
"""A timestamp's UTC day as days since 1970-01-01 (immune to DateStyle; polars casts it)."""


def load_daily_partials(
    conn: sa.Connection,
    first_day: date,
    last_day: date,
    tutors: Sequence[str] | None = None,
) -> Partials:
    """PostgreSQL only. Per (tutor, UTC day) partials of the days `first_day` … `last_day`
    (inclusive): the input of `metrics.rolling.roll`, aggregated where the rows live.

    Sessions and events are two statements joined in polars: a FULL JOIN of ~400k groups each
    costs PostgreSQL a second on one core, polars a few milliseconds.
    """
    sessions, events = partial_sources(tutors is not None)
    params: dict[str, Any] = {
        "start": utc_midnight(first_day),
        "end": utc_midnight(last_day) + timedelta(days=1),
    }
    if tutors is not None:
        params["tutors"] = list(tutors)
    parts = []
    for specs, alias, ts, source in (
        (partials.SESSION_PARTIALS, "s", "scheduled_start", sessions),
        (partials.EVENT_PARTIALS, "e", "event_timestamp", events),
    ):
        aggs = ", ".join(f'{partials.sql_aggregate(p)} AS "{p.name}"' for p in specs)
        day = DAY_NUMBER_SQL.format(ts=f"{alias}.{ts}")
        sql = f"SELECT {alias}.tutor_id, {day} AS day, {aggs} {source} GROUP BY 1, 2"
        schema: dict[str, pl.DataType] = {
            "tutor_id": pl.String(),
            "day": pl.Int32(),
            **{p.name: p.dtype for p in specs},
        }
        # PostgreSQL cannot estimate the number of (tutor, day) groups and, overestimating
        # it, sorts ~1M rows where a hash aggregate is a third faster: steer it to hashing.
        parts.append(_copy_frame(conn, sql, params, schema, "SET LOCAL enable_sort = off"))
    session_days, event_days = parts
    daily = session_days.join(event_days, on=["tutor_id", "day"], how="full", coalesce=True)
    daily = daily.select("tutor_id", pl.col("day").cast(pl.Date), *partials.zero_filled())
    return Partials(daily, session_days.height + event_days.height)
