"""Stream entry IDs, the server's clock and paged reads: what every operator view of a stream
shares. Ages are measured against the server's clock (`TIME`), the clock that stamped the
entry IDs, never the local one.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, cast

import redis

from tutormax_cli.errors import TutormaxError, UsageError

PAGE = 1000
"""Entries per XRANGE/XPENDING call when a count has to walk a stream."""

SCAN_LIMIT = 200_000
"""At most this many entries are walked to count a lag or find the highest delivery count."""

_ID = re.compile(r"^\d+(-\d+)?$")

Entry = tuple[bytes, dict[bytes, bytes]]
"""A stream entry as redis-py returns it without response decoding: (ID, fields)."""


class UnknownEntry(TutormaxError):
    """A stream entry ID that is not on the stream."""


def text(value: bytes | str | None) -> str | None:
    """A reply value as text (undecodable bytes as `\\x..` escapes); None stays None."""
    if value is None:
        return None
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value


def xrange(client: redis.Redis, stream: str, low: str, high: str, count: int) -> list[Entry]:
    """XRANGE with a count, as a typed list."""
    return cast(list[Entry], client.xrange(stream, low, high, count=count) or [])


def xrevrange(client: redis.Redis, stream: str, high: str, low: str, count: int) -> list[Entry]:
    """XREVRANGE with a count, as a typed list."""
    return cast(list[Entry], client.xrevrange(stream, high, low, count=count) or [])


def walk(client: redis.Redis, stream: str, low: str = "-", high: str = "+") -> Iterator[Entry]:
    """Every entry between `low` and `high` (inclusive), oldest first, a page at a time."""
    start = low
    while True:
        page = xrange(client, stream, start, high, PAGE)
        yield from page
        if len(page) < PAGE:
            return
        start = "(" + str(text(page[-1][0]))


def pel(
    client: redis.Redis, stream: str, group: str, low: str, count: int, consumer: str | None = None
) -> list[dict[str, Any]]:
    """One page of a group's pending entries list (XPENDING with a range), oldest first."""
    reply = client.xpending_range(stream, group, low, "+", count, consumername=consumer)
    return cast(list[dict[str, Any]], reply or [])


MAX_ID_PART = 18_446_744_073_709_551_615
"""Each part of a stream entry ID is an unsigned 64-bit number; Redis answers a larger one
with "Invalid stream ID", which would reach the operator as a Redis error (exit 1) although
the ID was simply mistyped."""


def check_id(given: str) -> str:
    """A stream entry ID as given on the command line (`1700000000000-0` or `1700000000000`),
    refused (a usage error naming it) when it is not one or a part exceeds what Redis takes."""
    given = given.strip()
    if not _ID.match(given):
        raise UsageError(f"{given!r} is not a stream entry ID (e.g. 1767225600000-0)")
    if any(int(part) > MAX_ID_PART for part in given.split("-")):
        raise UsageError(f"{given!r} is not a stream entry ID: each part is at most {MAX_ID_PART}")
    return given if "-" in given else f"{given}-0"


def id_ms(entry_id: str) -> int:
    """The millisecond timestamp part of an entry ID."""
    return int(entry_id.split("-", 1)[0])


def id_key(entry_id: str) -> tuple[int, int]:
    """An entry ID as a sortable (milliseconds, sequence) pair."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def server_ms(client: redis.Redis) -> int:
    """The server's clock in milliseconds: entry IDs and idle times are on this clock."""
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def age_s(now_ms: int, entry_id: str) -> float:
    """Seconds from the entry's ID to `now_ms`, never negative."""
    return round(max(now_ms - id_ms(entry_id), 0) / 1000, 3)


def missing(reply: object) -> bool:
    """Whether a reply is the error of a stream or group that does not exist."""
    if not isinstance(reply, redis.ResponseError):
        return False
    message = str(reply).lower()
    return "no such key" in message or "nogroup" in message
