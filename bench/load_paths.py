"""How rows get from PostgreSQL into polars: the options measured for `store/load.py`.

- `copy`: COPY (SELECT …) TO STDOUT as CSV through psycopg2, parsed by polars' CSV reader
  (`load_metric_inputs`, the project's raw-row path).
- `adbc`: adbc-driver-postgresql (binary COPY into Arrow), `pl.from_arrow`.
- `connectorx`: connectorx's binary protocol straight into polars.

Each reads the same three result sets an as-of run needs (90 days of sessions, their feedback,
the login/message_response events), or the per-(tutor, day) partials a backfill needs, and is
checked to produce the same frames.

    python bench/load_paths.py --db-url postgresql://root@127.0.0.1:5432/tutormax_bench \
        --as-of 2026-03-03T00:00Z --repeat 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import polars as pl
import sqlalchemy as sa

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tutormax_cli.metrics import frames
from tutormax_cli.store import load
from tutormax_cli.store.db import open_engine

RAW_SQL = {
    "sessions": (
        "SELECT s.session_id, s.tutor_id, s.session_number, s.scheduled_start, s.actual_start, "
        "s.tutor_initiated_reschedule, s.no_show, s.late_start_minutes, s.engagement_score, "
        "s.learning_objectives_met FROM sessions s "
        "WHERE s.scheduled_start >= '{start}' AND s.scheduled_start < '{end}'"
    ),
    "feedback": (
        "SELECT f.session_id, f.overall_rating FROM student_feedback f JOIN sessions s "
        "ON s.session_id = f.session_id "
        "WHERE s.scheduled_start >= '{start}' AND s.scheduled_start < '{end}'"
    ),
    "events": (
        "SELECT e.tutor_id, e.event_type, e.event_timestamp, CASE WHEN e.event_type = "
        "'message_response' AND jsonb_typeof(e.metadata -> 'response_time_minutes') = 'number' "
        "THEN (e.metadata ->> 'response_time_minutes')::float8 END AS response_time_minutes "
        "FROM tutor_events e WHERE e.event_timestamp >= '{start}' AND e.event_timestamp < '{end}' "
        "AND e.event_type IN ('login', 'message_response')"
    ),
}
SCHEMAS = {"sessions": frames.SESSIONS, "feedback": frames.FEEDBACK, "events": frames.EVENTS}


def raw_copy(url: str, start: datetime, end: datetime) -> dict[str, pl.DataFrame]:
    engine = open_engine(url)
    with engine.connect() as conn:
        inputs = load.load_metric_inputs(conn, start, end)
    engine.dispose()
    return {"sessions": inputs.sessions, "feedback": inputs.feedback, "events": inputs.events}


def raw_adbc(url: str, start: datetime, end: datetime) -> dict[str, pl.DataFrame]:
    import adbc_driver_postgresql.dbapi as adbc

    out = {}
    with adbc.connect(url) as conn:
        for name, sql in RAW_SQL.items():
            with conn.cursor() as cur:
                cur.execute(sql.format(start=start.isoformat(), end=end.isoformat()))
                table = cur.fetch_arrow_table()
            out[name] = frames.conform(pl.from_arrow(table), SCHEMAS[name])  # type: ignore[arg-type]
    return out


def raw_connectorx(url: str, start: datetime, end: datetime) -> dict[str, pl.DataFrame]:
    import connectorx as cx

    out = {}
    for name, sql in RAW_SQL.items():
        df = cx.read_sql(url, sql.format(start=start.isoformat(), end=end.isoformat()),
                         return_type="polars")  # fmt: skip
        out[name] = frames.conform(df, SCHEMAS[name])
    return out


def _partials_sql(url: str, first: date, last: date) -> list[tuple[str, str]]:
    """The statements `load_daily_partials` sends, with the settings it sends them with,
    captured from its COPY helper (which returns empty frames meanwhile)."""
    captured: list[tuple[str, str]] = []
    engine = open_engine(url)

    def capture(
        conn: sa.Connection,
        sql: str,
        params: dict[str, Any],
        schema: dict[str, pl.DataType],
        settings: str = "",
    ) -> pl.DataFrame:
        raw: Any = conn.connection.dbapi_connection
        with raw.cursor() as cur:
            compiled = sa.text(sql).compile(dialect=conn.dialect).string
            captured.append((settings, cur.mogrify(compiled, params).decode()))
        return pl.DataFrame(schema=schema)

    original = load._copy_frame
    load._copy_frame = capture
    try:
        with engine.connect() as conn:
            load.load_daily_partials(conn, first, last)
    finally:
        load._copy_frame = original
        engine.dispose()
    return captured


SESSION_SETTINGS = "SET jit = off; SET work_mem = '64MB'; "
"""What `store.load._copy_frame` sets, so every loader runs the same plans."""


def partials_copy(url: str, first: date, last: date) -> list[pl.DataFrame]:
    engine = open_engine(url)
    with engine.connect() as conn:
        frame = load.load_daily_partials(conn, first, last).frame
    engine.dispose()
    return [frame]


def partials_adbc(url: str, first: date, last: date) -> list[pl.DataFrame]:
    import adbc_driver_postgresql.dbapi as adbc

    out = []
    with adbc.connect(url) as conn:
        for settings, sql in _partials_sql(url, first, last):
            with conn.cursor() as cur:
                for setting in (SESSION_SETTINGS + settings.replace("LOCAL ", "")).split(";"):
                    if setting.strip():
                        cur.execute(setting)
                cur.execute(sql)
                df = pl.from_arrow(cur.fetch_arrow_table())
            assert isinstance(df, pl.DataFrame)
            out.append(df)
    return out


def partials_connectorx(url: str, first: date, last: date) -> list[pl.DataFrame]:
    import connectorx as cx

    out = []
    for settings, sql in _partials_sql(url, first, last):
        # connectorx opens its own sessions: the settings travel as libpq `options`
        options = ["jit=off", "work_mem=64MB"]
        if "enable_sort" in settings:
            options.append("enable_sort=off")
        dsn = url + "?options=" + "%20".join(f"-c%20{o.replace('=', '%3D')}" for o in options)
        out.append(cx.read_sql(dsn, sql, return_type="polars"))
    return out


def _median_of(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--as-of", default="2026-03-03T00:00:00+00:00")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--backfill-days", type=int, default=14)
    args = parser.parse_args()
    t = datetime.fromisoformat(args.as_of.replace("Z", "+00:00")).astimezone(UTC)
    start = t - timedelta(days=90)
    url = args.db_url
    print(f"raw rows of one as-of run ({t:%Y-%m-%d}, median of {args.repeat}):")
    reference = None
    for name, fn in (("copy+csv", raw_copy), ("adbc", raw_adbc), ("connectorx", raw_connectorx)):
        seconds, got = _median_of(lambda fn=fn: fn(url, start, t), args.repeat)  # type: ignore[misc]
        rows = sum(df.height for df in got.values())
        if reference is None:
            reference = got
        else:
            for key, df in got.items():
                cols = list(SCHEMAS[key])
                assert df.sort(cols).equals(reference[key].sort(cols)), (name, key)
        print(f"  {name:<11} {seconds:6.2f} s  {rows:,} rows")
    last = (t - timedelta(microseconds=1)).date()
    first = last - timedelta(days=args.backfill_days - 1) - timedelta(days=89)
    print(f"daily partials of a {args.backfill_days}-day backfill ({first} … {last}):")
    for name, pfn in (
        ("copy+csv", partials_copy),
        ("adbc", partials_adbc),
        ("connectorx", partials_connectorx),
    ):
        seconds, dfs = _median_of(lambda pfn=pfn: pfn(url, first, last), args.repeat)  # type: ignore[misc]
        print(f"  {name:<11} {seconds:6.2f} s  {sum(df.height for df in dfs):,} rows")


if __name__ == "__main__":
    main()
