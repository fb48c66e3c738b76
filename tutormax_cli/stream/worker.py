"""The MetricsUpdateWorker: session events in, debounced batch recomputation, ack after commit.

`MetricsHandler` is what the metrics worker does with its entries; `metrics_worker` puts it
behind a `StreamReader`, which owns the Redis side. Each pass (see `StreamReader.run_once`)
buffers the tutors that entries name; due tutors are
flushed together — one bulk read, one engine call, one upsert transaction — and only then are
the entries that asked for them acknowledged and an update announced per tutor.

Time changes metrics too (`stream.sweep`): the tutors whose window edge the clock crossed join
the same flush (the window sweep, its mark committed with their rows), and after each UTC
midnight the worker writes the end-of-day snapshot of the day that ended (the day rollover), in
chunks between passes.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import redis
import sqlalchemy as sa

from tutormax_cli import keys
from tutormax_cli.errors import UsageError
from tutormax_cli.metrics.tiers import DEFAULT_TIERS, TierRules
from tutormax_cli.recompute import AUTO_OVERLAP, recompute_as_of
from tutormax_cli.store.load import load_changed_tutor_ids
from tutormax_cli.stream import tier_changes
from tutormax_cli.stream.clock import Clock, SystemClock
from tutormax_cli.stream.consumer import (
    ConsumerConfig,
    StreamReader,
    install_signal_handlers,
    is_connection_error,
)
from tutormax_cli.stream.debounce import DebounceBuffer, Pending, entry_time_ms
from tutormax_cli.stream.events import Malformed, decode
from tutormax_cli.stream.handler import Dead, Failure, FlushResult, Good
from tutormax_cli.stream.observe import WorkerMetrics
from tutormax_cli.stream.sweep import Batch, DayRollover, Job, WindowSweep
from tutormax_cli.stream.tier_changes import TierChange
from tutormax_cli.verify import VerifyResult, verify

log = logging.getLogger("tutormax.worker")

__all__ = ["MetricsHandler", "WorkerConfig", "install_signal_handlers", "metrics_worker"]


@dataclass
class WorkerConfig(ConsumerConfig):
    """The metrics worker's options on top of the consumer's."""

    debounce: float = 30.0
    max_wait: float = 45.0
    tiers: TierRules = DEFAULT_TIERS
    updated_stream: str = keys.METRICS_UPDATED_STREAM
    sweep: float = 0.0
    """Seconds between window sweeps (0: off; `worker run` defaults to 60)."""
    sweep_batch: int = 5000
    """At most this many swept (or rolled-over) tutors per flush."""
    lease_ttl: float = 30.0
    """How long a crashed worker's sweep or rollover lease outlives it."""
    rollover: bool = False
    """Write the end-of-day snapshot after each UTC midnight (`worker run` turns it on)."""
    verify_every: float = 0.0
    """Seconds between drift audits of a random sample (0: off; `worker run`: 600)."""
    verify_sample: int = 20
    """Tutors per drift audit."""

    def check(self) -> None:
        """Refuse a `claim_idle` no longer than `max_wait`: a worker holds a tutor's entries up
        to `max_wait` before acknowledging them, so other workers would take healthy ones."""
        if self.claim_idle <= self.max_wait:
            raise UsageError(
                f"--claim-idle ({self.claim_idle:g} s) must be longer than --max-wait "
                f"({self.max_wait:g} s): workers hold entries that long before acknowledging them"
            )


def metrics_worker(
    client: redis.Redis,
    engine: sa.Engine,
    config: WorkerConfig,
    *,
    clock: Clock | None = None,
    metrics: WorkerMetrics | None = None,
) -> StreamReader[MetricsHandler]:
    """A member of `metrics-workers`: a `StreamReader` driving a `MetricsHandler`."""
    clock = clock or SystemClock()
    metrics = metrics or WorkerMetrics()
    handler = MetricsHandler(client, engine, config, clock=clock, metrics=metrics)
    return StreamReader(client, config, handler, clock=clock, metrics=metrics)


class MetricsHandler:
    """Buffers the tutors entries name, recomputes them in batches (with the window sweep's
    and the day rollover's tutors), then acks the entries and announces the updates."""

    role = "worker"
    unit = "tutors recomputed"

    def __init__(
        self,
        client: redis.Redis,
        engine: sa.Engine,
        config: WorkerConfig,
        *,
        clock: Clock,
        metrics: WorkerMetrics,
    ) -> None:
        self.redis = client
        self.engine = engine
        self.config = config
        self.clock = clock
        self.metrics = metrics
        self.buffer = DebounceBuffer(config.debounce, config.max_wait)
        jobs = {
            "client": client, "engine": engine, "clock": self.clock, "group": config.group,
            "owner": config.consumer, "every": config.sweep, "batch_size": config.sweep_batch,
            "lease_ttl": config.lease_ttl,
        }  # fmt: skip
        self.sweep = WindowSweep(**jobs) if config.sweep > 0 else None  # type: ignore[arg-type]
        self._next_audit = float("-inf")
        self.last_audit: VerifyResult | None = None
        self.rollover = (
            DayRollover(**{**jobs, "every": max(config.sweep, 10.0)})  # type: ignore[arg-type]
            if config.rollover
            else None
        )

    def accept(self, entries: list[Good], now: float) -> list[Dead]:
        dead: list[Dead] = []
        for entry_id, fields in entries:
            event = decode(fields)  # type: ignore[arg-type]
            if isinstance(event, Malformed):
                dead.append((entry_id, fields, event.reason))
            else:
                self.buffer.add(event.tutor_id, entry_id, now)
        return dead

    def buffered(self) -> int:
        return len(self.buffer.tutors)

    def reconcile(self, since: datetime) -> int:
        """After a failover or a recreated group: every tutor whose sessions, feedback or
        events changed since `since` (less `AUTO_OVERLAP`, as `recompute --changed-since
        auto` does) becomes due now, so entries the old master lost cost nothing. The rows
        are the truth; recomputing a tutor twice is harmless."""
        with self.engine.connect() as conn:
            tutors = load_changed_tutor_ids(conn, since - AUTO_OVERLAP)
        now = self.clock.monotonic()
        for tutor_id in tutors:
            self.buffer.add_due(tutor_id, now)
        return len(tutors)

    def next_due(self) -> float | None:
        due = self.buffer.next_due()
        for job in (self.sweep, self.rollover):
            if job is not None:
                at = self.clock.monotonic() if job.running else job.next_at
                due = at if due is None else min(due, at)
        return due

    def flush(self, *, everything: bool = False) -> FlushResult:
        """Recompute due tutors (and a sweep's batch) in one batch, commit, then ack their
        entries and announce the updates in one round trip. `everything` (stopping): every
        buffered tutor, and no sweep, rollover or audit."""
        now = self.clock.monotonic()
        failures: list[Failure] = []
        rolled = self._roll(failures) if not everything else 0
        if not everything:
            self.audit()
        due = self.buffer.due(now, everything=everything or self.config.burst)
        batch = self._poll(self.sweep, failures) if not everything else None
        if not due and batch is None:
            return FlushResult(other=rolled, failures=failures)
        taken = self.buffer.take(due)
        tutors = sorted(set(due) | set(batch.tutors)) if batch is not None else due
        started = time.perf_counter()
        try:
            if tutors:
                result, metrics = recompute_as_of(
                    self.engine, self.clock.now(), tutors=tutors, tiers=self.config.tiers,
                    before_commit=batch.mark if batch is not None else None,
                )  # fmt: skip
            else:  # a sweep that found no edge: only its mark moves
                result, metrics = None, None
                self._commit_mark(batch)
        except Exception as exc:
            self.buffer.put_back(taken)
            if batch is not None and self.sweep is not None:
                self.sweep.failed(batch)
            kind = "database" if is_connection_error(exc) else "compute"
            return FlushResult(failures=[*failures, Failure(kind, exc)])
        if batch is not None and self.sweep is not None:
            self.sweep.committed(batch)
            self.metrics.swept_tutors.inc(len(batch.tutors))
        if result is None or metrics is None:
            return FlushResult(committed=True, other=rolled, failures=failures)
        committed = time.time()
        ids = [e for item in taken.values() for e in item.entry_ids]
        changes = [c if c.tutor_id in taken else replace(c, source="sweep") for c in result.changes]
        try:
            self._ack_and_announce(ids, metrics, changes)
        except redis.RedisError as exc:
            # rows are committed; keep the entries and flush them again (an idempotent upsert):
            # dropped here, they would stay pending with nobody to ack them
            self.buffer.put_back(taken)
            return FlushResult(failures=[*failures, Failure("redis", exc)])
        elapsed = time.perf_counter() - started
        self._record_flush(taken, result.seconds, elapsed, committed, len(ids), len(tutors))
        return FlushResult(
            units=len(tutors), acked=ids, committed=True, committed_at=self.clock.now(),
            other=rolled, failures=failures,
        )  # fmt: skip

    def audit(self) -> None:
        """A drift audit of a few random tutors every `verify_every` seconds (not those buffered:
        their rows are about to change); exported as `tutormax_verify_mismatches`."""
        cfg = self.config
        now = self.clock.monotonic()
        if cfg.verify_every <= 0 or cfg.verify_sample <= 0:
            return
        if now < self._next_audit:
            return
        self._next_audit = now + cfg.verify_every
        try:
            result = verify(
                self.engine, sample=cfg.verify_sample, tiers=cfg.tiers, exclude=self.buffer.tutors
            )
        except Exception as exc:  # an audit is advice: it never stops the worker
            log.warning("drift audit failed: %s", exc)
            return
        self.last_audit = result
        m = self.metrics
        m.verify_runs.inc()
        m.verify_rows.set(result.rows)
        m.verify_mismatches.set(result.rows_differing)
        if not result.ok:
            named = ", ".join(f"{k}: {sorted(v.tutors)[:5]}" for k, v in result.metrics.items())
            log.warning(
                "drift audit: %d of %d rows differ from the raw rows (%s)",
                result.rows_differing, result.rows, named,
            )  # fmt: skip

    def _poll(self, job: Job | None, failures: list[Failure]) -> Batch | None:
        """The job's next batch; a Redis or database failure is noted in `failures` (it does
        not stall the flush) and the job is polled again later."""
        if job is None or not job.due():
            return None
        try:
            return job.poll()
        except (redis.RedisError, sa.exc.SQLAlchemyError) as exc:
            kind = "redis" if isinstance(exc, redis.RedisError) else "database"
            failures.append(Failure(kind, exc, stalls=False))
            return None

    def _commit_mark(self, batch: Batch | None) -> None:
        if batch is None or batch.mark is None:
            return
        with self.engine.begin() as conn:
            batch.mark(conn)

    def _roll(self, failures: list[Failure]) -> int:
        """One chunk of the day rollover, as of the midnight that ended the day, in its own
        transaction (its as-of is not the flush's). Returns the tutors written."""
        job = self.rollover
        batch = self._poll(job, failures)
        if job is None or batch is None:
            return 0
        assert batch.as_of is not None
        try:
            if batch.tutors:
                result, _ = recompute_as_of(
                    self.engine, batch.as_of, tutors=batch.tutors, tiers=self.config.tiers,
                    source="rollover", before_commit=batch.mark,
                )  # fmt: skip
            else:
                result = None
                self._commit_mark(batch)
        except Exception as exc:
            job.failed(batch)
            kind = "database" if is_connection_error(exc) else "compute"
            failures.append(Failure(kind, exc, stalls=False))
            return 0
        job.committed(batch)
        self.metrics.rolled_tutors.inc(len(batch.tutors))
        if result is not None and result.changes:
            try:
                pipe = self.redis.pipeline(transaction=False)
                tier_changes.add_to(pipe, result.changes)
                pipe.execute()
            except redis.RedisError as exc:  # the rows are committed; only the feed misses them
                log.warning("rollover: tier changes not published: %s", exc)
            else:
                self._count_changes(result.changes)
        return len(batch.tutors)

    def close(self) -> None:
        """Give up the sweep's and the rollover's leases, so another worker takes over now."""
        for job in (self.sweep, self.rollover):
            if job is not None:
                with contextlib.suppress(redis.RedisError):
                    job.stop()

    def _count_changes(self, changes: Sequence[TierChange]) -> None:
        for change in changes:
            self.metrics.tier_changes.labels(change.window, change.from_tier, change.to_tier).inc()

    def _ack_and_announce(
        self, ids: list[bytes], metrics: Any, changes: Sequence[TierChange] = ()
    ) -> None:
        """Ack the entries, announce each tutor's update and publish the tier changes, in one
        round trip after the commit."""
        cfg = self.config
        pipe = self.redis.pipeline(transaction=False)
        tier_changes.add_to(pipe, changes)
        for start in range(0, len(ids), 10_000):
            pipe.xack(cfg.stream, cfg.group, *ids[start : start + 10_000])
        tiers: dict[str, dict[str, str]] = {}
        calculation: dict[str, str] = {}
        for tutor_id, window, tier, calc in metrics.select(
            "tutor_id", "window", "performance_tier", "calculation_date"
        ).iter_rows():
            tiers.setdefault(tutor_id, {})[f"tier_{window}"] = tier
            calculation[tutor_id] = calc.isoformat()
        for tutor_id, by_window in tiers.items():
            record: dict[Any, Any] = {
                "tutor_id": tutor_id,
                "calculation_date": calculation[tutor_id],
            }
            record.update(by_window)
            pipe.xadd(
                cfg.updated_stream,
                record,
                maxlen=keys.METRICS_UPDATED_MAXLEN,
                approximate=True,
            )
        pipe.execute()
        self._count_changes(changes)

    def _record_flush(
        self,
        taken: dict[str, Pending],
        seconds: dict[str, float],
        elapsed: float,
        committed: float,
        entries: int,
        tutors: int,
    ) -> None:
        m = self.metrics
        m.tutors_recomputed.inc(tutors)
        m.flush_duration.observe(elapsed)
        m.db_write.observe(seconds.get("write", 0.0))
        for item in taken.values():
            for entry_id in item.entry_ids:
                m.latency.observe(max(0.0, committed - entry_time_ms(entry_id) / 1000))
        m.buffered_tutors.set(len(self.buffer.tutors))
        phases = " ".join(f"{k} {v * 1000:.0f}" for k, v in seconds.items())
        log.info(
            "flush: %d tutors, %d entries, %.0f ms (%s)",
            tutors,
            entries,
            elapsed * 1000,
            phases,
        )
