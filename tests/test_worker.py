"""The metrics worker against a real Redis and real databases, with an injected clock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
import redis
import sqlalchemy as sa
from polars.testing import assert_frame_equal

from tests.helpers import (
    T,
    count_rows,
    expected_metrics,
    recent_sample,
    sample,
    sort_metrics,
    stored_metrics,
)
from tests.streams import as_fields, read
from tutormax_cli import keys
from tutormax_cli.store.seed import save_tables
from tutormax_cli.stream import events
from tutormax_cli.stream.consumer import StreamReader
from tutormax_cli.stream.producer import publish
from tutormax_cli.stream.worker import MetricsHandler, WorkerConfig, metrics_worker

STREAM = keys.ENRICHMENT_STREAM
GROUP = keys.METRICS_GROUP


class FakeClock:
    """Monotonic seconds the test advances by hand; wall time is T + those seconds."""

    def __init__(self, start: datetime = T) -> None:
        self.t = 1000.0
        self.start = start
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.t

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.t - 1000.0)

    def advance(self, seconds: float) -> None:
        self.t += seconds

    def sleep(self, seconds: float) -> None:
        """The worker's pauses (backoff) pass at once: the test's time jumps instead."""
        self.slept.append(seconds)
        self.advance(seconds)


def make_worker(
    rclient: redis.Redis, engine: sa.Engine, clock: FakeClock | None = None, **kw: object
) -> StreamReader[MetricsHandler]:
    config = WorkerConfig(consumer=str(kw.pop("consumer", "w1")), block_ms=5, **kw)  # type: ignore[arg-type]
    worker = metrics_worker(rclient, engine, config, clock=clock or FakeClock())
    worker.setup()
    return worker


def pending_count(rclient: redis.Redis) -> int:
    try:
        return int(rclient.xpending(STREAM, GROUP)["pending"])
    except redis.ResponseError:  # the group does not exist yet
        return -1


def test_burst_processes_envelopes_flat_and_malformed(
    engine: sa.Engine, rclient: redis.Redis
) -> None:
    tables = sample(tutors=12)
    save_tables(engine, tables)
    tutors = tables["tutors"]["tutor_id"].to_list()
    good = [
        events.envelope({"tutor_id": t, "session_id": f"S{i}"}, channel=STREAM)
        if i % 2
        else events.flat(t, f"S{i}")
        for i, t in enumerate(tutors * 3)
    ]
    bad = [
        {"session_id": "no tutor"},
        {"message": "{broken"},
        {"tutor_id": "x" * 51},
        {"message": '{"data": {"tutor_id": "T0001"}, "checksum": "bad"}'},
    ]
    publish(rclient, STREAM, good + bad)
    worker = make_worker(rclient, engine, debounce=0, max_wait=0, burst=True)
    counts = worker.run()
    assert counts.entries == len(good) + len(bad)
    assert counts.dead_lettered == 4
    assert pending_count(rclient) == 0
    reasons = sorted(f[b"reason"].decode() for _, f in read(rclient, keys.DEAD_LETTER_STREAM))
    assert reasons == [
        "checksum mismatch",
        "message is not JSON (Expecting property name enclosed in double quotes at 1)",
        "tutor_id longer than 50 characters (51)",
        "tutor_id missing",
    ]
    dead = read(rclient, keys.DEAD_LETTER_STREAM)
    assert {f[b"source_stream"] for _, f in dead} == {STREAM.encode()}
    assert {f[b"group"] for _, f in dead} == {GROUP.encode()}
    assert any(f.get(b"session_id") == b"no tutor" for _, f in dead)  # original fields kept
    # rows equal docs/metrics.md at their calculation_date (the injected clock's now)
    as_of = worker.clock.now()
    assert_frame_equal(stored_metrics(engine), sort_metrics(expected_metrics(tables, as_of)))
    updates = read(rclient, keys.METRICS_UPDATED_STREAM)
    assert {f[b"tutor_id"].decode() for _, f in updates} == set(tutors)
    assert {b"tier_7day", b"tier_30day", b"tier_90day"} <= set(updates[0][1])


def test_debounce_trailing_edge_and_max_wait(sqlite_url: str, rclient: redis.Redis) -> None:
    from tutormax_cli.store.db import open_engine
    from tutormax_cli.store.migrate import upgrade

    engine = open_engine(sqlite_url)
    upgrade(engine)
    save_tables(engine, sample(tutors=3))
    clock = FakeClock()
    worker = make_worker(rclient, engine, clock, debounce=30, max_wait=45)
    publish(rclient, STREAM, [events.flat("T0001")])
    worker.run_once()
    assert set(worker.handler.buffer.tutors) == {"T0001"} and count_rows(engine) == 0
    for _ in range(3):  # a steady stream keeps pushing the trailing edge ...
        clock.advance(12)
        publish(rclient, STREAM, [events.flat("T0001")])
        worker.run_once()
    assert count_rows(engine) == 0 and pending_count(rclient) == 4  # 36 s: not due yet
    clock.advance(9.5)  # ... but max-wait (45 s after the first entry) wins
    worker.run_once()
    assert count_rows(engine) == 3 and pending_count(rclient) == 0
    publish(rclient, STREAM, [events.flat("T0002")])
    worker.run_once()
    clock.advance(29.9)
    worker.run_once()
    assert pending_count(rclient) == 1
    clock.advance(0.2)  # 30 s after its last entry
    worker.run_once()
    assert pending_count(rclient) == 0 and count_rows(engine) == 6


def test_nothing_acked_when_the_database_fails(tmp_path: Path, rclient: redis.Redis) -> None:
    from tutormax_cli.store.db import open_engine
    from tutormax_cli.store.migrate import upgrade

    engine = open_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    upgrade(engine)
    save_tables(engine, sample(tutors=2))
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE tutor_performance_metrics RENAME TO moved_away"))
    clock = FakeClock()
    worker = make_worker(rclient, engine, clock, debounce=0, max_wait=0)
    publish(rclient, STREAM, [events.flat("T0001"), events.flat("T0002")])
    worker.run_once()
    assert pending_count(rclient) == 2 and worker.counts.errors == 1
    assert set(worker.handler.buffer.tutors) == {"T0001", "T0002"}
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE moved_away RENAME TO tutor_performance_metrics"))
    clock.advance(1)  # past the backoff
    worker.run_once()
    assert pending_count(rclient) == 0 and count_rows(engine) == 6


def test_backoff_sleeps_on_the_injected_clock(tmp_path: Path, rclient: redis.Redis) -> None:
    """A flush that keeps failing backs off 0.5, 1, 2 ... s up to `max_backoff`, each wait on the
    worker's clock (a real sleep would make this test take minutes), reading nothing new."""
    from tutormax_cli.store.db import open_engine
    from tutormax_cli.store.migrate import upgrade

    engine = open_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    upgrade(engine)
    save_tables(engine, sample(tutors=1))
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE tutor_performance_metrics RENAME TO moved_away"))
    clock = FakeClock()
    worker = make_worker(rclient, engine, clock, debounce=0, max_wait=0, max_backoff=4)
    publish(rclient, STREAM, [events.flat("T0001")])
    started = time.monotonic()
    worker.run(
        should_stop=lambda: (
            clock.t > 1030 or worker.counts.errors >= 8 or time.monotonic() - started > 10
        )
    )
    assert time.monotonic() - started < 5  # waits of 7.5 s and more, none of them real
    assert worker.counts.errors >= 5 and pending_count(rclient) == 1
    assert worker.counts.entries == 1  # nothing new was read while the flush failed
    # the loop waits out each backoff in steps of at most 0.5 s, the final drain in 1 s steps
    assert clock.slept and max(clock.slept) <= 1.0
    assert sum(clock.slept) >= 0.5 + 1 + 2 + 4
    assert worker.metrics.errors.labels("database")._value.get() == worker.counts.errors
    assert worker.status()["state"] == "draining" and worker.status()["last_flush_at"] is None


def test_redelivery_and_two_workers_converge(engine: sa.Engine, rclient: redis.Redis) -> None:
    tables = sample(tutors=8)
    save_tables(engine, tables)
    tutors = tables["tutors"]["tutor_id"].to_list()
    publish(rclient, STREAM, [events.flat(t) for t in tutors * 2])
    clock = FakeClock()
    a = make_worker(rclient, engine, clock, consumer="a", debounce=0, max_wait=0, read_count=5)
    b = make_worker(rclient, engine, clock, consumer="b", debounce=0, max_wait=0, read_count=5)
    a.config.max_batch_entries = b.config.max_batch_entries = 5
    for _ in range(6):
        a.run_once()
        b.run_once()
    assert a.counts.entries > 0 and b.counts.entries > 0
    assert a.counts.entries + b.counts.entries == 16
    assert pending_count(rclient) == 0
    rows = count_rows(engine)
    # the same tutors again (a redelivery or a replay): same keys, same values
    publish(rclient, STREAM, [events.flat(t) for t in tutors])
    a.run_once()
    assert count_rows(engine) == rows == 3 * len(tutors)
    assert_frame_equal(stored_metrics(engine), sort_metrics(expected_metrics(tables, clock.now())))


def test_orphans_are_claimed_and_poison_entries_dead_lettered(
    sqlite_url: str, rclient: redis.Redis
) -> None:
    from tutormax_cli.store.db import open_engine
    from tutormax_cli.store.migrate import upgrade

    engine = open_engine(sqlite_url)
    upgrade(engine)
    save_tables(engine, sample(tutors=2))
    publish(rclient, STREAM, [events.flat("T0001"), events.flat("T0002")])
    rclient.xgroup_create(STREAM, GROUP, id="0")
    rclient.xreadgroup(GROUP, "dead", {STREAM: ">"}, count=1)  # T0001 delivered, never acked
    # T0001's entry was delivered to five more consumers that all died
    for n in range(4):
        time.sleep(0.002)
        rclient.xautoclaim(STREAM, GROUP, f"dead{n}", min_idle_time=1, start_id="0-0")
    time.sleep(0.005)
    worker = make_worker(
        rclient, engine, debounce=0, max_wait=0, claim_idle=0.001, max_deliveries=5, burst=True
    )
    worker.run()
    # the poison entry (6th delivery) is dead-lettered, the other one computed
    dead = read(rclient, keys.DEAD_LETTER_STREAM)
    assert [f[b"reason"] for _, f in dead] == [b"delivered 6 times"]
    assert dead[0][1][b"tutor_id"] == b"T0001"
    assert pending_count(rclient) == 0
    assert count_rows(engine) == 3


def _cli_env(db_url: str, redis_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(TUTORMAX_DATABASE_URL=db_url, TUTORMAX_REDIS_URL=redis_url)
    return env


def _start_worker(db_url: str, redis_url: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        # no window sweep or rollover unless a test asks: they would add flushes of their own
        [
            sys.executable,
            "-m",
            "tutormax_cli",
            "worker",
            "run",
            "--sweep",
            "0",
            "--no-rollover",
            *args,
        ],
        env=_cli_env(db_url, redis_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(predicate: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


@pytest.mark.slow
def test_kill_9_loses_nothing_and_another_worker_finishes(
    db_url: str, redis_url: str, rclient: redis.Redis
) -> None:
    from tutormax_cli.store.db import open_engine

    engine = open_engine(db_url)
    save_tables(engine, recent_sample(tutors=5))
    proc = _start_worker(db_url, redis_url, "--consumer", "victim", "--debounce", "30")
    try:
        publish(rclient, STREAM, [events.flat(f"T000{i}") for i in range(1, 6)])
        _wait_for(lambda: pending_count(rclient) == 5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
    assert count_rows(engine) == 0
    time.sleep(0.3)
    done = subprocess.run(
        [sys.executable, "-m", "tutormax_cli", "worker", "run", "--burst", "--debounce", "0",
         "--sweep", "0", "--no-rollover",
         "--consumer", "rescuer", "--max-wait", "0", "--claim-idle", "0.2"],
        env=_cli_env(db_url, redis_url), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "claimed 5 orphaned entries" in done.stderr
    assert pending_count(rclient) == 0 and count_rows(engine) == 15


@pytest.mark.slow
def test_sigterm_flushes_buffered_tutors_and_exits_0(
    sqlite_url: str, redis_url: str, rclient: redis.Redis
) -> None:
    from tutormax_cli.store.db import open_engine
    from tutormax_cli.store.migrate import upgrade

    engine = open_engine(sqlite_url)
    upgrade(engine)
    save_tables(engine, recent_sample(tutors=3))
    proc = _start_worker(sqlite_url, redis_url, "--consumer", "w", "--debounce", "30")
    publish(rclient, STREAM, [events.flat("T0001"), events.flat("T0003")])
    _wait_for(lambda: pending_count(rclient) == 2)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert time.monotonic() - started < 5
    assert "SIGTERM received" in err and "2 entries, 2 tutors recomputed in 1 flushes" in err
    assert pending_count(rclient) == 0 and count_rows(engine) == 6
    assert not rclient.keys(keys.HEARTBEAT_PREFIX + "*")
    assert rclient.xinfo_consumers(STREAM, GROUP) == []  # a clean exit leaves the group


def test_health_sees_a_heartbeat(sqlite_url: str, redis_url: str, rclient: redis.Redis) -> None:
    from typer.testing import CliRunner

    from tutormax_cli.cli.app import app
    from tutormax_cli.store.db import open_engine

    runner = CliRunner()
    env = _cli_env(sqlite_url, redis_url)
    result = runner.invoke(app, ["worker", "health"], env=env)
    assert result.exit_code == 1
    assert "No live worker on tutormax:sessions:enrichment" in result.output
    worker = make_worker(rclient, open_engine(sqlite_url), consumer="alive")
    worker.heartbeat(force=True)
    assert 0 < rclient.ttl(keys.heartbeat_key(STREAM, GROUP, "alive")) <= 15
    result = runner.invoke(app, ["worker", "health", "--json"], env=env)
    assert result.exit_code == 0
    assert '"consumer": "alive"' in result.output


def test_unreachable_redis_is_one_line_error(sqlite_url: str) -> None:
    from typer.testing import CliRunner

    from tutormax_cli.cli.app import app

    result = CliRunner().invoke(app, ["--redis-url", "redis://127.0.0.1:1/0", "worker", "health"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "Error: cannot connect to Redis at redis://127.0.0.1:1/0:"
    )


def test_events_publish_and_replay(sqlite_url: str, redis_url: str, rclient: redis.Redis) -> None:
    from typer.testing import CliRunner

    from tutormax_cli.cli.app import app
    from tutormax_cli.store.db import open_engine
    from tutormax_cli.store.migrate import upgrade

    engine = open_engine(sqlite_url)
    upgrade(engine)
    tables = sample(tutors=2, days=5)
    save_tables(engine, tables)
    runner = CliRunner()
    env = _cli_env(sqlite_url, redis_url)
    result = runner.invoke(
        app, ["events", "publish", "--tutor", "T0001", "--tutor", "T0002", "--envelope"], env=env
    )
    assert result.exit_code == 0, result.output
    assert "Published 2 entries to" in result.output
    # a mistyped tutor is refused, with the stored spelling suggested, and nothing is published
    result = runner.invoke(
        app, ["events", "publish", "--tutor", "t0001", "--tutor", "T9999"], env=env
    )
    assert result.exit_code == 1
    assert result.output == (
        "Error: --tutor: unknown tutors t0001 (did you mean T0001?), T9999 "
        "(--allow-unknown to go ahead anyway)\n"
    )
    # ids the worker would dead-letter are refused by its own rule, even with --allow-unknown
    for args in (["--tutor", "T0001", "--session", ""], ["--tutor", " ", "--allow-unknown"]):
        result = runner.invoke(app, ["events", "publish", *args], env=env)
        assert result.exit_code == 2
        assert result.output.endswith("is empty (the worker would dead-letter it)\n")
    assert rclient.xlen(STREAM) == 2
    result = runner.invoke(app, ["events", "replay", "--since", "2000-01-01"], env=env)
    assert result.exit_code == 0, result.output
    entries = read(rclient, STREAM)
    assert len(entries) == 2 + tables["sessions"].height
    decoded = [events.decode(as_fields(f)) for _, f in entries]
    assert all(isinstance(d, events.SessionEvent) and d.kind == "envelope" for d in decoded)
    assert pl.Series([d.tutor_id for d in decoded]).n_unique() == 2  # type: ignore[union-attr]


def test_a_vanished_group_is_recreated(sqlite_url: str, rclient: redis.Redis) -> None:
    from tutormax_cli.store.db import open_engine
    from tutormax_cli.store.migrate import upgrade

    engine = open_engine(sqlite_url)
    upgrade(engine)
    save_tables(engine, sample(tutors=2))
    worker = make_worker(rclient, engine, debounce=0, max_wait=0)
    worker.run_once()
    rclient.delete(STREAM)  # a Redis restart without persistence loses stream and group
    assert worker.with_retry(worker.run_once) is None  # NOGROUP: recreated, not raised
    publish(rclient, STREAM, [events.flat("T0002")])
    worker.run_once()
    worker.run_once()
    # entries the lost group had not delivered may be gone: every tutor whose rows changed
    # since the worker started is reconciled, not only T0002, whose entry came afterwards
    assert pending_count(rclient) == 0 and count_rows(engine) == 6
    assert worker.metrics.reconciliations._value.get() == 1


def test_claim_idle_must_exceed_max_wait(sqlite_url: str, redis_url: str) -> None:
    from typer.testing import CliRunner

    from tutormax_cli.cli.app import app

    env = _cli_env(sqlite_url, redis_url)
    for args in (["--claim-idle", "45"], ["--debounce", "60", "--claim-idle", "50"]):
        result = CliRunner().invoke(app, ["worker", "run", "--burst", *args], env=env)
        assert result.exit_code == 2, result.output
        wait = "60" if "60" in args else "45"
        assert result.output.strip().splitlines() == [
            f"Error: --claim-idle ({args[-1]} s) must be longer than --max-wait ({wait} s): "
            "workers hold entries that long before acknowledging them"
        ]


def test_a_max_wait_given_shorter_than_the_debounce_is_refused_not_raised(
    sqlite_url: str, redis_url: str
) -> None:
    """The default --max-wait (45 s) rises to a longer --debounce; one the operator typed is
    theirs: refused, naming both, instead of being raised behind their back."""
    from typer.testing import CliRunner

    from tutormax_cli.cli.app import app

    env = _cli_env(sqlite_url, redis_url)
    for args, debounce in (
        (["--max-wait", "10"], "30"),
        (["--debounce", "40", "--max-wait", "10"], "40"),
    ):
        result = CliRunner().invoke(
            app, ["worker", "run", "--burst", *args, "--claim-idle", "5"], env=env
        )
        assert result.exit_code == 2, result.output
        assert result.output.strip().splitlines() == [
            f"Error: --max-wait (10 s) is shorter than --debounce ({debounce} s): a tutor's "
            "entries always wait the debounce; pass a --max-wait of at least that"
        ]
    # the default rose to the debounce: --claim-idle is measured against 60 s, not 45
    raised = CliRunner().invoke(
        app, ["worker", "run", "--burst", "--debounce", "60", "--claim-idle", "50"], env=env
    )
    assert raised.exit_code == 2
    assert "must be longer than --max-wait (60 s)" in raised.output


def test_an_entry_delivered_again_is_still_one_entry() -> None:
    from tutormax_cli.stream.debounce import DebounceBuffer

    buffer = DebounceBuffer(debounce=0, max_wait=0)
    for _ in range(5):  # recovered, claimed, ... the same two entries
        buffer.add("T0001", b"1-0", 0.0)
        buffer.add("T0002", b"2-0", 0.0)
    taken = buffer.take(buffer.due(0.0))
    buffer.put_back(taken)
    buffer.add("T0001", b"1-0", 1.0)
    assert buffer.entry_count == 2


def test_entries_deleted_while_pending_are_acknowledged_on_redis_6(
    sqlite_url: str, tmp_path: Path
) -> None:
    """On Redis 6.2 (the embedded server's) XCLAIM moves an entry deleted from the stream to the
    claimer and answers nil for it, and XREADGROUP 0 gives it back without fields: the worker
    neither left the first pending forever (health UNHEALTHY for good) nor dead-lettered the
    second as "tutor_id missing". Both are acknowledged: nothing is left to process."""
    from typer.testing import CliRunner

    from tutormax_cli.cli.app import app
    from tutormax_cli.store.db import open_engine
    from tutormax_cli.store.migrate import upgrade
    from tutormax_cli.stream import connection

    upgrade(open_engine(sqlite_url))
    client = connection.start_embedded(sqlite_url, announce=False)
    try:
        assert client.info("server")["redis_version"].startswith("6.")
        client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        ghost = client.xadd(STREAM, {"tutor_id": "T0001"})
        mine = client.xadd(STREAM, {"tutor_id": "T0002"})
        client.xreadgroup(GROUP, "ghost", {STREAM: ">"}, count=1)  # then it died
        client.xreadgroup(GROUP, "w1", {STREAM: ">"}, count=1)  # this worker, before a crash
        client.xdel(STREAM, ghost, mine)
        time.sleep(2.1)
        env = _cli_env(sqlite_url, "embedded")
        args = ["worker", "run", "--burst", "--consumer", "w1", "--debounce", "0", "--max-wait",
                "1", "--claim-idle", "2", "--sweep", "0", "--no-rollover"]  # fmt: skip
        result = CliRunner().invoke(app, args, env=env)
        assert result.exit_code == 0, result.output
        assert client.xpending(STREAM, GROUP)["pending"] == 0
        assert client.xlen(keys.DEAD_LETTER_STREAM) == 0
    finally:
        client.shutdown(nosave=True)
