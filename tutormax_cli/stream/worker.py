"""The MetricsUpdateWorker: session events in, debounced batch recomputation, ack after commit.

Each pass (see `GroupConsumer.run_once`) buffers the tutors that entries name; due tutors are
flushed together — one bulk read, one engine call, one upsert transaction — and only then are
the entries that asked for them acknowledged and an update announced per tutor.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
import sqlalchemy as sa

from tutormax_cli import keys
from tutormax_cli.errors import UsageError
from tutormax_cli.metrics.tiers import DEFAULT_TIERS, TierRules
from tutormax_cli.recompute import recompute_as_of
from tutormax_cli.stream import tier_changes
from tutormax_cli.stream.consumer import (
    Clock,
    ConsumerConfig,
    Dead,
    GroupConsumer,
    install_signal_handlers,
    is_connection_error,
)
from tutormax_cli.stream.debounce import DebounceBuffer, Pending, entry_time_ms
from tutormax_cli.stream.events import Malformed, decode
from tutormax_cli.stream.observe import WorkerMetrics
from tutormax_cli.stream.tier_changes import TierChange

log = logging.getLogger("tutormax.worker")

__all__ = ["MetricsWorker", "WorkerConfig", "install_signal_handlers"]


@dataclass
class WorkerConfig(ConsumerConfig):
    """The metrics worker's options on top of the consumer's."""

    debounce: float = 30.0
    max_wait: float = 45.0
    tiers: TierRules = DEFAULT_TIERS
    updated_stream: str = keys.METRICS_UPDATED_STREAM

    def check(self) -> None:
        """Refuse a `claim_idle` no longer than `max_wait`: a worker holds a tutor's entries up
        to `max_wait` before acknowledging them, so other workers would take healthy ones."""
        if self.claim_idle <= self.max_wait:
            raise UsageError(
                f"--claim-idle ({self.claim_idle:g} s) must be longer than --max-wait "
                f"({self.max_wait:g} s): workers hold entries that long before acknowledging them"
            )


class MetricsWorker(GroupConsumer):
    """A member of `metrics-workers`: buffers tutors, recomputes them in batches."""

    role = "worker"
    unit = "tutors recomputed"
    config: WorkerConfig

    def __init__(
        self,
        client: redis.Redis,
        engine: sa.Engine,
        config: WorkerConfig,
        *,
        clock: Clock | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        super().__init__(client, config, clock=clock, metrics=metrics)
        self.engine = engine
        self.buffer = DebounceBuffer(config.debounce, config.max_wait)

    def accept(self, entries: list[tuple[bytes, dict[bytes, bytes]]], now: float) -> list[Dead]:
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

    def next_due(self) -> float | None:
        return self.buffer.next_due()

    def flush(self, *, everything: bool = False) -> int:
        """Recompute due tutors in one batch, commit, then ack their entries. Returns tutors."""
        now = self.clock.monotonic()
        if now < self._retry_at and not everything:
            return 0
        due = self.buffer.due(now, everything=everything or self.config.burst)
        if not due:
            return 0
        taken = self.buffer.take(due)
        started = time.perf_counter()
        try:
            result, metrics = recompute_as_of(
                self.engine, self.clock.now(), tutors=due, tiers=self.config.tiers
            )
        except Exception as exc:
            self.buffer.put_back(taken)
            self._failed("database" if is_connection_error(exc) else "compute", exc, flush=True)
            return 0
        committed = time.time()
        ids = [e for item in taken.values() for e in item.entry_ids]
        try:
            self._ack_and_announce(ids, metrics, result.changes)
        except redis.RedisError as exc:
            # rows are committed; keep the entries and flush them again (an idempotent upsert):
            # dropped here, they would stay pending with nobody to ack them
            self.buffer.put_back(taken)
            self._failed("redis", exc, flush=True)
            return 0
        self.release(ids)
        self._succeeded()
        elapsed = time.perf_counter() - started
        self._record_flush(taken, result.seconds, elapsed, committed, len(ids))
        return len(due)

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
        for change in changes:
            self.metrics.tier_changes.labels(change.window, change.from_tier, change.to_tier).inc()

    def _record_flush(
        self,
        taken: dict[str, Pending],
        seconds: dict[str, float],
        elapsed: float,
        committed: float,
        entries: int,
    ) -> None:
        m = self.metrics
        m.flushes.inc()
        m.tutors_recomputed.inc(len(taken))
        m.acked.inc(entries)
        m.flush_duration.observe(elapsed)
        m.db_write.observe(seconds.get("write", 0.0))
        for item in taken.values():
            for entry_id in item.entry_ids:
                m.latency.observe(max(0.0, committed - entry_time_ms(entry_id) / 1000))
        m.buffered_tutors.set(len(self.buffer.tutors))
        self.counts.flushes += 1
        self.counts.tutors += len(taken)
        self._last_flush_at = self.clock.now()
        phases = " ".join(f"{k} {v * 1000:.0f}" for k, v in seconds.items())
        log.info(
            "flush: %d tutors, %d entries, %.0f ms (%s)",
            len(taken),
            entries,
            elapsed * 1000,
            phases,
        )
