"""Consumer groups as an operator sees them (like `kafka-consumer-groups --describe`): how far
behind a group is, what it holds unacknowledged and who its consumers are.

Every number is what XINFO and XPENDING report. What an older server does not report is counted
here from the stream itself: a group's `lag` (Redis < 7, or when Redis 7 cannot tell after
deletions). No rendering here: the CLI turns these dataclasses into tables or JSON, and tests
compare them with raw commands.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis

from tutormax_cli import keys
from tutormax_cli.errors import TutormaxError
from tutormax_cli.stream import entries, topology
from tutormax_cli.stream.entries import PAGE, SCAN_LIMIT, text
from tutormax_cli.stream.retention import TrimState, parse_trim_state


class StreamNotFound(TutormaxError):
    """A stream that does not exist on the Redis read: a wrong server, or nothing started."""


@dataclass(frozen=True)
class ConsumerReport:
    """One consumer as XINFO CONSUMERS reports it (`inactive` only from Redis 7.2 on)."""

    name: str
    pending: int
    idle_s: float
    inactive_s: float | None

    def as_dict(self) -> dict[str, Any]:
        """The JSON object of `pending --json`."""
        return {
            "name": self.name,
            "pending": self.pending,
            "idle_s": self.idle_s,
            "inactive_s": self.inactive_s,
        }


@dataclass(frozen=True)
class GroupReport:
    """A consumer group on a stream, like `kafka-consumer-groups --describe`."""

    stream: str
    group: str
    exists: bool
    length: int
    lag: int
    lag_exact: bool
    lag_s: float
    pending: int
    oldest_pending_age_s: float | None
    max_deliveries: int
    dead_letter: int
    last_delivered_id: str | None
    consumers: tuple[ConsumerReport, ...] = ()
    stream_exists: bool = True
    memory_bytes: int = 0
    """MEMORY USAGE of the stream (0 when it does not exist)."""
    dead_letter_memory_bytes: int = 0
    trim: TrimState = field(default_factory=lambda: TrimState(None, 0, None))
    """What trimming did to the stream: the id below which it is gone, entries removed."""
    dead_letter_trim: TrimState = field(default_factory=lambda: TrimState(None, 0, None))

    def as_dict(self) -> dict[str, Any]:
        """The JSON document of `pending --json`."""
        return {
            "stream": self.stream,
            "group": self.group,
            "stream_exists": self.stream_exists,
            "group_exists": self.exists,
            "length": self.length,
            "lag": self.lag,
            "lag_s": self.lag_s,
            "pending": self.pending,
            "oldest_pending_age_s": self.oldest_pending_age_s,
            "max_deliveries": self.max_deliveries,
            "dead_letter": self.dead_letter,
            "memory_bytes": self.memory_bytes,
            "trim": self.trim.as_dict(),
            "dead_letter_memory_bytes": self.dead_letter_memory_bytes,
            "dead_letter_trim": self.dead_letter_trim.as_dict(),
            "consumers": [c.as_dict() for c in self.consumers],
        }


def find_group(client: redis.Redis, stream: str, group: str) -> dict[str, Any] | None:
    """The XINFO GROUPS entry of `group`, or None when it (or the stream) does not exist."""
    try:
        groups = client.xinfo_groups(stream)
    except redis.ResponseError as exc:
        if "no such key" in str(exc).lower():
            return None
        raise
    for info in groups:
        if text(info["name"]) == group:
            return dict(info)
    return None


def _snapshot(client: redis.Redis, stream: str, group: str, dead_letters: str) -> dict[str, Any]:
    """TIME, both lengths, the group's XINFO and XPENDING summary and its consumers, read in one
    MULTI so the numbers of a report describe the same instant. On a Redis Cluster the two
    streams live in different slots, and a cluster pipeline takes no TIME: there the clock is
    read first and the rest in one pipeline per node, so the numbers are a few milliseconds
    apart (a report, not a transaction)."""
    atomic = topology.transactional(client)
    pipe = client.pipeline(transaction=atomic)
    if atomic:
        pipe.time()
    else:
        clock = client.time()
    pipe.exists(stream)
    pipe.xlen(stream)
    pipe.xlen(dead_letters)
    pipe.xinfo_groups(stream)
    pipe.xpending(stream, group)
    pipe.xinfo_consumers(stream, group)
    pipe.memory_usage(stream)
    pipe.memory_usage(dead_letters)
    pipe.hgetall(keys.trim_key(stream))
    pipe.hgetall(keys.trim_key(dead_letters))
    replies = pipe.execute(raise_on_error=False)
    for reply in replies:
        if isinstance(reply, Exception) and not entries.missing(reply):
            raise reply
    if atomic:
        clock, *replies = replies
    found_stream, length, dead, groups, summary, consumers, *sizes = replies
    memory, dead_memory, trim, dead_trim = sizes
    found = [] if entries.missing(groups) else [g for g in groups if text(g["name"]) == group]
    return {
        "now": int(clock[0]) * 1000 + int(clock[1]) // 1000,
        "exists": bool(found_stream),
        "length": int(length),
        "dead": int(dead),
        "group": dict(found[0]) if found else None,
        "pending": None if entries.missing(summary) else summary,
        "consumers": [] if entries.missing(consumers) else consumers,
        "memory": int(memory or 0),
        "dead_memory": int(dead_memory or 0),
        "trim": parse_trim_state(trim),
        "dead_trim": parse_trim_state(dead_trim),
    }


def count_undelivered(
    client: redis.Redis, stream: str, last_id: str, limit: int = SCAN_LIMIT
) -> tuple[int, bool]:
    """Entries after `last_id`, counted where the server does not report a group's lag.

    Walks both sides of `last_id` a page at a time and stops at the shorter: the entries after
    it, or the entries up to it subtracted from XLEN. Returns (count, exact); past `limit`
    entries walked, the count so far is a lower bound and `exact` is False.
    """
    after_from, before_from = f"({last_id}", "-"
    after = before = 0
    while after + before < limit:
        page = entries.xrange(client, stream, after_from, "+", PAGE)
        after += len(page)
        if len(page) < PAGE:
            return after, True
        after_from = "(" + str(text(page[-1][0]))
        page = entries.xrange(client, stream, before_from, last_id, PAGE)
        before += len(page)
        if len(page) < PAGE:
            return max(int(client.xlen(stream)) - before, 0), True
        before_from = "(" + str(text(page[-1][0]))
    return after, False


def _max_deliveries(client: redis.Redis, stream: str, group: str, low: str) -> int:
    highest, start, walked = 0, low, 0
    while walked < SCAN_LIMIT:
        page = entries.pel(client, stream, group, start, PAGE)
        highest = max([highest, *(int(p["times_delivered"]) for p in page)])
        walked += len(page)
        if len(page) < PAGE:
            break
        start = "(" + str(text(page[-1]["message_id"]))
    return highest


def consumer_reports(replies: list[dict[str, Any]]) -> tuple[ConsumerReport, ...]:
    """XINFO CONSUMERS replies as reports (idle and inactive in seconds)."""
    return tuple(
        ConsumerReport(
            name=str(text(c["name"])),
            pending=int(c["pending"]),
            idle_s=round(int(c["idle"]) / 1000, 3),
            inactive_s=None
            if c.get("inactive") is None or int(c["inactive"]) < 0
            else round(int(c["inactive"]) / 1000, 3),
        )
        for c in replies
    )


def group_report(
    client: redis.Redis,
    stream: str = keys.ENRICHMENT_STREAM,
    group: str = keys.METRICS_GROUP,
    dead_letter_stream: str = keys.DEAD_LETTER_STREAM,
) -> GroupReport:
    """Length, lag, pending entries and consumers of one group; a group that does not exist yet
    (no worker has started) reports every entry on the stream as lag. A stream that does not
    exist is reported as such (`stream_exists`), not as an empty, healthy one."""
    snap = _snapshot(client, stream, group, dead_letter_stream)
    now, info = snap["now"], snap["group"]
    last_id = text(info["last-delivered-id"]) if info else "0-0"
    assert last_id is not None
    reported = info.get("lag") if info else None
    if reported is not None:
        lag, exact = int(reported), True
    else:
        lag, exact = count_undelivered(client, stream, last_id)
    lag_s = 0.0
    if lag:
        first = entries.xrange(client, stream, f"({last_id}", "+", 1)
        lag_s = entries.age_s(now, str(text(first[0][0]))) if first else 0.0
    pending, oldest, deliveries = 0, None, 0
    if info is not None and snap["pending"]:
        pending = int(snap["pending"]["pending"])
        if pending:
            low = str(text(snap["pending"]["min"]))
            oldest = entries.age_s(now, low)
            deliveries = _max_deliveries(client, stream, group, low)
    return GroupReport(
        stream=stream,
        group=group,
        exists=info is not None,
        length=snap["length"],
        lag=lag,
        lag_exact=exact,
        lag_s=lag_s,
        pending=pending,
        oldest_pending_age_s=oldest,
        max_deliveries=deliveries,
        dead_letter=snap["dead"],
        last_delivered_id=last_id if info else None,
        consumers=consumer_reports(snap["consumers"]),
        stream_exists=snap["exists"],
        memory_bytes=snap["memory"],
        dead_letter_memory_bytes=snap["dead_memory"],
        trim=snap["trim"],
        dead_letter_trim=snap["dead_trim"],
    )


def status_groups(client: redis.Redis) -> list[GroupReport]:
    """The metrics group always; the validation group of the raw stream when it exists."""
    reports = [group_report(client)]
    if find_group(client, keys.SESSIONS_STREAM, keys.VALIDATION_GROUP) is not None:
        reports.append(group_report(client, keys.SESSIONS_STREAM, keys.VALIDATION_GROUP))
    return reports


# -- every group of every stream (`tutormax groups`) ------------------------------------------

KNOWN_STREAMS = (
    keys.SESSIONS_STREAM,
    keys.ENRICHMENT_STREAM,
    keys.DEAD_LETTER_STREAM,
    keys.METRICS_UPDATED_STREAM,
)
"""The streams tutormax writes; `groups` also lists any other `tutormax:*` stream it finds."""


@dataclass(frozen=True)
class GroupInfo:
    """One group of a stream as XINFO GROUPS reports it (lag counted where it does not)."""

    group: str
    consumers: tuple[ConsumerReport, ...]
    pending: int
    lag: int
    lag_exact: bool
    last_delivered_id: str
    entries_read: int | None

    def as_dict(self) -> dict[str, Any]:
        """One group of `groups --json`."""
        return {
            "group": self.group,
            "pending": self.pending,
            "lag": self.lag,
            "lag_exact": self.lag_exact,
            "last_delivered_id": self.last_delivered_id,
            "entries_read": self.entries_read,
            "consumers": [c.as_dict() for c in self.consumers],
        }


@dataclass(frozen=True)
class StreamGroups:
    """A stream (length, first and last entry, memory) and every consumer group on it."""

    stream: str
    exists: bool
    length: int
    first_id: str | None
    last_id: str | None
    memory_bytes: int | None
    groups: tuple[GroupInfo, ...]

    def as_dict(self) -> dict[str, Any]:
        """One stream of `groups --json`."""
        return {
            "stream": self.stream,
            "exists": self.exists,
            "length": self.length,
            "first_id": self.first_id,
            "last_id": self.last_id,
            "memory_bytes": self.memory_bytes,
            "groups": [g.as_dict() for g in self.groups],
        }


def tutormax_streams(client: redis.Redis) -> list[str]:
    """The known streams, then every other `tutormax:*` key of type stream (SCAN)."""
    found = {str(text(k)) for k in client.scan_iter("tutormax:*", 500, _type="stream")}
    return [*KNOWN_STREAMS, *sorted(found - set(KNOWN_STREAMS))]


def stream_groups(client: redis.Redis, stream: str) -> StreamGroups:
    """XINFO STREAM, MEMORY USAGE and, per group, XINFO GROUPS and XINFO CONSUMERS."""
    if not client.exists(stream):
        return StreamGroups(stream, False, 0, None, None, None, ())
    pipe = client.pipeline(transaction=topology.transactional(client))
    pipe.xlen(stream)
    pipe.xrange(stream, "-", "+", count=1)
    pipe.xrevrange(stream, "+", "-", count=1)
    pipe.memory_usage(stream)
    pipe.xinfo_groups(stream)
    length, first, last, memory, infos = pipe.execute()
    groups = []
    for info in infos:
        name = str(text(info["name"]))
        last_id = str(text(info["last-delivered-id"]))
        reported = info.get("lag")
        if reported is not None:
            lag, exact = int(reported), True
        else:
            lag, exact = count_undelivered(client, stream, last_id)
        read = info.get("entries-read")
        groups.append(
            GroupInfo(
                group=name,
                consumers=consumer_reports(client.xinfo_consumers(stream, name)),
                pending=int(info["pending"]),
                lag=lag,
                lag_exact=exact,
                last_delivered_id=last_id,
                entries_read=None if read is None else int(read),
            )
        )
    return StreamGroups(
        stream=stream,
        exists=True,
        length=int(length),
        first_id=str(text(first[0][0])) if first else None,
        last_id=str(text(last[0][0])) if last else None,
        memory_bytes=None if memory is None else int(memory),
        groups=tuple(sorted(groups, key=lambda g: g.group)),
    )


def all_groups(client: redis.Redis, streams: list[str] | None = None) -> list[StreamGroups]:
    """Every group of every tutormax stream (or of `streams`); missing known streams are left
    out unless named."""
    if streams:
        return [stream_groups(client, s) for s in streams]
    reports = [stream_groups(client, s) for s in tutormax_streams(client)]
    return [r for r in reports if r.exists]
