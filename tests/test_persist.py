"""`pipeline.persist`: small frames on PostgreSQL go as `INSERT … VALUES` in one round trip,
larger ones through `store.save`'s COPY; both must store the same values and skip unchanged
rows, on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest
import sqlalchemy as sa

from tests.helpers import recent_sample
from tutormax_cli.pipeline.enrich import enrich
from tutormax_cli.pipeline.persist import SMALL_UPSERT, persist_tables
from tutormax_cli.pipeline.readers import records_frame
from tutormax_cli.pipeline.validate import DatabaseReferences, validate
from tutormax_cli.store.seed import save_tables

START = datetime(2026, 11, 30, 9, 30, 15, 250_000, tzinfo=UTC)


def _rows(n: int, tutor: str, student: str, subject: str) -> tuple[list[dict[str, Any]], ...]:
    sessions, feedback = [], []
    for i in range(n):
        start = START - timedelta(hours=i)
        sessions.append({
            "session_id": f"P-{i}", "tutor_id": tutor, "student_id": student,
            "session_number": 1 + i % 3, "scheduled_start": start.isoformat(),
            "actual_start": None if i % 4 else (start + timedelta(minutes=2)).isoformat(),
            "duration_minutes": "60", "subject": subject, "session_type": "1-on-1",
            "tutor_initiated_reschedule": "false", "no_show": "false",
            "late_start_minutes": "2", "engagement_score": None if i % 2 else "0.25",
            "learning_objectives_met": "true", "technical_issues": "false",
        })  # fmt: skip
        feedback.append({
            "feedback_id": f"PF-{i}", "session_id": f"P-{i}", "student_id": student,
            "tutor_id": tutor, "overall_rating": str(1 + i % 5), "is_first_session": "false",
            "improvement_areas": '["pacing", "it\'s \\"quoted\\""]' if i % 2 else "[]",
            "free_text_feedback": "naïve — O'Brien said \\ ok", "would_recommend": "true",
            "submitted_at": (start + timedelta(hours=1)).isoformat(),
        })  # fmt: skip
    return sessions, feedback


def _stored(engine: sa.Engine, table: str, key: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT * FROM {table} ORDER BY {key}")).mappings()
        return [dict(r) for r in rows]


@pytest.mark.parametrize("n", [3, SMALL_UPSERT + 1])
def test_small_and_large_frames_store_the_same_and_skip_unchanged_rows(
    engine: sa.Engine, n: int
) -> None:
    tables = recent_sample(tutors=1)
    save_tables(engine, {k: v for k, v in tables.items() if k in ("tutors", "students")})
    tutor = tables["tutors"]["tutor_id"][0]
    student = tables["students"]["student_id"][0]

    def write(subject: str) -> None:
        sessions, feedback = _rows(n, tutor, student, subject)
        with engine.connect() as conn:
            refs = DatabaseReferences(conn, {"sessions": [s["session_id"] for s in sessions]})
            s_valid, s_bad = validate("sessions", records_frame(sessions), refs)
            f_valid, f_bad = validate("student_feedback", records_frame(feedback), refs)
            assert s_bad.is_empty() and f_bad.is_empty(), (s_bad, f_bad)
            persist_tables(conn, [("sessions", enrich("sessions", s_valid)),
                                  ("student_feedback", f_valid)])  # fmt: skip
            conn.commit()

    write("Algebra")
    sessions = _stored(engine, "sessions", "session_id")
    feedback = _stored(engine, "student_feedback", "feedback_id")
    assert len(sessions) == len(feedback) == n
    by_id = {s["session_id"]: s for s in sessions}
    first = by_id["P-0"]
    assert first["subject"] == "Algebra" and first["engagement_score"] == 0.25
    assert _utc(first["scheduled_start"]) == START
    assert _utc(first["actual_start"]) == START + timedelta(minutes=2)
    assert by_id["P-1"]["actual_start"] is None and by_id["P-1"]["engagement_score"] is None
    assert bool(first["no_show"]) is False and bool(first["learning_objectives_met"]) is True
    fb = {f["feedback_id"]: f for f in feedback}
    assert _list(fb["PF-1"]["improvement_areas"]) == ["pacing", 'it\'s "quoted"']
    assert _list(fb["PF-0"]["improvement_areas"]) == []
    assert fb["PF-0"]["free_text_feedback"] == "naïve — O'Brien said \\ ok"
    assert _utc(fb["PF-0"]["submitted_at"]) == START + timedelta(hours=1)

    write("Algebra")  # the same rows again: nothing rewritten
    assert _stored(engine, "sessions", "session_id") == sessions
    write("Geometry")  # a changed column: rewritten, with a new updated_at
    changed = {s["session_id"]: s for s in _stored(engine, "sessions", "session_id")}
    assert {s["subject"] for s in changed.values()} == {"Geometry"}
    assert changed["P-0"]["updated_at"] != first["updated_at"]


def _utc(value: Any) -> datetime:
    when = datetime.fromisoformat(value) if isinstance(value, str) else value  # SQLite: text
    assert isinstance(when, datetime)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _list(value: Any) -> list[str]:
    if isinstance(value, str):  # SQLite stores JSON text
        import json

        return list(json.loads(value))
    return list(value)


def test_an_empty_frame_writes_nothing(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        empty = pl.DataFrame(schema={"session_id": pl.String})
        assert persist_tables(conn, [("sessions", empty)]) == 0
