"""Which tutors' windows changed between two instants without any write: range queries for the
window edges that time crossed (the worker's window sweep).

With METRICS.md §2 a session is in an N-day window as of `t` when `t − N days ≤ scheduled_start
< t`. Moving the as-of instant from `a` to `b` changes that for exactly the sessions with
`a − N ≤ scheduled_start < b − N` (they left the window) and those with `a ≤ scheduled_start <
b` (they entered every window: e.g. a session scheduled ahead whose start passed). The same
holds for the relevant tutor events on `event_timestamp`. So the tutors to recompute are found
with 2 × (windows + 1) range queries on the indexed timestamp columns
(`ix_sessions_scheduled_start`, `ix_tutor_events_event_timestamp`), never by scanning tutors.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl
import sqlalchemy as sa

from tutormax_cli.metrics.partials import RELEVANT_EVENTS_SQL
from tutormax_cli.metrics.windows import WINDOWS, as_utc
from tutormax_cli.store.db import is_postgres
from tutormax_cli.store.load import parse_utc


def edge_ranges(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """The half-open timestamp ranges [lo, hi) whose rows change some window when the as-of
    instant moves from `start` to `end`: one per window (left) and one for entering."""
    a, b = as_utc(start), as_utc(end)
    if b <= a:
        return []
    ranges = [(a - timedelta(days=days), b - timedelta(days=days)) for days in WINDOWS.values()]
    ranges.append((a, b))
    return ranges


_SOURCES = {
    "sessions": ("sessions", "scheduled_start", ""),
    "events": (
        "tutor_events",
        "event_timestamp",
        f" AND event_type IN {RELEVANT_EVENTS_SQL}",
    ),
}


def crossed_tutors(conn: sa.Connection, start: datetime, end: datetime) -> list[str]:
    """Tutors with a session or relevant event on a window edge crossed in the move of the
    as-of instant from `start` to `end` (sorted). One statement: a UNION of range scans."""
    ranges = edge_ranges(start, end)
    if not ranges:
        return []
    pg = is_postgres(conn)
    parts: list[str] = []
    params: dict[str, object] = {}
    for name, (table, column, extra) in _SOURCES.items():
        for i, (lo, hi) in enumerate(ranges):
            params[f"{name}_lo{i}"] = lo if pg else _loose(lo, -1)
            params[f"{name}_hi{i}"] = hi if pg else _loose(hi, 1)
            ts = "" if pg else f", {column} AS ts"
            parts.append(
                f"SELECT tutor_id{ts} FROM {table} WHERE {column} >= :{name}_lo{i} "
                f"AND {column} < :{name}_hi{i}{extra}"
            )
    if pg:
        sql = " UNION ".join(parts)
        return sorted(str(r[0]) for r in conn.execute(sa.text(sql), params))
    # SQLite keeps ISO-8601 text in any offset and with `T` or a space: narrow by day in SQL,
    # then apply the exact bounds on the parsed instants
    rows = conn.execute(sa.text(" UNION ALL ".join(parts)), params).all()
    frame = pl.DataFrame(
        [(str(r[0]), str(r[1])) for r in rows],
        schema={"tutor_id": pl.String, "ts": pl.String},
        orient="row",
    ).with_columns(parse_utc(pl.col("ts")).alias("ts"))
    hit = pl.lit(False)
    for lo, hi in ranges:
        hit = hit | ((pl.col("ts") >= lo) & (pl.col("ts") < hi))
    return sorted(frame.filter(hit)["tutor_id"].unique().to_list())


def _loose(moment: datetime, days: int) -> str:
    return (as_utc(moment) + timedelta(days=days)).strftime("%Y-%m-%d")
