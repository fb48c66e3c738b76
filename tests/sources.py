"""Run the metric spec over every source of partials (`store/sources.py`).

The hand-computed tests and the properties call `compute(sessions, feedback, events, as_of)`
with rows as dicts. `DatabaseCompute` writes those rows into a real database — an SQLite file,
a PostgreSQL database, a PostgreSQL database with cumulative partials enabled — and computes
the snapshot through the recompute path of that source (tutor list, partials, `finalize`), so
the SQL twins of the partials are held to the same literal numbers as the polars engine.

SQLite gets the timestamps as ISO-8601 text in the offset they were written in (as other
programs write them); PostgreSQL gets them as `timestamptz`. Session ids are renumbered (the
property draws ids PostgreSQL cannot store, e.g. with NUL); feedback follows its session.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from tutormax_cli import recompute as rc
from tutormax_cli.metrics.tiers import DEFAULT_TIERS, TierRules
from tutormax_cli.metrics.windows import as_utc
from tutormax_cli.store.schema import CONTRACT_TABLES
from tutormax_cli.store.sources import PartialsSource

Rows = dict[tuple[str, str], dict[str, Any]]

DATABASE_SOURCES = ("sqlite", "pg_sql", "pg_cumulative")
"""The sources that read a database: raw rows (SQLite), SQL partials, cumulative partials."""


def _stamp(value: datetime | None, pg: bool) -> datetime | str | None:
    if value is None or pg:
        return value
    return value.isoformat()  # text in its own offset, as any writer may have stored it


class DatabaseCompute:
    """`compute(...)` through a database and one source of partials."""

    def __init__(self, engine: sa.Engine, source: Callable[[], PartialsSource]) -> None:
        self.engine = engine
        self.source = source
        self.pg = engine.dialect.name == "postgresql"

    def empty(self) -> None:
        with self.engine.begin() as conn:
            if self.pg:
                names = ", ".join(f'"{t.name}"' for t in CONTRACT_TABLES)
                conn.execute(sa.text(f"TRUNCATE {names}"))
            else:
                for table in CONTRACT_TABLES:
                    conn.execute(sa.text(f'DELETE FROM "{table.name}"'))

    def write(
        self,
        sessions: Sequence[Mapping[str, Any]],
        feedback: Sequence[Mapping[str, Any]],
        events: Sequence[Mapping[str, Any]],
    ) -> None:
        pg = self.pg
        ids = {s["session_id"]: f"S{i}" for i, s in enumerate(sessions)}
        tutor_of = {s["session_id"]: s["tutor_id"] for s in sessions}
        session_rows = [
            {
                **{k: s[k] for k in ("tutor_id", "session_number", "no_show", "engagement_score")},
                "session_id": ids[s["session_id"]],
                "scheduled_start": _stamp(s["scheduled_start"], pg),
                "actual_start": _stamp(s["actual_start"], pg),
                "tutor_initiated_reschedule": s["tutor_initiated_reschedule"],
                "late_start_minutes": s["late_start_minutes"],
                "learning_objectives_met": s["learning_objectives_met"],
            }
            for s in sessions
        ]
        feedback_rows = [
            {
                "feedback_id": f"F{i}",
                "session_id": ids.get(f["session_id"], f"orphan-{i}"),
                "tutor_id": tutor_of.get(f["session_id"], "nobody"),
                "overall_rating": f["overall_rating"],
                "submitted_at": _stamp(datetime(2026, 1, 1, tzinfo=UTC), pg),
            }
            for i, f in enumerate(feedback)
        ]
        event_rows = [
            {
                "event_id": f"E{i}",
                "tutor_id": e["tutor_id"],
                "event_type": e["event_type"],
                "event_timestamp": _stamp(e["event_timestamp"], pg),
                "metadata": None
                if e["response_time_minutes"] is None
                else json.dumps({"response_time_minutes": e["response_time_minutes"]}),
            }
            for i, e in enumerate(events)
        ]
        meta = "CAST(:metadata AS jsonb)" if pg else ":metadata"
        statements = (
            (
                "INSERT INTO sessions (session_id, tutor_id, student_id, session_number, "
                "scheduled_start, actual_start, duration_minutes, subject, session_type, "
                "tutor_initiated_reschedule, no_show, late_start_minutes, engagement_score, "
                "learning_objectives_met, technical_issues) VALUES (:session_id, :tutor_id, "
                "'ST', :session_number, :scheduled_start, :actual_start, 60, 'Math', '1-on-1', "
                ":tutor_initiated_reschedule, :no_show, :late_start_minutes, :engagement_score, "
                ":learning_objectives_met, false)",
                session_rows,
            ),
            (
                "INSERT INTO student_feedback (feedback_id, session_id, student_id, tutor_id, "
                "overall_rating, is_first_session, submitted_at) VALUES (:feedback_id, "
                ":session_id, 'ST', :tutor_id, :overall_rating, false, :submitted_at)",
                feedback_rows,
            ),
            (
                "INSERT INTO tutor_events (event_id, tutor_id, event_type, event_timestamp, "
                f"metadata) VALUES (:event_id, :tutor_id, :event_type, :event_timestamp, {meta})",
                event_rows,
            ),
        )
        with self.engine.begin() as conn:
            for sql, rows in statements:
                if rows:
                    conn.execute(sa.text(sql), rows)

    def __call__(
        self,
        sessions: Sequence[Mapping[str, Any]],
        feedback: Sequence[Mapping[str, Any]] = (),
        events: Sequence[Mapping[str, Any]] = (),
        as_of: datetime = datetime(2026, 3, 2, 14, 5, tzinfo=UTC),
        *,
        engine_tiers: TierRules | None = None,
        reference_rules: Mapping[str, Any] | None = None,
        tutors: Iterable[str] | None = None,
    ) -> Rows:
        self.empty()
        self.write(sessions, feedback, events)
        t = as_utc(as_of)
        source = self.source()
        with self.engine.connect() as conn:
            listed = source.snapshot_tutors(conn, t)
            chosen = None if tutors is None else list(tutors)
            metrics = rc._snapshot(
                conn, source, t, chosen, engine_tiers or DEFAULT_TIERS, seconds={}
            )
        rows = metrics.to_dicts()
        missing = {r["tutor_id"] for r in rows} - set(listed)
        assert not missing, f"{source.name} did not list tutors with rows: {missing}"
        out = {(r["tutor_id"], r["window"]): r for r in rows}
        assert len(out) == len(rows), "duplicate (tutor_id, window) rows"
        return out


def source_compute(request: pytest.FixtureRequest, name: str) -> DatabaseCompute:
    """The `DatabaseCompute` of one of `DATABASE_SOURCES` (fixtures `<name>_source` in
    conftest.py: a session's SQLite file, its PostgreSQL database, a second one with cumulative
    partials enabled)."""
    compute: DatabaseCompute = request.getfixturevalue(f"{name}_source")
    return compute
