"""`tutormax pipeline run`: raw session completions from `tutormax:sessions` through validation,
enrichment and persistence, then published on the enrichment stream for the metrics worker.

A member of the `validation-workers` group with the same safety rules as the metrics worker
(`GroupConsumer`): own pending entries first, claims of orphans, dead letters with a reason,
heartbeat, backoff. Each flush handles the entries read so far as one batch: invalid rows are
dead-lettered, valid ones upserted in one transaction, published after the commit, and only then
acknowledged — a crash anywhere before the ack redelivers the batch, which the idempotent upsert
and the idempotent worker absorb.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime

import redis
import sqlalchemy as sa

from tutormax_cli import keys
from tutormax_cli.stream.consumer import (
    Clock,
    ConsumerConfig,
    Dead,
    GroupConsumer,
    is_connection_error,
)
from tutormax_cli.stream.observe import WorkerMetrics

log = logging.getLogger("tutormax.pipeline")


@dataclass
class PipelineConfig(ConsumerConfig):
    """The pipeline consumer's options: where raw completions come from and go to."""

    stream: str = keys.SESSIONS_STREAM
    group: str = keys.VALIDATION_GROUP
    output_stream: str = keys.ENRICHMENT_STREAM


class PipelineConsumer(GroupConsumer):
    """Validates, persists and publishes raw completions in batches."""

    role = "pipeline"
    unit = "sessions persisted"
    config: PipelineConfig

    def __init__(
        self,
        client: redis.Redis,
        engine: sa.Engine,
        config: PipelineConfig,
        *,
        clock: Clock | None = None,
        metrics: WorkerMetrics | None = None,
        now: datetime | None = None,
    ) -> None:
        super().__init__(client, config, clock=clock, metrics=metrics)
        self.engine = engine
        self.batch: dict[bytes, dict[bytes, bytes]] = {}
        self._now = now  # fixed validation clock for tests; None = the wall clock

    def accept(self, entries: list[tuple[bytes, dict[bytes, bytes]]], now: float) -> list[Dead]:
        self.batch.update(entries)
        return []

    def buffered(self) -> int:
        return len(self.batch)

    def flush(self, *, everything: bool = False) -> int:
        """Validate, persist, commit, publish, then ack (invalid rows: dead letters)."""
        if not self.batch or self.clock.monotonic() < self._retry_at:
            return 0
        from tutormax_cli.pipeline.enrich import enrich
        from tutormax_cli.pipeline.persist import persist
        from tutormax_cli.pipeline.publish import publish
        from tutormax_cli.pipeline.readers import ENTRY, REASON, envelopes_frame
        from tutormax_cli.pipeline.validate import DatabaseReferences, validate

        started = time.perf_counter()
        batch = dict(self.batch)
        frame = envelopes_frame(batch.items())
        try:
            with self.engine.connect() as conn:
                valid, rejects = validate(
                    "sessions", frame, DatabaseReferences(conn), now=self._now
                )
                valid = enrich("sessions", valid)
                persist(conn, "sessions", valid)
                conn.commit()
        except Exception as exc:
            self._failed("database" if is_connection_error(exc) else "compute", exc, flush=True)
            return 0
        try:
            publish(self.redis, valid, stream=self.config.output_stream)
            dead: list[Dead] = [
                (entry.encode(), batch[entry.encode()], str(reason))
                for entry, reason in rejects.select(ENTRY, REASON).iter_rows()
            ]
            if dead:
                self.dead_letter(dead)
                for entry_id, _, _ in dead:  # a retry must not dead-letter them twice
                    self.batch.pop(entry_id, None)
            ok = [e.encode() for e in valid.get_column(ENTRY).to_list()]
            if ok:
                self.redis.xack(self.config.stream, self.config.group, *ok)
                self.release(ok)
        except Exception as exc:  # rows are committed; the retry re-publishes: harmless
            self._failed("redis", exc, flush=True)
            return 0
        self._succeeded()
        self.batch.clear()
        self._last_flush_at = self.clock.now()
        self.counts.flushes += 1
        self.counts.tutors += valid.height
        self.metrics.flushes.inc()
        self.metrics.acked.inc(valid.height)
        log.info(
            "flush: %d entries, %d persisted and published, %d dead-lettered, %.0f ms",
            len(batch), valid.height, rejects.height, (time.perf_counter() - started) * 1000,
        )  # fmt: skip
        return len(batch)
