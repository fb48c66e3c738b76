"""The entries a consumer group holds unacknowledged, one by one: which consumer, idle how
long, delivered how often, and the tutor each is about."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from tutormax_cli import keys
from tutormax_cli.stream import entries
from tutormax_cli.stream.entries import text
from tutormax_cli.stream.events import tutor_of
from tutormax_cli.stream.groups import find_group


@dataclass(frozen=True)
class PendingEntry:
    """One entry delivered to a consumer and not acknowledged, as XPENDING reports it."""

    id: str
    consumer: str
    idle_s: float
    deliveries: int
    tutor_id: str | None

    def as_dict(self) -> dict[str, Any]:
        """The JSON object of `pending --entries --json`."""
        return {
            "id": self.id,
            "consumer": self.consumer,
            "idle_s": self.idle_s,
            "deliveries": self.deliveries,
            "tutor_id": self.tutor_id,
        }


def pending_entries(
    client: redis.Redis,
    stream: str = keys.ENRICHMENT_STREAM,
    group: str = keys.METRICS_GROUP,
    *,
    consumer: str | None = None,
    limit: int = 100,
) -> list[PendingEntry]:
    """The oldest `limit` pending entries (of one consumer), with the tutor each is about;
    empty when the group does not exist."""
    if find_group(client, stream, group) is None:
        return []
    rows = entries.pel(client, stream, group, "-", limit, consumer)
    pipe = client.pipeline(transaction=False)
    for row in rows:
        pipe.xrange(stream, row["message_id"], row["message_id"], count=1)
    bodies = pipe.execute() if rows else []
    out = []
    for row, body in zip(rows, bodies, strict=True):
        out.append(
            PendingEntry(
                id=str(text(row["message_id"])),
                consumer=str(text(row["consumer"])),
                idle_s=round(int(row["time_since_delivered"]) / 1000, 3),
                deliveries=int(row["times_delivered"]),
                tutor_id=tutor_of(body[0][1]) if body else None,
            )
        )
    return out
