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
from datetime import datetime, timedelta
from typing import Any

import polars as pl
import sqlalchemy as sa

from tutormax_cli.metrics import frames
from tutormax_cli.metrics.windows import as_utc
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


def _session_filter(pg: bool, has_tutors: bool) -> str:
    where = "s.scheduled_start >= :start AND s.scheduled_start < :end"
    if has_tutors:
        where += (
            " AND s.tutor_id = ANY(:tutors)"
            if pg
            else " AND s.tutor_id IN (SELECT value FROM json_each(:tutors))"
        )
    return where


def _queries(pg: bool, has_tutors: bool) -> dict[str, str]:
    where = _session_filter(pg, has_tutors)
    sessions = f"SELECT {', '.join(_SESSION_COLS)} FROM sessions s WHERE {where}"
    feedback = (
        "SELECT f.session_id, f.overall_rating FROM student_feedback f "
        f"JOIN sessions s ON s.session_id = f.session_id WHERE {where}"
    )
    if pg:
        rt = (
            "CASE WHEN e.event_type = 'message_response' AND "
            "jsonb_typeof(e.metadata::jsonb -> 'response_time_minutes') = 'number' "
            "THEN (e.metadata::jsonb ->> 'response_time_minutes')::float8 END"
        )
    else:
        rt = (
            "CASE WHEN e.event_type = 'message_response' AND json_valid(e.metadata) AND "
            "json_type(e.metadata, '$.response_time_minutes') IN ('integer', 'real') "
            "THEN json_extract(e.metadata, '$.response_time_minutes') END"
        )
    ev_where = (
        "e.event_timestamp >= :start AND e.event_timestamp < :end "
        "AND e.event_type IN ('login', 'message_response')"
    )
    if has_tutors:
        ev_where += (
            " AND e.tutor_id = ANY(:tutors)"
            if pg
            else " AND e.tutor_id IN (SELECT value FROM json_each(:tutors))"
        )
    events = (
        f"SELECT e.tutor_id, e.event_type, {{ts:e.event_timestamp}} AS event_timestamp, "
        f"{rt} AS response_time_minutes FROM tutor_events e WHERE {ev_where}"
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
    raw: Any = conn.connection.dbapi_connection
    assert raw is not None
    with raw.cursor() as cursor:
        bound = cursor.mogrify(sa.text(sql).compile(dialect=conn.dialect).string, params)
        buffer = io.BytesIO()
        cursor.copy_expert(
            f"COPY ({bound.decode()}) TO STDOUT WITH (FORMAT csv, HEADER true)", buffer
        )
    schema = _SCHEMAS[name]
    raw_schema = {
        col: (pl.Int64 if col in _TS_COLS[name] else pl.Int8 if dtype == pl.Boolean else dtype)
        for col, dtype in schema.items()
    }
    buffer.seek(0)
    df = pl.read_csv(buffer, schema=raw_schema)
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
    """A loose text bound, a day beyond `moment`: SQLite holds ISO-8601 text in any offset and
    with `T` or a space, so SQL narrows by day and polars applies the exact bound after parsing.
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
        params = {"start": _sqlite_bound(start, -1), "end": _sqlite_bound(end, 1)}
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
