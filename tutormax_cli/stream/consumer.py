"""A Redis Streams consumer-group member with the safety rules every tutormax consumer shares.

It reads its own pending entries first (recovery), then new ones; reclaims entries that other
consumers left idle (never its own: a consumer that claimed what it holds would raise the
delivery counts of healthy entries until they are dead-lettered); keeps the entries it holds
looking fresh to the others (XCLAIM to itself with JUSTID, which does not count a delivery);
dead-letters malformed entries and entries delivered too often, with the reason and the original
fields, before acknowledging them; keeps a heartbeat key; retries Redis and database failures
with backoff, reading nothing new while a flush keeps failing; and stops cleanly on a signal.
What to do with good entries (`accept`) and when to commit and ack them (`flush`) is the
handler's (`stream.handler`): the reader drives it and records what each flush returns.
Time, sleeps included, comes from an injectable `Clock` (`stream.clock`) so tests drive debounce
windows and backoff without waiting.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import redis
import sqlalchemy as sa

from tutormax_cli import keys
from tutormax_cli.stream import dead_letters, retention, topology
from tutormax_cli.stream import heartbeat as hb
from tutormax_cli.stream.clock import Clock, SystemClock
from tutormax_cli.stream.entries import id_ms, text
from tutormax_cli.stream.handler import Dead, Entry, FlushResult, Good, Handler
from tutormax_cli.stream.observe import WorkerMetrics

log = logging.getLogger("tutormax.worker")

H = TypeVar("H", bound=Handler)


def default_consumer() -> str:
    """`hostname-pid`: unique per process, recognisable in `tutormax pending`."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class ConsumerConfig:
    """How a consumer reads, recovers and dead-letters; the CLI fills it from options."""

    stream: str = keys.ENRICHMENT_STREAM
    group: str = keys.METRICS_GROUP
    consumer: str = field(default_factory=default_consumer)
    claim_idle: float = 120.0
    claim_every: float = 5.0
    max_deliveries: int = 5
    read_count: int = 500
    max_batch_entries: int = 20_000
    block_ms: int = 1000
    burst: bool = False
    heartbeat_ttl: int = 15
    heartbeat_every: float = 2.0
    max_backoff: float = 30.0
    dead_letter_stream: str = keys.DEAD_LETTER_STREAM
    stream_retention: float = keys.STREAM_RETENTION
    """Seconds of acknowledged history the input stream keeps (`--stream-retention`)."""
    trim: bool = True
    """Trim the input stream and cap the dead letters (`--no-trim` leaves them alone)."""
    dead_letter_maxlen: int = keys.DEAD_LETTER_MAXLEN
    trim_every: float = keys.TRIM_EVERY


@dataclass
class Counts:
    """Totals for the shutdown summary line."""

    entries: int = 0
    tutors: int = 0
    flushes: int = 0
    dead_lettered: int = 0
    errors: int = 0


def is_connection_error(exc: BaseException) -> bool:
    """True for failures worth retrying as they are (the server is down or restarting)."""
    return isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError) or bool(
        getattr(exc, "connection_invalidated", False)
    )


class StreamReader(Generic[H]):
    """One member of a consumer group, driving `handler` (`stream.handler.Handler`)."""

    def __init__(
        self,
        client: redis.Redis,
        config: ConsumerConfig,
        handler: H,
        *,
        clock: Clock | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.redis = client
        self.config = config
        self.handler = handler
        self.clock = clock or SystemClock()
        self.metrics = metrics or WorkerMetrics()
        self.counts = Counts()
        self.stopping = False
        self.recovering = True  # read own pending entries (from ID 0) before new ones
        self._recover_cursor = "0"
        self._claim_cursor = "-"
        self._last_claim = float("-inf")
        self._last_heartbeat = float("-inf")
        self._backoff = 0.0
        self._retry_at = float("-inf")
        self._started_at = self.clock.now()
        self._last_flush_at: datetime | None = None
        self._flush_failing = False
        # entries a flush found bad whose dead-lettering failed: tried again before the next
        self._dead_backlog: list[Dead] = []
        # entries delivered to this consumer and neither acknowledged nor dead-lettered yet
        self._held: set[bytes] = set()
        self._held_lock = threading.Lock()
        self._last_refresh = float("-inf")
        self.state = hb.OK
        self._retrying: dict[str, str] | None = None
        self.trimmer = retention.Trimmer(
            client, config.stream, retention=config.stream_retention,
            dead_letter_stream=config.dead_letter_stream,
            dead_letter_maxlen=config.dead_letter_maxlen, enabled=config.trim,
            every=config.trim_every,
        )  # fmt: skip
        # failover detection: which server holds the stream, and the time below which the
        # group had acknowledged everything on it (what a failover cannot take back)
        self._server: str | None = None
        self._watermark: datetime | None = None
        self.reconcile_since: datetime | None = None
        """Set when a new master or a recreated group may have lost entries: the worker
        recomputes what changed since then (`reconcile`)."""
        self.beats = hb.HeartbeatWriter(
            client,
            keys.heartbeat_key(config.stream, config.group, config.consumer),
            ttl=config.heartbeat_ttl,
            every=config.heartbeat_every,
            status=self.status,
            on_beat=self._on_beat,
        )

    @property
    def role(self) -> str:
        return self.handler.role

    def buffered(self) -> int:
        """Work held and not yet acknowledged: the handler's, and dead letters still to write."""
        return self.handler.buffered() + len(self._dead_backlog)

    # -- setup and bookkeeping -----------------------------------------------------------------

    def setup(self) -> None:
        """Create the group (and the stream) when missing; an existing group is kept as is."""
        try:
            self.redis.xgroup_create(self.config.stream, self.config.group, id="0", mkstream=True)
            log.info("created group %s on %s", self.config.group, self.config.stream)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def status(self) -> dict[str, Any]:
        """What the heartbeat says: who and where, the state, counters, the last flush."""
        cfg = self.config
        return {
            "consumer": cfg.consumer,
            "stream": cfg.stream,
            "group": cfg.group,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "state": self.state,
            "retrying": self._retrying,
            "started_at": self._started_at.isoformat(),
            "last_flush_at": self._last_flush_at.isoformat() if self._last_flush_at else None,
            "entries": self.counts.entries,
            "tutors": self.counts.tutors,
            "flushes": self.counts.flushes,
            "dead_lettered": self.counts.dead_lettered,
            "errors": self.counts.errors,
            "buffered": self.buffered(),
        }

    def heartbeat(self, force: bool = False) -> None:
        """Refresh this consumer's heartbeat key and the stream gauges, every few seconds (the
        heartbeat thread beats too, while `run` runs, so a long flush does not silence it)."""
        now = self.clock.monotonic()
        if not force and now - self._last_heartbeat < self.config.heartbeat_every:
            return
        self._last_heartbeat = now
        self.beats.beat()

    def _on_beat(self) -> None:
        """After each beat: keep held entries fresh, update the stream gauges, notice a new
        master, and trim the streams when due."""
        cfg = self.config
        self.refresh_held()
        self._check_server()
        summary = self.redis.xpending(cfg.stream, cfg.group)
        self.metrics.pending_entries.set(int(summary["pending"]))
        for group in self.redis.xinfo_groups(cfg.stream):
            if text(group["name"]) != cfg.group:
                continue
            if group.get("lag") is not None:
                self.metrics.lag_entries.set(int(group["lag"]))
            oldest = summary.get("min") if int(summary["pending"]) else None
            done = str(text(oldest or group["last-delivered-id"]))
            self._watermark = datetime.fromtimestamp(id_ms(done) / 1000, UTC)
        self.trimmer.maybe_trim(self.clock.monotonic())
        self._stream_gauges()

    def _stream_gauges(self) -> None:
        """Length, memory and trimmed totals of the input and dead-letter streams, in one
        pipeline (one round trip; split by node on a cluster)."""
        cfg = self.config
        streams = (cfg.stream, cfg.dead_letter_stream)
        pipe = self.redis.pipeline(transaction=False)
        for stream in streams:
            pipe.xlen(stream)
            pipe.memory_usage(stream)
            pipe.hmget(keys.trim_key(stream), ["dropped", "below"])
        replies = pipe.execute()
        for i, stream in enumerate(streams):
            length, memory, (dropped, below) = replies[3 * i : 3 * i + 3]
            self.metrics.stream_length.labels(stream).set(int(length or 0))
            self.metrics.stream_memory.labels(stream).set(int(memory or 0))
            self.metrics.stream_trimmed.labels(stream).set(int(dropped or 0))
            if below:
                self.metrics.stream_trimmed_below.labels(stream).set(id_ms(below.decode()) / 1000)

    def _check_server(self) -> None:
        """A new master (Sentinel failover, cluster node failover, restart) may lack the
        last entries and acks the old one had not replicated: schedule a reconciliation
        from the watermark seen on the old one."""
        server = topology.server_id(self.redis, self.config.stream)
        previous, self._server = self._server, server
        if previous is None or previous == server:
            return
        since = self._watermark or self._started_at
        log.warning(
            "the server holding %s changed (failover or restart): reconciling what changed "
            "since %s", self.config.stream, since.isoformat(),
        )  # fmt: skip
        self._schedule_reconcile(since)

    def _schedule_reconcile(self, since: datetime) -> None:
        with self._held_lock:
            current = self.reconcile_since
            self.reconcile_since = since if current is None else min(current, since)

    def _reconcile_now(self) -> None:
        """Run a scheduled reconciliation (main loop only). It reads the database: when that
        is unreachable it is kept for a later pass and counted as a database failure (backoff,
        `retrying`), as a flush's would be, instead of ending the loop."""
        with self._held_lock:
            since, self.reconcile_since = self.reconcile_since, None
        if since is None:
            return
        if self.clock.monotonic() < self._retry_at:  # backing off from a failure: later
            self._schedule_reconcile(since)
            return
        try:
            scheduled = self.handler.reconcile(since)
        except Exception as exc:
            self._schedule_reconcile(since)  # try again next pass
            if not is_connection_error(exc):
                raise
            self._failed("database", exc, flush=True)  # read nothing new meanwhile
            return
        if self._flush_failing:  # the database answered again
            self._succeeded()
        self.metrics.reconciliations.inc()
        log.warning("reconciliation: %d %s scheduled (changed since %s)",
                    scheduled, self.handler.unit, since.isoformat())  # fmt: skip

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            if state != hb.RETRYING:
                self._retrying = None
            self.beats.wake()

    def leave_group(self) -> bool:
        """At a clean exit, delete this consumer from the group when it holds nothing: a
        consumer with pending entries stays, for its next life's recovery or another's claim
        (deleting it would drop those entries from the group's pending list)."""
        cfg = self.config
        if self.buffered() or self.redis.xpending_range(
            cfg.stream, cfg.group, "-", "+", 1, consumername=cfg.consumer
        ):
            return False
        self.redis.xgroup_delconsumer(cfg.stream, cfg.group, cfg.consumer)
        return True

    def clear_heartbeat(self) -> None:
        """Remove the heartbeat at a clean exit, so `worker health` sees the worker gone."""
        self.beats.stop()
        self.beats.clear()

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
        next_due = self.handler.next_due()
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
        """Entries other consumers left idle longer than `claim_idle`, page by page.

        XAUTOCLAIM cannot skip a consumer, and claiming our own buffered entries would count a
        delivery each time until healthy entries are dead-lettered. So: XPENDING IDLE lists
        the idle entries with their owners, and XCLAIM (which re-checks the idle time, so two
        claimers never both win) takes the others'.
        """
        cfg = self.config
        now = self.clock.monotonic()
        if not cfg.burst and now - self._last_claim < cfg.claim_every:
            return []
        self._last_claim = now
        idle_ms = max(1, int(cfg.claim_idle * 1000))
        rows: Any = self.redis.xpending_range(
            cfg.stream, cfg.group, min=self._claim_cursor, max="+", count=cfg.read_count,
            idle=idle_ms,
        )  # fmt: skip
        if len(rows) < cfg.read_count:
            self._claim_cursor = "-"
        else:
            last = rows[-1]["message_id"]
            self._claim_cursor = "(" + (last.decode() if isinstance(last, bytes) else str(last))
        me = cfg.consumer.encode()
        ids = [r["message_id"] for r in rows if _as_bytes(r["consumer"]) != me]
        if not ids:
            return []
        response: Any = self.redis.xclaim(
            cfg.stream, cfg.group, cfg.consumer, min_idle_time=idle_ms, message_ids=ids
        )
        # Redis 7 drops entries deleted from the stream from the PEL; 6.2 answers nil for them
        # but moves them to us all the same, where they would stay pending forever
        claimed: list[Entry] = [e for e in response if e[0] is not None and e[1]]
        if len(claimed) < len(response):
            self._ack_vanished(ids, {e[0] for e in claimed})
        if claimed:
            log.info("claimed %d orphaned entries", len(claimed))
        return claimed

    def _ack_vanished(self, asked: list[bytes], claimed: set[bytes]) -> None:
        """Acknowledge the entries of `asked` that XCLAIM moved to this consumer without their
        fields (deleted or trimmed from the stream while pending, on Redis 6.2): nothing is
        left to process, and unacknowledged they would hold `pending` (and health) forever."""
        cfg = self.config
        keys = sorted(asked, key=lambda i: tuple(map(int, _as_bytes(i).split(b"-"))))
        rows: Any = self.redis.xpending_range(
            cfg.stream, cfg.group, min=keys[0], max=keys[-1], count=len(keys) * 2 + 10,
            consumername=cfg.consumer,
        )  # fmt: skip
        wanted = {_as_bytes(i) for i in asked}
        gone = [
            r["message_id"]
            for r in rows
            if _as_bytes(r["message_id"]) in wanted and _as_bytes(r["message_id"]) not in claimed
        ]
        if gone:
            self.redis.xack(cfg.stream, cfg.group, *gone)
            log.info("acknowledged %d pending entries deleted from the stream", len(gone))

    def refresh_held(self, force: bool = False) -> int:
        """Reset the idle time of every entry this consumer holds (buffered or being flushed),
        every `claim_idle / 3` seconds, so that other consumers never see them as orphans.

        XCLAIM with JUSTID to ourselves does not count a delivery. Returns the entries touched.
        """
        cfg = self.config
        now = self.clock.monotonic()
        if not force and now - self._last_refresh < cfg.claim_idle / 3:
            return 0
        with self._held_lock:
            held: list[Any] = sorted(self._held)
        if held:
            pipe = self.redis.pipeline(transaction=False)
            for start in range(0, len(held), 10_000):
                pipe.xclaim(
                    cfg.stream, cfg.group, cfg.consumer, min_idle_time=0,
                    message_ids=held[start : start + 10_000], justid=True,
                )  # fmt: skip
            pipe.execute()
        self._last_refresh = now  # only once done: after an outage, the first pass refreshes
        return len(held)

    def release(self, entry_ids: list[bytes]) -> None:
        """These entries were acknowledged (or dead-lettered): no longer ours to keep fresh."""
        with self._held_lock:
            self._held.difference_update(entry_ids)

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

    def handle(self, entries: list[Entry], source: str, check_deliveries: bool) -> None:
        """Pass good entries to `accept`; dead-letter the rest (then ack them)."""
        if not entries:
            return
        self.metrics.entries_read.labels(source).inc(len(entries))
        self.counts.entries += len(entries)
        counts = self.deliveries(entries) if check_deliveries else {}
        dead: list[Dead] = []
        vanished: list[bytes] = []
        good: list[Good] = []
        for entry_id, fields in entries:
            if not fields:  # trimmed or deleted while pending (6.2: no fields): nothing to do
                vanished.append(entry_id)
                continue
            times = counts.get(entry_id, 1)
            if times > self.config.max_deliveries:
                dead.append((entry_id, fields, f"delivered {times} times"))
            else:
                good.append((entry_id, fields))
        with self._held_lock:
            self._held.update(e[0] for e in good)
        dead.extend(self.handler.accept(good, self.clock.monotonic()))
        if vanished:
            self.redis.xack(self.config.stream, self.config.group, *vanished)
            self.release(vanished)
        if dead:
            self.dead_letter(dead)
        self.metrics.buffered_tutors.set(self.buffered())

    def dead_letter(self, dead: list[Dead]) -> None:
        """XADD each entry with its reason to the dead-letter stream, then XACK: in one MULTI
        on one server or under Sentinel; on a cluster in two steps, XADD first
        (a crash between them dead-letters the entry again on redelivery: a duplicate dead
        letter, never a lost one)."""
        cfg = self.config
        atomic = topology.transactional(self.redis)
        pipe = self.redis.pipeline(transaction=atomic)
        for entry_id, fields, reason in dead:
            record = dead_letters.record(
                fields, reason=reason, source_stream=cfg.stream, source_id=entry_id,
                group=cfg.group,
            )  # fmt: skip
            pipe.xadd(cfg.dead_letter_stream, record)  # type: ignore[arg-type]
            log.warning("dead-lettered %s: %s", entry_id.decode(), reason)
        if not atomic:
            pipe.execute()
            pipe = self.redis.pipeline(transaction=False)
        pipe.xack(cfg.stream, cfg.group, *[d[0] for d in dead])
        pipe.execute()
        self.release([d[0] for d in dead])
        self.counts.dead_lettered += len(dead)
        self.metrics.dead_lettered.inc(len(dead))
        self.metrics.acked.inc(len(dead))

    def _failed(self, kind: str, exc: BaseException, *, flush: bool = False) -> None:
        """Count and log a failure, back off; a failed flush also stops new reads until a
        flush succeeds (what is held stays bounded) and refreshes the held entries."""
        from tutormax_cli.store.db import describe_error

        if flush:
            self._flush_failing = True
            with contextlib.suppress(redis.RedisError):
                self.refresh_held(force=True)

        self.counts.errors += 1
        self.metrics.errors.labels(kind).inc()
        self._backoff = min(self.config.max_backoff, max(0.5, self._backoff * 2))
        self._retry_at = self.clock.monotonic() + self._backoff
        cause = getattr(exc, "orig", None) or exc
        self._retrying = {
            "since": (self._retrying or {}).get("since") or self.clock.now().isoformat(),
            "kind": kind,
            "error": type(cause).__name__,
            "message": hb.one_line(describe_error(exc)),
        }
        if self.state != hb.DRAINING:
            self._set_state(hb.RETRYING)
        self.beats.wake()
        log.error(
            "%s error, nothing acknowledged, retrying in %.1fs: %s",
            kind, self._backoff, describe_error(exc),
        )  # fmt: skip

    def _succeeded(self) -> None:
        """A flush went through: reads resume, and the worker is `ok` again."""
        self._flush_failing = False
        self._recovered()

    def _recovered(self) -> None:
        self._backoff = 0.0
        self._retry_at = float("-inf")
        if self.state == hb.RETRYING:
            self._set_state(hb.OK)

    def flush(self, *, everything: bool = False) -> bool:
        """Let the handler flush (not while backing off from a failure, unless `everything`),
        then record what it did. Returns whether anything was done."""
        if not everything and self.clock.monotonic() < self._retry_at:
            return False
        if self._dead_backlog:  # what a flush committed is done but for these dead letters
            try:
                self.dead_letter(self._dead_backlog)
            except redis.RedisError as exc:
                self._failed("redis", exc, flush=True)
                return False
            self._dead_backlog = []
            self._succeeded()
        result = self.handler.flush(everything=everything)
        self.record(result)
        return result.busy()

    def record(self, result: FlushResult) -> None:
        """The bookkeeping a flush asks for: failures (count, log, back off, `retrying`),
        acknowledged entries (no longer held), dead letters, and a successful flush (counts,
        the heartbeat's last flush, reads resume, `ok`)."""
        for failure in result.failures:
            self._failed(failure.kind, failure.error, flush=failure.stalls)
        if result.acked:
            self.release(result.acked)
            self.metrics.acked.inc(len(result.acked))
        if result.committed_at is not None:
            self.counts.flushes += 1
            self.counts.tutors += result.units
            self.metrics.flushes.inc()
            self._last_flush_at = result.committed_at
        if result.dead:
            try:
                self.dead_letter(result.dead)
            except redis.RedisError as exc:  # what was committed stays; the dead go next time
                self._dead_backlog.extend(result.dead)
                self._failed("redis", exc, flush=True)
                return
        if result.committed:
            self._succeeded()

    # -- the loop ------------------------------------------------------------------------------

    def run_once(self) -> bool:
        """One pass. Returns False when there was nothing at all to do (for `--burst`)."""
        self._reconcile_now()
        if self.recovering:
            own = self.read_own_pending()
            self.handle(own, "recovered", check_deliveries=True)
        claimed: list[Entry] = []
        new: list[Entry] = []
        if not self._flush_failing:  # while flushes fail, take nothing more on
            claimed = self.claim_orphans()
            self.handle(claimed, "claimed", check_deliveries=True)
            if not self.stopping and not self.recovering:
                new = self.read_new()
                self.handle(new, "new", check_deliveries=False)
        flushed = self.flush(everything=self.stopping)
        self.heartbeat()
        self.refresh_held()
        busy = bool(new or claimed or self.recovering or flushed or self.buffered())
        return busy

    def drain(self) -> None:
        """Flush everything buffered now (shutdown), retrying briefly on failure."""
        deadline = self.clock.monotonic() + 30
        while self.buffered() and self.clock.monotonic() < deadline:
            self._retry_at = float("-inf")
            if not self.flush(everything=True) and self.buffered():
                self.clock.sleep(min(1.0, self._backoff or 0.5))
        self.handler.close()

    def run(self, should_stop: Callable[[], bool] | None = None) -> Counts:
        """Loop until stopped (signal or `should_stop`), or until idle in burst mode; then drain.

        Redis or database outages are logged once per attempt and retried with backoff; entries
        are acknowledged only after what they asked for is committed.
        """
        self.metrics.up.set(1)
        reason = "stopped"
        try:
            self.with_retry(self.setup)
            self.beats.start()
            while True:
                if self.stopping or (should_stop is not None and should_stop()):
                    reason = "stop requested"
                    break
                busy = self.with_retry(self.run_once)
                if self.config.burst and busy is False:
                    reason = "burst complete: nothing new, pending, claimable or buffered"
                    break
                wait = self._retry_at - self.clock.monotonic()
                if wait > 0:  # a failed flush backs off; do not spin on reads meanwhile
                    self.clock.sleep(min(0.5, wait))
            self.stopping = True
            self._set_state(hb.DRAINING)
            self.drain()
        finally:
            self.metrics.up.set(0)
            self._teardown(reason)
        return self.counts

    def with_retry(self, step: Callable[[], Any]) -> Any:
        """Run one step; a Redis outage is counted and backed off from (None is returned), and a
        lost group is recreated and its entries recovered."""
        try:
            result = step()
            if not self._flush_failing:  # Redis answered and no flush is failing
                self._recovered()
            return result
        except topology.TRANSIENT as exc:  # down, failing over, resharding: retry
            self._failed("redis", exc)
            self.clock.sleep(min(self._backoff, 5.0))
            return None
        except redis.ResponseError as exc:
            if not str(exc).startswith(("NOGROUP", "UNBLOCKED")):
                raise
            # the server lost the group (a failover to a replica that never got it, a
            # restart without persistence, or someone deleted it or the stream, which
            # UNBLOCKs a waiting XREADGROUP): recreate it from the start of what is left,
            # and reconcile, since entries it had not delivered may be gone with it
            log.warning("group %s is gone from %s: recreating it", self.config.group,
                        self.config.stream)  # fmt: skip
            self.setup()
            self.recovering = True
            self._recover_cursor = "0"
            self._schedule_reconcile(self._watermark or self._started_at)
            return None

    def _teardown(self, reason: str) -> None:
        self.beats.stop()
        with contextlib.suppress(redis.RedisError):
            self.beats.clear()
            self.leave_group()
            self.trimmer.maybe_trim(force=True)  # what this run acknowledged goes now
        c = self.counts
        log.info(
            "%s %s exiting (%s): %d entries, %d %s in %d flushes, "
            "%d dead-lettered, %d errors, %d still buffered",
            self.role, self.config.consumer, reason, c.entries, c.tutors, self.handler.unit,
            c.flushes, c.dead_lettered, c.errors, self.buffered(),
        )  # fmt: skip


def _as_bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def install_signal_handlers(worker: StreamReader[Any]) -> None:
    """First SIGTERM/SIGINT: stop reading, flush what is buffered, ack, exit 0. Second: exit at
    once, even from inside a blocked database call (`stream.signals`); unacknowledged entries
    stay pending and the janitor of another worker claims them."""
    from tutormax_cli.stream import signals

    signals.install(worker)
