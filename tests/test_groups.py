"""`groups`, `groups reset|delete` and `consumers prune` on a real Redis: every number against
XINFO, resets against XGROUP SETID, and a prune that never drops a pending entry."""

from __future__ import annotations

import json
import time
from typing import Any

import redis
from typer.testing import CliRunner

from tests.streams import read_group
from tests.streams import text as _s
from tutormax_cli import keys
from tutormax_cli.cli.app import app
from tutormax_cli.stream.group_admin import MAX_SEQ, ORPHANS

STREAM, GROUP = keys.ENRICHMENT_STREAM, keys.METRICS_GROUP


def run(redis_url: str, *args: str, input: str | None = None) -> Any:
    return CliRunner().invoke(app, ["--redis-url", redis_url, *args], input=input)


def setup_group(r: redis.Redis, entries: int = 5, read: int = 2, consumer: str = "c1") -> list[str]:
    ids = [
        _s(r.xadd(STREAM, {"tutor_id": f"T{i}"}, id=f"{1000 * (i + 1)}-0")) for i in range(entries)
    ]
    r.xgroup_create(STREAM, GROUP, id="0")
    if read:
        r.xreadgroup(GROUP, consumer, {STREAM: ">"}, count=read)
    return ids


def beat(r: redis.Redis, consumer: str) -> None:
    info = {"consumer": consumer, "stream": STREAM, "group": GROUP, "state": "ok"}
    r.set(keys.heartbeat_key(STREAM, GROUP, consumer), json.dumps(info), ex=15)


def test_groups_json_equals_xinfo(rclient: redis.Redis, redis_url: str) -> None:
    ids = setup_group(rclient)
    rclient.xgroup_create(STREAM, "other", id="$")
    rclient.xadd(keys.DEAD_LETTER_STREAM, {"reason": "x"})
    rclient.xadd("tutormax:custom", {"a": "1"})
    rclient.xgroup_create("tutormax:custom", "g", id="0")
    result = run(redis_url, "groups", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["redis"] == redis_url
    assert [s["stream"] for s in doc["streams"]] == [
        STREAM, keys.DEAD_LETTER_STREAM, "tutormax:custom",
    ]  # fmt: skip
    enrichment = doc["streams"][0]
    assert enrichment["length"] == 5 and enrichment["first_id"] == ids[0]
    assert enrichment["last_id"] == ids[-1]
    assert enrichment["memory_bytes"] == rclient.memory_usage(STREAM)
    metrics, other = enrichment["groups"]
    assert (metrics["group"], other["group"]) == (GROUP, "other")
    info = {_s(g["name"]): g for g in rclient.xinfo_groups(STREAM)}
    assert metrics["pending"] == info[GROUP]["pending"] == 2
    assert metrics["lag"] == 3 and other["lag"] == 0
    assert metrics["last_delivered_id"] == _s(info[GROUP]["last-delivered-id"]) == ids[1]
    if "entries-read" in info[GROUP]:  # Redis 7
        assert metrics["entries_read"] == info[GROUP]["entries-read"] == 2
    else:
        assert metrics["entries_read"] is None
    assert [c["name"] for c in metrics["consumers"]] == ["c1"]
    assert metrics["consumers"][0]["pending"] == 2
    assert doc["streams"][1]["groups"] == []
    only = json.loads(run(redis_url, "groups", "--stream", "tutormax:custom", "--json").stdout)
    assert [s["stream"] for s in only["streams"]] == ["tutormax:custom"]


def test_groups_of_a_named_stream_that_does_not_exist_is_an_error(
    rclient: redis.Redis, redis_url: str
) -> None:
    setup_group(rclient)
    message = (
        f"not found on Redis {redis_url}: nothing was published there and no worker has "
        "started on it (is this the Redis the workers use?)\n"
    )
    for extra in ([], ["--json"]):
        one = run(redis_url, "groups", "--stream", STREAM, "--stream", "nope", *extra)
        assert one.exit_code == 1, one.output
        assert one.stderr == f"Error: stream nope {message}"
    two = run(redis_url, "groups", "--stream", "nope", "--stream", "gone")
    assert two.exit_code == 1 and two.stdout == ""
    assert two.stderr == f"Error: streams nope, gone {message}"
    assert run(redis_url, "groups").exit_code == 0  # the known streams missing: not an error


def test_groups_table(rclient: redis.Redis, redis_url: str) -> None:
    ids = setup_group(rclient)
    result = run(redis_url, "groups")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"Consumer groups · redis {redis_url}"
    assert lines[1].startswith(f"{STREAM}: 5 entries, ")
    assert lines[1].endswith(f", first {ids[0]}, last {ids[-1]}")
    row = next(line for line in lines if line.startswith("│ metrics-workers"))
    cells = [c.strip() for c in row.strip("│").split("│")]
    assert cells[:5] == [GROUP, "1", "2", "3", ids[1]]
    assert lines[-1].startswith(f"  {GROUP}: c1 (2 pending, idle ")


def test_groups_reset_is_a_dry_run_until_execute(rclient: redis.Redis, redis_url: str) -> None:
    ids = setup_group(rclient)
    dry = run(redis_url, "groups", "reset", GROUP, "--to-id", "0")
    assert dry.exit_code == 0, dry.output
    assert dry.stderr.splitlines() == [
        f"Would reset group {GROUP} on {STREAM}: last-delivered {ids[1]} -> 0-0; lag 3 -> 5 "
        "(2 pending entries stay pending).",
        "Dry run: nothing changed; add --execute to apply (live consumers: c1; add --force).",
    ]
    assert _s(rclient.xinfo_groups(STREAM)[0]["last-delivered-id"]) == ids[1]
    refused = run(redis_url, "groups", "reset", GROUP, "--to-id", "0", "--execute")
    assert refused.exit_code == 1
    assert refused.stderr == (
        f"Error: group {GROUP} on {STREAM} has live consumers (c1): stop them first, "
        "or pass --force\n"
    )
    assert _s(rclient.xinfo_groups(STREAM)[0]["last-delivered-id"]) == ids[1]
    done = run(redis_url, "groups", "reset", GROUP, "--to-datetime", "1970-01-01T00:00:03Z",
               "--execute", "--force", "--json")  # fmt: skip
    assert done.exit_code == 0, done.output
    doc = json.loads(done.stdout)
    assert doc["target_id"] == f"2999-{MAX_SEQ}" and doc["executed"] is True
    assert doc["lag_after"] == 3  # the entries from 3000-0 on
    assert _s(rclient.xinfo_groups(STREAM)[0]["last-delivered-id"]) == f"2999-{MAX_SEQ}"
    end = run(redis_url, "groups", "reset", GROUP, "--to-id", "$", "--execute", "--force")
    assert end.exit_code == 0
    assert _s(rclient.xinfo_groups(STREAM)[0]["last-delivered-id"]) == ids[-1]
    huge = run(redis_url, "groups", "reset", GROUP, "--to-id", "99999999999999999999999-0")
    assert huge.exit_code == 2 and "each part is at most 18446744073709551615" in huge.stderr
    both = run(redis_url, "groups", "reset", GROUP, "--to-id", "0", "--by-duration", "1h")
    assert both.exit_code == 2
    assert both.stderr == "Error: give exactly one of --to-id, --to-datetime, --by-duration\n"
    unknown = run(redis_url, "groups", "reset", "nope", "--to-id", "0")
    assert unknown.exit_code == 1
    assert (
        unknown.stderr == f"Error: no group nope on {STREAM}: `tutormax groups` lists the groups\n"
    )


def test_groups_reset_by_duration_uses_the_server_clock(
    rclient: redis.Redis, redis_url: str
) -> None:
    rclient.xadd(STREAM, {"tutor_id": "T0"}, id="1000-0")
    recent = _s(rclient.xadd(STREAM, {"tutor_id": "T1"}))
    rclient.xgroup_create(STREAM, GROUP, id="$")
    result = run(redis_url, "groups", "reset", GROUP, "--by-duration", "1h", "--execute", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["lag_after"] == 1
    delivered = read_group(rclient, GROUP, "c9", STREAM)
    assert [_s(i) for i, _ in delivered] == [recent]


def test_groups_delete_asks_and_refuses_live_consumers(
    rclient: redis.Redis, redis_url: str
) -> None:
    setup_group(rclient, read=0)
    beat(rclient, "w1")
    declined = run(redis_url, "groups", "delete", GROUP, input="n\n")
    assert declined.exit_code == 1
    assert (
        f"Delete group {GROUP} on {STREAM} (0 consumer(s), 0 pending entries)?" in declined.stderr
    )
    live = run(redis_url, "groups", "delete", GROUP, "--yes")
    assert live.exit_code == 1 and "has live consumers (w1)" in live.stderr
    assert len(rclient.xinfo_groups(STREAM)) == 1
    gone = run(redis_url, "groups", "delete", GROUP, "--yes", "--force")
    assert gone.exit_code == 0 and gone.stderr == f"Deleted group {GROUP} on {STREAM}.\n"
    assert rclient.xinfo_groups(STREAM) == []


def test_consumers_prune_moves_pending_entries_before_deleting(
    rclient: redis.Redis, redis_url: str
) -> None:
    ids = setup_group(rclient, read=2, consumer="dead")
    rclient.xreadgroup(GROUP, "alive", {STREAM: ">"}, count=1)
    beat(rclient, "alive")
    time.sleep(0.05)
    before = {_s(p["message_id"]): p for p in rclient.xpending_range(STREAM, GROUP, "-", "+", 10)}
    dry = run(redis_url, "consumers", "prune", "--idle", "10ms", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    plan = json.loads(dry.stdout)
    assert [c["name"] for c in plan["dead"]] == ["dead"] and plan["kept"] == ["alive"]
    assert plan["moved_pending"] == 2 and plan["executed"] is False
    assert {_s(c["name"]) for c in rclient.xinfo_consumers(STREAM, GROUP)} == {"dead", "alive"}
    done = run(redis_url, "consumers", "prune", "--idle", "10ms")
    assert done.exit_code == 0, done.output
    assert done.stderr.splitlines()[-1] == (
        f"Removed 1 dead consumer(s) of {GROUP} on {STREAM}, moved 2 pending entries to "
        f"{ORPHANS}; 1 kept."
    )
    after = {_s(p["message_id"]): p for p in rclient.xpending_range(STREAM, GROUP, "-", "+", 10)}
    assert set(after) == set(before) == {ids[0], ids[1], ids[2]}  # nothing dropped
    for entry in (ids[0], ids[1]):
        assert _s(after[entry]["consumer"]) == ORPHANS
        assert after[entry]["times_delivered"] == before[entry]["times_delivered"]
        assert int(after[entry]["time_since_delivered"]) >= 40  # idle kept: claimable at once
    assert {_s(c["name"]) for c in rclient.xinfo_consumers(STREAM, GROUP)} == {"alive", ORPHANS}
    # a live worker's claim pass takes them; then the empty holder is pruned too
    claimed = rclient.xautoclaim(STREAM, GROUP, "alive", min_idle_time=10, count=10)
    assert {ids[0], ids[1]} <= {_s(i) for i, _ in claimed[1]}
    again = run(redis_url, "consumers", "prune", "--idle", "10ms")
    assert again.exit_code == 0
    assert {_s(c["name"]) for c in rclient.xinfo_consumers(STREAM, GROUP)} == {"alive"}


def test_consumers_prune_keeps_recent_and_refuses_bad_idle(
    rclient: redis.Redis, redis_url: str
) -> None:
    setup_group(rclient)
    kept = run(redis_url, "consumers", "prune", "--json")
    assert json.loads(kept.stdout)["dead"] == [] and json.loads(kept.stdout)["kept"] == ["c1"]
    bad = run(redis_url, "consumers", "prune", "--idle", "soon")
    assert bad.exit_code == 2
    assert bad.stderr == "Error: --idle: 'soon' is not a duration (e.g. 90s, 15m, 1h, 2d)\n"
