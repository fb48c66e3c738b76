"""Periodic jobs a worker group shares: the window sweep and the day rollover, each coordinated
by a lease in Redis and continued from a mark in the database.

- **Lease** (`tutormax:sweep:lease:<job>:<group>`, SET NX PX): one worker of the group runs a job
  at a time. The holder renews it at each pass and releases it when done; a holder that crashes
  simply stops renewing and the lease runs out (`lease_ttl`), so the next worker takes over.
- **Mark** (`tutormax_state`, per group): how far the job is done — the as-of instant up to which
  window edges were swept, the last day whose end-of-day snapshot was written. It is written in
  the *same transaction* as the rows of the job's last batch, so it never runs ahead of them: a
  job interrupted by a crash is redone from the old mark by the next holder (recomputing a tutor
  twice is harmless), and after downtime the first run covers the whole gap.

A job hands the worker `Batch`es (tutors, and for the rollover the as-of instant); the worker
computes them in its flush and calls `committed` or `failed`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

import sqlalchemy as sa

from tutormax_cli import keys
from tutormax_cli.metrics.windows import LONGEST_DAYS, as_utc, end_of_day, metric_date_of
from tutormax_cli.store.edges import crossed_tutors
from tutormax_cli.store.load import load_tutor_ids
from tutormax_cli.store.state import get_instant, get_state, set_instant, set_state

if TYPE_CHECKING:
    import redis

    from tutormax_cli.stream.clock import Clock

log = logging.getLogger("tutormax.worker")

_RENEW = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"
)
_RELEASE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) "
    "else return 0 end"
)

MAX_ROLLOVER_DAYS = 7
"""After a longer outage the worker writes the last 7 end-of-day snapshots and leaves older days
to `recompute --since` (the nightly timer, or by hand: docs/operations.md)."""


class Lease:
    """A lease with a TTL that only its owner renews or releases (compare-and-set in Lua)."""

    def __init__(self, client: redis.Redis, key: str, owner: str, ttl: float) -> None:
        self.client = client
        self.key = key
        self.owner = owner
        self.ttl_ms = max(1, int(ttl * 1000))

    def acquire(self) -> bool:
        """Take the lease if it is free, or renew it if it is ours already."""
        if self.client.set(self.key, self.owner, nx=True, px=self.ttl_ms):
            return True
        return self.renew()

    def renew(self) -> bool:
        """Extend our lease; False when it ran out or another worker holds it now."""
        return bool(self.client.eval(_RENEW, 1, self.key, self.owner, self.ttl_ms))

    def release(self) -> None:
        """Give the lease back (only if still ours)."""
        self.client.eval(_RELEASE, 1, self.key, self.owner)

    def holder(self) -> str | None:
        """Who holds it now."""
        value = self.client.get(self.key)
        return None if value is None else value.decode() if isinstance(value, bytes) else str(value)


@dataclass
class Batch:
    """Tutors for one flush from a periodic job; `as_of` None: the flush's own instant."""

    job: str
    tutors: list[str]
    final: bool
    mark: Callable[[sa.Connection], None] | None
    """Writes the job's mark in the flush's transaction (final batches only)."""
    as_of: datetime | None = None
    interval: tuple[datetime, datetime] | None = None


@dataclass
class Done:
    """A finished interval (or rolled day), for logs and tests."""

    job: str
    start: datetime
    end: datetime
    tutors: int
    owner: str


class Job:
    """A lease, a mark, a schedule and the batches of the run in progress."""

    job = "job"

    def __init__(
        self,
        client: redis.Redis,
        engine: sa.Engine,
        clock: Clock,
        *,
        group: str,
        owner: str,
        every: float,
        batch_size: int,
        lease_ttl: float,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.every = every
        self.batch_size = batch_size
        self.group = group
        self.owner = owner
        self.lease = Lease(client, keys.sweep_lease_key(self.job, group), owner, lease_ttl)
        self.mark_key = f"worker.{self.job}.{group}"
        self.next_at = float("-inf")
        self.pending: list[str] = []
        self.running = False
        self.handed: Batch | None = None
        self.history: list[Done] = []
        self._tutors_in_run = 0

    def due(self) -> bool:
        """Whether `poll` has something to start or continue now."""
        return self.running or self.clock.monotonic() >= self.next_at

    def poll(self) -> Batch | None:
        """The next batch of this job for the flush, or None (not due, lease held elsewhere,
        nothing to do)."""
        if self.handed is not None:
            return None  # the previous batch is still being flushed
        if self.running:
            if not self.lease.renew():
                log.warning("%s lease lost mid-run: the next holder redoes it", self.job)
                self._abandon()
                return None
            return self._hand()
        if self.clock.monotonic() < self.next_at:
            return None
        self.next_at = self.clock.monotonic() + self.every
        if not self.lease.acquire():
            return None
        try:
            started = self._start()
        except Exception:
            self.lease.release()
            raise
        if not started:
            self.lease.release()
            return None
        self.running = True
        return self._hand()

    def _hand(self) -> Batch:
        chunk, self.pending = self.pending[: self.batch_size], self.pending[self.batch_size :]
        batch = self._batch(chunk, final=not self.pending)
        self.handed = batch
        return batch

    def committed(self, batch: Batch) -> None:
        """The flush holding `batch` committed (and with a final batch, the mark)."""
        self.handed = None
        if batch.final:
            self.running = False
            self._finished(batch)
            self.lease.release()

    def failed(self, batch: Batch) -> None:
        """The flush holding `batch` failed: hand the same tutors again next time."""
        self.handed = None
        self.pending = batch.tutors + self.pending

    def _abandon(self) -> None:
        self.running = False
        self.pending = []
        self.handed = None

    def stop(self) -> None:
        """Give the lease back at shutdown; an unfinished run is redone by the next holder."""
        if self.running:
            self._abandon()
            self.lease.release()

    # -- what each job decides --------------------------------------------------------------

    def _start(self) -> bool:
        raise NotImplementedError

    def _batch(self, tutors: list[str], final: bool) -> Batch:
        raise NotImplementedError

    def _finished(self, batch: Batch) -> None:
        raise NotImplementedError


class WindowSweep(Job):
    """Every `every` seconds: recompute the tutors one of whose window edges the clock crossed
    since the mark (`store.edges`), in the flush, as of the flush's instant."""

    job = "sweep"
    interval: tuple[datetime, datetime] | None = None

    def _start(self) -> bool:
        now = as_utc(self.clock.now())
        with self.engine.connect() as conn:
            mark = get_instant(conn, self.mark_key)
            if mark is None:
                # the first sweep of this group starts at the last UTC midnight, the instant of
                # the end-of-day snapshot every tutor has from the nightly recompute
                mark = now.replace(hour=0, minute=0, second=0, microsecond=0)
                set_instant(conn, self.mark_key, mark)
                conn.commit()
                log.info("sweep: first sweep of group %s, edges swept from %s", self.group, mark)
            if now <= mark:
                return False
            self.pending = crossed_tutors(conn, mark, now)
        self.interval = (mark, now)
        self._tutors_in_run = len(self.pending)
        return True

    def _batch(self, tutors: list[str], final: bool) -> Batch:
        assert self.interval is not None
        end = self.interval[1]
        key = self.mark_key

        def mark(conn: sa.Connection) -> None:
            stored = get_instant(conn, key)
            if stored is None or stored < end:
                set_instant(conn, key, end)

        return Batch(self.job, tutors, final, mark if final else None, interval=self.interval)

    def _finished(self, batch: Batch) -> None:
        assert batch.interval is not None
        start, end = batch.interval
        self.history.append(Done(self.job, start, end, self._tutors_in_run, self.owner))
        log.info(
            "sweep: %d tutors with a window edge in (%s, %s]",
            self._tutors_in_run, start.isoformat(), end.isoformat(),
        )  # fmt: skip


class DayRollover(Job):
    """After each UTC midnight: the end-of-day snapshot of the day that ended (as of that
    midnight, METRICS.md §2) for every tutor with a session in its 90-day window, in chunks."""

    job = "rollover"
    day: date | None = None

    def _start(self) -> bool:
        now = as_utc(self.clock.now())
        last_due = metric_date_of(now.replace(hour=0, minute=0, second=0, microsecond=0))
        with self.engine.connect() as conn:
            text = get_state(conn, self.mark_key)
            done = date.fromisoformat(text) if text else None
            if done is None:  # a new group: days before today are the nightly recompute's
                set_state(conn, self.mark_key, last_due.isoformat())
                conn.commit()
                return False
            if done >= last_due:
                return False
            day = done + timedelta(days=1)
            if (last_due - day).days >= MAX_ROLLOVER_DAYS:
                day = last_due - timedelta(days=MAX_ROLLOVER_DAYS - 1)
                log.warning(
                    "rollover: days %s … %s are left to `tutormax recompute --since %s`",
                    done + timedelta(days=1), day - timedelta(days=1), done + timedelta(days=1),
                )  # fmt: skip
            t = end_of_day(day)
            self.pending = load_tutor_ids(conn, t - timedelta(days=LONGEST_DAYS), t)
        self.day = day
        self._tutors_in_run = len(self.pending)
        return True

    def _batch(self, tutors: list[str], final: bool) -> Batch:
        assert self.day is not None
        day, key = self.day, self.mark_key

        def mark(conn: sa.Connection) -> None:
            stored = get_state(conn, key)
            if stored is None or stored < day.isoformat():
                set_state(conn, key, day.isoformat())

        t = end_of_day(day)
        return Batch(self.job, tutors, final, mark if final else None, as_of=t,
                     interval=(t - timedelta(days=1), t))  # fmt: skip

    def _finished(self, batch: Batch) -> None:
        assert batch.interval is not None
        self.history.append(Done(self.job, *batch.interval, self._tutors_in_run, self.owner))
        log.info(
            "rollover: end-of-day snapshot of %s for %d tutors",
            batch.interval[0].date(), self._tutors_in_run,
        )  # fmt: skip
        self.next_at = float("-inf")  # another missed day may be waiting
