"""Reads of computed metrics for the views: latest rows, leaderboards, daily history.

Each is SQL text run by `store.reader.rows`, on a SQLAlchemy connection or, for the
operator's quick views on PostgreSQL, on a `store.reader.PgReader` (no SQLAlchemy import);
rows come back as polars frames (or dicts) with UTC timestamps whatever the backend stored.
Each read touches the rows it returns, through an index the contract declares
(`contract.METRICS_TABLE`, migration 0004):

- a tutor's rows: the unique key (tutor_id, window, metric_date);
- the leaderboard: the ranking index (window, performance_tier, avg_rating,
  sessions_completed, tutor_id), walked backwards one tier at a time (best tier first) and
  stopped at `limit`; each row is kept if its tutor has no newer row (a probe of the unique
  key). Plain columns, not an index on the tier-rank expression, so both backends build it
  from the contract and the migration equivalence tests compare it;
- tier counts and freshness: `DISTINCT ON` over the covering index (window, tutor_id,
  metric_date, performance_tier, calculation_date), read backwards as an index-only scan (no
  sort, no table pages), aggregated in the database so only a few numbers come back;
- the newest metric date of a window: the end of the index (window, metric_date).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from tutormax_cli.metrics.columns import METRIC_COLUMNS
from tutormax_cli.metrics.tiers import TIER_NAMES
from tutormax_cli.metrics.windows import WINDOWS
from tutormax_cli.store.reader import rows as run
from tutormax_cli.store.reader import scalar

if TYPE_CHECKING:  # frames are built on demand: the CLI's few-row reads skip polars
    import polars as pl

    from tutormax_cli.store.reader import Conn

_KINDS = {**METRIC_COLUMNS, "updated_at": "ts"}
"""The columns of a metric row as read here, in order, by kind (`metrics.columns`)."""

_CALCULATED = list(_KINDS).index("calculation_date")
_FLOATS = tuple(i for i, kind in enumerate(_KINDS.values()) if kind == "float")
_STAMPS = tuple(i for i, kind in enumerate(_KINDS.values()) if kind == "ts")

UTC_ZONE = ZoneInfo("UTC")
"""The time zone of the timestamps polars gives back from a UTC column, so that records built
here without polars carry the same `tzinfo` as `_frame(...).to_dicts()`."""


@cache
def _schemas() -> tuple[pl.Schema, pl.Schema]:
    """The polars schema of metric rows, and that of the same rows as SQLite's text."""
    import polars as pl

    from tutormax_cli.metrics import frames

    schema = pl.Schema({**frames.METRICS, "updated_at": frames.TS})
    text = pl.Schema(
        {n: (pl.String() if t in (frames.TS, pl.Date) else t) for n, t in schema.items()}
    )
    return schema, text


def _native(rows: Sequence[Any]) -> bool:
    """Whether the driver gave dates and datetimes (PostgreSQL), not ISO text (SQLite)."""
    return not rows or not isinstance(rows[0][_CALCULATED], str)


def _frame(rows: Sequence[Any]) -> pl.DataFrame:
    """Metric rows as a frame of `_schemas()`'s first. PostgreSQL's driver gives aware datetimes and
    dates, which polars takes as they are (converted to UTC); SQLite gives ISO text in any
    form, parsed here. Building a three-row frame from values costs ~30 µs, parsing its
    text columns ~1.5 ms: most of a metric read's CPU before this distinction."""
    import polars as pl

    from tutormax_cli.metrics import frames
    from tutormax_cli.store.load import parse_utc

    schema, text = _schemas()
    data = [tuple(r) for r in rows]
    if _native(data):
        return pl.DataFrame(data, schema=schema, orient="row")
    df = pl.DataFrame(data, schema=text, orient="row")
    return df.with_columns(
        *[parse_utc(pl.col(c)).alias(c) for c, t in schema.items() if t == frames.TS],
        pl.col("metric_date").str.slice(0, 10).str.to_date("%Y-%m-%d"),
    )


def _records(rows: Sequence[Any]) -> list[dict[str, Any]]:
    """Metric rows as `_frame(rows).to_dicts()` gives them, without polars when the driver gave
    dates and datetimes (PostgreSQL: timestamps to UTC, floats as floats); SQLite's text goes
    through `_frame`, whose parsing is the one definition of it. A handful of rows costs
    microseconds either way; not importing polars saves a CLI process ~0.15 s."""
    if not _native(rows):
        return _frame(rows).to_dicts()
    out = []
    for r in rows:
        values = list(r)
        for i in _FLOATS:
            if values[i] is not None:
                values[i] = float(values[i])
        for i in _STAMPS:
            if values[i] is not None:
                values[i] = values[i].astimezone(UTC_ZONE)
        out.append(dict(zip(_KINDS, values, strict=True)))
    return out


_COLUMNS = ", ".join(f'"{name}"' for name in _KINDS)
"""The select list of metric rows, in `_KINDS`' order: the columns as stored, on both
backends (`_frame` and `_records` read either's values)."""

_M_COLUMNS = ", ".join(f'm."{name}"' for name in _KINDS)
"""`_COLUMNS` of alias `m`."""


METRICS_TABLE = "tutor_performance_metrics"


WITHIN_TIER_ORDER = ("m.avg_rating DESC NULLS LAST", "m.sessions_completed DESC", "m.tutor_id")
"""`views.leaderboard`'s default order within one tier (higher rating, more sessions, id), in
SQL; tiers themselves go best first (`TIER_NAMES`), names this code does not know last."""


def _newest(alias: str, day: str = "") -> str:
    """`alias`'s row is its tutor's newest of its window (up to a day filter `day` on `n`)."""
    return (
        f"NOT EXISTS (SELECT 1 FROM {METRICS_TABLE} n WHERE n.tutor_id = {alias}.tutor_id "
        f'AND n."window" = {alias}."window" AND n.metric_date > {alias}.metric_date{day})'
    )


def _tutors_latest(conn: Conn, tutor_ids: Sequence[str]) -> Sequence[Any]:
    """The rows of each tutor's newest metric date, for any number of tutors in one statement,
    each tutor one backward probe of the (tutor_id, metric_date) index and then its rows.
    PostgreSQL gets the probes as LATERAL joins over the ids: a join of the ids' maxima back to
    the table made its planner switch to a scan of the whole table from about 16 ids (it
    over-estimates the groups), and `OFFSET 0` keeps it from flattening the rows' LATERAL
    into such a join too. SQLite runs the same correlated maximum per row of the ids."""
    if conn.dialect.name == "postgresql":
        sql = (
            f"SELECT {_M_COLUMNS} FROM unnest(CAST(:ids AS varchar[])) AS t(tutor_id) "
            "CROSS JOIN LATERAL (SELECT max(metric_date) AS newest FROM tutor_performance_metrics "
            "WHERE tutor_id = t.tutor_id) l JOIN LATERAL (SELECT * FROM "
            "tutor_performance_metrics n WHERE n.tutor_id = t.tutor_id AND n.metric_date = "
            "l.newest OFFSET 0) m ON true"
        )
        return run(conn, sql, {"ids": list(dict.fromkeys(tutor_ids))})
    sql = (
        f"SELECT {_M_COLUMNS} FROM tutor_performance_metrics m WHERE m.tutor_id IN :ids AND "
        "m.metric_date = (SELECT max(n.metric_date) FROM tutor_performance_metrics n "
        "WHERE n.tutor_id = m.tutor_id)"
    )
    return run(conn, sql, {"ids": list(tutor_ids)}, expanding=("ids",))


def _tutor_latest(conn: Conn, tutor_id: str) -> Sequence[Any]:
    return _tutors_latest(conn, [tutor_id])


def latest_for_tutor(conn: Conn, tutor_id: str) -> pl.DataFrame:
    """The newest row of each window for one tutor (empty when the tutor has none)."""
    return _frame(_tutor_latest(conn, tutor_id))


def latest_for_tutor_dicts(conn: Conn, tutor_id: str) -> list[dict[str, Any]]:
    """`latest_for_tutor(...).to_dicts()`, without polars on PostgreSQL."""
    return _records(_tutor_latest(conn, tutor_id))


def latest_for_tutors_dicts(
    conn: Conn, tutor_ids: Sequence[str]
) -> dict[str, list[dict[str, Any]]]:
    """`latest_for_tutor_dicts` of several tutors in one read, by tutor; a tutor without
    metric rows is absent."""
    out: dict[str, list[dict[str, Any]]] = {}
    if tutor_ids:
        for record in _records(_tutors_latest(conn, tutor_ids)):
            out.setdefault(record["tutor_id"], []).append(record)
    return out


def known_tutors(conn: Conn, tutor_ids: Sequence[str]) -> set[str]:
    """Which of `tutor_ids` are in `tutors`."""
    if not tutor_ids:
        return set()
    sql = "SELECT tutor_id FROM tutors WHERE tutor_id IN :ids"
    return {str(r[0]) for r in run(conn, sql, {"ids": list(tutor_ids)}, expanding=("ids",))}


def latest_rows(conn: Conn, window: str | None = None) -> pl.DataFrame:
    """Every tutor's newest row per window (each tutor's latest `metric_date`)."""
    where = ' WHERE m."window" = :w' if window else ""
    sql = (
        f"SELECT {_COLUMNS} FROM tutor_performance_metrics m JOIN ("
        "SELECT tutor_id AS lt, max(metric_date) AS ld FROM tutor_performance_metrics "
        "GROUP BY tutor_id) l ON m.tutor_id = l.lt AND m.metric_date = l.ld" + where
    )
    params = {"w": window} if window else {}
    return _frame(run(conn, sql, params))


def _tutor_history(conn: Conn, tutor_id: str, days: int) -> Sequence[Any]:
    sql = (
        f"SELECT {_COLUMNS} FROM tutor_performance_metrics WHERE tutor_id = :t "
        "ORDER BY metric_date DESC"
    )
    return run(conn, sql + " LIMIT :n", {"t": tutor_id, "n": days * 3})


def history_for_tutor(conn: Conn, tutor_id: str, days: int = 30) -> pl.DataFrame:
    """One tutor's daily rows of the last `days` metric dates, oldest first."""
    return _frame(_tutor_history(conn, tutor_id, days)).sort("metric_date")


def history_for_tutor_dicts(conn: Conn, tutor_id: str, days: int = 30) -> list[dict[str, Any]]:
    """`history_for_tutor`'s rows as dicts, oldest first, without polars on PostgreSQL."""
    rows = _records(_tutor_history(conn, tutor_id, days))
    return sorted(rows, key=lambda r: r["metric_date"])


def _day_filter(conn: Conn) -> str:
    """`metric_date <= :day` on either backend; SQLite compares the text's date part."""
    if conn.dialect.name == "postgresql":
        return "metric_date <= CAST(:day AS date)"
    return "substr(metric_date, 1, 10) <= :day"


def _latest_sql(conn: Conn, select: str, on_or_before: date | None) -> tuple[str, dict[str, Any]]:
    """The FROM part of "each tutor's newest row of window :w" (alias `m`), and its params:
    PostgreSQL's `DISTINCT ON` (one backward pass over the covering index on window, tutor,
    date: no sort), SQLite's anti-join on the unique key."""
    params: dict[str, Any] = {}
    day = ""
    if on_or_before is not None:
        day = " AND " + _day_filter(conn)
        params["day"] = on_or_before.isoformat()
    if conn.dialect.name == "postgresql":
        inner = (
            f'SELECT DISTINCT ON (tutor_id) {select} FROM {METRICS_TABLE} m WHERE "window" = :w'
            f"{day.replace('metric_date', 'm.metric_date')} "
            "ORDER BY tutor_id DESC, metric_date DESC"
        )
    else:
        inner = (
            f'SELECT {select} FROM {METRICS_TABLE} m WHERE m."window" = :w'
            f"{day.replace('metric_date', 'm.metric_date')} AND "
            f"{_newest('m', day.replace('metric_date', 'n.metric_date'))}"
        )
    return inner, params


def latest_in_window(conn: Conn, window: str, on_or_before: date | None = None) -> pl.DataFrame:
    """Each tutor's newest row of one window, or the newest with `metric_date ≤ on_or_before`:
    the leaderboard today, and the tier distribution as it stood on a past day."""
    sql, params = _latest_sql(conn, _COLUMNS, on_or_before)
    return _frame(run(conn, sql, {"w": window, **params}))


def _board_branch(where: str, order: str) -> str:
    """Newest rows of window :w matching `where`, in `order`, at most :n."""
    return (
        f'SELECT {_COLUMNS} FROM {METRICS_TABLE} m WHERE m."window" = :w AND {where} AND '
        f"{_newest('m')} ORDER BY {order} LIMIT :n"
    )


def leaderboard(
    conn: Conn, window: str, *, tiers: Sequence[str] | None = None, limit: int
) -> pl.DataFrame:
    """`leaderboard_dicts` as a frame."""
    return _frame(_board(conn, window, tiers=tiers, limit=limit))


def leaderboard_dicts(
    conn: Conn, window: str, *, tiers: Sequence[str] | None = None, limit: int
) -> list[dict[str, Any]]:
    """The first `limit` tutors of `views.leaderboard`'s default order among the newest rows of
    one window (only `tiers`, when given), in that order.

    One tier at a time, best first, rated rows then unrated ones: each read walks the ranking
    index backwards from the tier's highest rating and keeps a row if its tutor has no newer
    one, until the rows still wanted are kept. With a full best tier that is one read, and its
    cost follows `limit` (and how many older rows rank above the newest), not the number of
    tutors. Tier names this code does not know rank last, in one read of their own."""
    return _records(_board(conn, window, tiers=tiers, limit=limit))


def _board(conn: Conn, window: str, *, tiers: Sequence[str] | None, limit: int) -> list[Any]:
    wanted = list(dict.fromkeys(tiers)) if tiers else None
    known = [t for t in TIER_NAMES if wanted is None or t in wanted]
    rows: list[Any] = []
    by_rating = ", ".join(o.replace(" NULLS LAST", "") for o in WITHIN_TIER_ORDER)
    rated = _board_branch("m.performance_tier = :t AND m.avg_rating IS NOT NULL", by_rating)
    unrated = _board_branch(
        "m.performance_tier = :t AND m.avg_rating IS NULL",
        ", ".join(WITHIN_TIER_ORDER[1:]),
    )  # fmt: skip
    for tier in known:
        for sql in (rated, unrated):
            if len(rows) < limit:
                params = {"w": window, "t": tier, "n": limit - len(rows)}
                rows.extend(run(conn, sql, params))
    others = [t for t in wanted if t not in TIER_NAMES] if wanted is not None else None
    if len(rows) < limit and others != []:
        where = f"m.performance_tier {'NOT IN' if others is None else 'IN'} :names"
        last = _board_branch(where, ", ".join(WITHIN_TIER_ORDER))
        names = list(TIER_NAMES) if others is None else others
        params = {"w": window, "n": limit - len(rows), "names": names}
        rows.extend(run(conn, last, params, expanding=("names",)))
    return rows


def tier_counts(conn: Conn, window: str, on_or_before: date | None = None) -> dict[str, int]:
    """Tutors per tier among the newest rows of one window (as of `on_or_before`), counted in
    the database: nothing but five numbers comes back."""
    inner, params = _latest_sql(conn, "m.performance_tier", on_or_before)
    sql = f"SELECT performance_tier, count(*) FROM ({inner}) l GROUP BY performance_tier"
    return {str(tier): int(n) for tier, n in run(conn, sql, {"w": window, **params})}


def newest_metric_date(conn: Conn, window: str) -> date | None:
    """The newest `metric_date` of any tutor in one window (None when there are no rows)."""
    sql = 'SELECT max(metric_date) FROM tutor_performance_metrics WHERE "window" = :w'
    value = scalar(conn, sql, {"w": window})
    if value is None:
        return None
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


def active_freshness(conn: Conn) -> pl.DataFrame:
    """Per window, over each active tutor's newest row: `tutors` (how many), and the `newest`
    and `oldest` `calculation_date` among them; aggregated in the database (one row a window,
    whatever the number of tutors)."""
    import polars as pl

    from tutormax_cli.store.load import parse_utc

    raw = pl.DataFrame(
        _freshness(conn),
        schema={"window": pl.String, "tutors": pl.Int64, "newest": pl.String, "oldest": pl.String},
        orient="row",
    )
    return raw.with_columns(parse_utc(pl.col("newest")), parse_utc(pl.col("oldest")))


def active_freshness_dicts(conn: Conn) -> list[dict[str, Any]]:
    """`active_freshness(...).to_dicts()`, without polars on PostgreSQL (whose text is
    `to_char`'s fixed form; SQLite's goes through `active_freshness`)."""
    if conn.dialect.name != "postgresql":
        return active_freshness(conn).to_dicts()

    def utc(text: str | None) -> datetime | None:
        return None if text is None else datetime.fromisoformat(text).replace(tzinfo=UTC_ZONE)

    return [
        {"window": w, "tutors": int(n), "newest": utc(newest), "oldest": utc(oldest)}
        for w, n, newest, oldest in _freshness(conn)
    ]


def _freshness(conn: Conn) -> list[tuple[Any, ...]]:
    pg = conn.dialect.name == "postgresql"
    if pg:
        # one window a branch: PostgreSQL runs the branches as a parallel append (two workers
        # and the leader), where one `DISTINCT ON ("window", tutor_id)` walked the covering
        # index alone: 150 against 215 ms at 50,000 tutors and 1,050,000 rows
        latest = " UNION ALL ".join(
            f'(SELECT DISTINCT ON (tutor_id) "window", tutor_id, calculation_date '
            f"FROM {METRICS_TABLE} m WHERE \"window\" = '{window}' "
            "ORDER BY tutor_id DESC, metric_date DESC)"
            for window in WINDOWS
        )
    else:
        latest = (
            f'SELECT "window", tutor_id, calculation_date FROM {METRICS_TABLE} m '
            f"WHERE {_newest('m')}"
        )

    def utc(expr: str) -> str:
        return f"to_char({expr} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')" if pg else expr

    sql = (
        f'SELECT l."window", count(*), {utc("max(l.calculation_date)")}, '
        f"{utc('min(l.calculation_date)')} FROM ({latest}) l JOIN tutors t ON "
        "t.tutor_id = l.tutor_id WHERE t.status = 'active' GROUP BY l.\"window\""
    )
    return [tuple(r) for r in run(conn, sql)]


@cache
def session_detail() -> pl.Schema:
    """A tutor's sessions with their rating, as `show tutor --explain` lists them."""
    import polars as pl

    from tutormax_cli.metrics import frames

    return pl.Schema(
        {
            "session_id": pl.String(),
            "student_id": pl.String(),
            "subject": pl.String(),
            "session_number": pl.Int64(),
            "scheduled_start": frames.TS,
            "no_show": pl.Boolean(),
            "tutor_initiated_reschedule": pl.Boolean(),
            "late_start_minutes": pl.Int64(),
            "engagement_score": pl.Float64(),
            "learning_objectives_met": pl.Boolean(),
            "overall_rating": pl.Int64(),
        }
    )


def tutor_sessions(conn: Conn, tutor_id: str, start: datetime, end: datetime) -> pl.DataFrame:
    """One tutor's sessions with `start ≤ scheduled_start < end` and their feedback rating."""
    import polars as pl

    from tutormax_cli.store.load import parse_utc

    detail = session_detail()
    pg = conn.dialect.name == "postgresql"
    ts = (
        "to_char(s.scheduled_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')"
        if pg
        else "s.scheduled_start"
    )
    sql = (
        f"SELECT s.session_id, s.student_id, s.subject, s.session_number, {ts}, s.no_show, "
        "s.tutor_initiated_reschedule, s.late_start_minutes, s.engagement_score, "
        "s.learning_objectives_met, f.overall_rating FROM sessions s "
        "LEFT JOIN student_feedback f ON f.session_id = s.session_id "
        "WHERE s.tutor_id = :t AND s.scheduled_start >= :lo AND s.scheduled_start < :hi"
    )
    if pg:
        params: dict[str, Any] = {"t": tutor_id, "lo": start, "hi": end}
    else:  # ISO text in any form: narrow by day in SQL, exactly after parsing
        params = {
            "t": tutor_id,
            "lo": (start - timedelta(days=1)).strftime("%Y-%m-%d"),
            "hi": (end + timedelta(days=1)).strftime("%Y-%m-%d"),
        }
    raw_schema = {
        n: pl.String if n == "scheduled_start" else pl.Int64 if t == pl.Boolean else t
        for n, t in detail.items()
    }
    rows = [tuple(int(v) if isinstance(v, bool) else v for v in r) for r in run(conn, sql, params)]
    df = pl.DataFrame(rows, schema=raw_schema, orient="row")
    df = df.with_columns(
        parse_utc(pl.col("scheduled_start")).alias("scheduled_start"),
        *[pl.col(n).cast(pl.Boolean) for n, t in detail.items() if t == pl.Boolean],
    )
    return df.filter(pl.col("scheduled_start").is_between(start, end, closed="left"))


def _since_filter(conn: Conn, column: str = "metric_date") -> str:
    """`metric_date >= :since` on either backend (SQLite compares the text's date part)."""
    if conn.dialect.name == "postgresql":
        return f"{column} >= CAST(:since AS date)"
    return f"substr({column}, 1, 10) >= :since"


def history_for_tutors(
    conn: Conn, tutor_ids: Sequence[str], window: str, since: date
) -> pl.DataFrame:
    """Several tutors' daily rows of one window from metric date `since` on, in one read
    (the dashboard's sparklines), sorted by tutor and date."""
    if not tutor_ids:
        return _frame([])
    sql = (
        f"SELECT {_COLUMNS} FROM tutor_performance_metrics "
        f'WHERE "window" = :w AND tutor_id IN :ids AND {_since_filter(conn)}'
    )
    params = {"w": window, "ids": list(tutor_ids), "since": since.isoformat()}
    return _frame(run(conn, sql, params, expanding=("ids",))).sort("tutor_id", "metric_date")


TIER_STEP_LOOKBACK_DAYS = 30
"""How far before the first day shown a tutor's previous row is looked for."""


def tier_steps(conn: Conn, windows: Sequence[str], *, days: int, limit: int) -> pl.DataFrame:
    """Rows whose tier differs from the same tutor's previous row of the window, on the
    newest `days` metric dates, newest first (at most `limit`): `tutor_id`, `window`,
    `metric_date`, `calculation_date`, `performance_tier`, `previous_tier`. One statement
    (LAG over each tutor's rows; SQLite ≥ 3.25 and PostgreSQL both have it)."""
    import polars as pl

    from tutormax_cli.store.load import parse_utc

    newest = [d for d in (newest_metric_date(conn, w) for w in windows) if d is not None]
    schema = {
        "tutor_id": pl.String, "window": pl.String, "metric_date": pl.String,
        "calculation_date": pl.String, "performance_tier": pl.String, "previous_tier": pl.String,
    }  # fmt: skip
    if not newest:
        return pl.DataFrame(schema=schema)
    first = max(newest) - timedelta(days=days - 1)
    pg = conn.dialect.name == "postgresql"
    calc = (
        "to_char(calculation_date AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')"
        if pg
        else "calculation_date"
    )
    day = "metric_date::text" if pg else "substr(metric_date, 1, 10)"
    sql = (
        'SELECT tutor_id, "window", d, c, performance_tier, previous_tier FROM ('
        f'SELECT tutor_id, "window", {day} AS d, {calc} AS c, performance_tier, '
        'LAG(performance_tier) OVER (PARTITION BY tutor_id, "window" ORDER BY metric_date) '
        "AS previous_tier FROM tutor_performance_metrics "
        f'WHERE "window" IN :ws AND {_since_filter(conn)}) steps '
        "WHERE d >= :first AND previous_tier IS NOT NULL AND previous_tier <> performance_tier "
        'ORDER BY d DESC, c DESC, tutor_id, "window" LIMIT :n'
    )
    params = {
        "ws": list(windows),
        "since": (first - timedelta(days=TIER_STEP_LOOKBACK_DAYS)).isoformat(),
        "first": first.isoformat(),
        "n": limit,
    }
    raw = pl.DataFrame(
        [tuple(r) for r in run(conn, sql, params, expanding=("ws",))],
        schema=schema,
        orient="row",
    )
    return raw.with_columns(
        pl.col("metric_date").str.to_date("%Y-%m-%d"),
        parse_utc(pl.col("calculation_date")).alias("calculation_date"),
    )
