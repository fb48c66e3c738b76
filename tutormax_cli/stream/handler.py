"""What a stream consumer does with its entries (`Handler`), apart from how it reads them.

`consumer.StreamReader` owns everything Redis-side (recovery, claims, delivery counts, dead
letters, held-entry refresh, heartbeat, backoff, failover reconciliation) and drives one handler
through this protocol. The handler buffers what `accept` gives it and commits it in `flush`,
which returns a `FlushResult`; the reader, never the handler, does the bookkeeping that result
asks for (backoff and the `retrying`/`ok` state, counts, the heartbeat's last flush, releasing
and dead-lettering entries).

Who acknowledges: the handler, right after its own commit, because only it knows when what an
entry asked for is durable, and because the ack rides in the same round trip as what it
announces (the metrics worker's update feed). It reports the ids it acknowledged in
`FlushResult.acked`; an entry it could not commit is neither acked nor reported, so it stays
pending and held. Entries a flush finds bad go back in `FlushResult.dead` and the reader
dead-letters them (XADD, then XACK).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

Entry = tuple[bytes, dict[bytes, bytes] | None]
"""An entry as read: its id and fields (None when trimmed or deleted while pending)."""
Good = tuple[bytes, dict[bytes, bytes]]
Dead = tuple[bytes, dict[bytes, bytes], str]
"""An entry to dead-letter: id, original fields, reason."""


@dataclass(frozen=True)
class Failure:
    """Something a flush could not do; the reader counts it, logs it and backs off."""

    kind: str
    """`redis`, `database` or `compute` (the `tutormax_worker_errors_total` label)."""
    error: BaseException
    stalls: bool = True
    """The flush itself failed: the reader reads nothing new until a flush succeeds (what is
    held stays bounded). False for side jobs whose failure only waits for the next pass."""


@dataclass
class FlushResult:
    """What one `flush` did, for the reader to record."""

    units: int = 0
    """Units committed (tutors recomputed, sessions persisted): the summary line's count."""
    acked: list[bytes] = field(default_factory=list)
    """Entries the handler acknowledged after its commit."""
    dead: list[Dead] = field(default_factory=list)
    """Entries the flush found bad: the reader dead-letters them."""
    committed: bool = False
    """Something was committed: reads resume and the state is `ok` again."""
    committed_at: datetime | None = None
    """Set when a flush of buffered work committed: counted as a flush, and reported as the
    heartbeat's `last_flush_at`."""
    other: int = 0
    """Units of side work done outside the flush (day-rollover chunks): keeps `--burst` going."""
    failures: list[Failure] = field(default_factory=list)

    def busy(self) -> bool:
        """Whether the pass did anything (`--burst` stops after a pass that did not)."""
        return bool(self.units or self.other or self.dead)


class Handler(Protocol):
    """What a consumer does with good entries; see the module docstring for the contract."""

    role: str
    """`worker`, `pipeline`: how the reader's log lines name it."""
    unit: str
    """What `units` counts, for the exit summary (`tutors recomputed`)."""

    def accept(self, entries: list[Good], now: float) -> list[Dead]:
        """Buffer well-delivered entries (`now`: the clock's monotonic time); return the ones
        to dead-letter, with reasons."""
        ...

    def flush(self, *, everything: bool = False) -> FlushResult:
        """Commit what is due, then acknowledge its entries. `everything`: all that is
        buffered, and no side jobs (the reader is stopping). Failures are returned in the
        result, not raised (a Redis error raised from here is retried as a Redis outage)."""
        ...

    def buffered(self) -> int:
        """Units held but not yet flushed (unacknowledged work)."""
        ...

    def next_due(self) -> float | None:
        """When buffered work next becomes due (monotonic), to bound blocking reads."""
        ...

    def reconcile(self, since: datetime) -> int:
        """Make up for entries a failover may have lost, published since `since`; returns the
        units scheduled."""
        ...

    def close(self) -> None:
        """After the final drain: release what the handler holds outside the stream (leases)."""
        ...
