"""Bounded streams on a real Redis: trimming never removes what a group still needs, keeps the
retention window, caps the dead letters with a count of what went, and a worker leaves a
drained stream short."""

from __future__ import annotations

import json
from typing import Any

import redis
from typer.testing import CliRunner

from tests.helpers import count_rows, recent_sample
from tutormax_cli import keys
from tutormax_cli.cli.app import app
from tutormax_cli.store.db import open_engine
from tutormax_cli.store.migrate import upgrade
from tutormax_cli.store.seed import save_tables
from tutormax_cli.stream import events, retention
from tutormax_cli.stream.entries import server_ms
from tutormax_cli.stream.producer import publish

STREAM = keys.ENRICHMENT_STREAM
NODE = 100  # stream-node-max-entries: approximate trimming removes whole nodes of this many


def _fill(r: redis.Redis, n: int, *, start_ms: int | None = None, step_ms: int = 0) -> list[str]:
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        entry_id = "*" if start_ms is None else f"{start_ms + i * step_ms}-{i}"
        pipe.xadd(STREAM, {"tutor_id": f"T{i % 7:04d}", "n": str(i)}, id=entry_id)
    return [i.decode() for i in pipe.execute()]  # XADD ids, bytes


def _read(r: redis.Redis, group: str, consumer: str, count: int) -> list[str]:
    reply: Any = r.xreadgroup(group, consumer, {STREAM: ">"}, count=count)
    return [e[0].decode() for e in reply[0][1]] if reply else []


def _ids(r: redis.Redis) -> list[str]:
    found: Any = r.xrange(STREAM)
    return [e[0].decode() for e in found]


def test_a_lagging_group_keeps_every_entry_it_has_not_acknowledged(rclient: redis.Redis) -> None:
    ids = _fill(rclient, 1000)
    rclient.xgroup_create(STREAM, "fast", id="0")
    rclient.xgroup_create(STREAM, "slow", id="0")
    rclient.xack(STREAM, "fast", *_read(rclient, "fast", "f", 1000))
    slow = _read(rclient, "slow", "s", 300)  # 300 delivered…
    rclient.xack(STREAM, "slow", *slow[:150], *slow[200:])  # …entries 150-199 still pending

    done = retention.trim_stream(rclient, STREAM, 0)
    assert done.minid == slow[150]  # the slow group's oldest pending entry
    assert done.deleted > 0
    left = _ids(rclient)
    assert set(ids[150:]) <= set(left)  # pending (150-199) and undelivered (300-) all kept
    assert len(left) - len(ids[150:]) < NODE  # only a partial node below the floor remains

    rclient.xack(STREAM, "slow", *slow[150:200])
    retention.trim_stream(rclient, STREAM, 0)
    assert set(ids[300:]) <= set(_ids(rclient))  # never read by the slow group: kept
    assert rclient.xlen(STREAM) - 700 < NODE

    rclient.xack(STREAM, "slow", *_read(rclient, "slow", "s", 1000))
    retention.trim_stream(rclient, STREAM, 0)
    assert rclient.xlen(STREAM) < NODE
    state = retention.trim_state(rclient, STREAM)
    assert state.dropped == 1000 - rclient.xlen(STREAM)
    assert state.below is not None and state.at_ms is not None


def test_retention_keeps_the_last_hour_and_a_stream_without_groups_is_untouched(
    rclient: redis.Redis,
) -> None:
    now = server_ms(rclient)
    hour = 3_600_000
    ids = _fill(rclient, 600, start_ms=now - 2 * hour, step_ms=12_000)  # one per 12 s, 2 h
    assert retention.trim_stream(rclient, STREAM, 0).minid is None  # nobody has read it yet
    assert rclient.xlen(STREAM) == 600
    rclient.xgroup_create(STREAM, "g", id="0")
    rclient.xack(STREAM, "g", *_read(rclient, "g", "c", 600))

    done = retention.trim_stream(rclient, STREAM, 3600, now_ms=now)
    assert done.minid == f"{now - hour}-0"
    recent = [i for i in ids if int(i.split("-")[0]) >= now - hour]
    older_left = [i for i in _ids(rclient) if i not in recent]
    assert set(recent) <= set(_ids(rclient)) and len(recent) == 300
    assert len(older_left) < NODE


def test_the_dead_letter_stream_is_capped_and_what_went_is_counted(rclient: redis.Redis) -> None:
    pipe = rclient.pipeline(transaction=False)
    for i in range(1000):
        pipe.xadd(keys.DEAD_LETTER_STREAM, {"reason": "bad", "n": str(i)})
    pipe.execute()
    done = retention.cap_stream(rclient, keys.DEAD_LETTER_STREAM, 200)
    length = rclient.xlen(keys.DEAD_LETTER_STREAM)
    assert 200 <= length < 200 + NODE
    assert done.deleted == 1000 - length
    assert retention.trim_state(rclient, keys.DEAD_LETTER_STREAM).dropped == 1000 - length
    last: Any = rclient.xrevrange(keys.DEAD_LETTER_STREAM, count=1)
    newest = last[0][1][b"n"]
    assert newest == b"999"  # the oldest go
    assert retention.cap_stream(rclient, keys.DEAD_LETTER_STREAM, 0).deleted == 0  # 0: no cap


def test_a_worker_with_retention_0_leaves_a_drained_stream_short(
    sqlite_url: str, redis_url: str, rclient: redis.Redis
) -> None:
    engine = open_engine(sqlite_url)
    upgrade(engine)
    save_tables(engine, recent_sample(tutors=3))
    publish(rclient, STREAM, [events.flat(f"T000{1 + i % 3}") for i in range(3000)])
    base = ["--redis-url", redis_url, "--database-url", sqlite_url]
    run = CliRunner().invoke(
        app,
        [*base, "worker", "run", "--burst", "--debounce", "0", "--sweep", "0", "--no-rollover",
         "--verify-every", "0", "--stream-retention", "0"],
    )  # fmt: skip
    assert run.exit_code == 0, run.output
    assert count_rows(engine) == 9
    assert rclient.xlen(STREAM) < NODE
    doc = json.loads(CliRunner().invoke(app, [*base, "pending", "--json"]).stdout)
    assert doc["length"] == rclient.xlen(STREAM) and doc["pending"] == 0
    assert doc["trim"]["dropped"] == 3000 - doc["length"] and doc["trim"]["below"]
    table = CliRunner().invoke(app, [*base, "pending"])
    assert table.exit_code == 0 and "trimmed below" in table.stdout
    assert doc["trim"]["below"] in table.stdout


def test_no_trim_and_the_default_retention_keep_the_stream(
    sqlite_url: str, redis_url: str, rclient: redis.Redis
) -> None:
    engine = open_engine(sqlite_url)
    upgrade(engine)
    save_tables(engine, recent_sample(tutors=2))
    publish(rclient, STREAM, [events.flat("T0001") for _ in range(500)])
    base = ["--redis-url", redis_url, "--database-url", sqlite_url]
    common = ["worker", "run", "--burst", "--debounce", "0", "--sweep", "0", "--no-rollover",
              "--verify-every", "0"]  # fmt: skip
    assert CliRunner().invoke(app, [*base, *common, "--no-trim"]).exit_code == 0
    assert rclient.xlen(STREAM) == 500
    assert CliRunner().invoke(app, [*base, *common]).exit_code == 0  # an hour's retention
    assert rclient.xlen(STREAM) == 500  # all of it is minutes old
    assert retention.trim_state(rclient, STREAM).dropped == 0


def test_the_worker_exports_each_streams_length_memory_and_trimming(
    sqlite_url: str, rclient: redis.Redis
) -> None:
    from tests.test_worker import make_worker

    engine = open_engine(sqlite_url)
    upgrade(engine)
    save_tables(engine, recent_sample(tutors=2))
    publish(rclient, STREAM, [events.flat("T0001") for _ in range(500)])
    rclient.xadd(STREAM, {"garbage": "1"})  # one dead letter
    worker = make_worker(
        rclient, engine, debounce=0, max_wait=0, stream_retention=0, trim_every=0,
        heartbeat_every=0,
    )  # fmt: skip
    for _ in range(3):
        worker.run_once()
    worker.heartbeat(force=True)  # trims, then reads the gauges
    m = worker.metrics
    for stream in (STREAM, keys.DEAD_LETTER_STREAM):
        assert m.stream_length.labels(stream)._value.get() == rclient.xlen(stream)
        assert m.stream_memory.labels(stream)._value.get() == rclient.memory_usage(stream)
    assert rclient.xlen(STREAM) < NODE and rclient.xlen(keys.DEAD_LETTER_STREAM) == 1
    state = retention.trim_state(rclient, STREAM)
    assert (
        m.stream_trimmed.labels(STREAM)._value.get() == state.dropped == 501 - rclient.xlen(STREAM)
    )
    assert state.below is not None
    below_s = m.stream_trimmed_below.labels(STREAM)._value.get()
    assert below_s == int(state.below.split("-")[0]) / 1000
