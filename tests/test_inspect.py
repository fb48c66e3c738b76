"""Stream inspection on a real Redis: every number of `pending` against XINFO/XPENDING, the
dead-letter commands, heartbeats and `status`, and `watch` on the metrics-updated feed."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import redis
from typer.testing import CliRunner

from tests.streams import add, read, read_group
from tests.streams import text as _s
from tutormax_cli import keys
from tutormax_cli.cli.app import app
from tutormax_cli.stream import entries, groups, heartbeat
from tutormax_cli.stream.board import Board
from tutormax_cli.stream.events import envelope
from tutormax_cli.stream.pending import pending_entries
from tutormax_cli.stream.updates import MetricUpdate

STREAM, GROUP, DLQ = keys.ENRICHMENT_STREAM, keys.METRICS_GROUP, keys.DEAD_LETTER_STREAM


def run(redis_url: str, *args: str, db: str | None = None, input: str | None = None) -> Any:
    base = ["--redis-url", redis_url]
    if db is not None:
        base += ["--database-url", db]
    return CliRunner().invoke(app, [*base, *args], input=input)


def backlog(r: redis.Redis) -> None:
    """Ten entries; c1 holds 3 (one redelivered twice), c2 holds 2 of which one is acked;
    five are not delivered yet."""
    for i in range(9):
        add(r, STREAM, {"tutor_id": f"T{i:04d}", "session_id": f"S{i}"})
    add(r, STREAM, envelope({"tutor_id": "T0099", "session_id": "S99"}, channel="test"))
    r.xgroup_create(STREAM, GROUP, id="0")
    r.xreadgroup(GROUP, "c1", {STREAM: ">"}, count=3)
    taken = read_group(r, GROUP, "c2", STREAM, count=2)
    r.xack(STREAM, GROUP, taken[0][0])
    r.xreadgroup(GROUP, "c1", {STREAM: "0"}, count=1)  # re-reading history redelivers
    r.xreadgroup(GROUP, "c1", {STREAM: "0"}, count=1)
    r.xadd(DLQ, {"reason": "checksum mismatch", "source_stream": STREAM, "source_id": "1-0"})


def test_pending_json_equals_xinfo_and_xpending(rclient: redis.Redis, redis_url: str) -> None:
    backlog(rclient)
    before_ms = entries.server_ms(rclient)
    result = run(redis_url, "pending", "--json")
    after_ms = entries.server_ms(rclient)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert set(doc) == {
        "redis", "stream", "group", "stream_exists", "group_exists", "length", "lag", "lag_s",
        "pending", "oldest_pending_age_s", "max_deliveries", "dead_letter", "consumers",
        "memory_bytes", "trim", "dead_letter_memory_bytes", "dead_letter_trim",
    }  # fmt: skip
    assert doc["memory_bytes"] == (rclient.memory_usage(STREAM) or 0) > 0
    assert doc["dead_letter_memory_bytes"] == (rclient.memory_usage(DLQ) or 0) > 0
    assert doc["trim"] == doc["dead_letter_trim"] == {"below": None, "dropped": 0, "at_ms": None}
    assert doc["redis"] == redis_url and doc["stream_exists"] and doc["group_exists"]
    info = next(g for g in rclient.xinfo_groups(STREAM) if _s(g["name"]) == GROUP)
    summary = rclient.xpending(STREAM, GROUP)
    pel = rclient.xpending_range(STREAM, GROUP, "-", "+", 100)
    last = _s(info["last-delivered-id"])
    undelivered = read(rclient, STREAM, f"({last}")
    assert doc["stream"] == STREAM and doc["group"] == GROUP
    assert doc["length"] == rclient.xlen(STREAM) == 10
    assert doc["lag"] == len(undelivered) == 5
    if info.get("lag") is not None:  # Redis 7 reports it; 6.2 does not
        assert doc["lag"] == info["lag"]
    assert doc["pending"] == summary["pending"] == info["pending"] == len(pel) == 4
    assert doc["max_deliveries"] == max(p["times_delivered"] for p in pel) == 3
    assert doc["dead_letter"] == rclient.xlen(DLQ) == 1
    oldest_ms = entries.id_ms(_s(summary["min"]))
    assert (before_ms - oldest_ms) / 1000 - 0.01 <= doc["oldest_pending_age_s"]
    assert doc["oldest_pending_age_s"] <= (after_ms - oldest_ms) / 1000 + 0.01
    first_ms = entries.id_ms(_s(undelivered[0][0]))
    assert (before_ms - first_ms) / 1000 - 0.01 <= doc["lag_s"] <= (after_ms - first_ms) / 1000
    consumers = {_s(c["name"]): c for c in rclient.xinfo_consumers(STREAM, GROUP)}
    assert [c["name"] for c in doc["consumers"]] == sorted(consumers) == ["c1", "c2"]
    for c in doc["consumers"]:
        raw = consumers[c["name"]]
        assert c["pending"] == raw["pending"]
        assert raw["idle"] / 1000 - (after_ms - before_ms) / 1000 - 0.01 <= c["idle_s"]
        assert c["idle_s"] <= raw["idle"] / 1000 + 0.01
        if "inactive" in raw:
            assert c["inactive_s"] is not None
        else:
            assert c["inactive_s"] is None


def test_pending_entries_json_equals_xpending(rclient: redis.Redis, redis_url: str) -> None:
    backlog(rclient)
    earlier = rclient.xpending_range(STREAM, GROUP, "-", "+", 100)
    result = run(redis_url, "pending", "--entries", "--json")
    assert result.exit_code == 0, result.output
    entries = json.loads(result.stdout)["entries"]
    pel = rclient.xpending_range(STREAM, GROUP, "-", "+", 100)
    assert [p["message_id"] for p in earlier] == [p["message_id"] for p in pel]
    assert [e["id"] for e in entries] == [_s(p["message_id"]) for p in pel]
    assert [e["consumer"] for e in entries] == [_s(p["consumer"]) for p in pel]
    assert [e["deliveries"] for e in entries] == [p["times_delivered"] for p in pel]
    for e, before, after in zip(entries, earlier, pel, strict=True):
        assert set(e) == {"id", "consumer", "idle_s", "deliveries", "tutor_id"}
        low, high = int(before["time_since_delivered"]), int(after["time_since_delivered"])
        assert low / 1000 - 0.001 <= e["idle_s"] <= high / 1000 + 0.001
        fields = read(rclient, STREAM, e["id"], e["id"])[0][1]
        assert e["tutor_id"] == _s(fields[b"tutor_id"])
    only = json.loads(run(redis_url, "pending", "--entries", "--consumer", "c2", "--json").stdout)
    only = only["entries"]
    assert [e["consumer"] for e in only] == ["c2"]
    limited = run(redis_url, "pending", "--entries", "--limit", "2", "--json")
    firsts = json.loads(limited.stdout)["entries"]
    assert [e["id"] for e in firsts] == [e["id"] for e in entries[:2]]
    table = run(redis_url, "pending", "--entries")
    assert entries[0]["id"] in table.stdout and "T0000" in table.stdout


def test_envelope_entry_names_its_tutor(rclient: redis.Redis) -> None:
    add(rclient, STREAM, envelope({"tutor_id": "T0099", "session_id": "S9"}, channel="t"))
    rclient.xgroup_create(STREAM, GROUP, id="0")
    rclient.xreadgroup(GROUP, "c1", {STREAM: ">"})
    assert [e.tutor_id for e in pending_entries(rclient)] == ["T0099"]


def test_lag_counted_when_the_server_does_not_report_it(
    rclient: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(groups, "PAGE", 3)
    ids = [_s(rclient.xadd(STREAM, {"tutor_id": f"T{i}"})) for i in range(11)]
    for k, last in enumerate(["0-0", *ids]):
        assert groups.count_undelivered(rclient, STREAM, last) == (11 - k, True)
    assert groups.count_undelivered(rclient, STREAM, ids[5], limit=3) == (3, False)
    rclient.xgroup_create(STREAM, GROUP, id=ids[3])
    rclient.xdel(STREAM, ids[7])  # Redis 7 cannot tell the lag after a deletion
    real = groups._snapshot

    def without_lag(*args: Any) -> dict[str, Any]:
        snap = real(*args)
        snap["group"].pop("lag", None)  # as Redis 6.2 answers
        return snap

    monkeypatch.setattr(groups, "_snapshot", without_lag)
    report = groups.group_report(rclient)
    assert (report.lag, report.lag_exact) == (6, True)


def test_pending_without_group_reports_everything_as_lag(
    rclient: redis.Redis, redis_url: str
) -> None:
    rclient.xadd(STREAM, {"tutor_id": "T1"})
    result = run(redis_url, "pending", "--json")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert (doc["length"], doc["lag"], doc["pending"], doc["consumers"]) == (1, 1, 0, [])
    assert "does not exist" in result.stderr
    entries = run(redis_url, "pending", "--entries", "--json")
    assert json.loads(entries.stdout)["entries"] == []


def test_pending_options_that_need_entries(redis_url: str) -> None:
    result = run(redis_url, "pending", "--consumer", "c1")
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: --consumer and --limit go with --entries: tutormax pending --entries\n"
    )


def dead(r: redis.Redis, reason: str, **fields: str | bytes) -> str:
    meta = {"reason": reason, "source_stream": STREAM, "source_id": "1-1", "group": GROUP}
    return add(r, DLQ, {**meta, **fields})


def test_dlq_list_show_and_collisions(rclient: redis.Redis, redis_url: str) -> None:
    first = dead(rclient, "tutor_id missing", session_id="S1", **{"orig:reason": "mine"})
    second = dead(rclient, "field is not valid UTF-8", tutor_id=b"\xff\xfe")
    listed = json.loads(run(redis_url, "dlq", "list", "--json").stdout)["dead_letters"]
    assert [d["id"] for d in listed] == [first, second]
    assert listed[0]["fields"] == {"session_id": "S1", "reason": "mine"}
    assert listed[0]["reason"] == "tutor_id missing"
    assert listed[0]["source_stream"] == STREAM and listed[0]["source_id"] == "1-1"
    assert listed[1]["fields"] == {"tutor_id": "\\xff\\xfe"}
    shown = json.loads(run(redis_url, "dlq", "show", second, "--json").stdout)
    assert shown["id"] == second and shown["reason"] == "field is not valid UTF-8"
    table = run(redis_url, "dlq", "list")
    assert first in table.stdout and "tutor_id missing" in table.stdout
    limited = run(redis_url, "dlq", "list", "--limit", "1", "--json")
    assert len(json.loads(limited.stdout)["dead_letters"]) == 1
    assert "Showing the first 1 (of 2 in all)" in limited.stderr
    missing = run(redis_url, "dlq", "show", "1-0")
    assert missing.exit_code == 1
    assert missing.stderr == f"Error: no entry 1-0 on {DLQ}: `tutormax dlq list` shows the IDs\n"
    bad = run(redis_url, "dlq", "show", "nope")
    assert bad.exit_code == 2 and "is not a stream entry ID" in bad.stderr


def test_dlq_refuses_an_entry_id_beyond_64_bits_as_a_usage_error(
    rclient: redis.Redis, redis_url: str
) -> None:
    entry = dead(rclient, "bad json", message="{")
    largest = "18446744073709551615"  # each part of an ID is at most 2**64 - 1: still an ID
    assert run(redis_url, "dlq", "show", f"{largest}-{largest}").exit_code == 1  # not there
    for command in (["show"], ["replay"], ["purge", "--yes"]):
        for given in ("99999999999999999999999-0", f"1-{int(largest) + 1}"):
            result = run(redis_url, "dlq", *command, given)
            assert result.exit_code == 2, (command, result.output)
            assert result.stderr == (
                f"Error: '{given}' is not a stream entry ID: each part is at most {largest}\n"
            )
    # a replay or purge naming a good ID and a bad one does nothing
    assert run(redis_url, "dlq", "purge", "--yes", entry, "1-" + largest + "0").exit_code == 2
    assert [_s(i) for i, _ in read(rclient, DLQ)] == [entry]


def test_dlq_replay_puts_back_exact_fields(rclient: redis.Redis, redis_url: str) -> None:
    rclient.xgroup_create(STREAM, GROUP, id="$", mkstream=True)
    first = dead(rclient, "tutor_id missing", session_id="S1", **{"orig:reason": "mine"})
    second = dead(rclient, "field is not valid UTF-8", tutor_id=b"\xff\xfe")
    third = dead(rclient, "bad json", message="{")
    result = run(redis_url, "dlq", "replay", first, second)
    assert result.exit_code == 0, result.output
    assert "Replayed 2 dead letter(s)." in result.stderr
    back = read(rclient, STREAM)
    assert [f for _, f in back] == [
        {b"session_id": b"S1", b"reason": b"mine"},
        {b"tutor_id": b"\xff\xfe"},
    ]
    assert [_s(i) for i, _ in read(rclient, DLQ)] == [third]
    assert groups.group_report(rclient).lag == 2  # the group will read them again
    both = run(redis_url, "dlq", "replay", third, "--all")
    assert both.exit_code == 2
    assert both.stderr == (
        "Error: entry IDs and --all cannot be combined: name the IDs, or choose with the options\n"
    )
    filters = run(redis_url, "dlq", "purge", third, "--reason", "json", "--since", "1h")
    assert filters.exit_code == 2
    assert filters.stderr.startswith("Error: entry IDs and --reason/--since cannot be combined")
    none = run(redis_url, "dlq", "replay")
    assert none.exit_code == 2
    unknown = run(redis_url, "dlq", "replay", third, "1-0")
    assert unknown.exit_code == 1 and rclient.xlen(DLQ) == 1  # nothing replayed
    assert run(redis_url, "dlq", "replay", "--all").exit_code == 0
    assert rclient.xlen(DLQ) == 0 and rclient.xlen(STREAM) == 3


def test_dlq_replay_refuses_entry_without_source(rclient: redis.Redis, redis_url: str) -> None:
    entry = _s(rclient.xadd(DLQ, {"reason": "old format", "tutor_id": "T1"}))
    result = run(redis_url, "dlq", "replay", entry)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: dead letter {entry} has no source_stream")
    assert rclient.xlen(DLQ) == 1


def test_dlq_purge_asks_first(rclient: redis.Redis, redis_url: str) -> None:
    ids = [dead(rclient, f"reason {i}", tutor_id=f"T{i}") for i in range(3)]
    declined = run(redis_url, "dlq", "purge", "--all", input="n\n")
    assert declined.exit_code == 1 and rclient.xlen(DLQ) == 3
    assert "Delete 3 dead letter(s)" in declined.stderr
    no_terminal = run(redis_url, "dlq", "purge", "--all")  # no input at all, as under cron
    assert no_terminal.exit_code == 2 and rclient.xlen(DLQ) == 3
    assert no_terminal.stderr.endswith(
        "Error: no answer to confirm deleting 3 dead letter(s) (no terminal?): pass --yes\n"
    )
    accepted = run(redis_url, "dlq", "purge", ids[0], input="y\n")
    assert accepted.exit_code == 0 and rclient.xlen(DLQ) == 2
    forced = run(redis_url, "dlq", "purge", "--all", "--yes")
    assert forced.exit_code == 0 and "Purged 2" in forced.stderr
    assert rclient.xlen(DLQ) == 0
    empty = run(redis_url, "dlq", "purge", "--all", "--yes")
    assert empty.exit_code == 0 and "nothing to purge" in empty.stderr


def beat(r: redis.Redis, consumer: str, group: str = GROUP, ttl: int = 15, **extra: Any) -> None:
    info = {
        "consumer": consumer, "stream": STREAM, "group": group, "pid": 4242, "host": "box1",
        "started_at": "2026-03-02T10:00:00+00:00", "last_flush_at": "2026-03-02T10:05:00+00:00",
        "entries": 12, "tutors": 3, "buffered": 0, **extra,
    }  # fmt: skip
    r.set(keys.heartbeat_key(STREAM, group, consumer), json.dumps(info), ex=ttl)


def test_live_workers_from_heartbeats(rclient: redis.Redis) -> None:
    beat(rclient, "w1")
    beat(rclient, "w2", group="other")
    rclient.set(keys.heartbeat_key(STREAM, GROUP, "w3"), "not json", ex=15)
    rclient.set("tutormax:unrelated", "x")
    workers = {w.consumer: w for w in heartbeat.live_workers(rclient)}
    assert sorted(workers) == ["w1", "w2", "w3"]
    assert workers["w1"].serves(STREAM, GROUP) and not workers["w2"].serves(STREAM, GROUP)
    assert not workers["w3"].serves(STREAM, GROUP)
    ttl = workers["w1"].ttl_s
    assert ttl is not None and 0 < ttl <= 15


def test_status_from_stuck_entry_to_replay(
    rclient: redis.Redis, redis_url: str, sqlite_url: str
) -> None:
    """The on-call's path: status says what is wrong, pending and dlq find the entries, replay
    puts the dead letter back; status is healthy once a worker is alive."""
    from tutormax_cli.store.db import open_engine
    from tutormax_cli.store.migrate import upgrade

    upgrade(open_engine(sqlite_url))
    backlog(rclient)
    letter = dead(rclient, "checksum mismatch", message='{"data": {"tutor_id": "T7"}}')
    sick = run(redis_url, "status", "--json", db=sqlite_url)
    assert sick.exit_code == 1
    doc = json.loads(sick.stdout)
    assert doc["healthy"] is False
    assert doc["problems"] == [
        f"no live worker for {GROUP} on {STREAM} (lag 5, pending 4): start one with "
        "`tutormax worker run`"
    ]
    assert doc["streams"][0]["pending"] == 4 and doc["streams"][0]["workers"] == 0
    assert doc["dead_letter"]["length"] == 2 and doc["dead_letter"]["last_hour"] == 2
    assert set(doc["freshness"]) == {"7day", "30day", "90day"}
    assert any("dead letter(s) in the last hour" in w for w in doc["warnings"])
    table = run(redis_url, "status", db=sqlite_url)
    assert table.exit_code == 1 and "UNHEALTHY" in table.stdout
    stuck = json.loads(run(redis_url, "pending", "--entries", "--json").stdout)["entries"]
    assert {e["consumer"] for e in stuck} == {"c1", "c2"}
    listed = json.loads(run(redis_url, "dlq", "list", "--json").stdout)["dead_letters"]
    assert listed[-1]["id"] == letter
    assert run(redis_url, "dlq", "replay", letter).exit_code == 0
    assert read(rclient, STREAM)[-1][1] == {b"message": b'{"data": {"tutor_id": "T7"}}'}
    beat(rclient, "c1")
    well = run(redis_url, "status", "--json", db=sqlite_url)
    assert well.exit_code == 0, well.output
    healthy = json.loads(well.stdout)
    assert healthy["healthy"] is True and healthy["streams"][0]["lag"] == 6
    assert [w["consumer"] for w in healthy["workers"]] == ["c1"]
    assert healthy["workers"][0]["last_flush_age_s"] > 0


def test_status_reports_an_unreadable_database(rclient: redis.Redis, redis_url: str) -> None:
    rclient.xgroup_create(STREAM, GROUP, id="$", mkstream=True)
    result = run(redis_url, "status", "--json", db="sqlite:////nonexistent/dir/x.db")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["freshness"] is None
    assert doc["problems"] == ["directory of SQLite database /nonexistent/dir/x.db does not exist"]


def update(r: redis.Redis, tutor: str, t7: str, t30: str, t90: str = "Strong") -> str:
    fields = {
        "tutor_id": tutor,
        "calculation_date": "2026-03-02T10:00:00+00:00",
        "tier_7day": t7,
        "tier_30day": t30,
        "tier_90day": t90,
    }
    return add(r, keys.METRICS_UPDATED_STREAM, fields)


def test_watch_follows_updates_and_marks_changes(rclient: redis.Redis, redis_url: str) -> None:
    update(rclient, "T1", "Strong", "At Risk")
    start = update(rclient, "T2", "Strong", "Strong")
    update(rclient, "T1", "Strong", "Needs Attention")
    update(rclient, "T3", "Exemplary", "Exemplary")
    lines = run(redis_url, "watch", "--from", start, "--count", "2", "--json")
    assert lines.exit_code == 0, lines.output
    docs = [json.loads(line) for line in lines.stdout.splitlines()]
    assert [d["tutor_id"] for d in docs] == ["T1", "T3"]
    assert docs[0]["tier_30day"] == "Needs Attention"
    assert "Stopped after 2 update(s)" in lines.stderr
    huge = run(redis_url, "watch", "--from", "99999999999999999999999", "--count", "1")
    assert huge.exit_code == 2 and "each part is at most" in huge.stderr
    text = run(redis_url, "watch", "--from", "0", "--count", "3")
    assert text.stdout.splitlines()[2].endswith(
        "T1  7day Strong  30day At Risk → Needs Attention  90day Strong"
    )
    risky = run(redis_url, "watch", "--from", "0", "--count", "2", "--tier", "at risk", "--json")
    assert [json.loads(x)["tutor_id"] for x in risky.stdout.splitlines()] == ["T1", "T1"]
    started = time.monotonic()
    quiet = run(redis_url, "watch", "--timeout", "0.3", "--json")
    assert quiet.exit_code == 0 and quiet.stdout == ""
    assert time.monotonic() - started < 5


def test_watch_board_primes_previous_tiers() -> None:
    board = Board()
    old = MetricUpdate("1-0", "T1", None, {"7day": "Strong", "30day": "Strong"})
    new = MetricUpdate("2-0", "T1", None, {"7day": "At Risk", "30day": "Strong"})
    board.prime([old])
    row = board.apply(new)
    assert row.changed == ["7day"] and row.previous["7day"] == "Strong"
    assert board.apply(new).changed == [] and board.rows["T1"].updates == 2


def test_status_reads_the_database_while_redis_is_asked(
    rclient: redis.Redis, tmp_path: Any
) -> None:
    """The two halves of the status document overlap: Redis is asked only once the database
    half has started on its own thread (one after the other, the Redis half would wait here
    for a database read that has not begun, and the assertion would fail after 10 s)."""
    import contextlib
    import threading
    from datetime import UTC, datetime

    from tutormax_cli import reports
    from tutormax_cli.store.db import open_engine
    from tutormax_cli.store.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'overlap.db'}"
    engine = open_engine(url)
    upgrade(engine)
    database_started = threading.Event()
    threads: dict[str, str] = {}

    @contextlib.contextmanager
    def connect() -> Any:
        threads["database"] = threading.current_thread().name
        database_started.set()
        with engine.connect() as conn:
            yield conn

    def client() -> redis.Redis:
        threads["redis"] = threading.current_thread().name
        assert database_started.wait(10), "the database half did not start before Redis"
        return rclient

    rclient.xgroup_create(STREAM, GROUP, id="$", mkstream=True)
    doc = reports.status_report(client, connect, datetime.now(UTC))
    engine.dispose()
    assert doc["healthy"], doc["problems"]
    assert threads["database"] != threads["redis"]
    assert set(doc["freshness"]) == {"7day", "30day", "90day"}
    assert doc["freshness"]["7day"]["tutors"] == 0
