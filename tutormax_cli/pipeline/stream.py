"""`tutormax pipeline run`: raw session completions from `tutormax:sessions` through validation,
enrichment and persistence, then published on the enrichment stream for the metrics worker.

A member of the `validation-workers` group with the same safety rules as the metrics worker: a
`StreamReader` (own pending entries first, claims of orphans, dead letters with a reason,
heartbeat, backoff) driving a `PipelineHandler`. Each flush handles the entries read so far as
one batch: valid ones are upserted in one transaction, published after the commit, and only then
acknowledged; invalid rows go back to the reader, which dead-letters them. A crash anywhere
before the ack redelivers the batch, which the idempotent upsert and the idempotent worker
absorb.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime

import redis
import sqlalchemy as sa

from tutormax_cli import keys
from tutormax_cli.stream.clock import Clock, SystemClock
from tutormax_cli.stream.consumer import ConsumerConfig, StreamReader, is_connection_error
from tutormax_cli.stream.handler import Dead, Failure, FlushResult, Good
from tutormax_cli.stream.observe import WorkerMetrics

log = logging.getLogger("tutormax.pipeline")


@dataclass
class PipelineConfig(ConsumerConfig):
    """The pipeline consumer's options: where raw completions come from and go to."""

    stream: str = keys.SESSIONS_STREAM
    group: str = keys.VALIDATION_GROUP
    output_stream: str = keys.ENRICHMENT_STREAM


def pipeline_consumer(
    client: redis.Redis,
    engine: sa.Engine,
    config: PipelineConfig,
    *,
    clock: Clock | None = None,
    metrics: WorkerMetrics | None = None,
    now: datetime | None = None,
) -> StreamReader[PipelineHandler]:
    """A member of `validation-workers`: a `StreamReader` driving a `PipelineHandler`."""
    clock = clock or SystemClock()
    handler = PipelineHandler(client, engine, config, clock=clock, now=now)
    return StreamReader(client, config, handler, clock=clock, metrics=metrics)


class PipelineHandler:
    """Validates, persists and publishes raw completions in batches."""

    role = "pipeline"
    unit = "sessions persisted"

    def __init__(
        self,
        client: redis.Redis,
        engine: sa.Engine,
        config: PipelineConfig,
        *,
        clock: Clock,
        now: datetime | None = None,
    ) -> None:
        self.redis = client
        self.engine = engine
        self.config = config
        self.clock = clock
        self.batch: dict[bytes, dict[bytes, bytes]] = {}
        self._now = now  # fixed validation clock for tests; None = the wall clock

    def accept(self, entries: list[Good], now: float) -> list[Dead]:
        self.batch.update(entries)
        return []

    def buffered(self) -> int:
        return len(self.batch)

    def next_due(self) -> float | None:
        return None  # every pass flushes what it read

    def close(self) -> None:
        pass

    def reconcile(self, since: datetime) -> int:
        """Raw completions are not in the database before this consumer persists them: what a
        failover lost, only their producers can send again."""
        log.warning(
            "%s: entries published since %s may have been lost with the old master; "
            "their producers must send them again", self.role, since.isoformat(),
        )  # fmt: skip
        return 0

    def flush(self, *, everything: bool = False) -> FlushResult:
        """Validate, persist, commit, publish, then ack; invalid rows go back as dead letters."""
        if not self.batch:
            return FlushResult()
        from tutormax_cli.pipeline.enrich import enrich
        from tutormax_cli.pipeline.persist import persist
        from tutormax_cli.pipeline.publish import publish
        from tutormax_cli.pipeline.readers import (
            ENTRY,
            REASON,
            envelopes_frame,
            refuse_unknown_fields,
        )
        from tutormax_cli.pipeline.validate import DatabaseReferences, validate

        started = time.perf_counter()
        batch = dict(self.batch)
        frame = refuse_unknown_fields(envelopes_frame(batch.items()), "sessions")
        try:
            with self.engine.connect() as conn:
                valid, rejects = validate(
                    "sessions", frame, DatabaseReferences(conn), now=self._now
                )
                valid = enrich("sessions", valid)
                persist(conn, "sessions", valid)
                conn.commit()
        except Exception as exc:
            kind = "database" if is_connection_error(exc) else "compute"
            return FlushResult(failures=[Failure(kind, exc)])
        ok = [e.encode() for e in valid.get_column(ENTRY).to_list()]
        try:
            publish(self.redis, valid, stream=self.config.output_stream)
            if ok:
                self.redis.xack(self.config.stream, self.config.group, *ok)
        except Exception as exc:  # rows are committed; the retry re-publishes: harmless
            return FlushResult(failures=[Failure("redis", exc)])
        dead: list[Dead] = [
            (entry.encode(), batch[entry.encode()], str(reason))
            for entry, reason in rejects.select(ENTRY, REASON).iter_rows()
        ]
        self.batch.clear()
        log.info(
            "flush: %d entries, %d persisted and published, %d dead-lettered, %.0f ms",
            len(batch), valid.height, rejects.height, (time.perf_counter() - started) * 1000,
        )  # fmt: skip
        return FlushResult(
            units=valid.height, acked=ok, dead=dead, committed=True,
            committed_at=self.clock.now(),
        )  # fmt: skip
