"""The feed of metric updates (`tutormax:metrics:updated`): one entry per recomputed tutor after
each flush, read back for `watch` and the API's live feed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import redis

from tutormax_cli import keys
from tutormax_cli.metrics.windows import WINDOWS
from tutormax_cli.stream import entries
from tutormax_cli.stream.entries import PAGE, Entry, text

WINDOW_NAMES = tuple(WINDOWS)
"""The windows an update carries a tier for, shortest first."""


@dataclass(frozen=True)
class MetricUpdate:
    """One entry of `tutormax:metrics:updated`: a tutor's new tiers after a flush."""

    id: str
    tutor_id: str
    calculation_date: str | None
    tiers: dict[str, str | None]

    def as_dict(self) -> dict[str, Any]:
        """One line of `watch --json`."""
        return {
            "id": self.id,
            "tutor_id": self.tutor_id,
            "calculation_date": self.calculation_date,
            **{f"tier_{w}": self.tiers.get(w) for w in WINDOW_NAMES},
        }


def _update(entry_id: bytes | str, raw: dict[bytes, bytes]) -> MetricUpdate | None:
    tutor = text(raw.get(b"tutor_id"))
    if tutor is None:
        return None
    return MetricUpdate(
        id=str(text(entry_id)),
        tutor_id=tutor,
        calculation_date=text(raw.get(b"calculation_date")),
        tiers={w: text(raw.get(f"tier_{w}".encode())) for w in WINDOW_NAMES},
    )


def recent_updates(
    client: redis.Redis, stream: str = keys.METRICS_UPDATED_STREAM, limit: int = 10_000
) -> tuple[list[MetricUpdate], str]:
    """The last `limit` updates, oldest first, and the ID to read new ones after."""
    page = entries.xrevrange(client, stream, "+", "-", limit)
    updates = [u for u in (_update(i, raw) for i, raw in reversed(page)) if u]
    return updates, str(text(page[0][0])) if page else "0-0"


def read_updates(
    client: redis.Redis,
    after: str,
    *,
    block_ms: int = 1000,
    stream: str = keys.METRICS_UPDATED_STREAM,
) -> tuple[list[MetricUpdate], str]:
    """The updates after ID `after` (waiting up to `block_ms`), and the ID to continue from."""
    reply = cast(
        list[tuple[bytes, list[Entry]]], client.xread({stream: after}, count=PAGE, block=block_ms)
    )
    updates: list[MetricUpdate] = []
    for _name, found in reply or []:
        for entry_id, raw in found:
            after = str(text(entry_id))
            update = _update(entry_id, raw)
            if update is not None:
                updates.append(update)
    return updates, after
