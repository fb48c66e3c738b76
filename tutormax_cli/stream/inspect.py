"""What an operator asks of the streams: how far behind a consumer group is, which entries are
stuck and where, what is on the dead-letter stream (and putting it back), which workers are
alive, and the feed of metric updates.

Every number is what XINFO, XPENDING and XRANGE report. What an older server does not report is
counted here from the stream itself: a group's `lag` (Redis < 7, or when Redis 7 cannot tell
after deletions) and `entries-added`. Ages are measured against the server's clock (`TIME`), the
clock that stamped the entry IDs. No rendering here: the CLI turns these dataclasses into tables
or JSON, and tests compare them with raw commands.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from tutormax_cli import keys
from tutormax_cli.errors import TutormaxError, UsageError
from tutormax_cli.stream.heartbeat import Worker as Worker  # the views read heartbeats here too
from tutormax_cli.stream.heartbeat import live_workers as live_workers

PAGE = 1000
"""Entries per XRANGE/XPENDING call when a count has to walk a stream."""

SCAN_LIMIT = 200_000
"""At most this many entries are walked to count a lag or find the highest delivery count."""

_ID = re.compile(r"^\d+(-\d+)?$")

DEAD_LETTER_META = ("reason", "source_stream", "source_id", "group")
"""Fields the worker adds to a dead letter; an original field of the same name is `orig:<name>`."""


class UnknownEntry(TutormaxError):
    """A stream entry ID that is not on the stream."""


class NotReplayable(TutormaxError):
    """A dead letter that does not say where it came from, or has no fields to put back."""


Entry = tuple[bytes, dict[bytes, bytes]]
"""A stream entry as redis-py returns it without response decoding: (ID, fields)."""


def _xrange(client: redis.Redis, stream: str, low: str, high: str, count: int) -> list[Entry]:
    return cast(list[Entry], client.xrange(stream, low, high, count=count) or [])


def _xrevrange(client: redis.Redis, stream: str, high: str, low: str, count: int) -> list[Entry]:
    return cast(list[Entry], client.xrevrange(stream, high, low, count=count) or [])


def _pel(
    client: redis.Redis, stream: str, group: str, low: str, count: int, consumer: str | None = None
) -> list[dict[str, Any]]:
    reply = client.xpending_range(stream, group, low, "+", count, consumername=consumer)
    return cast(list[dict[str, Any]], reply or [])


def _text(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value


def check_id(text: str) -> str:
    """A stream entry ID as given on the command line (`1700000000000-0` or `1700000000000`)."""
    text = text.strip()
    if not _ID.match(text):
        raise UsageError(f"{text!r} is not a stream entry ID (e.g. 1767225600000-0)")
    return text if "-" in text else f"{text}-0"


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


def _age_s(now_ms: int, entry_id: str) -> float:
    return round(max(now_ms - id_ms(entry_id), 0) / 1000, 3)


def tutor_of(fields: dict[bytes, bytes]) -> str | None:
    """The `tutor_id` an entry is about, flat or inside an envelope; None when it has none."""
    flat = _text(fields.get(b"tutor_id"))
    if flat is not None:
        return flat
    message = _text(fields.get(b"message"))
    if message is None:
        return None
    try:
        data = json.loads(message).get("data", {})
        tutor = data.get("tutor_id") if isinstance(data, dict) else None
    except (ValueError, AttributeError):
        return None
    return None if tutor is None else str(tutor)


# -- consumer groups ---------------------------------------------------------------------------


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

    def as_dict(self) -> dict[str, Any]:
        """The JSON document of `pending --json`."""
        return {
            "stream": self.stream,
            "group": self.group,
            "length": self.length,
            "lag": self.lag,
            "lag_s": self.lag_s,
            "pending": self.pending,
            "oldest_pending_age_s": self.oldest_pending_age_s,
            "max_deliveries": self.max_deliveries,
            "dead_letter": self.dead_letter,
            "consumers": [c.as_dict() for c in self.consumers],
        }


def _find_group(client: redis.Redis, stream: str, group: str) -> dict[str, Any] | None:
    try:
        groups = client.xinfo_groups(stream)
    except redis.ResponseError as exc:
        if "no such key" in str(exc).lower():
            return None
        raise
    for info in groups:
        if _text(info["name"]) == group:
            return dict(info)
    return None


def _missing(reply: object) -> bool:
    """Whether a reply is the error of a stream or group that does not exist."""
    text = str(reply).lower()
    return isinstance(reply, redis.ResponseError) and ("no such key" in text or "nogroup" in text)


def _snapshot(client: redis.Redis, stream: str, group: str, dead_letters: str) -> dict[str, Any]:
    """TIME, both lengths, the group's XINFO and XPENDING summary and its consumers, read in one
    MULTI so the numbers of a report describe the same instant."""
    pipe = client.pipeline(transaction=True)
    pipe.time()
    pipe.xlen(stream)
    pipe.xlen(dead_letters)
    pipe.xinfo_groups(stream)
    pipe.xpending(stream, group)
    pipe.xinfo_consumers(stream, group)
    replies = pipe.execute(raise_on_error=False)
    for reply in replies:
        if isinstance(reply, Exception) and not _missing(reply):
            raise reply
    clock, length, dead, groups, summary, consumers = replies
    found = [] if _missing(groups) else [g for g in groups if _text(g["name"]) == group]
    return {
        "now": int(clock[0]) * 1000 + int(clock[1]) // 1000,
        "length": int(length),
        "dead": int(dead),
        "group": dict(found[0]) if found else None,
        "pending": None if _missing(summary) else summary,
        "consumers": [] if _missing(consumers) else consumers,
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
        page = _xrange(client, stream, after_from, "+", PAGE)
        after += len(page)
        if len(page) < PAGE:
            return after, True
        after_from = "(" + str(_text(page[-1][0]))
        page = _xrange(client, stream, before_from, last_id, PAGE)
        before += len(page)
        if len(page) < PAGE:
            return max(int(client.xlen(stream)) - before, 0), True
        before_from = "(" + str(_text(page[-1][0]))
    return after, False


def _max_deliveries(client: redis.Redis, stream: str, group: str, low: str) -> int:
    highest, start, walked = 0, low, 0
    while walked < SCAN_LIMIT:
        page = _pel(client, stream, group, start, PAGE)
        highest = max([highest, *(int(p["times_delivered"]) for p in page)])
        walked += len(page)
        if len(page) < PAGE:
            break
        start = "(" + str(_text(page[-1]["message_id"]))
    return highest


def group_report(
    client: redis.Redis,
    stream: str = keys.ENRICHMENT_STREAM,
    group: str = keys.METRICS_GROUP,
    dead_letter_stream: str = keys.DEAD_LETTER_STREAM,
) -> GroupReport:
    """Length, lag, pending entries and consumers of one group; a group that does not exist yet
    (no worker has started) reports every entry on the stream as lag."""
    snap = _snapshot(client, stream, group, dead_letter_stream)
    now, info = snap["now"], snap["group"]
    last_id = _text(info["last-delivered-id"]) if info else "0-0"
    assert last_id is not None
    reported = info.get("lag") if info else None
    if reported is not None:
        lag, exact = int(reported), True
    else:
        lag, exact = count_undelivered(client, stream, last_id)
    lag_s = 0.0
    if lag:
        first = _xrange(client, stream, f"({last_id}", "+", 1)
        lag_s = _age_s(now, str(_text(first[0][0]))) if first else 0.0
    pending, oldest, deliveries = 0, None, 0
    if info is not None and snap["pending"]:
        pending = int(snap["pending"]["pending"])
        if pending:
            low = str(_text(snap["pending"]["min"]))
            oldest = _age_s(now, low)
            deliveries = _max_deliveries(client, stream, group, low)
    consumers = [
        ConsumerReport(
            name=str(_text(c["name"])),
            pending=int(c["pending"]),
            idle_s=round(int(c["idle"]) / 1000, 3),
            inactive_s=None
            if c.get("inactive") is None or int(c["inactive"]) < 0
            else round(int(c["inactive"]) / 1000, 3),
        )
        for c in snap["consumers"]
    ]
    length, dead = snap["length"], snap["dead"]
    return GroupReport(
        stream=stream,
        group=group,
        exists=info is not None,
        length=length,
        lag=lag,
        lag_exact=exact,
        lag_s=lag_s,
        pending=pending,
        oldest_pending_age_s=oldest,
        max_deliveries=deliveries,
        dead_letter=dead,
        last_delivered_id=last_id if info else None,
        consumers=tuple(consumers),
    )


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
    if _find_group(client, stream, group) is None:
        return []
    rows = _pel(client, stream, group, "-", limit, consumer)
    pipe = client.pipeline(transaction=False)
    for row in rows:
        pipe.xrange(stream, row["message_id"], row["message_id"], count=1)
    bodies = pipe.execute() if rows else []
    out = []
    for row, body in zip(rows, bodies, strict=True):
        out.append(
            PendingEntry(
                id=str(_text(row["message_id"])),
                consumer=str(_text(row["consumer"])),
                idle_s=round(int(row["time_since_delivered"]) / 1000, 3),
                deliveries=int(row["times_delivered"]),
                tutor_id=tutor_of(body[0][1]) if body else None,
            )
        )
    return out


# -- the dead-letter stream --------------------------------------------------------------------


@dataclass(frozen=True)
class DeadLetter:
    """An entry the worker could not process: why, where it came from, and its fields as they
    were (raw bytes, so a replay puts back exactly what was read, valid UTF-8 or not)."""

    id: str
    reason: str | None
    source_stream: str | None
    source_id: str | None
    group: str | None
    fields: dict[bytes, bytes]

    def text_fields(self) -> dict[str, str]:
        """The original fields as text (undecodable bytes as `\\x..` escapes)."""
        return {str(_text(k)): str(_text(v)) for k, v in self.fields.items()}

    def as_dict(self, now_ms: int | None = None) -> dict[str, Any]:
        """The JSON object of `dlq list --json` and `dlq show --json`."""
        doc: dict[str, Any] = {
            "id": self.id,
            "reason": self.reason,
            "source_stream": self.source_stream,
            "source_id": self.source_id,
            "group": self.group,
            "fields": self.text_fields(),
        }
        if now_ms is not None:
            doc["age_s"] = _age_s(now_ms, self.id)
        return doc


def _dead_letter(entry_id: bytes | str, raw: dict[bytes, bytes]) -> DeadLetter:
    meta = {name: _text(raw.get(name.encode())) for name in DEAD_LETTER_META}
    reserved = {name.encode() for name in DEAD_LETTER_META}
    fields: dict[bytes, bytes] = {}
    for name, value in raw.items():
        if name in reserved:
            continue
        original = name.removeprefix(b"orig:")
        fields[original if original in reserved else name] = value
    return DeadLetter(
        id=str(_text(entry_id)),
        reason=meta["reason"],
        source_stream=meta["source_stream"],
        source_id=meta["source_id"],
        group=meta["group"],
        fields=fields,
    )


def _walk(client: redis.Redis, stream: str, upto: str | None = None) -> Iterator[DeadLetter]:
    """Every entry of the stream, oldest first, up to `upto` (inclusive) when given."""
    start = "-"
    while True:
        page = _xrange(client, stream, start, upto or "+", PAGE)
        for entry_id, raw in page:
            yield _dead_letter(entry_id, raw)
        if len(page) < PAGE:
            return
        start = "(" + str(_text(page[-1][0]))


def dead_letters(
    client: redis.Redis, stream: str = keys.DEAD_LETTER_STREAM, limit: int | None = None
) -> list[DeadLetter]:
    """The dead letters, oldest first (the first `limit` of them when given)."""
    out: list[DeadLetter] = []
    for letter in _walk(client, stream):
        if limit is not None and len(out) >= limit:
            break
        out.append(letter)
    return out


def dead_letter(
    client: redis.Redis, entry_id: str, stream: str = keys.DEAD_LETTER_STREAM
) -> DeadLetter:
    """One dead letter by ID; `UnknownEntry` names the command that lists the IDs."""
    entry_id = check_id(entry_id)
    found = _xrange(client, stream, entry_id, entry_id, 1)
    if not found:
        raise UnknownEntry(f"no entry {entry_id} on {stream}: `tutormax dlq list` shows the IDs")
    return _dead_letter(found[0][0], found[0][1])


def _select(client: redis.Redis, ids: Sequence[str] | None, stream: str) -> list[DeadLetter]:
    """The named dead letters (all must exist), or every one present now when `ids` is None;
    entries that arrive while a `--all` runs are left for the next run."""
    if ids is not None:
        return [dead_letter(client, i, stream) for i in dict.fromkeys(ids)]
    newest = _xrevrange(client, stream, "+", "-", 1)
    if not newest:
        return []
    return list(_walk(client, stream, upto=str(_text(newest[0][0]))))


@dataclass(frozen=True)
class Replayed:
    """A dead letter put back: its old ID, the stream it went to and its new ID there."""

    dead_letter_id: str
    source_stream: str
    new_id: str


def replay(
    client: redis.Redis, ids: Sequence[str] | None, stream: str = keys.DEAD_LETTER_STREAM
) -> list[Replayed]:
    """XADD each dead letter's original fields to its source stream and XDEL it, both in one
    MULTI so an entry is never lost nor duplicated. Nothing is replayed when one of `ids` is
    unknown or cannot be replayed; `ids=None` replays every dead letter."""
    letters = _select(client, ids, stream)
    for letter in letters:
        if not letter.source_stream:
            raise NotReplayable(
                f"dead letter {letter.id} has no source_stream: put it back by hand "
                f"(`tutormax dlq show {letter.id}`), then `tutormax dlq purge {letter.id}`"
            )
        if not letter.fields:
            raise NotReplayable(
                f"dead letter {letter.id} has no original fields to replay: "
                f"`tutormax dlq purge {letter.id}` removes it"
            )
    done = []
    for letter in letters:
        assert letter.source_stream is not None
        pipe = client.pipeline(transaction=True)
        pipe.xadd(letter.source_stream, letter.fields)  # type: ignore[arg-type]
        pipe.xdel(stream, letter.id)
        new_id, _ = pipe.execute()
        done.append(Replayed(letter.id, letter.source_stream, str(_text(new_id))))
    return done


def purge(
    client: redis.Redis, ids: Sequence[str] | None, stream: str = keys.DEAD_LETTER_STREAM
) -> int:
    """XDEL the named dead letters (all must exist), or every one present now; returns how many
    were deleted."""
    letters = _select(client, ids, stream)
    deleted = 0
    for start in range(0, len(letters), PAGE):
        deleted += int(client.xdel(stream, *[d.id for d in letters[start : start + PAGE]]))
    return deleted


RECENT_LIMIT = 10_000
"""Dead letters of the last hour are counted up to this many (a flood is a flood)."""


@dataclass(frozen=True)
class DeadLetterSummary:
    """How many dead letters there are and how many arrived in the last hour."""

    length: int
    last_hour: int
    newest_age_s: float | None

    def as_dict(self) -> dict[str, Any]:
        """The `dead_letter` object of `status --json`."""
        return {
            "length": self.length,
            "last_hour": self.last_hour,
            "newest_age_s": self.newest_age_s,
        }


def dead_letter_summary(
    client: redis.Redis, stream: str = keys.DEAD_LETTER_STREAM
) -> DeadLetterSummary:
    """Length, arrivals in the last hour (by entry ID, at most `RECENT_LIMIT` counted) and the
    age of the newest dead letter."""
    now = server_ms(client)
    length = int(client.xlen(stream))
    newest = _xrevrange(client, stream, "+", "-", 1)
    hour = str(now - 3_600_000)
    recent = _xrange(client, stream, hour, "+", RECENT_LIMIT) if newest else []
    return DeadLetterSummary(
        length=length,
        last_hour=len(recent),
        newest_age_s=_age_s(now, str(_text(newest[0][0]))) if newest else None,
    )


# -- workers' heartbeats: read in `stream.heartbeat` (re-exported here for the views) ----------


# -- health -----------------------------------------------------------------------------------

STALE_PENDING_S = 300.0
"""A pending entry older than this while workers are alive is a warning (a stuck entry)."""


def status_groups(client: redis.Redis) -> list[GroupReport]:
    """The metrics group always; the validation group of the raw stream when it exists."""
    reports = [group_report(client)]
    if _find_group(client, keys.SESSIONS_STREAM, keys.VALIDATION_GROUP) is not None:
        reports.append(group_report(client, keys.SESSIONS_STREAM, keys.VALIDATION_GROUP))
    return reports


def assess(
    groups: Sequence[GroupReport], workers: Sequence[Worker], dead: DeadLetterSummary
) -> tuple[list[str], list[str]]:
    """(problems, warnings). A problem makes `status` exit 1: a group with lag or pending
    entries and no live worker to take them. Dead letters arriving, an old pending entry and
    lag in seconds are warnings: the system is moving, someone should look."""
    problems, warnings = [], []
    for g in groups:
        alive = [w for w in workers if w.serves(g.stream, g.group)]
        backlog = f"lag {g.lag}, pending {g.pending}"
        if not alive and (g.lag or g.pending):
            problems.append(
                f"no live worker for {g.group} on {g.stream} ({backlog}): start one with "
                "`tutormax worker run`"
            )
        elif g.oldest_pending_age_s is not None and g.oldest_pending_age_s > STALE_PENDING_S:
            warnings.append(
                f"{g.group}: oldest pending entry is {g.oldest_pending_age_s:.0f}s old "
                "(max deliveries "
                f"{g.max_deliveries}): `tutormax pending --entries` shows it"
            )
    if dead.last_hour:
        warnings.append(
            f"{dead.last_hour} dead letter(s) in the last hour ({dead.length} in all): "
            "`tutormax dlq list` shows why"
        )
    return problems, warnings


# -- the metrics-updated feed -------------------------------------------------------------------

WINDOW_NAMES = ("7day", "30day", "90day")


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
    tutor = _text(raw.get(b"tutor_id"))
    if tutor is None:
        return None
    return MetricUpdate(
        id=str(_text(entry_id)),
        tutor_id=tutor,
        calculation_date=_text(raw.get(b"calculation_date")),
        tiers={w: _text(raw.get(f"tier_{w}".encode())) for w in WINDOW_NAMES},
    )


def recent_updates(
    client: redis.Redis, stream: str = keys.METRICS_UPDATED_STREAM, limit: int = 10_000
) -> tuple[list[MetricUpdate], str]:
    """The last `limit` updates, oldest first, and the ID to read new ones after."""
    page = _xrevrange(client, stream, "+", "-", limit)
    updates = [u for u in (_update(i, raw) for i, raw in reversed(page)) if u]
    return updates, str(_text(page[0][0])) if page else "0-0"


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
    for _name, entries in reply or []:
        for entry_id, raw in entries:
            after = str(_text(entry_id))
            update = _update(entry_id, raw)
            if update is not None:
                updates.append(update)
    return updates, after


@dataclass
class BoardRow:
    """A tutor on the watch board: its tiers now and before the latest update."""

    tutor_id: str
    tiers: dict[str, str | None]
    previous: dict[str, str | None]
    updated_ms: int
    updates: int = 1

    @property
    def changed(self) -> list[str]:
        """Windows whose tier the latest update changed."""
        return [
            w
            for w in WINDOW_NAMES
            if self.previous.get(w) is not None and self.previous.get(w) != self.tiers.get(w)
        ]


@dataclass
class Board:
    """The live view's state: the last tiers seen per tutor (primed from the feed's history so
    the first live update can already show a change) and the rows shown."""

    known: dict[str, dict[str, str | None]] = field(default_factory=dict)
    rows: dict[str, BoardRow] = field(default_factory=dict)
    received: int = 0

    def prime(self, updates: Sequence[MetricUpdate]) -> None:
        """Remember tiers without showing anything."""
        for u in updates:
            self.known[u.tutor_id] = dict(u.tiers)

    def apply(self, update: MetricUpdate) -> BoardRow:
        """Record an update; returns the tutor's row with what changed."""
        previous = self.known.get(update.tutor_id, {})
        self.known[update.tutor_id] = dict(update.tiers)
        row = self.rows.get(update.tutor_id)
        count = row.updates + 1 if row else 1
        row = BoardRow(update.tutor_id, dict(update.tiers), previous, id_ms(update.id), count)
        self.rows[update.tutor_id] = row
        self.received += 1
        return row

    def latest(self, limit: int) -> list[BoardRow]:
        """The most recently updated rows first."""
        return sorted(self.rows.values(), key=lambda r: r.updated_ms, reverse=True)[:limit]
