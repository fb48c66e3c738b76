"""Workers' heartbeats as the operator views read them: which workers are alive, serving
which group, flushing when. (The heartbeat's writer and reader move to `stream/heartbeat.py`;
the rest of what this module once held lives in `groups`, `pending`, `dead_letters`, `updates`,
`board` and `health`.)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis

from tutormax_cli import keys
from tutormax_cli.stream.entries import text as _text


@dataclass(frozen=True)
class Worker:
    """A live worker, from its heartbeat key (which expires when the worker stops beating)."""

    key: str
    info: dict[str, Any]
    ttl_s: float | None

    @property
    def consumer(self) -> str:
        """The worker's consumer name (the key's last part when the value says nothing)."""
        return str(self.info.get("consumer") or self.key.rsplit(":", 1)[-1])

    def serves(self, stream: str, group: str) -> bool:
        """Whether this worker consumes `stream` in `group`."""
        return self.info.get("stream") == stream and self.info.get("group") == group

    def age_s(self, name: str, now_ms: int) -> float | None:
        """Seconds since the ISO-8601 time in field `name` (e.g. `last_flush_at`)."""
        value = self.info.get(name)
        if not isinstance(value, str):
            return None
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if moment.tzinfo is None:
            return None
        return round(max(now_ms / 1000 - moment.timestamp(), 0.0), 1)

    def as_dict(self, now_ms: int) -> dict[str, Any]:
        """The heartbeat as stored, plus its key, TTL and the age of its last flush."""
        return {
            **self.info,
            "consumer": self.consumer,
            "key": self.key,
            "ttl_s": self.ttl_s,
            "uptime_s": self.age_s("started_at", now_ms),
            "last_flush_age_s": self.age_s("last_flush_at", now_ms),
        }


def live_workers(client: redis.Redis) -> list[Worker]:
    """Every worker whose heartbeat key exists (SCAN over the heartbeat prefix)."""
    found = sorted({str(_text(k)) for k in client.scan_iter(f"{keys.HEARTBEAT_PREFIX}*", 200)})
    if not found:
        return []
    pipe = client.pipeline(transaction=False)
    for key in found:
        pipe.get(key)
        pipe.pttl(key)
    replies = pipe.execute()
    workers = []
    for i, key in enumerate(found):
        value, pttl = replies[2 * i], replies[2 * i + 1]
        if value is None:  # expired between SCAN and GET
            continue
        try:
            info = json.loads(value)
        except ValueError:
            info = {}
        workers.append(
            Worker(
                key=key,
                info=info if isinstance(info, dict) else {},
                ttl_s=round(pttl / 1000, 1) if pttl is not None and pttl >= 0 else None,
            )
        )
    return workers
