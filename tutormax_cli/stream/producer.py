"""Putting entries on a stream: pipelined XADD in batches, and session envelopes from the
database, so operators and tests can drive the worker the way TutorMax producers do."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import redis
import sqlalchemy as sa

from tutormax_cli.store.schema import sessions
from tutormax_cli.stream.events import envelope

BATCH = 1000


def publish(client: redis.Redis, stream: str, entries: Iterable[dict[str, str]]) -> list[str]:
    """XADD every entry, pipelined in batches; returns the new entry IDs in order."""
    ids: list[str] = []
    pipe = client.pipeline(transaction=False)
    pending = 0
    for fields in entries:
        pipe.xadd(stream, fields)  # type: ignore[arg-type]
        pending += 1
        if pending == BATCH:
            ids.extend(i.decode() for i in pipe.execute())
            pending = 0
    if pending:
        ids.extend(i.decode() for i in pipe.execute())
    return ids


def json_native(row: dict[str, Any]) -> dict[str, Any]:
    """A row with datetimes as ISO-8601 UTC text, so the envelope checksum survives a JSON trip."""
    return {k: _iso(v) if isinstance(v, datetime) else v for k, v in row.items()}


def _iso(value: datetime) -> str:
    """UTC ISO-8601; SQLite hands back naive datetimes that are UTC already."""
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC).isoformat()


def session_envelopes(
    conn: sa.Connection, since: datetime, *, channel: str
) -> Iterator[dict[str, str]]:
    """One envelope per session created or updated at or after `since`, oldest first."""
    query = (
        sa.select(sessions)
        .where(sa.or_(sessions.c.created_at >= since, sessions.c.updated_at >= since))
        .order_by(sessions.c.updated_at, sessions.c.session_id)
    )
    for row in conn.execute(query).mappings():
        yield envelope(json_native(dict(row)), channel=channel, source="replay")
