"""The state of `tutormax watch`: the last tiers seen per tutor and what each update changed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from tutormax_cli.stream.entries import id_ms
from tutormax_cli.stream.updates import WINDOW_NAMES, MetricUpdate


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
