"""Live updates: the worker's `tutormax:metrics:updated` feed, fanned out to WebSockets.

One thread per API process follows the feed with a blocking XREAD (the same reader `tutormax
watch` uses) and hands each batch to the event loop, where every subscription whose tutor
matches gets it on its own bounded queue. A client that falls `queue_size` updates behind is
disconnected (close code 1013, "try again later") rather than letting its queue grow: it can
reconnect and read the current rows from `GET /api/tutors/{id}/metrics`. A lost Redis
connection is retried with backoff (1 s doubling to 30 s) and logged once when it is lost and
once when it is back, not every second; subscribers stay connected meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from tutormax_cli.errors import TutormaxError
from tutormax_cli.stream.updates import MetricUpdate, read_updates, recent_updates

log = logging.getLogger("tutormax.api.live")

QUEUE_SIZE = 1_000
RETRY_SECONDS = 1.0
"""First wait after a lost connection; it doubles up to `MAX_RETRY_SECONDS`."""
MAX_RETRY_SECONDS = 30.0


@dataclass(eq=False)
class Subscription:
    """One WebSocket's interest: a tutor, or every tutor (`tutor_id` None)."""

    tutor_id: str | None
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    overflowed: bool = False

    def wants(self, update: MetricUpdate) -> bool:
        """Whether this subscription receives `update`."""
        return self.tutor_id is None or self.tutor_id == update.tutor_id


def message(update: MetricUpdate) -> dict[str, Any]:
    """What a WebSocket client receives for one update."""
    return {"type": "metrics.updated", **update.as_dict()}


class UpdateHub:
    """Follows the feed from the moment it starts and delivers to the current subscriptions."""

    def __init__(
        self,
        connect: Callable[[], redis.Redis],
        stream: str,
        *,
        block_ms: int = 1_000,
        on_delivered: Callable[[int], None] | None = None,
        on_updates: Callable[[list[MetricUpdate]], None] | None = None,
        on_start: Callable[[], None] | None = None,
    ) -> None:
        self.connect = connect
        self.stream = stream
        self.block_ms = block_ms
        self.on_delivered = on_delivered
        self.on_updates = on_updates
        self.on_start = on_start
        """Called on the event loop once the feed is followed from a position: whatever was
        announced before it (while the process started) is not delivered, so the read cache
        drops what it may have kept meanwhile."""
        """Called on the event loop with every batch read, before the subscribers get it (the
        read cache drops what the batch changed)."""
        self.subscriptions: set[Subscription] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Start following (call from the event loop, at application start-up)."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._follow, name="tutormax-live", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop following; returns within about one XREAD block."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.block_ms / 1000 + 2)

    def subscribe(self, tutor_id: str | None) -> Subscription:
        """A new subscription (on the event loop)."""
        sub = Subscription(tutor_id)
        self.subscriptions.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Forget a subscription (on the event loop)."""
        self.subscriptions.discard(sub)

    def _follow(self) -> None:
        client: redis.Redis | None = None
        after: str | None = None
        delay = RETRY_SECONDS
        lost_at: float | None = None  # monotonic time the connection was lost, while it is
        while not self._stop.is_set():
            try:
                if client is None:
                    client = self.connect()
                if after is None:  # from now on: history is what the GET endpoints are for
                    _, after = recent_updates(client, self.stream, limit=1)
                    if self.on_start is not None and self._loop is not None:
                        self._loop.call_soon_threadsafe(self.on_start)
                updates, after = read_updates(
                    client, after, block_ms=self.block_ms, stream=self.stream
                )
            except (redis.RedisError, OSError, TutormaxError) as exc:
                if lost_at is None:  # one line per state change, not one per retry
                    lost_at = time.monotonic()
                    log.warning(
                        "following %s: %s; retrying with backoff up to %.0f s",
                        self.stream, exc, MAX_RETRY_SECONDS,
                    )  # fmt: skip
                client = None
                self._stop.wait(delay)
                delay = min(delay * 2, MAX_RETRY_SECONDS)
                continue
            if lost_at is not None:
                log.warning(
                    "following %s again after %.0f s", self.stream, time.monotonic() - lost_at
                )
                lost_at, delay = None, RETRY_SECONDS
            if updates and self._loop is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._deliver, updates)

    def _deliver(self, updates: list[MetricUpdate]) -> None:
        if self.on_updates is not None:
            self.on_updates(updates)
        sent = 0
        for sub in list(self.subscriptions):
            for update in updates:
                if not sub.wants(update) or sub.overflowed:
                    continue
                try:
                    sub.queue.put_nowait(message(update))
                    sent += 1
                except asyncio.QueueFull:
                    sub.overflowed = True
        if sent and self.on_delivered is not None:
            self.on_delivered(sent)
