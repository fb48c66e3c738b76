"""The per-tutor debounce buffer: which tutors are due, and which stream entries each carries.

Pure bookkeeping with no I/O and no clock of its own (times are passed in), so the trailing-edge
and max-wait rules are tested without sleeping.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Pending:
    """A tutor waiting for recomputation and the entries that asked for it."""

    first_seen: float
    last_seen: float
    entry_ids: dict[bytes, None] = field(default_factory=dict)
    """An ordered set: an entry delivered again (recovered, claimed) is still one entry."""
    oldest_entry_ms: int = 0


@dataclass
class DebounceBuffer:
    """Tutors are due `debounce` seconds after their last entry (trailing edge), and never later
    than `max_wait` seconds after their first, so a busy tutor is still refreshed."""

    debounce: float
    max_wait: float
    tutors: dict[str, Pending] = field(default_factory=dict)

    def add(self, tutor_id: str, entry_id: bytes, now: float) -> None:
        """Record that `entry_id` asks for `tutor_id` to be recomputed."""
        item = self.tutors.get(tutor_id)
        entry_ms = entry_time_ms(entry_id)
        if item is None:
            self.tutors[tutor_id] = Pending(now, now, {entry_id: None}, entry_ms)
            return
        item.last_seen = now
        item.entry_ids[entry_id] = None
        item.oldest_entry_ms = min(item.oldest_entry_ms, entry_ms)

    def add_due(self, tutor_id: str, now: float) -> None:
        """Make `tutor_id` due now, with no entry of its own (a reconciliation after a
        failover asks for it, not a stream entry); entries it already carries stay."""
        item = self.tutors.get(tutor_id)
        if item is None:
            self.tutors[tutor_id] = Pending(now - self.max_wait, now - self.debounce)
            return
        item.first_seen = min(item.first_seen, now - self.max_wait)

    def due_at(self, item: Pending) -> float:
        """When a tutor becomes due."""
        return min(item.last_seen + self.debounce, item.first_seen + self.max_wait)

    def due(self, now: float, *, everything: bool = False) -> list[str]:
        """Tutors to flush now (all of them when `everything`, e.g. at shutdown)."""
        if everything:
            return list(self.tutors)
        return [t for t, item in self.tutors.items() if self.due_at(item) <= now]

    def next_due(self) -> float | None:
        """The earliest time any tutor becomes due, to bound the next blocking read."""
        if not self.tutors:
            return None
        return min(self.due_at(item) for item in self.tutors.values())

    def take(self, tutor_ids: list[str]) -> dict[str, Pending]:
        """Remove and return these tutors' entries (after a successful flush, or to retry)."""
        return {t: self.tutors.pop(t) for t in tutor_ids if t in self.tutors}

    def put_back(self, taken: dict[str, Pending]) -> None:
        """Return entries of a failed flush, merged with anything that arrived meanwhile."""
        for tutor_id, item in taken.items():
            current = self.tutors.get(tutor_id)
            if current is None:
                self.tutors[tutor_id] = item
            else:
                current.first_seen = min(current.first_seen, item.first_seen)
                current.entry_ids = item.entry_ids | current.entry_ids
                current.oldest_entry_ms = min(current.oldest_entry_ms, item.oldest_entry_ms)

    @property
    def entry_count(self) -> int:
        """Entries held (unacknowledged) in the buffer."""
        return sum(len(item.entry_ids) for item in self.tutors.values())


def entry_time_ms(entry_id: bytes | str) -> int:
    """The millisecond timestamp Redis put in a stream entry ID (`<ms>-<seq>`)."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.split("-", 1)[0])
