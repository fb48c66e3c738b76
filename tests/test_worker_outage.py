"""Outages longer than `--claim-idle` while a worker holds entries: PostgreSQL or Redis made
unreachable (a TCP proxy the test stops), real time, real servers. Nothing healthy may be
dead-lettered, nothing may be delivered again, and everything is processed once it returns."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from redis.backoff import NoBackoff
from redis.retry import Retry
from typer.testing import CliRunner

from tests.conftest import _empty_tables, _private_redis
from tests.faults import TcpProxy
from tests.helpers import count_rows, recent_sample
from tutormax_cli import keys
from tutormax_cli.cli.app import app
from tutormax_cli.store.db import open_engine
from tutormax_cli.store.migrate import upgrade
from tutormax_cli.store.seed import save_tables
from tutormax_cli.stream import events, heartbeat
from tutormax_cli.stream.consumer import StreamReader
from tutormax_cli.stream.producer import publish
from tutormax_cli.stream.worker import MetricsHandler, WorkerConfig, metrics_worker

STREAM = keys.ENRICHMENT_STREAM
GROUP = keys.METRICS_GROUP
CLAIM_IDLE = 1.0
PASSWORD = "s3cret-pw"  # the machine's PostgreSQL trusts local users: any password connects
OUTAGE = 3.5 * CLAIM_IDLE


def _config(consumer: str, **kw: Any) -> WorkerConfig:
    options: dict[str, Any] = dict(
        debounce=0.2, max_wait=0.5, claim_idle=CLAIM_IDLE, claim_every=0.1, block_ms=50,
        heartbeat_every=0.2, max_backoff=1.0,
    )  # fmt: skip
    return WorkerConfig(consumer=consumer, **(options | kw))


class Running:
    """A worker's `run()` in a thread, stopped (and drained) at the end of the test."""

    def __init__(self, worker: StreamReader[MetricsHandler]) -> None:
        self.worker = worker
        self.stop = threading.Event()
        self.thread = threading.Thread(target=worker.run, args=(self.stop.is_set,), daemon=True)
        self.thread.start()

    def join(self) -> None:
        self.stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive()


def _health(client: redis.Redis, *args: str) -> Any:
    url = client.get_connection_kwargs()
    redis_url = f"redis://{url['host']}:{url['port']}/{url.get('db', 0)}"
    return CliRunner().invoke(app, ["--redis-url", redis_url, "worker", "health", *args])


def _wait_for(predicate: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def _pending(client: redis.Redis) -> list[dict[str, Any]]:
    try:
        return list(client.xpending_range(STREAM, GROUP, "-", "+", 100))
    except redis.ResponseError:
        return []


def _hold_through_outage(client: redis.Redis, seconds: float) -> list[dict[str, Any]]:
    """Sample the PEL every 0.1 s for `seconds`; returns every row seen."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen.extend(_pending(client))
        time.sleep(0.1)
    return seen


@pytest.fixture
def pg_url(pg_engine: sa.Engine, pg_database_url: str) -> str:
    _empty_tables(pg_engine)
    return pg_database_url


def test_postgresql_outage_dead_letters_nothing(
    pg_url: str, rclient: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    direct = open_engine(pg_url)
    save_tables(direct, recent_sample(tutors=3))
    url = sa.make_url(pg_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    through_proxy = open_engine(
        url.set(host="127.0.0.1", port=proxy.port, password=PASSWORD).render_as_string(
            hide_password=False
        )
    )
    caplog.set_level(logging.INFO, logger="tutormax.worker")
    lone = metrics_worker(rclient, through_proxy, _config("lone", max_deliveries=2))
    lone.setup()
    # a second group of one worker on the same stream, for `health`
    lonely = metrics_worker(rclient, through_proxy, _config("lone", group="lonely"))
    lonely.setup()
    proxy.stop()  # the database goes away while the worker buffers
    running = [Running(lone)]
    try:
        publish(rclient, STREAM, [events.flat("T0001"), events.flat("T0002")])
        _wait_for(lambda: len(_pending(rclient)) == 2)
        # a second, healthy worker (direct to the database) must not see lone's entries idle
        other = metrics_worker(rclient, direct, _config("other"))
        running.append(Running(other))
        running.append(Running(lonely))
        seen = _hold_through_outage(rclient, OUTAGE)
        assert {row["consumer"] for row in seen} == {b"lone"}
        assert max(row["times_delivered"] for row in seen) == 1
        assert max(row["time_since_delivered"] for row in seen) < CLAIM_IDLE * 1000
        assert rclient.xlen(keys.DEAD_LETTER_STREAM) == 0 and count_rows(direct) == 0
        assert lone.counts.errors >= 2
        # health and the heartbeat reader say `retrying`, why, and never the password
        (beat,) = heartbeat.live_workers(rclient, STREAM, "lonely")
        assert beat.state == "retrying" and beat.retrying is not None
        assert beat.retrying["kind"] == "database" and beat.retrying["error"] == "OperationalError"
        assert "Connection refused" in beat.retrying["message"]
        assert PASSWORD not in rclient.get(beat.key).decode()  # type: ignore[union-attr]
        health = _health(rclient, "--group", "lonely")
        assert health.exit_code == 1 and "lone retrying since " in health.stdout
        assert "(database OperationalError: connection to server at" in health.stdout
        assert _health(rclient, "--group", "lonely", "--accept-retrying").exit_code == 0
        proxy.start()
        _wait_for(lambda: count_rows(direct) == 6 and not _pending(rclient))
    finally:
        for r in running:
            r.join()
        proxy.stop()
        through_proxy.dispose()
        direct.dispose()
    assert rclient.xlen(keys.DEAD_LETTER_STREAM) == 0
    assert other.counts.entries == 0
    flushes = [r.getMessage() for r in caplog.records if r.getMessage().startswith("flush:")]
    assert flushes and flushes[0].startswith("flush: 2 tutors, 2 entries")


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[str]:
    url, proc = _private_redis(tmp_path)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def test_redis_outage_dead_letters_nothing(
    own_redis: str, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    engine = open_engine(sqlite_url)
    upgrade(engine)
    save_tables(engine, recent_sample(tutors=3))
    server = redis.Redis.from_url(own_redis)
    port = int(own_redis.rsplit(":", 1)[1].split("/")[0])
    proxy = TcpProxy("127.0.0.1", port)
    # redis-py retries a lost connection ten times over many seconds by itself: none here, so a
    # short outage stands for a long one
    client = redis.Redis(
        host="127.0.0.1", port=proxy.port, socket_timeout=5, retry=Retry(NoBackoff(), 0)
    )
    caplog.set_level(logging.INFO, logger="tutormax.worker")
    # an entry already delivered as often as allowed: one more delivery dead-letters it
    lone = metrics_worker(client, engine, _config("lone", max_deliveries=1, debounce=0.5))
    lone.setup()
    running = Running(lone)
    try:
        publish(server, STREAM, [events.flat("T0001"), events.flat("T0002")])
        _wait_for(lambda: len(_pending(server)) == 2)
        proxy.stop()  # Redis goes away while the worker buffers (before its flush can ack)
        time.sleep(OUTAGE)
        assert all(row["time_since_delivered"] > CLAIM_IDLE * 1000 for row in _pending(server))
        proxy.start()
        _wait_for(lambda: count_rows(engine) == 6 and not _pending(server))
    finally:
        running.join()
        proxy.stop()
        engine.dispose()
    assert server.xlen(keys.DEAD_LETTER_STREAM) == 0
    assert lone.counts.errors >= 1
    flushes = [r.getMessage() for r in caplog.records if r.getMessage().startswith("flush:")]
    assert flushes and flushes[0].startswith("flush: 2 tutors, 2 entries")


def test_a_flush_longer_than_the_heartbeat_ttl_stays_healthy(
    pg_url: str, rclient: redis.Redis
) -> None:
    engine = open_engine(pg_url)
    save_tables(engine, recent_sample(tutors=2))
    worker = metrics_worker(
        rclient, engine, _config("slow", debounce=0, max_wait=0, heartbeat_ttl=1)
    )
    worker.setup()
    blocker = engine.connect()
    blocker.execute(sa.text("LOCK TABLE tutor_performance_metrics IN ACCESS EXCLUSIVE MODE"))
    running = Running(worker)
    try:
        publish(rclient, STREAM, [events.flat("T0001")])
        _wait_for(lambda: len(_pending(rclient)) == 1)
        time.sleep(2.5)  # the flush waits on the lock for 2.5 TTLs (nothing acked meanwhile)
        assert len(_pending(rclient)) == 1
        result = _health(rclient)
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith("slow ok: 1 entries")
    finally:
        blocker.rollback()
        blocker.close()
        _wait_for(lambda: not _pending(rclient))
        running.join()
        engine.dispose()
    assert count_rows(engine) == 3
    assert not heartbeat.live_workers(rclient)  # a clean exit removes the heartbeat


def test_a_reconciliation_while_postgresql_is_down_waits_for_it(
    pg_url: str, rclient: redis.Redis
) -> None:
    """A failover noticed while the database is unreachable: the reconciliation is a database
    failure like a flush's (retried with backoff, state `retrying`), not a crash, and it runs
    once the database is back."""
    direct = open_engine(pg_url)
    save_tables(direct, recent_sample(tutors=3))
    url = sa.make_url(pg_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    through_proxy = open_engine(
        url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    )
    worker = metrics_worker(rclient, through_proxy, _config("rec"))
    worker.setup()
    try:
        proxy.stop()
        worker._schedule_reconcile(datetime(2000, 1, 1, tzinfo=UTC))
        worker.with_retry(worker.run_once)  # no exception out of the loop
        assert worker.state == heartbeat.RETRYING and worker.reconcile_since is not None
        assert count_rows(direct) == 0
        proxy.start()

        def reconciled() -> bool:
            worker.with_retry(worker.run_once)
            return count_rows(direct) == 9

        _wait_for(reconciled)
        assert worker.reconcile_since is None and worker.state == heartbeat.OK
        assert worker.metrics.reconciliations._value.get() == 1
    finally:
        proxy.stop()
        through_proxy.dispose()
