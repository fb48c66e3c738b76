"""Cumulative daily partials: a snapshot from four index probes per tutor instead of a scan.

For each tutor and each UTC day with activity, `tutormax_cumulative_partials` holds the sums of
the engine's additive partials (`metrics/partials.py`) over every day up to and including that one.
A window's partials are then the difference of two rows — the last day inside it minus the day
before it starts — plus the raw rows of the at most two partial days at its edges when the
snapshot is not at midnight. A 5,000-tutor snapshot reads 20,000 small rows by primary key
instead of aggregating 1.8M session, feedback and event rows.

Exactness does not depend on who writes: statement-level triggers on `sessions`,
`student_feedback` and `tutor_events` (any program's INSERT, UPDATE, DELETE, COPY or TRUNCATE)
record the (tutor, day) pairs they touch in `tutormax_partials_dirty`, one set-based INSERT per
statement. Readers `refresh()` first: the dirty tutors' rows from their earliest dirty day on
are rebuilt from the raw tables, in one transaction under an advisory lock. A dirty pair
committed after a refresh read the queue is simply handled by the next refresh.

PostgreSQL only, and opt-in (`tutormax db partials enable`): the triggers sit on the write path
of tables the TutorMax pipeline owns, which is its owners' call. Without the table every path
computes from the raw rows as before.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta
from typing import Any

import polars as pl
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql.base import PGDialect

from tutormax_cli import interruptible
from tutormax_cli.contract import ID
from tutormax_cli.metrics import partials
from tutormax_cli.metrics.partials import NAMES, RELEVANT_EVENTS_SQL, event_rows_sql
from tutormax_cli.metrics.rolling import input_range
from tutormax_cli.metrics.windows import WINDOWS, as_utc
from tutormax_cli.store.db import STATEMENTS_AT_ONCE, is_postgres
from tutormax_cli.store.load import Partials, _any_tutor, _copy_frame, long_partials

TABLE = "tutormax_cumulative_partials"
DIRTY = "tutormax_partials_dirty"
SPANS = "tutormax_cumulative_tutors"
"""Each tutor's first and last day in TABLE: which tutors a snapshot has to look up."""
ID_SQL = ID.compile(dialect=PGDialect())  # type: ignore[no-untyped-call]  # (untyped in SA)
"""The contract's ID type as these tables' DDL spells it, its collation included: a key under
another collation than the column it is joined on cannot serve that join."""
PARALLEL_FROM = 1_000
"""Fewer tutors than this are looked up on the caller's connection alone."""
LOCK = "tutormax:cumulative-partials"
_DAY = "(({ts} AT TIME ZONE 'UTC')::date)"
_FUNCTIONS = (
    "tutormax_mark_sessions",
    "tutormax_mark_feedback",
    "tutormax_mark_events",
    "tutormax_partials_truncated",
)
_WATCHED = {"sessions": "sessions", "student_feedback": "feedback", "tutor_events": "events"}
"""Table → the name part of its triggers and marking function."""


def _q(name: str) -> str:
    return f'"{name}"'


# -- the objects ---------------------------------------------------------------------------------


def _mark(select: str, rows: str) -> str:
    """One INSERT of the distinct (tutor, day) pairs `select` finds in transition table `rows`."""
    return (
        f"INSERT INTO {DIRTY} (tutor_id, day) SELECT DISTINCT tutor_id, day FROM "
        f"({select.format(rows=rows)}) AS touched WHERE tutor_id IS NOT NULL AND day IS NOT NULL "
        "ON CONFLICT DO NOTHING;"
    )


_PAIRS = {
    "sessions": "SELECT tutor_id, " + _DAY.format(ts="scheduled_start") + " AS day FROM {rows}",
    "feedback": (
        "SELECT s.tutor_id, " + _DAY.format(ts="s.scheduled_start") + " AS day FROM {rows} f "
        "JOIN sessions s ON s.session_id = f.session_id"
    ),
    "events": (
        "SELECT tutor_id, " + _DAY.format(ts="event_timestamp") + " AS day FROM {rows} "
        f"WHERE event_type IN {RELEVANT_EVENTS_SQL}"
    ),
}
"""The (tutor, day) pairs a changed row of each table moves: feedback counts on its session's
tutor and day, events only when they are of a kind the metrics read."""


_WRITER_LOCK = f"PERFORM pg_advisory_xact_lock_shared(hashtext('{LOCK}'));"
"""Every writing statement holds this shared until its transaction ends, and a refresh takes it
exclusively first: a refresh therefore starts only once every write it could miss has committed
(a second write to an already queued pair, feedback whose session another transaction has not
committed yet), and writes wait for a running refresh."""


def _first_rows(table: str, ts: str, only: str = "") -> str:
    """A recursive CTE `{table}_first` of each tutor's earliest row of `table` (where `only`
    holds) as (tutor_id, first): a skip scan of the (tutor_id, `ts`) index, one probe per
    tutor, instead of reading every row."""
    name = f"{table}_first"
    pick = f"SELECT x.tutor_id, x.{ts} AS first FROM {table} x"
    order = f"ORDER BY x.tutor_id, x.{ts} LIMIT 1"
    return (
        f"{name} AS (({pick}{f' WHERE {only}' if only else ''} {order}) "
        f"UNION ALL SELECT n.tutor_id, n.first FROM {name} CROSS JOIN LATERAL ({pick} "
        f"WHERE x.tutor_id > {name}.tutor_id{f' AND {only}' if only else ''} {order}) n)"
    )


_FIRST_DAYS = (
    f"WITH RECURSIVE {_first_rows('sessions', 'scheduled_start')}, "
    f"{_first_rows('tutor_events', 'event_timestamp', f'x.event_type IN {RELEVANT_EVENTS_SQL}')} "
    f"SELECT tutor_id, {_DAY.format(ts='min(first)')} AS day FROM (SELECT * FROM sessions_first "
    "UNION ALL SELECT * FROM tutor_events_first) AS history GROUP BY tutor_id"
)
"""Each tutor's first day with rows (the day of the earliest instant, so no timestamp is
converted but one per tutor). Skip scans of the two (tutor_id, time) indexes: ~50,000 index
probes each at 50,000 tutors instead of aggregating the 20M rows (5.3 s on both cores)."""

_QUEUE_EVERYONE = f"INSERT INTO {DIRTY} (tutor_id, day) {_FIRST_DAYS} ON CONFLICT DO NOTHING"
"""Queue every tutor from its first day: a full rebuild, when enabling and after a TRUNCATE
(the trigger)."""


def _ddl(schema: str) -> list[str]:
    """The tables, the marking functions and the triggers. The functions run with the rights of
    whoever enabled them (SECURITY DEFINER) and a fixed search_path, so a writer needs no grant
    on tutormax's tables and cannot redirect their names with its own search_path."""
    definer = f"SECURITY DEFINER SET search_path = {_q(schema)}, pg_temp"
    columns = ", ".join(
        f"{_q(p.name)} {'numeric' if p.is_float else 'bigint'} NOT NULL" for p in partials.PARTIALS
    )
    out = [
        f"CREATE TABLE {TABLE} (tutor_id {ID_SQL} NOT NULL, day date NOT NULL, {columns}, "
        "PRIMARY KEY (tutor_id, day))",
        f"CREATE TABLE {DIRTY} (tutor_id {ID_SQL} NOT NULL, day date NOT NULL, "
        "PRIMARY KEY (tutor_id, day))",
        f"CREATE TABLE {SPANS} (tutor_id {ID_SQL} PRIMARY KEY, first_day date NOT NULL, "
        "last_day date NOT NULL)",
    ]
    for kind, select in _PAIRS.items():
        out.append(
            f"CREATE FUNCTION tutormax_mark_{kind}() RETURNS trigger LANGUAGE plpgsql {definer} "
            "AS $$ "
            f"BEGIN {_WRITER_LOCK} IF TG_OP <> 'DELETE' THEN {_mark(select, 'tm_new')} END IF; "
            f"IF TG_OP <> 'INSERT' THEN {_mark(select, 'tm_old')} END IF; "
            "RETURN NULL; END $$"
        )
    out.append(
        f"CREATE FUNCTION tutormax_partials_truncated() RETURNS trigger LANGUAGE plpgsql {definer} "
        f"AS $$ BEGIN {_WRITER_LOCK} DELETE FROM {TABLE}; DELETE FROM {SPANS}; "
        f"{_QUEUE_EVERYONE}; RETURN NULL; END $$"
    )
    for table, kind in _WATCHED.items():
        function = f"tutormax_mark_{kind}()"
        for op, refs in (
            ("INSERT", "NEW TABLE AS tm_new"),
            ("UPDATE", "OLD TABLE AS tm_old NEW TABLE AS tm_new"),
            ("DELETE", "OLD TABLE AS tm_old"),
        ):
            out.append(
                f"CREATE TRIGGER tutormax_{kind}_{op.lower()} AFTER {op} ON {table} "
                f"REFERENCING {refs} FOR EACH STATEMENT EXECUTE FUNCTION {function}"
            )
        out.append(
            f"CREATE TRIGGER tutormax_{kind}_truncate AFTER TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION tutormax_partials_truncated()"
        )
    return out


def enabled(conn: sa.Connection) -> bool:
    """Whether this database keeps cumulative partials (always False on SQLite)."""
    if not is_postgres(conn):
        return False
    return bool(conn.execute(sa.text(f"SELECT to_regclass('{TABLE}') IS NOT NULL")).scalar())


ENABLE_CHUNK = 50_000
"""Tutors rebuilt per transaction while `enable` fills the table: each chunk commits, so an
interrupted fill loses at most one chunk and a rerun of `enable` carries on from the queue.
Large on purpose: each chunk's rebuild scans the raw tables again (chunks of 5,000 tutors made
a 50,000-tutor fill several times slower than one pass), so up to 50,000 tutors fill in one."""

ENABLE_WORK_MEM = "256MB"
"""`work_mem` of each fill transaction: the per-(tutor, day) aggregates and the sort of the
running sums stay in memory instead of external merges on disk (5,000 tutors spilled ~170 MB
at the default 4 MB). Set for the fill only; a reader's refresh touches few tutors."""

ENABLE_SETTINGS = {"work_mem": ENABLE_WORK_MEM, "enable_sort": "off"}
"""Planner settings of each fill transaction (`SET LOCAL`). `enable_sort = off`: the planner
misjudges the events' (tutor, day) groups (2.8M estimated for a range of 25,000 tutors, 2.1M
real) and, finding no room to hash them at this `work_mem`, sorts the range's 6.2M event rows
on disk to group them; hashing them, spilling to disk in batches within the same memory, took
a range 46.8 s instead of 56.4 s (`EXPLAIN ANALYZE`, 50,000 tutors). The running sums' sort
has no other plan and stays; the memory of each node is bounded by `work_mem` either way."""

EnableProgress = Callable[[int, int], None]
"""Called as `(tutors done, tutors in all)` after each committed chunk of the fill."""


def enable(
    engine: sa.Engine,
    progress: EnableProgress | None = None,
    chunk_tutors: int = ENABLE_CHUNK,
) -> int:
    """Create the tables and triggers and queue every tutor from its first day, in one
    transaction (writers wait for its lock on the three tables, so nothing is missed); then
    fill the table chunk by chunk of tutors, each chunk split into `STATEMENTS_AT_ONCE`
    contiguous ranges rebuilt at once, one set-based rebuild and one commit per range. A fill
    cut short is finished by running `enable` again (or by any reader's refresh). Returns the
    rows in the table; 0 when it was already enabled and nothing was waiting."""
    from tutormax_cli.errors import UsageError

    if not is_postgres(engine):
        raise UsageError("cumulative partials need PostgreSQL; SQLite computes from raw rows")
    with engine.begin() as conn:
        if not enabled(conn):
            conn.execute(
                sa.text("LOCK TABLE sessions, student_feedback, tutor_events IN SHARE MODE")
            )
            schema = str(conn.execute(sa.text("SELECT current_schema()")).scalar_one())
            for statement in _ddl(schema):
                conn.execute(sa.text(statement))
            conn.execute(sa.text("SET LOCAL jit = off"))
            conn.exec_driver_sql(_QUEUE_EVERYONE)
        waiting = int(
            conn.execute(sa.text(f"SELECT count(DISTINCT tutor_id) FROM {DIRTY}")).scalar_one()
        )
    if waiting == 0:
        return 0
    done = 0
    with engine.connect() as guard:
        while True:
            with guard.begin():
                # held until every part of the chunk has committed: writers wait, as they
                # would for one refresh, so no write the parts do not see goes unqueued
                guard.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": LOCK})
                tutors = guard.execute(
                    sa.text(f"SELECT DISTINCT tutor_id FROM {DIRTY} ORDER BY 1 LIMIT :n"),
                    {"n": chunk_tutors},
                ).scalars()
                parts = _ranges(list(tutors), STATEMENTS_AT_ONCE)
                if not parts:
                    break
                taken = _fill(engine, parts)
            done += taken
            if progress is not None:
                progress(min(done, waiting), waiting)
    with engine.connect() as conn:
        # statistics of the filled tables now, not when autovacuum gets to them (if it runs at
        # all): the snapshots' lookups and the backfills' range reads are planned on them
        conn.exec_driver_sql(f"ANALYZE {TABLE}, {SPANS}")
        conn.commit()
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {TABLE}")).scalar_one())


def _ranges(tutors: Sequence[str], parts: int) -> list[tuple[str, str]]:
    """`tutors` (sorted) cut into at most `parts` contiguous runs, as (first, last) ids."""
    size = -(-len(tutors) // parts) if tutors else 0
    return [
        (tutors[i], tutors[min(i + size, len(tutors)) - 1])
        for i in range(0, len(tutors), size or 1)
    ]


def _fill(engine: sa.Engine, parts: Sequence[tuple[str, str]]) -> int:
    """Rebuild each range of tutors on a connection of its own, all at once (the caller holds
    the refresh lock); tutors rebuilt. Each range commits by itself: a range that fails or is
    interrupted stays queued for the next `enable` or refresh. On Ctrl-C the running
    statements are cancelled, so the interrupt does not wait for them."""
    running: list[Any] = []

    def one(first: str, last: str) -> int:
        with engine.begin() as conn:
            running.append(conn.connection.dbapi_connection)
            for name, value in ENABLE_SETTINGS.items():
                conn.execute(sa.text(f"SET LOCAL {name} = '{value}'"))
            return _refresh(conn, between=(first, last), locked=True)

    if len(parts) == 1:
        return one(*parts[0])
    with ThreadPoolExecutor(len(parts), thread_name_prefix="tutormax-fill") as pool:
        futures = [pool.submit(one, first, last) for first, last in parts]
        try:
            return sum(interruptible.result(f) for f in futures)
        except BaseException:
            for raw in running:
                with contextlib.suppress(Exception):
                    raw.cancel()
            raise


def disable(engine: sa.Engine) -> bool:
    """Drop the triggers, functions and tables; False when there was nothing to drop."""
    with engine.begin() as conn:
        if not enabled(conn):
            return False
        for table, kind in _WATCHED.items():
            for op in ("insert", "update", "delete", "truncate"):
                conn.execute(sa.text(f"DROP TRIGGER IF EXISTS tutormax_{kind}_{op} ON {table}"))
        for function in _FUNCTIONS:
            conn.execute(sa.text(f"DROP FUNCTION IF EXISTS {function}()"))
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {TABLE}, {DIRTY}, {SPANS}"))
        return True


def state(conn: sa.Connection) -> dict[str, Any]:
    """For `db partials status`: enabled, rows, tutors, newest day, pairs waiting."""
    if not enabled(conn):
        return {"enabled": False}
    rows, newest = conn.execute(sa.text(f"SELECT count(*), max(day) FROM {TABLE}")).one()
    waiting = conn.execute(sa.text(f"SELECT count(*) FROM {DIRTY}")).scalar_one()
    return {"enabled": True, "rows": int(rows), "newest_day": newest, "dirty_pairs": int(waiting)}


# -- keeping it current --------------------------------------------------------------------------


def refresh(engine: sa.Engine) -> int:
    """Rebuild what the triggers marked, in its own transaction; tutors refreshed."""
    with engine.begin() as conn:
        return _refresh(conn)


def _refresh(
    conn: sa.Connection, between: tuple[str, str] | None = None, *, locked: bool = False
) -> int:
    """Rebuild the queued tutors (only those with ids `between` first and last, when given);
    `locked`: the caller's transaction on another connection holds the refresh lock."""
    if not locked:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": LOCK})
    conn.execute(
        sa.text(
            f"CREATE TEMP TABLE IF NOT EXISTS tm_refresh (tutor_id {ID_SQL} PRIMARY KEY, "
            "from_day date NOT NULL) ON COMMIT DELETE ROWS"
        )
    )
    some = "" if between is None else " WHERE tutor_id BETWEEN :first AND :last"
    taken = conn.execute(
        sa.text(
            f"WITH d AS (DELETE FROM {DIRTY}{some} RETURNING tutor_id, day) "
            "INSERT INTO tm_refresh SELECT tutor_id, min(day) FROM d GROUP BY tutor_id"
        ),
        {} if between is None else {"first": between[0], "last": between[1]},
    ).rowcount
    if not taken:
        return 0
    conn.execute(sa.text("ANALYZE tm_refresh"))  # temp tables have no statistics otherwise
    conn.execute(
        sa.text(
            f"DELETE FROM {TABLE} c USING tm_refresh r "
            "WHERE c.tutor_id = r.tutor_id AND c.day >= r.from_day"
        )
    )
    conn.execute(sa.text("SET LOCAL jit = off"))
    # what is left of the refreshed tutors' rows ends before their `from_day`: a base to add
    based = conn.execute(
        sa.text(f"SELECT EXISTS (SELECT FROM tm_refresh r JOIN {TABLE} c USING (tutor_id))")
    ).scalar_one()
    conn.execute(sa.text(_rebuild_sql(based=bool(based))))
    # the refreshed tutors' spans, from their rows now (a tutor left without rows is dropped)
    conn.execute(sa.text(f"DELETE FROM {SPANS} s USING tm_refresh r WHERE s.tutor_id = r.tutor_id"))
    conn.execute(
        sa.text(
            f"INSERT INTO {SPANS} SELECT r.tutor_id, f.day, l.day FROM tm_refresh r "
            f"JOIN LATERAL (SELECT day FROM {TABLE} c WHERE c.tutor_id = r.tutor_id "
            "ORDER BY day LIMIT 1) f ON true "
            f"JOIN LATERAL (SELECT day FROM {TABLE} c WHERE c.tutor_id = r.tutor_id "
            "ORDER BY day DESC LIMIT 1) l ON true"
        )
    )
    return int(taken)


def _rebuild_sql(based: bool = True) -> str:
    """The refreshed tutors' cumulative rows from their `from_day` on: daily partials from the
    raw rows, running sums over them, plus the last row before `from_day` as the base.
    `based=False` when no refreshed tutor has a row before its `from_day` (a fill from each
    tutor's first day): the running sums are then the rows, without the join to the bases."""
    since = "(r.from_day::timestamp AT TIME ZONE 'UTC')"
    # float partials are summed as `numeric`: running totals over years of history must not
    # lose a window's worth of precision to one large value (a window is a difference of two)
    session_aggs, event_aggs = (
        ", ".join(f"{partials.sql_aggregate(p, exact=True)} AS {_q(p.name)}" for p in specs)
        for specs in (partials.SESSION_PARTIALS, partials.EVENT_PARTIALS)
    )
    daily_columns = ", ".join(
        f"coalesce({'sp' if p.source == 'sessions' else 'ep'}.{_q(p.name)}, 0) AS {_q(p.name)}"
        for p in partials.PARTIALS
    )
    # a day's counts fit `integer`, whose running `sum` accumulates in `bigint`; summing the
    # `bigint` itself would accumulate in `numeric`, several times slower over millions of rows
    running = ", ".join(
        f"sum(d.{_q(p.name)}" + ("" if p.is_float else "::integer") + f") OVER w AS {_q(p.name)}"
        for p in partials.PARTIALS
    )
    names = ", ".join(_q(p) for p in NAMES)
    daily = (
        f"WITH sp AS (SELECT s.tutor_id, {_DAY.format(ts='s.scheduled_start')} AS day, "
        f"{session_aggs} FROM tm_refresh r JOIN sessions s ON s.tutor_id = r.tutor_id "
        f"AND s.scheduled_start >= {since} "
        "LEFT JOIN student_feedback f ON f.session_id = s.session_id GROUP BY 1, 2), "
        f"ep AS (SELECT e.tutor_id, {_DAY.format(ts='e.event_timestamp')} AS day, "
        f"{event_aggs} FROM tm_refresh r JOIN {event_rows_sql()} ON e.tutor_id = r.tutor_id "
        f"AND e.event_timestamp >= {since} GROUP BY 1, 2), "
        "daily AS (SELECT coalesce(sp.tutor_id, ep.tutor_id) AS tutor_id, "
        f"coalesce(sp.day, ep.day) AS day, {daily_columns} FROM sp FULL JOIN ep "
        "ON sp.tutor_id = ep.tutor_id AND sp.day = ep.day) "
    )
    # the sort of the running sums compares bytes: the ID columns are `COLLATE "C"` (0005)
    sums = (
        f"SELECT d.tutor_id, d.day, {running} FROM daily d "
        "WINDOW w AS (PARTITION BY d.tutor_id ORDER BY d.day)"
    )
    insert = f"INSERT INTO {TABLE} (tutor_id, day, {names}) "
    if not based:
        return insert + daily + sums
    # the bases are added after the window, by a hash join of one row per tutor: joining
    # them before it made PostgreSQL sort the daily rows by tutor on disk to merge-join them
    plus_base = ", ".join(
        f"(coalesce(b.{_q(p.name)}, 0) + u.{_q(p.name)})"
        + ("::numeric" if p.is_float else "::bigint")
        for p in partials.PARTIALS
    )
    return (
        insert
        + daily
        + f", base AS (SELECT r.tutor_id, b.* FROM tm_refresh r LEFT JOIN LATERAL (SELECT {names} "
        f"FROM {TABLE} c WHERE c.tutor_id = r.tutor_id ORDER BY c.day DESC LIMIT 1) b ON true), "
        f"sums AS ({sums}) "
        f"SELECT u.tutor_id, u.day, {plus_base} FROM sums u JOIN base b ON b.tutor_id = u.tutor_id"
    )


# -- reading a snapshot --------------------------------------------------------------------------


def _midnight(t: datetime) -> datetime:
    return t.replace(hour=0, minute=0, second=0, microsecond=0)


def _plan(t: datetime) -> tuple[dict[str, date], dict[str, tuple[datetime, datetime]]]:
    """The cumulative rows to look up (the day each ends on) and the raw partial-day slices.

    Window [t - w, t) = [t - w, first midnight ≥ t - w) ∪ whole days ∪ [midnight of t, t): the
    whole days are `cum(day before t's) - cum(day before the first whole day)`.
    """
    today = _midnight(t)
    lookups = {"end": today.date() - timedelta(days=1)}
    slices: dict[str, tuple[datetime, datetime]] = {}
    if t > today:
        slices["tail"] = (today, t)
    for window, days in WINDOWS.items():
        start = t - timedelta(days=days)
        first_whole = start if start == _midnight(start) else _midnight(start) + timedelta(days=1)
        lookups[window] = first_whole.date() - timedelta(days=1)
        if start < first_whole:
            slices[window] = (start, first_whole)
    return lookups, slices


def _schema(extra: dict[str, pl.DataType]) -> dict[str, pl.DataType]:
    return {"tutor_id": pl.String(), **extra, **partials.DTYPES}


def _tutors(conn: sa.Connection, lookups: dict[str, date]) -> list[str]:
    """The tutors with rows between the first lookup day and the day after the last (the
    snapshot's own day): a superset of those with a session in the windows, which
    `window_partials` keeps."""
    sql = f"SELECT tutor_id FROM {SPANS} WHERE first_day <= :last AND last_day >= :first"
    days = list(lookups.values())
    rows = conn.execute(sa.text(sql), {"first": min(days), "last": max(days) + timedelta(1)})
    return sorted(str(r[0]) for r in rows)


def _latest(alias: str, on_or_before: str) -> str:
    """A `LEFT JOIN LATERAL` of tutor `t`'s latest cumulative row on or before the day
    `on_or_before` (an SQL expression), as `alias`: one backward probe of the primary key;
    no row (all zeros once subtracted) before the tutor's first day."""
    names = ", ".join(f"c.{_q(p)}" for p in NAMES)
    return (
        f"LEFT JOIN LATERAL (SELECT {names} FROM {TABLE} c WHERE c.tutor_id = t.tutor_id "
        f"AND c.day <= {on_or_before} ORDER BY c.day DESC LIMIT 1) {alias} ON true"
    )


def _differences() -> str:
    """Each partial as the end row `e` minus the base row `b` (both from `_latest`), taken
    in `numeric` where the float totals are exact, then as the column's type."""
    return ", ".join(
        f"(coalesce(e.{_q(p.name)}, 0) - coalesce(b.{_q(p.name)}, 0))"
        + ("::float8" if p.is_float else "")
        + f" AS {_q(p.name)}"
        for p in partials.PARTIALS
    )


def _probe(conn: sa.Connection, lookups: dict[str, date], tutors: Sequence[str]) -> pl.DataFrame:
    """`tutor_id`, `window`, partials of the whole days of each window: the tutor's cumulative
    row as of the day before the snapshot's minus the one as of the day before the window's
    first whole day (zeros before a tutor's first day), subtracted in SQL where the float
    totals are exact `numeric`. One index probe each, over `STATEMENTS_AT_ONCE` connections."""
    params: dict[str, Any] = {f"d_{k}": d for k, d in lookups.items()}
    windows = ", ".join(f"('{w}', CAST(:d_{w} AS date))" for w in WINDOWS)
    differences = _differences()

    sql = (
        f'SELECT t.tutor_id, w."window", {differences} FROM '
        "(SELECT DISTINCT unnest(CAST(:tutors AS text[])) AS tutor_id) t "
        f"{_latest('e', 'CAST(:d_end AS date)')} "
        f'CROSS JOIN (VALUES {windows}) AS w("window", day) {_latest("b", "w.day")}'
    )
    schema = _schema({"window": pl.String()})

    def probe(part: Sequence[str], connection: sa.Connection) -> pl.DataFrame:
        return _copy_frame(connection, sql, {**params, "tutors": list(part)}, schema)

    parts = [list(tutors[i::STATEMENTS_AT_ONCE]) for i in range(STATEMENTS_AT_ONCE)]
    if len(tutors) < PARALLEL_FROM or STATEMENTS_AT_ONCE < 2:
        return probe(tutors, conn)
    from concurrent.futures import ThreadPoolExecutor

    def on_its_own(part: Sequence[str]) -> pl.DataFrame:
        with conn.engine.connect() as other:
            return probe(part, other)

    with ThreadPoolExecutor(STATEMENTS_AT_ONCE - 1) as pool:
        others = [pool.submit(on_its_own, part) for part in parts[1:]]
        first = probe(parts[0], conn)  # meanwhile: psycopg2 lets go of the GIL while it waits
        return pl.concat([first, *(f.result() for f in others)])


def _slices(
    conn: sa.Connection,
    slices: dict[str, tuple[datetime, datetime]],
    tutors: Sequence[str] | None,
) -> pl.DataFrame:
    """`tutor_id`, `key`, partials of the raw rows in each slice (tutors with none: absent)."""
    if not slices:
        return pl.DataFrame(schema=_schema({"key": pl.String()}))
    params: dict[str, Any] = {}
    for key, (a, b) in slices.items():
        params[f"a_{key}"], params[f"b_{key}"] = a, b
    if tutors is not None:
        params["tutors"] = list(tutors)
    frames = []
    for specs, alias, ts, source in (
        (
            partials.SESSION_PARTIALS, "s", "scheduled_start",
            "sessions s LEFT JOIN student_feedback f ON f.session_id = s.session_id",
        ),
        (partials.EVENT_PARTIALS, "e", "event_timestamp", event_rows_sql()),
    ):  # fmt: skip
        column = f"{alias}.{ts}"
        inside = {k: f"{column} >= :a_{k} AND {column} < :b_{k}" for k in slices}
        aggs = ", ".join(
            f"{partials.sql_aggregate(p, inside[k])} AS {_q(f'{p.name}@{k}')}"
            for k in slices
            for p in specs
        )
        where = " OR ".join(f"({cond})" for cond in inside.values())
        tutor_filter = _any_tutor(f"{alias}.tutor_id") if tutors is not None else ""
        sql = (
            f"SELECT {alias}.tutor_id, {aggs} FROM {source} WHERE ({where}){tutor_filter} "
            f"GROUP BY {alias}.tutor_id"
        )
        schema = {"tutor_id": pl.String()} | {
            f"{p.name}@{k}": p.dtype for k in slices for p in specs
        }
        wide = _copy_frame(conn, sql, params, schema)
        frames.append(long_partials(wide, "key", list(slices), [p.name for p in specs]))
    sessions, events = frames
    return (
        sessions.join(events, on=["tutor_id", "key"], how="full", coalesce=True)
        .select("tutor_id", "key", *NAMES)
        .fill_null(0)
    )


def window_partials(
    conn: sa.Connection, as_of: datetime, tutors: Sequence[str] | None = None
) -> Partials:
    """`store.load.load_window_partials`, from the cumulative table: per (tutor, window)
    partials as of `as_of` for every tutor with a session in the longest window (or only
    `tutors`). Refreshes the table first, in its own transaction."""
    refresh(conn.engine)
    t = as_utc(as_of)
    lookups, slices = _plan(t)
    probed = _probe(conn, lookups, _tutors(conn, lookups) if tutors is None else tutors)
    edges = _slices(conn, slices, tutors)
    parts = []
    for window in WINDOWS:
        whole_days = probed.filter(pl.col("window") == window)
        added = edges.filter(pl.col("key").is_in([window, "tail"])).drop("key")
        added = added.group_by("tutor_id").agg(pl.col(p).sum() for p in NAMES)
        joined = whole_days.join(added, on="tutor_id", how="left", suffix="@edge")
        parts.append(
            joined.select(
                "tutor_id",
                "window",
                *[
                    (pl.col(p) + pl.col(f"{p}@edge").fill_null(0)).cast(partials.DTYPES[p]).alias(p)
                    for p in NAMES
                ],
            )
        )
    snapshot = pl.concat(parts)
    longest = max(WINDOWS, key=WINDOWS.__getitem__)
    active = snapshot.filter((pl.col("window") == longest) & (pl.col("n_sessions") > 0))
    snapshot = snapshot.filter(pl.col("tutor_id").is_in(active["tutor_id"].implode()))
    return Partials(snapshot.sort("tutor_id"), probed.height + edges.height)


def daily_partials(
    conn: sa.Connection, first_day: date, last_day: date, tutors: Sequence[str] | None = None
) -> Partials:
    """`store.load.load_daily_partials` from the cumulative table: per (tutor, UTC day)
    partials of `first_day` … `last_day` as differences of consecutive cumulative rows (the row
    before `first_day` is each tutor's base), so a backfill reads O(tutors × days) small rows
    by primary key instead of aggregating the raw history. Subtracted in SQL, where the float
    totals are exact `numeric`. Refreshes the table first, in its own transaction.

    Each tutor's rows are read in a `LATERAL` subquery holding the differences (a window
    function, so PostgreSQL cannot flatten it into a join): one primary-key range scan per
    tutor, already in day order. As a plain join of the chunk's tutors with the table, the
    planner estimated a tenth of the table per chunk and hashed all of it instead — a seq scan
    of the whole table for every chunk (2.5 s against 0.57 s for 2,000 tutors × 97 days at
    50,000 tutors, see the README)."""
    refresh(conn.engine)
    params: dict[str, Any] = {"first": first_day, "last": last_day}
    chosen = ""
    if tutors is not None:
        params["tutors"] = list(tutors)
        chosen = _any_tutor("t.tutor_id")
    names = ", ".join(_q(p) for p in NAMES)
    differences = ", ".join(
        f"({_q(p.name)} - coalesce(lag({_q(p.name)}) OVER w, 0))"
        + ("::float8" if p.is_float else "")
        + f" AS {_q(p.name)}"
        for p in partials.PARTIALS
    )
    rows = (
        f"(SELECT day, {names} FROM {TABLE} b WHERE b.tutor_id = t.tutor_id "
        "AND b.day < :first ORDER BY b.day DESC LIMIT 1) "
        f"UNION ALL SELECT day, {names} FROM {TABLE} c WHERE c.tutor_id = t.tutor_id "
        "AND c.day BETWEEN :first AND :last"
    )
    sql = (
        f"SELECT t.tutor_id, d.day - DATE '1970-01-01' AS day, "
        f"{', '.join(f'd.{_q(p)}' for p in NAMES)} "
        f"FROM {SPANS} t CROSS JOIN LATERAL (SELECT day, {differences} FROM ({rows}) r "
        "WINDOW w AS (ORDER BY day)) d "
        f"WHERE t.first_day <= :last AND t.last_day >= :first{chosen} AND d.day >= :first"
    )
    schema = _schema({"day": pl.Int32()})
    daily = _copy_frame(conn, sql, params, schema)
    return Partials(daily.with_columns(pl.col("day").cast(pl.Date)), daily.height)


def end_of_day_partials(
    conn: sa.Connection, first_day: date, last_day: date, tutors: Sequence[str] | None = None
) -> Partials:
    """Per (tutor, window, day) partials of the end-of-day snapshots of `first_day` …
    `last_day` (schema `rolling.WINDOWED`, tutor-days without a session in their longest window
    included): an N-day window ending on day D is `cum(D) - cum(D - N)`, each the tutor's
    latest cumulative row on or before that day (zeros before its first), subtracted in SQL
    where the float totals are exact `numeric`. Refreshes the table first, in its own
    transaction.

    Four index probes per tutor and day (the day, and 7, 30 and 90 days before it), nested
    so each difference is taken as its two rows are found (no join of the probed rows: that
    form took twice as long). For a 7-day backfill that is 28 probes a tutor instead of the 97
    daily differences `daily_partials` returns for `rolling.window_sums` to roll; for long
    blocks the daily rows are fewer (`PROBE_DAYS`)."""
    refresh(conn.engine)
    lo, _ = input_range(first_day, last_day)
    params: dict[str, Any] = {"first": first_day, "last": last_day, "lo": lo}
    chosen = ""
    if tutors is not None:
        params["tutors"] = list(tutors)
        chosen = _any_tutor("tutor_id")
    differences = _differences()
    windows = ", ".join(f"('{w}', {n})" for w, n in WINDOWS.items())

    sql = (
        f"SELECT t.tutor_id, w.\"window\", d.day - DATE '1970-01-01' AS metric_date, "
        f"{differences} FROM (SELECT tutor_id FROM {SPANS} WHERE first_day <= :last "
        f"AND last_day >= :lo{chosen}) t "
        "CROSS JOIN LATERAL (SELECT CAST(g AS date) AS day FROM generate_series("
        "CAST(:first AS date), CAST(:last AS date), interval '1 day') AS g) d "
        f"{_latest('e', 'd.day')} "
        f'CROSS JOIN (VALUES {windows}) AS w("window", n) {_latest("b", "d.day - w.n")}'
    )
    schema = _schema({"window": pl.String(), "metric_date": pl.Int32()})
    windowed = _copy_frame(conn, sql, params, schema)
    return Partials(windowed.with_columns(pl.col("metric_date").cast(pl.Date)), windowed.height)
