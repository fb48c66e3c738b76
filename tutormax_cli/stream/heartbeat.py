"""Workers' heartbeats: the key a live consumer keeps fresh, what it says, and how it is read.

A heartbeat is `keys.heartbeat_key(stream, group, consumer)` holding a JSON status with a TTL.
It carries the worker's `state`: `ok`; `retrying` (a Redis or database failure is being retried:
since when, the error's kind and class, and one line of its message, passwords masked); or
`draining` (stopping: flushing what it holds). `worker health` and `status` read it here.

The writer beats from a daemon thread of its own, not from the consumer's loop: a flush is one
engine call and one database transaction, with no chunks to beat between, so a slow statement
(a lock wait, a big batch) would otherwise outlive the TTL and make a busy worker look dead.
The thread uses the consumer's redis-py client, whose pool hands it a connection of its own.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis

from tutormax_cli import keys
from tutormax_cli.settings import mask_secrets

log = logging.getLogger("tutormax.worker")

OK = "ok"
RETRYING = "retrying"
DRAINING = "draining"
STATES = (OK, RETRYING, DRAINING)

MESSAGE_LIMIT = 200
"""Characters of an error message a heartbeat keeps (one line)."""


def one_line(message: str, limit: int = MESSAGE_LIMIT) -> str:
    """The first line of `message`, whitespace collapsed, passwords masked, at most `limit`."""
    lines = message.strip().splitlines()
    text = " ".join((lines[0] if lines else "").split())
    text = mask_secrets(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- writing ------------------------------------------------------------------------------------


class HeartbeatWriter:
    """Keeps one consumer's heartbeat key: `beat()` on demand, and every `every` seconds from a
    daemon thread between `start()` and `stop()`. `status` builds the JSON document; `on_beat`
    runs after each write (the consumer refreshes its held entries and its gauges there)."""

    def __init__(
        self,
        client: redis.Redis,
        key: str,
        *,
        ttl: int,
        every: float,
        status: Callable[[], dict[str, Any]],
        on_beat: Callable[[], None] | None = None,
    ) -> None:
        self.client = client
        self.key = key
        self.ttl = ttl
        self.every = every
        self.status = status
        self.on_beat = on_beat
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one beat at a time (thread and loop)

    def beat(self) -> None:
        """Write the heartbeat now (raises on a Redis failure)."""
        with self._lock:
            self.client.set(self.key, json.dumps(self.status()), ex=self.ttl)
            if self.on_beat is not None:
                self.on_beat()

    def wake(self) -> None:
        """Beat as soon as possible (the state changed)."""
        self._wake.set()

    def start(self) -> None:
        """Beat every `every` seconds from a daemon thread until `stop()`."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (before the key is cleared, so that no beat brings it back)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        self._wake.set()
        thread.join(timeout=max(5.0, self.every * 2))

    def clear(self) -> None:
        """Delete the key at a clean exit, so the worker is seen gone at once."""
        self.client.delete(self.key)

    def _run(self) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                self.beat()
                failing = False
            except Exception as exc:  # Redis down: the loop reports it; say it once here
                if not failing:
                    log.debug("heartbeat not written: %s", one_line(str(exc)))
                failing = True
            self._wake.wait(self.every)
            self._wake.clear()


# -- reading ------------------------------------------------------------------------------------


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

    @property
    def state(self) -> str:
        """`ok`, `retrying` or `draining` (a heartbeat without a state is from an older
        worker, which only beat while its loop ran: `ok`)."""
        value = self.info.get("state")
        return value if value in STATES else OK

    @property
    def retrying(self) -> dict[str, Any] | None:
        """`since`, `kind`, `error`, `message` of the failure being retried, if any."""
        value = self.info.get("retrying")
        return value if self.state == RETRYING and isinstance(value, dict) else None

    def serves(self, stream: str, group: str) -> bool:
        """Whether this worker consumes `stream` in `group`."""
        return self.info.get("stream") == stream and self.info.get("group") == group

    def age_s(self, name: str, now_ms: int, within: dict[str, Any] | None = None) -> float | None:
        """Seconds since the ISO-8601 time in field `name` (e.g. `last_flush_at`)."""
        value = (self.info if within is None else within).get(name)
        if not isinstance(value, str):
            return None
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if moment.tzinfo is None:
            return None
        return round(max(now_ms / 1000 - moment.timestamp(), 0.0), 1)

    def describe(self) -> str:
        """The state in a few words: `ok`, `draining`, or `retrying for 42s (database
        OperationalError: connection refused)`."""
        failure = self.retrying
        if failure is None:
            return self.state
        since = failure.get("since")
        cause = f"{failure.get('kind')} {failure.get('error')}: {failure.get('message')}"
        return f"retrying since {since} ({cause})"

    def as_dict(self, now_ms: int) -> dict[str, Any]:
        """The heartbeat as stored, plus its key, TTL, state and the age of its last flush."""
        failure = self.retrying
        return {
            **self.info,
            "consumer": self.consumer,
            "state": self.state,
            "key": self.key,
            "ttl_s": self.ttl_s,
            "uptime_s": self.age_s("started_at", now_ms),
            "last_flush_age_s": self.age_s("last_flush_at", now_ms),
            "retrying_for_s": self.age_s("since", now_ms, failure) if failure else None,
        }


def live_workers(
    client: redis.Redis, stream: str | None = None, group: str | None = None
) -> list[Worker]:
    """Every worker whose heartbeat key exists (SCAN over the heartbeat prefix), by key; only
    those of `stream` and `group` when given."""
    pattern = (
        keys.heartbeat_key(stream, group, "*")
        if stream is not None and group is not None
        else f"{keys.HEARTBEAT_PREFIX}*"
    )
    found = sorted({_text(k) for k in client.scan_iter(pattern, 200)})
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
        info: Any = {}
        with contextlib.suppress(ValueError):
            info = json.loads(value)
        worker = Worker(
            key=key,
            info=info if isinstance(info, dict) else {},
            ttl_s=round(pttl / 1000, 1) if pttl is not None and pttl >= 0 else None,
        )
        if stream is None or group is None or worker.serves(stream, group):
            workers.append(worker)
    return workers


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
