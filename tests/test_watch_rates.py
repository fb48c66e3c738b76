"""`status --watch` and `pending --watch`: the rates between two looks on a real Redis, and the
lines and JSON documents of each look."""

from __future__ import annotations

import json
from typing import Any

import redis
from typer.testing import CliRunner

from tests.streams import read_group
from tutormax_cli import keys
from tutormax_cli.cli.app import app
from tutormax_cli.stream import rates

STREAM, GROUP = keys.ENRICHMENT_STREAM, keys.METRICS_GROUP


def run(redis_url: str, *args: str) -> Any:
    return CliRunner().invoke(app, ["--redis-url", redis_url, *args])


def test_rate_between_two_looks(rclient: redis.Redis) -> None:
    for i in range(4):
        rclient.xadd(STREAM, {"tutor_id": f"T{i}"})
    rclient.xgroup_create(STREAM, GROUP, id="0")
    first = rates.sample(rclient, STREAM, backlog=4, at_s=10.0)
    taken = read_group(rclient, GROUP, "c1", STREAM, count=3)
    rclient.xack(STREAM, GROUP, *[i for i, _ in taken])  # 3 done
    for i in range(2):  # 2 arrive
        rclient.xadd(STREAM, {"tutor_id": f"N{i}"})
    second = rates.sample(rclient, STREAM, backlog=3, at_s=12.0)
    rate = rates.between(rclient, STREAM, first, second)
    assert (rate.arrived, rate.done, rate.backlog) == (2, 3, 3)
    assert (rate.in_per_s, rate.out_per_s) == (1.0, 1.5)
    assert rate.drain_s == 6.0  # 3 entries at a net 0.5/s
    assert rate.as_dict() == {
        "interval_s": 2.0, "arrived": 2, "done": 3, "in_per_s": 1.0, "out_per_s": 1.5,
        "drain_s": 6.0,
    }  # fmt: skip
    stuck = rates.between(rclient, STREAM, second, rates.sample(rclient, STREAM, 3, 14.0))
    assert stuck.done == 0 and stuck.drain_s is None
    empty = rates.Rate(interval_s=1.0, arrived=0, done=0, backlog=0)
    assert empty.drain_s == 0.0


def test_pending_watch_lines_and_json(rclient: redis.Redis, redis_url: str) -> None:
    rclient.xadd(STREAM, {"tutor_id": "T1"})
    rclient.xgroup_create(STREAM, GROUP, id="0")
    result = run(redis_url, "pending", "--watch", "0.1", "--count", "2")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].endswith(f" {STREAM} {GROUP}: lag 1 pending 0 rate after the next look")
    assert lines[1].endswith(
        f" {STREAM} {GROUP}: lag 1 pending 0 in 0.0/s out 0.0/s drain never at this rate"
    )
    docs = [json.loads(x) for x in run(redis_url, "pending", "--watch", "0.1", "--count", "2",
                                       "--json").stdout.splitlines()]  # fmt: skip
    assert [d["lag"] for d in docs] == [1, 1] and docs[0]["rate"] is None
    assert docs[1]["rate"]["arrived"] == 0 and docs[1]["redis"] == redis_url
    bare = run(redis_url, "pending", "--watch", "--count", "1")
    assert bare.exit_code == 0 and len(bare.stdout.splitlines()) == 1
    lone = run(redis_url, "pending", "--count", "2")
    assert lone.exit_code == 2
    assert lone.stderr == "Error: --count goes with --watch: tutormax pending --watch 5 --count 3\n"


def test_status_watch_lines_and_exit_code(
    rclient: redis.Redis, redis_url: str, sqlite_url: str
) -> None:
    from tutormax_cli.store.db import open_engine
    from tutormax_cli.store.migrate import upgrade

    upgrade(open_engine(sqlite_url))
    rclient.xadd(STREAM, {"tutor_id": "T1"})
    rclient.xgroup_create(STREAM, GROUP, id="0")
    base = ["--redis-url", redis_url, "--database-url", sqlite_url]
    result = CliRunner().invoke(app, [*base, "status", "--watch", "0.1", "--count", "2"])
    assert result.exit_code == 1  # lag and no live worker, at the last look
    lines = result.stdout.splitlines()
    assert len(lines) == 6
    assert lines[0].endswith(f" UNHEALTHY redis {redis_url} · database {sqlite_url}")
    assert lines[1].endswith(f" {STREAM} {GROUP}: lag 1 pending 0 rate after the next look")
    assert lines[2].endswith(f" ✗ no live worker for {GROUP} on {STREAM} (lag 1, pending 0): "
                             "start one with `tutormax worker run`")  # fmt: skip
    assert lines[4].endswith("in 0.0/s out 0.0/s drain never at this rate")
    out = CliRunner().invoke(app, [*base, "status", "--watch", "0.1", "--count", "2", "--json"])
    docs = [json.loads(x) for x in out.stdout.splitlines()]
    assert [d["healthy"] for d in docs] == [False, False]
    assert docs[0]["streams"][0]["rate"] is None
    assert docs[1]["streams"][0]["rate"]["done"] == 0
    assert "rate_text" not in docs[1]["streams"][0]
