"""`POST /api/sessions/{id}/complete`: one completion through the ingest stage's steps.

validate → enrich → persist (session, then its feedback, in one transaction) → commit →
publish to the enrichment stream. The upserts make the request idempotent on `session_id`:
posting it again changes no row and publishes again, which is also how a client recovers
from a 503 (committed, not published): the metrics worker is idempotent too.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import polars as pl
import redis
import sqlalchemy as sa

from tutormax_cli.api.models import SessionCompletion
from tutormax_cli.errors import TutormaxError

FEEDBACK_NAMESPACE = uuid.UUID("6f1d3c2a-8b0e-4c55-9d7a-2b51f0e9c4a1")
"""uuid5 namespace of the feedback ids the API derives from a session id."""


@dataclass(frozen=True)
class FieldError:
    """One failed rule: where in the body (`loc`, FastAPI's convention) and what is wrong."""

    loc: tuple[str | int, ...]
    msg: str
    type: str = "value_error"

    def as_dict(self) -> dict[str, Any]:
        """An item of a 422 body's `detail`."""
        return {"loc": list(self.loc), "msg": self.msg, "type": self.type}


class InvalidCompletion(TutormaxError):
    """The body breaks the contract; nothing was written."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in errors))
        self.errors = list(errors)


class NotPublished(TutormaxError):
    """The rows are committed but the stream did not take the entry: retry the request."""


def _text(value: Any) -> Any:
    """A JSON-ready value for the ingest readers (timestamps as ISO-8601 with their offset)."""
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _frame(record: dict[str, Any]) -> pl.DataFrame:
    from tutormax_cli.pipeline.readers import records_frame

    return records_frame([{k: _text(v) for k, v in record.items() if v is not None}])


def _errors(rejects: pl.DataFrame, prefix: tuple[str, ...]) -> list[FieldError]:
    from tutormax_cli.pipeline.validate import ERRORS

    out = []
    for item in rejects.get_column(ERRORS).to_list()[0] or []:
        field = item["field"]
        loc = (*prefix, field) if field else prefix
        out.append(FieldError(loc, str(item["message"])))
    return out


def _feedback_record(
    conn: sa.Connection, session_id: str, body: SessionCompletion, now: datetime
) -> dict[str, Any]:
    """The feedback row: the body's fields, its ids from the session, the defaults filled."""
    from tutormax_cli.pipeline.validate import DatabaseReferences

    assert body.feedback is not None
    record = body.feedback.model_dump()
    if record["feedback_id"] is not None:
        from tutormax_cli.store.schema import metadata

        table = metadata.tables["student_feedback"]
        held = conn.execute(
            sa.select(table.c.session_id).where(table.c.feedback_id == record["feedback_id"])
        ).scalar()
        if held is not None and held != session_id:
            raise InvalidCompletion(
                [FieldError(("body", "feedback", "feedback_id"),
                            f"{record['feedback_id']!r} is the feedback of session {held!r}")]
            )  # fmt: skip
    else:
        owners = DatabaseReferences(conn).owners("student_feedback", "session_id", [session_id])
        record["feedback_id"] = owners.get(session_id) or str(
            uuid.uuid5(FEEDBACK_NAMESPACE, session_id)
        )
    if record["is_first_session"] is None:
        record["is_first_session"] = body.session_number == 1
    if record["submitted_at"] is None:
        record["submitted_at"] = now
    record.update(session_id=session_id, student_id=body.student_id, tutor_id=body.tutor_id)
    return record


def complete_session(
    engine: sa.Engine,
    client: redis.Redis,
    session_id: str,
    body: SessionCompletion,
    *,
    stream: str,
    now: datetime | None = None,
) -> str | None:
    """Validate, persist and publish one completion; the feedback id written, if any.

    Raises `InvalidCompletion` (nothing written) or `NotPublished` (committed, not published).
    """
    from tutormax_cli.errors import RedisUnavailable
    from tutormax_cli.pipeline.enrich import enrich
    from tutormax_cli.pipeline.persist import persist
    from tutormax_cli.pipeline.publish import publish
    from tutormax_cli.pipeline.validate import DatabaseReferences, validate

    now = now or datetime.now(UTC)
    if body.session_id is not None and body.session_id != session_id:
        raise InvalidCompletion(
            [FieldError(("body", "session_id"), f"{body.session_id!r} is not the path's id")]
        )
    record = body.model_dump(exclude={"feedback", "session_id"})
    record["session_id"] = session_id
    feedback_id: str | None = None
    with engine.connect() as conn:
        sessions, rejects = validate(
            "sessions", _frame(record), DatabaseReferences(conn), now=now, detail=True
        )
        if rejects.height:
            errors = _errors(rejects, ("body",))
            raise InvalidCompletion(
                [FieldError(("path", "session_id"), e.msg) if e.loc == ("body", "session_id")
                 else e for e in errors]
            )  # fmt: skip
        sessions = enrich("sessions", sessions)
        persist(conn, "sessions", sessions)
        if body.feedback is not None:
            fb = _feedback_record(conn, session_id, body, now)
            feedback, rejects = validate(
                "student_feedback", _frame(fb), DatabaseReferences(conn), now=now, detail=True
            )
            if rejects.height:
                conn.rollback()
                raise InvalidCompletion(_errors(rejects, ("body", "feedback")))
            persist(conn, "student_feedback", enrich("student_feedback", feedback))
            feedback_id = fb["feedback_id"]
        conn.commit()
    try:
        publish(client, sessions, stream=stream)
    except RedisUnavailable as exc:
        raise NotPublished(
            f"session {session_id} is saved but was not published ({exc}); "
            "retry the request, it is idempotent"
        ) from None
    return feedback_id
