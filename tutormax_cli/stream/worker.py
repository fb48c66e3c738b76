"""The MetricsUpdateWorker: Redis Streams in, debounced batch recomputation, ack after commit.

One pass (`run_once`) reads entries (own pending first, then new ones), dead-letters what is
malformed or delivered too often, buffers tutors, reclaims orphans from dead consumers, and
flushes due tutors: one bulk read, one engine call, one upsert transaction, then XACK of every
entry that contributed. `run` adds signals and the loop. Time comes from an injectable `Clock`
so tests drive debounce windows without sleeping.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import redis
import sqlalchemy as sa

from tutormax_cli import keys
from tutormax_cli.metrics.tiers import DEFAULT_TIERS, TierRules
from tutormax_cli.recompute import recompute_as_of
from tutormax_cli.stream.debounce import DebounceBuffer, Pending, entry_time_ms
from tutormax_cli.stream.events import Malformed, decode
from tutormax_cli.stream.observe import WorkerMetrics

log = logging.getLogger("tutormax.worker")

DLQ_FIELDS = ("reason", "source_stream", "source_id", "group")
Entry = tuple[bytes, dict[bytes, bytes] | None]


class Clock(Protocol):
    """Where the worker gets time: `monotonic` for debounce, `now` for as-of and heartbeats."""

    def monotonic(self) -> float: ...

    def now(self) -> datetime: ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC)


def default_consumer() -> str:
    """`hostname-pid`: unique per process, recognisable in `tutormax pending`."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class WorkerConfig:
    """Everything that shapes a worker's behaviour; the CLI fills it from options."""

    stream: str = keys.ENRICHMENT_STREAM
    group: str = keys.METRICS_GROUP
    consumer: str = field(default_factory=default_consumer)
    debounce: float = 30.0
    max_wait: float = 45.0
    claim_idle: float = 120.0
    claim_every: float = 5.0
    max_deliveries: int = 5
    read_count: int = 500
    max_batch_entries: int = 20_000
    block_ms: int = 1000
    burst: bool = False
    heartbeat_ttl: int = 15
    heartbeat_every: float = 2.0
    tiers: TierRules = DEFAULT_TIERS
    dead_letter_stream: str = keys.DEAD_LETTER_STREAM
    updated_stream: str = keys.METRICS_UPDATED_STREAM


@dataclass
class Counts:
    """Totals for the shutdown summary line."""

    entries: int = 0
    tutors: int = 0
    flushes: int = 0
    dead_lettered: int = 0
    errors: int = 0


def _is_connection_error(exc: BaseException) -> bool:
    return isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError) or bool(
        getattr(exc, "connection_invalidated", False)
    )


class MetricsWorker:
    """A consumer of the metrics stream group; see the module docstring for one pass."""

    def __init__(
        self,
        client: redis.Redis,
        engine: sa.Engine,
        config: WorkerConfig,
        *,
        clock: Clock | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.redis = client
        self.engine = engine
        self.config = config
        self.clock = clock or SystemClock()
        self.metrics = metrics or WorkerMetrics()
        self.buffer = DebounceBuffer(config.debounce, config.max_wait)
        self.counts = Counts()
        self.stopping = False
        self.recovering = True  # read own pending entries (from ID 0) before new ones
        self._recover_cursor = "0"
        self._claim_cursor = b"0-0"
        self._last_claim = float("-inf")
        self._last_heartbeat = float("-inf")
        self._backoff = 0.0
        self._retry_at = float("-inf")
        self._started_at = self.clock.now()
        self._last_flush_at: datetime | None = None
        self.idle_passes = 0

    # -- setup and bookkeeping -----------------------------------------------------------------

    def setup(self) -> None:
        """Create the group (and the stream) when missing; an existing group is kept as is."""
        try:
            self.redis.xgroup_create(self.config.stream, self.config.group, id="0", mkstream=True)
            log.info("created group %s on %s", self.config.group, self.config.stream)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def heartbeat(self, force: bool = False) -> None:
        """Refresh this consumer's heartbeat key and the stream gauges, every few seconds."""
        now = self.clock.monotonic()
        if not force and now - self._last_heartbeat < self.config.heartbeat_every:
            return
        self._last_heartbeat = now
        cfg = self.config
        status = {
            "consumer": cfg.consumer,
            "stream": cfg.stream,
            "group": cfg.group,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": self._started_at.isoformat(),
            "last_flush_at": self._last_flush_at.isoformat() if self._last_flush_at else None,
            "entries": self.counts.entries,
            "tutors": self.counts.tutors,
            "flushes": self.counts.flushes,
            "dead_lettered": self.counts.dead_lettered,
            "buffered": len(self.buffer.tutors),
        }
        key = keys.heartbeat_key(cfg.stream, cfg.group, cfg.consumer)
        self.redis.set(key, json.dumps(status), ex=cfg.heartbeat_ttl)
        summary = self.redis.xpending(cfg.stream, cfg.group)
        self.metrics.pending_entries.set(int(summary["pending"]))
        for group in self.redis.xinfo_groups(cfg.stream):
            if group["name"].decode() == cfg.group and group.get("lag") is not None:
                self.metrics.lag_entries.set(int(group["lag"]))

    def clear_heartbeat(self) -> None:
        """Remove the heartbeat at a clean exit, so `worker health` sees the worker gone."""
        cfg = self.config
        self.redis.delete(keys.heartbeat_key(cfg.stream, cfg.group, cfg.consumer))

    # -- reading -------------------------------------------------------------------------------

    def _read(self, entry_id: str, block_ms: int | None, count: int) -> list[Entry]:
        response: Any = self.redis.xreadgroup(
            self.config.group,
            self.config.consumer,
            {self.config.stream: entry_id},
            count=count,
            block=block_ms,
        )
        if not response:
            return []
        # redis-py gives [[stream, entries]] (RESP2) or {stream: [entries]} (RESP3)
        if isinstance(response, dict):
            return [e for entries in response.values() for e in entries[0]]
        return list(response[0][1])

    def _block_ms(self) -> int | None:
        if self.config.burst or self.stopping:
            return None
        next_due = self.buffer.next_due()
        if next_due is None:
            return self.config.block_ms
        wait = max(0.0, next_due - self.clock.monotonic())
        return max(1, min(self.config.block_ms, int(wait * 1000)))

    def read_new(self) -> list[Entry]:
        """Up to `max_batch_entries` new entries: one blocking read, then drain what is there."""
        cfg = self.config
        entries = self._read(">", self._block_ms(), cfg.read_count)
        while (
            entries and len(entries) < cfg.max_batch_entries and len(entries) % cfg.read_count == 0
        ):
            more = self._read(">", None, cfg.read_count)
            if not more:
                break
            entries.extend(more)
        return entries

    def read_own_pending(self) -> list[Entry]:
        """This consumer's unacknowledged entries from a previous life, page by page from ID 0."""
        entries = self._read(self._recover_cursor, None, self.config.read_count)
        if not entries:
            self.recovering = False
            return []
        last = entries[-1][0]
        self._recover_cursor = last.decode() if isinstance(last, bytes) else str(last)
        return entries

    def claim_orphans(self) -> list[Entry]:
        """Entries other consumers left idle longer than `claim_idle` (XAUTOCLAIM), page by page."""
        cfg = self.config
        now = self.clock.monotonic()
        if not cfg.burst and now - self._last_claim < cfg.claim_every:
            return []
        self._last_claim = now
        response: Any = self.redis.xautoclaim(
            cfg.stream,
            cfg.group,
            cfg.consumer,
            min_idle_time=int(cfg.claim_idle * 1000),
            start_id=self._claim_cursor,
            count=cfg.read_count,
        )
        self._claim_cursor = response[0]
        claimed: list[Entry] = list(response[1])
        deleted = response[2] if len(response) > 2 else []
        if deleted:
            self.redis.xack(cfg.stream, cfg.group, *deleted)
        if claimed:
            log.info("claimed %d orphaned entries", len(claimed))
        return claimed

    def deliveries(self, entries: list[Entry]) -> dict[bytes, int]:
        """Delivery counts of recovered or claimed entries (new ones have been delivered once)."""
        if not entries:
            return {}
        ids = sorted((e[0] for e in entries), key=lambda i: tuple(map(int, i.split(b"-"))))
        rows: Any = self.redis.xpending_range(
            self.config.stream,
            self.config.group,
            min=ids[0],
            max=ids[-1],
            count=len(ids) * 2 + 10,
            consumername=self.config.consumer,
        )
        return {row["message_id"]: int(row["times_delivered"]) for row in rows}

    # -- handling ------------------------------------------------------------------------------

    def handle(self, entries: list[Entry], source: str, check_deliveries: bool) -> None:
        """Buffer good entries by tutor; dead-letter the rest (then ack them)."""
        if not entries:
            return
        self.metrics.entries_read.labels(source).inc(len(entries))
        self.counts.entries += len(entries)
        counts = self.deliveries(entries) if check_deliveries else {}
        now = self.clock.monotonic()
        dead: list[tuple[bytes, dict[bytes, bytes], str]] = []
        vanished: list[bytes] = []
        for entry_id, fields in entries:
            if fields is None:  # trimmed or deleted while pending: nothing left to do
                vanished.append(entry_id)
                continue
            times = counts.get(entry_id, 1)
            if times > self.config.max_deliveries:
                dead.append((entry_id, fields, f"delivered {times} times"))
                continue
            event = decode(fields)  # type: ignore[arg-type]
            if isinstance(event, Malformed):
                dead.append((entry_id, fields, event.reason))
            else:
                self.buffer.add(event.tutor_id, entry_id, now)
        if vanished:
            self.redis.xack(self.config.stream, self.config.group, *vanished)
        if dead:
            self.dead_letter(dead)
        self.metrics.buffered_tutors.set(len(self.buffer.tutors))

    def dead_letter(self, dead: list[tuple[bytes, dict[bytes, bytes], str]]) -> None:
        """XADD each entry with its reason to the dead-letter stream, then XACK, atomically."""
        cfg = self.config
        pipe = self.redis.pipeline(transaction=True)
        for entry_id, fields, reason in dead:
            record: dict[bytes | str, bytes | str] = {
                "reason": reason,
                "source_stream": cfg.stream,
                "source_id": entry_id,
                "group": cfg.group,
            }
            for name, value in fields.items():
                key = name.decode("utf-8", "replace")
                record[f"orig:{key}" if key in DLQ_FIELDS else name] = value
            pipe.xadd(cfg.dead_letter_stream, record)  # type: ignore[arg-type]
            log.warning("dead-lettered %s: %s", entry_id.decode(), reason)
        pipe.xack(cfg.stream, cfg.group, *[d[0] for d in dead])
        pipe.execute()
        self.counts.dead_lettered += len(dead)
        self.metrics.dead_lettered.inc(len(dead))
        self.metrics.acked.inc(len(dead))

    # -- flushing ------------------------------------------------------------------------------

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
            self._failed("database" if _is_connection_error(exc) else "compute", exc)
            return 0
        committed = time.time()
        ids = [e for item in taken.values() for e in item.entry_ids]
        try:
            self._ack_and_announce(ids, metrics)
        except redis.RedisError as exc:
            # rows are committed; the entries stay pending and will be redelivered: harmless
            self._failed("redis", exc)
            return 0
        self._succeeded()
        elapsed = time.perf_counter() - started
        self._record_flush(taken, result.seconds, elapsed, committed, len(ids))
        return len(due)

    def _ack_and_announce(self, ids: list[bytes], metrics: Any) -> None:
        cfg = self.config
        pipe = self.redis.pipeline(transaction=False)
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

    def _failed(self, kind: str, exc: BaseException) -> None:
        from tutormax_cli.store.db import describe_error

        self.counts.errors += 1
        self.metrics.errors.labels(kind).inc()
        self._backoff = min(30.0, max(0.5, self._backoff * 2))
        self._retry_at = self.clock.monotonic() + self._backoff
        log.error(
            "%s error, nothing acknowledged, retrying in %.1fs: %s",
            kind, self._backoff, describe_error(exc),
        )  # fmt: skip

    def _succeeded(self) -> None:
        self._backoff = 0.0
        self._retry_at = float("-inf")

    # -- the loop ------------------------------------------------------------------------------

    def run_once(self) -> bool:
        """One pass. Returns False when there was nothing at all to do (for `--burst`)."""
        if self.recovering:
            own = self.read_own_pending()
            self.handle(own, "recovered", check_deliveries=True)
        claimed = self.claim_orphans()
        self.handle(claimed, "claimed", check_deliveries=True)
        new: list[Entry] = []
        if not self.stopping and not self.recovering:
            new = self.read_new()
            self.handle(new, "new", check_deliveries=False)
        flushed = self.flush()
        self.heartbeat()
        busy = bool(new or claimed or self.recovering or flushed or self.buffer.tutors)
        self.idle_passes = 0 if busy else self.idle_passes + 1
        return busy

    def drain(self) -> None:
        """Flush everything buffered now (shutdown), retrying briefly on failure."""
        deadline = self.clock.monotonic() + 30
        while self.buffer.tutors and self.clock.monotonic() < deadline:
            self._retry_at = float("-inf")
            if not self.flush(everything=True) and self.buffer.tutors:
                time.sleep(min(1.0, self._backoff or 0.5))

    def run(self, should_stop: Callable[[], bool] | None = None) -> Counts:
        """Loop until stopped (signal or `should_stop`), or until idle in burst mode; then drain.

        Redis or database outages are logged once per attempt and retried with backoff; entries
        are acknowledged only after their tutors' rows are committed.
        """
        self.metrics.up.set(1)
        reason = "stopped"
        try:
            self._with_retry(self.setup)
            while True:
                if self.stopping or (should_stop is not None and should_stop()):
                    reason = "stop requested"
                    break
                busy = self._with_retry(self.run_once)
                if self.config.burst and busy is False:
                    reason = "burst complete: nothing new, pending, claimable or buffered"
                    break
                wait = self._retry_at - self.clock.monotonic()
                if wait > 0:  # a failed flush backs off; do not spin on reads meanwhile
                    time.sleep(min(0.5, wait))
            self.stopping = True
            self.drain()
        finally:
            self.metrics.up.set(0)
            self._teardown(reason)
        return self.counts

    def _with_retry(self, step: Callable[[], Any]) -> Any:
        try:
            return step()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self._failed("redis", exc)
            time.sleep(min(self._backoff, 5.0))
            return None

    def _teardown(self, reason: str) -> None:
        with contextlib.suppress(redis.RedisError):
            self.clear_heartbeat()
        c = self.counts
        log.info(
            "worker %s exiting (%s): %d entries, %d tutors recomputed in %d flushes, "
            "%d dead-lettered, %d errors, %d tutors still buffered",
            self.config.consumer, reason, c.entries, c.tutors, c.flushes, c.dead_lettered,
            c.errors, len(self.buffer.tutors),
        )  # fmt: skip


def install_signal_handlers(worker: MetricsWorker) -> None:
    """First SIGTERM/SIGINT: stop reading, flush what is buffered, ack, exit 0. Second: exit at
    once; unacknowledged entries stay pending and the janitor of another worker claims them."""
    import signal

    def handler(signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if worker.stopping:
            log.warning("second %s: exiting now; unacknowledged entries stay pending", name)
            logging.shutdown()
            os._exit(1)
        log.info("%s received: stopping after flushing %d buffered tutors", name,
                 len(worker.buffer.tutors))  # fmt: skip
        worker.stopping = True

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
