"""Changing consumer groups, the operator's way (like `kafka-consumer-groups --reset-offsets`):
move a group's last-delivered ID, delete a group, and prune consumers that are gone.

Everything here is planned first (`plan_*` return what would happen) and applied only when the
CLI says `--execute` (or the operator confirms), so a dry run and the real run share one path.
A consumer is *live* when a heartbeat of this stream and group names it, or when Redis saw it
within `LIVE_IDLE_S`; live consumers make a reset or delete refuse unless forced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import redis

from tutormax_cli.errors import TutormaxError, UsageError
from tutormax_cli.stream import entries
from tutormax_cli.stream.entries import PAGE, text
from tutormax_cli.stream.groups import (
    ConsumerReport,
    StreamNotFound,
    consumer_reports,
    count_undelivered,
    find_group,
)
from tutormax_cli.stream.heartbeat import live_workers

LIVE_IDLE_S = 60.0
"""A consumer Redis saw this recently counts as live even without a heartbeat."""

ORPHANS = "tutormax-orphans"
"""The consumer `consumers prune` parks a dead consumer's pending entries under, their idle time
kept, so that the next claim pass of any live worker (XAUTOCLAIM) takes them: a worker does not
claim entries it holds itself, so parking them under a live worker's name would strand them."""

MAX_SEQ = 18446744073709551615
"""The largest sequence part of an entry ID: `ms-1` + this is the ID just before `ms-0`."""


class UnknownGroup(TutormaxError):
    """A group that does not exist on the stream."""


class LiveConsumers(TutormaxError):
    """A change refused because the group has consumers that are running."""


def _require(client: redis.Redis, stream: str, group: str) -> dict[str, Any]:
    if not client.exists(stream):
        raise StreamNotFound(f"stream {stream} not found: `tutormax groups` lists the streams")
    info = find_group(client, stream, group)
    if info is None:
        raise UnknownGroup(f"no group {group} on {stream}: `tutormax groups` lists the groups")
    return info


def consumers_of(client: redis.Redis, stream: str, group: str) -> tuple[ConsumerReport, ...]:
    """The group's consumers as XINFO CONSUMERS reports them."""
    return consumer_reports(client.xinfo_consumers(stream, group))


def live_names(client: redis.Redis, stream: str, group: str) -> list[str]:
    """The consumers of the group that are live: a heartbeat names them, or Redis saw them
    within `LIVE_IDLE_S`."""
    beating = {w.consumer for w in live_workers(client) if w.serves(stream, group)}
    recent = {c.name for c in consumers_of(client, stream, group) if c.idle_s < LIVE_IDLE_S}
    return sorted(beating | recent)


def before_ms(ms: int) -> str:
    """The entry ID just before every entry of millisecond `ms`, so that a group set there
    delivers the entries from `ms` on."""
    return "0-0" if ms <= 0 else f"{ms - 1}-{MAX_SEQ}"


@dataclass(frozen=True)
class ResetPlan:
    """What `groups reset` would do: the group's last-delivered ID now and after, and its lag
    (entries to be delivered) now and after."""

    stream: str
    group: str
    current_id: str
    target_id: str
    lag_before: int
    lag_after: int
    pending: int
    live: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        """The JSON document of `groups reset --json`."""
        return {
            "stream": self.stream,
            "group": self.group,
            "last_delivered_id": self.current_id,
            "target_id": self.target_id,
            "lag_before": self.lag_before,
            "lag_after": self.lag_after,
            "pending": self.pending,
            "live_consumers": list(self.live),
        }


def plan_reset(client: redis.Redis, stream: str, group: str, target: str) -> ResetPlan:
    """The reset of `group` to last-delivered ID `target` (`$` = the stream's last entry)."""
    info = _require(client, stream, group)
    if target == "$":
        newest = entries.xrevrange(client, stream, "+", "-", 1)
        target = str(text(newest[0][0])) if newest else "0-0"
    current = str(text(info["last-delivered-id"]))
    reported = info.get("lag")
    lag_before = (
        int(reported) if reported is not None else count_undelivered(client, stream, current)[0]
    )
    return ResetPlan(
        stream=stream,
        group=group,
        current_id=current,
        target_id=target,
        lag_before=lag_before,
        lag_after=count_undelivered(client, stream, target)[0],
        pending=int(info["pending"]),
        live=tuple(live_names(client, stream, group)),
    )


def apply_reset(client: redis.Redis, plan: ResetPlan, *, force: bool) -> None:
    """XGROUP SETID, refused while the group has live consumers unless `force`."""
    if plan.live and not force:
        raise LiveConsumers(
            f"group {plan.group} on {plan.stream} has live consumers ({', '.join(plan.live)}): "
            "stop them first, or pass --force"
        )
    client.xgroup_setid(plan.stream, plan.group, plan.target_id)


@dataclass(frozen=True)
class DeletePlan:
    """What `groups delete` would remove."""

    stream: str
    group: str
    consumers: int
    pending: int
    live: tuple[str, ...]


def plan_delete(client: redis.Redis, stream: str, group: str) -> DeletePlan:
    """The deletion of `group`: how many consumers and pending entries go with it."""
    info = _require(client, stream, group)
    return DeletePlan(
        stream,
        group,
        int(info["consumers"]),
        int(info["pending"]),
        tuple(live_names(client, stream, group)),
    )


def apply_delete(client: redis.Redis, plan: DeletePlan, *, force: bool) -> None:
    """XGROUP DESTROY, refused while the group has live consumers unless `force`."""
    if plan.live and not force:
        raise LiveConsumers(
            f"group {plan.group} on {plan.stream} has live consumers ({', '.join(plan.live)}): "
            "stop them first, or pass --force"
        )
    client.xgroup_destroy(plan.stream, plan.group)


@dataclass(frozen=True)
class PrunePlan:
    """What `consumers prune` would do: the dead consumers (idle at least the threshold, no
    heartbeat) and how many pending entries each hands over."""

    stream: str
    group: str
    idle_s: float
    dead: tuple[ConsumerReport, ...]
    kept: tuple[str, ...]

    @property
    def moved(self) -> int:
        """Pending entries that go to `ORPHANS` before the consumers are deleted."""
        return sum(c.pending for c in self.dead)

    def as_dict(self) -> dict[str, Any]:
        """The JSON document of `consumers prune --json`."""
        return {
            "stream": self.stream,
            "group": self.group,
            "idle_s": self.idle_s,
            "dead": [c.as_dict() for c in self.dead],
            "kept": list(self.kept),
            "moved_pending": self.moved,
            "moved_to": ORPHANS if self.moved else None,
        }


def plan_prune(client: redis.Redis, stream: str, group: str, idle_s: float) -> PrunePlan:
    """The consumers of `group` idle at least `idle_s` with no live heartbeat (the orphans'
    holder counts as dead once it holds nothing)."""
    if idle_s <= 0:
        raise UsageError("--idle must be more than 0 (e.g. 1h)")
    _require(client, stream, group)
    beating = {w.consumer for w in live_workers(client) if w.serves(stream, group)}
    dead: list[ConsumerReport] = []
    kept: list[ConsumerReport] = []
    for c in consumers_of(client, stream, group):
        if c.name == ORPHANS:
            (dead if c.pending == 0 else kept).append(c)
        elif c.name not in beating and c.idle_s >= idle_s:
            dead.append(c)
        else:
            kept.append(c)
    return PrunePlan(stream, group, idle_s, tuple(dead), tuple(k.name for k in kept))


def apply_prune(client: redis.Redis, plan: PrunePlan) -> int:
    """Park each dead consumer's pending entries under `ORPHANS` (XCLAIM JUSTID, their idle
    time and delivery count kept), then XGROUP DELCONSUMER it; returns the entries moved.

    Claiming first is what makes the deletion safe: DELCONSUMER drops a consumer's pending
    entries from the group, and they would never be processed."""
    moved = 0
    for consumer in plan.dead:
        if consumer.name == ORPHANS:
            continue
        while True:
            page = entries.pel(client, plan.stream, plan.group, "-", PAGE, consumer.name)
            if not page:
                break
            idle = min(int(p["time_since_delivered"]) for p in page)
            ids = [p["message_id"] for p in page]
            claimed = cast(
                list[bytes],
                client.xclaim(plan.stream, plan.group, ORPHANS, 0, ids, idle=idle, justid=True),
            )
            moved += len(claimed)
            gone = {str(text(i)) for i in ids} - {str(text(i)) for i in claimed}
            if gone:  # entries deleted from the stream meanwhile: nothing to process
                client.xack(plan.stream, plan.group, *gone)
    for consumer in plan.dead:
        if consumer.name != ORPHANS or consumer.pending == 0:
            client.xgroup_delconsumer(plan.stream, plan.group, consumer.name)
    return moved
