"""Session completions through the ingest stage's steps, a batch at a time.

validate → enrich → persist (sessions, then their feedback, in one transaction) → commit →
publish to the enrichment stream. `ingest_completions` takes every completion the API gathered
in one batch (`api.batcher`) or received in one `POST /api/sessions:batch`, and runs each step
once for all of them: one `validate()` of the sessions' frame and one of the feedback frame (so
the contract's rules stay in `pipeline.validate`, with no per-row copy here), one upsert of
sessions and one of feedback, one commit, one pipelined XADD. Each completion then gets its
own `Outcome`: a bad row never fails the good rows beside it, and a session whose feedback is
invalid writes neither.

The upserts make every completion idempotent on `session_id`: posting it again changes no row
and publishes again, which is also how a client recovers from a 503 (committed, not
published): the metrics worker is idempotent too.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import polars as pl
import redis
import sqlalchemy as sa

from tutormax_cli.api.models import SessionCompletion
from tutormax_cli.errors import TutormaxError
from tutormax_cli.metrics.partials import FIRST_SESSION_NUMBER
from tutormax_cli.text import NOT_UTF8, NOT_UTF8_TYPE, is_utf8_text

log = logging.getLogger("tutormax.api")

if TYPE_CHECKING:
    from tutormax_cli.pipeline.validate import DatabaseReferences

FEEDBACK_NAMESPACE = uuid.UUID("6f1d3c2a-8b0e-4c55-9d7a-2b51f0e9c4a1")
"""uuid5 namespace of the feedback ids the API derives from a session id."""

ACCEPTED, INVALID, REFUSED, UNAVAILABLE = 202, 422, 409, 503


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


@dataclass(frozen=True)
class Outcome:
    """What became of one completion: `status` is the HTTP status it is answered with (202
    accepted, 422 `errors`, 409 refused by the database, 503 an outage, `detail` says which)."""

    status: int
    feedback_id: str | None = None
    errors: tuple[FieldError, ...] = ()
    detail: str | None = None

    def raise_for_status(self) -> None:
        """Raise what the single-completion route answers for a failed outcome."""
        if self.status == INVALID:
            raise InvalidCompletion(self.errors)
        if self.status != ACCEPTED:
            raise Failed(self.status, self.detail or "")


class Failed(TutormaxError):
    """A completion answered 409 or 503; `status` says which."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


@dataclass
class _Item:
    """One completion while its batch is being ingested."""

    index: int
    session_id: str
    body: SessionCompletion
    outcome: Outcome | None = None
    feedback: dict[str, Any] | None = field(default=None, repr=False)


def _text(value: Any) -> Any:
    """A JSON-ready value for the ingest readers (timestamps as ISO-8601 with their offset)."""
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _frame(records: list[dict[str, Any]], lines: list[int]) -> pl.DataFrame:
    from tutormax_cli.pipeline.readers import records_frame

    rows = [{k: _text(v) for k, v in r.items() if v is not None} for r in records]
    return records_frame(rows, lines=lines)


def _rejected(rejects: pl.DataFrame, prefix: tuple[str, ...]) -> dict[int, list[FieldError]]:
    """Each rejected row's failures by `_line` (the item's index), located under `prefix`."""
    from tutormax_cli.pipeline.readers import LINE
    from tutormax_cli.pipeline.validate import ERRORS

    out: dict[int, list[FieldError]] = {}
    if rejects.is_empty():  # as almost always: no query for nothing
        return out
    for line, items in rejects.select(LINE, ERRORS).iter_rows():
        errors = []
        for item in items or []:
            name = item["field"]
            loc = (*prefix, name) if name else prefix
            if loc == ("body", "session_id"):  # the session id is the path's
                loc = ("path", "session_id")
            errors.append(FieldError(loc, str(item["message"])))
        out[int(line)] = errors or [FieldError(prefix, "rejected")]
    return out


def _rounds(items: Sequence[_Item]) -> list[list[_Item]]:
    """The items split so that no round holds one session id (or feedback id) twice, in order:
    a later post of the same session goes in a later round of the same transaction, where it
    overwrites the earlier one exactly as two requests in a row would (last write wins). With
    no repeated ids, as almost always, this is one round."""
    last: dict[tuple[str, str], int] = {}
    rounds: list[list[_Item]] = []
    for item in items:
        keys = [("s", item.session_id)]
        fb = item.body.feedback
        if fb is not None and fb.feedback_id is not None:
            keys.append(("f", fb.feedback_id))
        n = max((last[k] + 1 for k in keys if k in last), default=0)
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(item)
        for k in keys:
            last[k] = n
    return rounds


def _feedback_records(
    conn: sa.Connection, items: Sequence[_Item], now: datetime, refs: DatabaseReferences
) -> None:
    """Each item's feedback row: the body's fields, its ids from the session, the defaults
    filled; two lookups for the whole round (the owners of the sessions' feedback through the
    round's `refs`, whose cache answers the feedback's validation of the same session ids). A
    feedback id that belongs to another session is a 422 on that item."""
    from tutormax_cli.store.schema import metadata

    given = {i.body.feedback.feedback_id for i in items if i.body.feedback.feedback_id}  # type: ignore[union-attr]
    held: dict[str, str] = {}
    if given:
        table = metadata.tables["student_feedback"]
        query = sa.select(table.c.feedback_id, table.c.session_id).where(
            table.c.feedback_id.in_(sorted(given))
        )
        held = {str(f): str(s) for f, s in conn.execute(query)}
    derive = [i.session_id for i in items if i.body.feedback.feedback_id is None]  # type: ignore[union-attr]
    owners = refs.owners("student_feedback", "session_id", derive) if derive else {}
    for item in items:
        body = item.body
        assert body.feedback is not None
        record = body.feedback.model_dump()
        feedback_id = record["feedback_id"]
        if feedback_id is not None:
            holder = held.get(feedback_id)
            if holder is not None and holder != item.session_id:
                item.outcome = Outcome(INVALID, errors=(
                    FieldError(("body", "feedback", "feedback_id"),
                               f"{feedback_id!r} is the feedback of session {holder!r}"),
                ))  # fmt: skip
                continue
        else:
            record["feedback_id"] = owners.get(item.session_id) or str(
                uuid.uuid5(FEEDBACK_NAMESPACE, item.session_id)
            )
        if record["is_first_session"] is None:
            record["is_first_session"] = body.session_number == FIRST_SESSION_NUMBER
        if record["submitted_at"] is None:
            record["submitted_at"] = now
        record.update(
            session_id=item.session_id, student_id=body.student_id, tutor_id=body.tutor_id
        )
        item.feedback = record


def _ingest_round(
    conn: sa.Connection, items: Sequence[_Item], now: datetime
) -> pl.DataFrame | None:
    """Validate, enrich and persist one round inside the caller's transaction; the accepted
    sessions' enriched frame (to publish after the commit), None when none were."""
    from tutormax_cli.pipeline.enrich import enrich
    from tutormax_cli.pipeline.persist import persist_tables
    from tutormax_cli.pipeline.readers import LINE
    from tutormax_cli.pipeline.validate import DatabaseReferences, validate

    records = []
    for item in items:
        record = item.body.model_dump(exclude={"feedback", "session_id"})
        record["session_id"] = item.session_id
        records.append(record)
    by_line = {item.index: item for item in items}
    # what the round looked up, for its later lookups: nothing is written until they are done
    cache: dict[tuple[str, str], dict[str, str | None]] = {}
    sessions, rejects = validate(
        "sessions", _frame(records, [i.index for i in items]),
        DatabaseReferences(conn, cache=cache), now=now, detail=True,
    )  # fmt: skip
    for line, errors in _rejected(rejects, ("body",)).items():
        by_line[line].outcome = Outcome(INVALID, errors=tuple(errors))
    with_feedback = [i for i in items if i.outcome is None and i.body.feedback is not None]
    if with_feedback:
        _feedback_records(conn, with_feedback, now, DatabaseReferences(conn, cache=cache))
        rows = [i for i in with_feedback if i.feedback is not None]
        if rows:
            arriving = {"sessions": [i.session_id for i in rows]}
            feedback, fb_rejects = validate(
                "student_feedback", _frame([i.feedback for i in rows], [i.index for i in rows]),  # type: ignore[misc]
                DatabaseReferences(conn, arriving, cache=cache), now=now, detail=True,
            )  # fmt: skip
            for line, errors in _rejected(fb_rejects, ("body", "feedback")).items():
                by_line[line].outcome = Outcome(INVALID, errors=tuple(errors))
            kept = [i.index for i in rows if i.outcome is None]
            if len(kept) < feedback.height:
                feedback = feedback.filter(pl.col(LINE).is_in(kept))
        else:
            feedback = None
    else:
        feedback = None
    ok = [i.index for i in items if i.outcome is None]
    if not ok:
        return None
    if len(ok) < sessions.height:  # a session whose feedback was refused writes neither
        sessions = sessions.filter(pl.col(LINE).is_in(ok))
    sessions = enrich("sessions", sessions)
    tables = [("sessions", sessions)]
    if feedback is not None and feedback.height:
        # not enriched: its derived fields are neither stored nor published
        tables.append(("student_feedback", feedback))
    persist_tables(conn, tables)  # sessions first: the feedback references them
    for item in items:
        if item.outcome is None:
            fb = item.feedback
            item.outcome = Outcome(ACCEPTED, feedback_id=fb["feedback_id"] if fb else None)
    return sessions


def _refusals(engine: sa.Engine) -> tuple[type[BaseException], ...]:
    dbapi: Any = engine.dialect.loaded_dbapi
    return (sa.exc.IntegrityError, sa.exc.DataError, dbapi.IntegrityError, dbapi.DataError)


def _write(engine: sa.Engine, items: list[_Item], now: datetime) -> list[pl.DataFrame]:
    """Every round of `items` in one transaction and one commit; the frames to publish.

    A batch the database refuses (a race the validator cannot see, e.g. two processes posting
    one feedback id for two sessions) is split in halves until the refused completion is alone:
    it is answered 409 and every other one is written."""
    from tutormax_cli.store.db import describe_error

    for item in items:
        item.outcome = None
        item.feedback = None
    try:
        with engine.connect() as conn:
            frames = [f for r in _rounds(items) if (f := _ingest_round(conn, r, now)) is not None]
            conn.commit()
        return frames
    except _refusals(engine) as exc:
        if len(items) == 1:
            # not an outage: retrying the same body would be refused again; nothing was written
            detail = f"the database refused the row: {describe_error(exc)}"
            items[0].outcome = Outcome(REFUSED, detail=detail)
            return []
        half = len(items) // 2
        return _write(engine, items[:half], now) + _write(engine, items[half:], now)


def ingest_completions(
    engine: sa.Engine,
    client: redis.Redis,
    completions: Sequence[tuple[str, SessionCompletion]],
    *,
    stream: str,
    now: datetime | None = None,
) -> list[Outcome]:
    """Validate, persist and publish a batch of `(session_id, body)`; one outcome for each, in
    order. A database outage is a 503 for every completion of the batch; a Redis outage after
    the commit is a 503 "saved but not published, retry" for every accepted one."""
    from tutormax_cli.errors import RedisUnavailable
    from tutormax_cli.pipeline.publish import publish
    from tutormax_cli.store.db import describe_error

    now = now or datetime.now(UTC)
    items = [_Item(n + 1, sid, body) for n, (sid, body) in enumerate(completions)]
    todo = []
    for item in items:
        if not is_utf8_text(item.session_id):  # a caller's id the server decoded with escapes
            error = FieldError(("path", "session_id"), NOT_UTF8, NOT_UTF8_TYPE)
            item.outcome = Outcome(INVALID, errors=(error,))
        elif item.body.session_id is not None and item.body.session_id != item.session_id:
            wrong = f"{item.body.session_id!r} is not the path's id"
            error = FieldError(("body", "session_id"), wrong)
            item.outcome = Outcome(INVALID, errors=(error,))
        else:
            todo.append(item)
    frames: list[pl.DataFrame] = []
    if todo:
        try:
            frames = _write(engine, todo, now)
        # the driver's own errors too: the bulk writes run on the raw cursor (sqlite3's
        # "database is locked" from executemany), which SQLAlchemy never wraps; nothing was
        # committed (the connection rolls back as it closes)
        except (sa.exc.SQLAlchemyError, engine.dialect.loaded_dbapi.Error) as exc:
            log.warning("database error: %s", describe_error(exc))  # one line, no traceback
            detail = f"database unavailable: {describe_error(exc)}"
            for item in todo:
                item.outcome = Outcome(UNAVAILABLE, detail=detail)
    if frames:
        try:
            publish(client, pl.concat(frames, how="diagonal_relaxed"), stream=stream)
        except RedisUnavailable as exc:
            for item in items:
                if item.outcome is not None and item.outcome.status == ACCEPTED:
                    item.outcome = Outcome(UNAVAILABLE, detail=(
                        f"session {item.session_id} is saved but was not published ({exc}); "
                        "retry the request, it is idempotent"
                    ))  # fmt: skip
    return [item.outcome or Outcome(UNAVAILABLE, detail="not processed") for item in items]
