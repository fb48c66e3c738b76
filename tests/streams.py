"""Typed stream reads and writes for tests: redis-py types its stream replies as unions of
every reply shape (and `None`), so each test would otherwise cast or index blindly. These are
the shapes a client without response decoding returns, as `tutormax_cli.stream.entries` reads
them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import redis
from redis.typing import EncodableT, FieldT

from tutormax_cli.stream import entries
from tutormax_cli.stream.entries import Entry


def text(value: bytes | str | int) -> str:
    """A reply value (an entry ID, a name) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def add(r: redis.Redis, stream: str, fields: Mapping[str, str | bytes], entry_id: str = "*") -> str:
    """XADD `fields` to `stream`; the new entry's ID as text."""
    payload: dict[FieldT, EncodableT] = {name: value for name, value in fields.items()}
    return text(cast(bytes, r.xadd(stream, payload, id=entry_id)))


def as_fields(fields: Mapping[bytes, bytes] | Mapping[str, str]) -> dict[bytes | str, bytes | str]:
    """Entry fields as `events.decode` takes them (text or bytes names and values)."""
    return {name: value for name, value in fields.items()}


def read(r: redis.Redis, stream: str, low: str = "-", high: str = "+") -> list[Entry]:
    """Every entry of `stream` between `low` and `high`, oldest first."""
    return list(entries.walk(r, stream, low, high))


def read_group(
    r: redis.Redis,
    group: str,
    consumer: str,
    stream: str,
    start: str = ">",
    count: int | None = None,
) -> list[Entry]:
    """XREADGROUP of one stream: the entries delivered to `consumer` (none: an empty list)."""
    reply = cast(
        list[tuple[bytes, list[Entry]]] | None,
        r.xreadgroup(group, consumer, {stream: start}, count=count),
    )
    return reply[0][1] if reply else []
