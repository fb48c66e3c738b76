"""The dead-letter stream: the one definition of a dead letter's fields (the consumers write
them with `record`, the operator views read them back), listing, statistics, replay and purge.

A dead letter is the original entry's fields plus four of ours: `reason`, `source_stream`,
`source_id` and `group`. An original field that has one of those names is kept as
`orig:<name>`, so nothing the producer wrote is lost and a replay puts back exactly what was
read (raw bytes, valid UTF-8 or not).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from tutormax_cli import keys
from tutormax_cli.errors import TutormaxError
from tutormax_cli.stream import entries, topology
from tutormax_cli.stream.entries import PAGE, UnknownEntry, text
from tutormax_cli.stream.events import tutor_of

REASON = "reason"
SOURCE_STREAM = "source_stream"
SOURCE_ID = "source_id"
GROUP = "group"
META = (REASON, SOURCE_STREAM, SOURCE_ID, GROUP)
"""The fields a consumer adds to a dead letter, in the order they are shown."""

ORIGINAL_PREFIX = "orig:"
"""An original field named like one of `META` is stored under this prefix."""

_RESERVED = {name.encode() for name in META}


def record(
    fields: Mapping[bytes, bytes], *, reason: str, source_stream: str, source_id: bytes | str,
    group: str,
) -> dict[bytes | str, bytes | str]:  # fmt: skip
    """The fields to XADD to the dead-letter stream for one entry that cannot be processed."""
    out: dict[bytes | str, bytes | str] = {
        REASON: reason,
        SOURCE_STREAM: source_stream,
        SOURCE_ID: source_id,
        GROUP: group,
    }
    for name, value in fields.items():
        out[ORIGINAL_PREFIX.encode() + name if name in _RESERVED else name] = value
    return out


class NotReplayable(TutormaxError):
    """A dead letter that does not say where it came from, or has no fields to put back."""


@dataclass(frozen=True)
class DeadLetter:
    """An entry a consumer could not process: why, where it came from, and its fields as they
    were (raw bytes, so a replay puts back exactly what was read, valid UTF-8 or not)."""

    id: str
    reason: str | None
    source_stream: str | None
    source_id: str | None
    group: str | None
    fields: dict[bytes, bytes]

    def text_fields(self) -> dict[str, str]:
        """The original fields as text (undecodable bytes as `\\x..` escapes)."""
        return {str(text(k)): str(text(v)) for k, v in self.fields.items()}

    @property
    def tutor_id(self) -> str | None:
        """The tutor the original entry was about, when it names one."""
        return tutor_of(self.fields)

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
            doc["age_s"] = entries.age_s(now_ms, self.id)
        return doc


def decode(entry_id: bytes | str, raw: dict[bytes, bytes]) -> DeadLetter:
    """A dead-letter stream entry as a `DeadLetter`, `orig:` fields back under their names."""
    meta = {name: text(raw.get(name.encode())) for name in META}
    fields: dict[bytes, bytes] = {}
    for name, value in raw.items():
        if name in _RESERVED:
            continue
        original = name.removeprefix(ORIGINAL_PREFIX.encode())
        fields[original if original in _RESERVED else name] = value
    return DeadLetter(
        id=str(text(entry_id)),
        reason=meta[REASON],
        source_stream=meta[SOURCE_STREAM],
        source_id=meta[SOURCE_ID],
        group=meta[GROUP],
        fields=fields,
    )


@dataclass(frozen=True)
class Selection:
    """Which dead letters a command acts on: a reason substring (case-insensitive), entries
    from a moment on (milliseconds), and at most `limit` of them, oldest first."""

    reason: str | None = None
    since_ms: int | None = None
    limit: int | None = None

    def matches(self, letter: DeadLetter) -> bool:
        """Whether `letter` passes the reason filter (the time filter is the XRANGE start)."""
        return self.reason is None or self.reason.lower() in (letter.reason or "").lower()


def _walk(
    client: redis.Redis, stream: str, selection: Selection, upto: str = "+"
) -> Iterator[DeadLetter]:
    low = "-" if selection.since_ms is None else str(selection.since_ms)
    taken = 0
    for entry_id, raw in entries.walk(client, stream, low, upto):
        if selection.limit is not None and taken >= selection.limit:
            return
        letter = decode(entry_id, raw)
        if selection.matches(letter):
            taken += 1
            yield letter


def dead_letters(
    client: redis.Redis,
    stream: str = keys.DEAD_LETTER_STREAM,
    limit: int | None = None,
    selection: Selection | None = None,
) -> list[DeadLetter]:
    """The dead letters, oldest first (the first `limit` of them when given) that `selection`
    chooses (all by default)."""
    chosen = selection or Selection()
    if limit is not None:
        chosen = Selection(chosen.reason, chosen.since_ms, limit)
    return list(_walk(client, stream, chosen))


def dead_letter(
    client: redis.Redis, entry_id: str, stream: str = keys.DEAD_LETTER_STREAM
) -> DeadLetter:
    """One dead letter by ID; `UnknownEntry` names the command that lists the IDs."""
    entry_id = entries.check_id(entry_id)
    found = entries.xrange(client, stream, entry_id, entry_id, 1)
    if not found:
        raise UnknownEntry(f"no entry {entry_id} on {stream}: `tutormax dlq list` shows the IDs")
    return decode(found[0][0], found[0][1])


def select(
    client: redis.Redis,
    ids: Sequence[str] | None,
    stream: str = keys.DEAD_LETTER_STREAM,
    selection: Selection | None = None,
) -> list[DeadLetter]:
    """The named dead letters (all must exist), or those `selection` chooses among the ones
    present now when `ids` is None; entries that arrive meanwhile are left for the next run."""
    if ids is not None:
        return [dead_letter(client, i, stream) for i in dict.fromkeys(ids)]
    newest = entries.xrevrange(client, stream, "+", "-", 1)
    if not newest:
        return []
    return list(_walk(client, stream, selection or Selection(), upto=str(text(newest[0][0]))))


@dataclass(frozen=True)
class Replayed:
    """A dead letter put back: its old ID, the stream it went to and its new ID there."""

    dead_letter_id: str
    source_stream: str
    new_id: str | None


def check_replayable(letters: Sequence[DeadLetter]) -> None:
    """Refuse the whole replay when one letter cannot be put back, naming it and what to do."""
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


def replay(
    client: redis.Redis,
    letters: Sequence[DeadLetter],
    stream: str = keys.DEAD_LETTER_STREAM,
) -> list[Replayed]:
    """XADD each dead letter's original fields to its source stream and XDEL it, both in one
    MULTI so an entry is never lost nor duplicated. On a Redis Cluster, where the two streams
    live in different slots, XADD comes first and XDEL second: an interruption between them
    replays the letter again next time (a duplicate entry, which consumers absorb), never
    loses it. Nothing is replayed when one of them cannot be replayed."""
    check_replayable(letters)
    done = []
    for letter in letters:
        assert letter.source_stream is not None
        if topology.transactional(client):
            pipe = client.pipeline(transaction=True)
            pipe.xadd(letter.source_stream, letter.fields)  # type: ignore[arg-type]
            pipe.xdel(stream, letter.id)
            new_id, _ = pipe.execute()
        else:
            new_id = client.xadd(letter.source_stream, letter.fields)  # type: ignore[arg-type]
            client.xdel(stream, letter.id)
        done.append(Replayed(letter.id, letter.source_stream, str(text(new_id))))
    return done


def purge(
    client: redis.Redis, letters: Sequence[DeadLetter], stream: str = keys.DEAD_LETTER_STREAM
) -> int:
    """XDEL the given dead letters; returns how many were deleted."""
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
    now = entries.server_ms(client)
    length = int(client.xlen(stream))
    newest = entries.xrevrange(client, stream, "+", "-", 1)
    hour = str(now - 3_600_000)
    recent = entries.xrange(client, stream, hour, "+", RECENT_LIMIT) if newest else []
    return DeadLetterSummary(
        length=length,
        last_hour=len(recent),
        newest_age_s=entries.age_s(now, str(text(newest[0][0]))) if newest else None,
    )


@dataclass(frozen=True)
class DeadLetterStats:
    """Dead letters counted by reason and by source stream (of those `selection` chose)."""

    length: int
    counted: int
    by_reason: dict[str, int]
    by_source: dict[str, int]
    oldest_id: str | None
    newest_id: str | None

    def as_dict(self) -> dict[str, Any]:
        """The JSON object of `dlq stats --json`."""
        return {
            "length": self.length,
            "counted": self.counted,
            "by_reason": self.by_reason,
            "by_source": self.by_source,
            "oldest_id": self.oldest_id,
            "newest_id": self.newest_id,
        }


def stats(
    client: redis.Redis,
    stream: str = keys.DEAD_LETTER_STREAM,
    selection: Selection | None = None,
) -> DeadLetterStats:
    """Walk the dead letters (a page at a time) and count them by reason and source stream,
    most frequent first."""
    reasons: Counter[str] = Counter()
    sources: Counter[str] = Counter()
    first = last = None
    for letter in _walk(client, stream, selection or Selection()):
        reasons[letter.reason or "(none)"] += 1
        sources[letter.source_stream or "(none)"] += 1
        first = first or letter.id
        last = letter.id
    return DeadLetterStats(
        length=int(client.xlen(stream)),
        counted=sum(reasons.values()),
        by_reason=dict(reasons.most_common()),
        by_source=dict(sources.most_common()),
        oldest_id=first,
        newest_id=last,
    )
