"""Bounded streams: trim what every consumer group is done with, keep a retention window, and
cap the dead-letter stream.

An input stream (`tutormax:sessions`, `tutormax:sessions:enrichment`) is trimmed by MINID to
the lower of two ids:
- the *done* floor: for every group reading the stream (XINFO GROUPS), its oldest pending
  entry (XPENDING), or, with nothing pending, the entry after its last-delivered id. Below
  that id every group has read and acknowledged everything, so nothing trimmed is ever still
  needed; a stream without any group is never trimmed (nobody has read it yet);
- the retention cutoff: `retention` seconds before Redis' clock (entry ids are times), so
  `pending --entries`, `dlq` and replays still see recent history.
Groups only move forward between reading the floor and trimming (acks, reads), so a floor read
a moment ago is still safe. A group created later, or moved back with `groups reset`, starts
from what is left. Trimming is approximate (`~`, whole radix-tree nodes) with `LIMIT 0` (no
per-call cap: Redis' default cap of 100 nodes would let a fast worker outrun the trimmer), so
after a drain with retention 0 a stream holds fewer than `stream-node-max-entries` (100 by
default) entries beyond what some group still needs.

The dead-letter stream is capped by length (`MAXLEN ~`): dead letters wait for a person, not
for a group. What each trim removed is counted in Redis (`keys.trim_key`), so every process
exports the same totals and `tutormax pending` shows them with the id trimmed below.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import redis

from tutormax_cli import keys
from tutormax_cli.stream.entries import id_key, missing, server_ms, text

log = logging.getLogger("tutormax.worker")


def _after(entry_id: str) -> str:
    """The smallest id greater than `entry_id`."""
    ms, seq = id_key(entry_id)
    return f"{ms}-{seq + 1}"


def done_floor(client: redis.Redis, stream: str) -> str | None:
    """The id below which every group of `stream` has read and acknowledged every entry;
    None when the stream has no group (or does not exist)."""
    try:
        groups = client.xinfo_groups(stream)
    except redis.ResponseError as exc:
        if missing(exc):
            return None
        raise
    if not groups:
        return None
    floors = []
    for info in groups:
        name = str(text(info["name"]))
        floor = _after(str(text(info["last-delivered-id"])))
        if int(info.get("pending") or 0):
            summary: Any = client.xpending(stream, name)
            if summary and summary.get("min"):
                floor = min(floor, str(text(summary["min"])), key=id_key)
        floors.append(floor)
    return min(floors, key=id_key)


@dataclass(frozen=True)
class Trimmed:
    """One trim: the MINID asked for (None: nothing was safe to trim) and entries removed."""

    stream: str
    minid: str | None
    deleted: int


def _record(client: redis.Redis, stream: str, deleted: int, below: str | None) -> None:
    key = keys.trim_key(stream)
    fields: dict[str, Any] = {"at_ms": int(time.time() * 1000)}
    if below is not None:
        fields["below"] = below
    pipe = client.pipeline(transaction=False)  # one key: one slot, one node
    pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
    if deleted:
        pipe.hincrby(key, "dropped", deleted)
    pipe.execute()


def trim_stream(
    client: redis.Redis, stream: str, retention: float, *, now_ms: int | None = None
) -> Trimmed:
    """Trim `stream` below min(done floor, now − retention); counts what went."""
    floor = done_floor(client, stream)
    if floor is None:
        return Trimmed(stream, None, 0)
    if now_ms is None:
        now_ms = server_ms(client)
    cutoff = f"{max(now_ms - int(retention * 1000), 0)}-0"
    minid = min(floor, cutoff, key=id_key)
    deleted = int(client.xtrim(stream, minid=minid, approximate=True, limit=0))
    _record(client, stream, deleted, minid)
    return Trimmed(stream, minid, deleted)


def cap_stream(client: redis.Redis, stream: str, maxlen: int) -> Trimmed:
    """Cap `stream` at about `maxlen` entries (0: no cap); counts what went."""
    if maxlen <= 0:
        return Trimmed(stream, None, 0)
    deleted = int(client.xtrim(stream, maxlen=maxlen, approximate=True, limit=0))
    if deleted:
        _record(client, stream, deleted, None)
    return Trimmed(stream, None, deleted)


@dataclass(frozen=True)
class TrimState:
    """What `pending` and Prometheus show of a stream's trimming."""

    below: str | None
    """The last MINID trimmed to (entries below it are gone), None if never trimmed."""
    dropped: int
    """Entries removed by trims and caps, in all, by every process."""
    at_ms: int | None

    def as_dict(self) -> dict[str, Any]:
        """The JSON object of `pending --json`'s `trim`."""
        return {"below": self.below, "dropped": self.dropped, "at_ms": self.at_ms}


def trim_state(client: redis.Redis, stream: str) -> TrimState:
    """The trim record of `stream` (zeros when it was never trimmed)."""
    return parse_trim_state(client.hgetall(keys.trim_key(stream)))


def parse_trim_state(raw: Any) -> TrimState:
    """A trim record as HGETALL answers it (an empty or failed reply: never trimmed)."""
    if not isinstance(raw, dict):
        raw = {}
    values = {str(text(k)): str(text(v)) for k, v in raw.items()}
    at = values.get("at_ms")
    return TrimState(values.get("below"), int(values.get("dropped", 0)), int(at) if at else None)


@dataclass
class Trimmer:
    """What one consumer trims, at most every `every` seconds: its input stream by retention
    and the done floor, and the dead-letter stream by length. Failures are logged once per
    state change and never stop the consumer: trimming is housekeeping."""

    client: redis.Redis
    stream: str
    retention: float = keys.STREAM_RETENTION
    dead_letter_stream: str = keys.DEAD_LETTER_STREAM
    dead_letter_maxlen: int = keys.DEAD_LETTER_MAXLEN
    every: float = keys.TRIM_EVERY
    enabled: bool = True
    _next: float = float("-inf")
    _failing: bool = False

    def maybe_trim(self, now: float | None = None, *, force: bool = False) -> list[Trimmed]:
        """Trim when due (or now, when `force`); returns what was trimmed (empty when not due
        or off)."""
        now = time.monotonic() if now is None else now
        if not self.enabled or (now < self._next and not force):
            return []
        self._next = now + self.every
        try:
            done = [trim_stream(self.client, self.stream, self.retention)]
            done.append(cap_stream(self.client, self.dead_letter_stream, self.dead_letter_maxlen))
        except redis.RedisError as exc:
            if not self._failing:
                log.warning("trimming %s failed (retrying every %.0f s): %s",
                            self.stream, self.every, exc)  # fmt: skip
            self._failing = True
            return []
        if self._failing:
            log.info("trimming %s works again", self.stream)
        self._failing = False
        for t in done:
            if t.deleted:
                log.debug("trimmed %d entries of %s below %s", t.deleted, t.stream, t.minid)
        return done
