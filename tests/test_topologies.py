"""tutormax on Redis as production runs it: a 3-master cluster (each master with a replica) and
a Sentinel-managed master with a replica, started on free loopback ports (`tests.topologies`).
The worker, `pending`, `dlq`, `events publish`, `status`, `groups` and the API's publish run
on both; a Sentinel failover and a cluster node failover happen while a worker consumes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import polars as pl
import pytest
import redis
import sqlalchemy as sa
from typer.testing import CliRunner

from tests import topologies
from tests.helpers import count_rows, recent_sample
from tutormax_cli import keys
from tutormax_cli.cli.app import app
from tutormax_cli.pipeline.persist import persist
from tutormax_cli.store.db import open_engine
from tutormax_cli.store.migrate import upgrade
from tutormax_cli.store.seed import save_tables
from tutormax_cli.stream import events, topology
from tutormax_cli.stream.connection import connect
from tutormax_cli.stream.producer import publish

STREAM, GROUP, DLQ = keys.ENRICHMENT_STREAM, keys.METRICS_GROUP, keys.DEAD_LETTER_STREAM

if topologies.MISSING and os.environ.get("CI"):
    raise RuntimeError(f"CI must run the topology tests: {topologies.MISSING}")
pytestmark = pytest.mark.skipif(bool(topologies.MISSING), reason=str(topologies.MISSING))

BURST = ["worker", "run", "--burst", "--debounce", "0", "--sweep", "0", "--no-rollover",
         "--verify-every", "0"]  # fmt: skip


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[topologies.Cluster]:
    with topologies.cluster(tmp_path_factory.mktemp("cluster")) as c:
        yield c


@pytest.fixture(scope="module")
def sentinels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[topologies.SentinelSet]:
    with topologies.sentinel_set(tmp_path_factory.mktemp("sentinel")) as s:
        yield s


@pytest.fixture(params=["cluster", "sentinel"])
def topo_url(request: pytest.FixtureRequest) -> str:
    """The URL of a topology, emptied."""
    url: str = request.getfixturevalue("cluster" if request.param == "cluster" else "sentinels").url
    client: Any = connect(url)
    if topology.is_cluster(client):
        client.flushall(target_nodes=client.PRIMARIES)
    else:
        client.flushall()
    client.close()
    return url


@pytest.fixture
def opened() -> Iterator[Any]:
    """`opened(url)`: a client of a topology, closed after the test."""
    clients: list[redis.Redis] = []

    def open_(url: str) -> redis.Redis:
        clients.append(connect(url, check=False))
        return clients[-1]

    yield open_
    for c in clients:
        c.close()


def cli(*args: str, url: str, db: str | None = None) -> Any:
    base = ["--redis-url", url] + (["--database-url", db] if db else [])
    return CliRunner().invoke(app, [*base, *args])


def _database(path: Path, tutors: int = 3) -> tuple[str, sa.Engine, dict[str, pl.DataFrame]]:
    url = f"sqlite:///{path / 'tutormax.db'}"
    engine = open_engine(url)
    upgrade(engine)
    tables = recent_sample(tutors=tutors)
    save_tables(engine, tables)
    return url, engine, tables


# -- URLs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel://:hunter2@127.0.0.1:1", "name the Sentinel service"),
        ("redis+cluster://:hunter2@127.0.0.1:1/3", "a cluster has only db 0"),
        ("redis+sentinel://:hunter2@127.0.0.1:x/m", "port 'x' is not a number"),
        ("redis+cluster://:hunter2@127.0.0.1:1?sslmode=on", "unknown option 'sslmode'"),
        ("redis+sentinel://:hunter2@127.0.0.1:1/m/zero", "db 'zero' is not a number"),
        # redis-py reads these as db 0 and db 1: a typo would use another database's streams
        ("redis://:hunter2@127.0.0.1:1/abc", "db 'abc' is not a number"),
        ("redis://:hunter2@127.0.0.1:1/0/1", "db '0/1' is not a number"),
        ("rediss://:hunter2@127.0.0.1:1/?db=x", "db option 'x' is not a number"),
        ("redis://:hunter2@127.0.0.1:1/\u0663", "db '\u0663' is not a number"),  # not ASCII
        ("redis://:hunter2/x@127.0.0.1:1/0", "a '/' in the password must be percent-encoded"),
        ("ops:hunter2@127.0.0.1:1", "must specify one of the following schemes"),  # no scheme
    ],
)
def test_a_bad_topology_url_is_one_line_without_the_password(url: str, message: str) -> None:
    result = cli("pending", url=url)
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.output
    assert "hunter2" not in result.output and ":***@" in result.output


def test_unreachable_sentinels_and_cluster_nodes_are_named_without_the_password() -> None:
    port = topologies.free_ports(1)[0]
    for url in (
        f"redis+sentinel://:hunter2@127.0.0.1:{port}/mymaster",
        f"redis+cluster://:hunter2@127.0.0.1:{port}",
        f"rediss+cluster://:hunter2@127.0.0.1:{port}",
    ):
        result = cli("pending", url=url)
        assert result.exit_code == 1, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: cannot connect to Redis at ")
        assert "hunter2" not in result.output and f"127.0.0.1:{port}" in result.output
        assert "<redis." not in result.output and len(lines[0]) < 300  # no client reprs


def test_topology_urls_parse_into_redis_py_arguments() -> None:
    t = topology.parse(
        "rediss+sentinel://app:pw@10.0.0.1,10.0.0.2:26380,[::1]:26381/svc/2?sentinel_password=sp"
        "&ssl_ca_certs=/etc/ca.pem"
    )
    assert t.kind == topology.SENTINEL and t.tls
    assert t.hosts == (("10.0.0.1", 26379), ("10.0.0.2", 26380), ("::1", 26381))
    assert (t.username, t.password, t.service, t.db) == ("app", "pw", "svc", 2)
    assert t.sentinel_password == "sp" and t.tls_options == {"ssl_ca_certs": "/etc/ca.pem"}
    c = topology.parse("redis+cluster://h1:7000,h2")
    assert c.kind == topology.CLUSTER and c.hosts == (("h1", 7000), ("h2", 6379))
    assert topology.kind_of("redis://h/0") == topology.kind_of("unix:///s") == "standalone"


# -- end to end on both topologies ----------------------------------------------------------------


def test_worker_pending_dlq_publish_status_groups(
    topo_url: str, tmp_path: Path, opened: Any
) -> None:
    db, engine, _ = _database(tmp_path)
    client = opened(topo_url)
    done = cli("events", "publish", "--tutor", "T0001", "--tutor", "T0002", url=topo_url, db=db)
    assert done.exit_code == 0, done.output
    client.xadd(STREAM, {"garbage": "1"})  # malformed: a dead letter
    run = cli(*BURST, "--stream-retention", "0", url=topo_url, db=db)
    assert run.exit_code == 0, run.output
    assert count_rows(engine) == 6

    doc = json.loads(cli("pending", "--json", url=topo_url).stdout)
    assert doc["redis"] == topo_url
    assert (doc["pending"], doc["lag"], doc["dead_letter"]) == (0, 0, 1)
    assert doc["length"] == client.xlen(STREAM) < 3  # trimmed once everyone was done
    assert doc["trim"]["below"] and doc["memory_bytes"] == client.memory_usage(STREAM)

    letters = json.loads(cli("dlq", "list", "--json", url=topo_url).stdout)
    (letter,) = letters["dead_letters"] if isinstance(letters, dict) else letters
    assert letter["source_stream"] == STREAM
    replay = cli("dlq", "replay", letter["id"], url=topo_url)
    assert replay.exit_code == 0, replay.output
    assert client.xlen(DLQ) == 0 and client.xlen(STREAM) == doc["length"] + 1

    status = cli("status", "--json", url=topo_url, db=db)
    assert json.loads(status.stdout)["redis"] == topo_url, status.output
    listed = cli("groups", "--json", url=topo_url)
    assert listed.exit_code == 0, listed.output
    groups = json.loads(listed.stdout)
    streams = groups["streams"] if isinstance(groups, dict) else groups
    assert STREAM in {s["stream"] for s in streams}


def test_pipeline_and_watch_on_both_topologies(topo_url: str, tmp_path: Path, opened: Any) -> None:
    from tests.test_api import completion, seed

    db = f"sqlite:///{tmp_path / 'pipe.db'}"
    seed(db)
    client = opened(topo_url)
    raw = {"session_id": "RAW-1", **completion(3)}
    client.xadd(keys.SESSIONS_STREAM, events.envelope(raw, channel=keys.SESSIONS_STREAM))
    client.xadd(keys.SESSIONS_STREAM, {"message": "{oops"})  # a dead letter, cluster-style
    run = cli("pipeline", "run", "--burst", "--stream-retention", "0", url=topo_url, db=db)
    assert run.exit_code == 0, run.output
    assert count_rows(open_engine(db), "sessions") == 1
    assert client.xlen(DLQ) == 1 and client.xlen(STREAM) == 1
    summary: Any = client.xpending(keys.SESSIONS_STREAM, keys.VALIDATION_GROUP)
    assert summary["pending"] == 0
    assert client.xlen(keys.SESSIONS_STREAM) < 2  # trimmed: both entries are done
    assert cli(*BURST, url=topo_url, db=db).exit_code == 0
    watched = cli("watch", "--from", "0", "--count", "1", "--json", url=topo_url, db=db)
    assert watched.exit_code == 0, watched.output
    assert json.loads(watched.stdout.splitlines()[0])["tutor_id"] == "T0001"


def test_the_api_publishes_and_follows_on_both_topologies(
    topo_url: str, tmp_path: Path, opened: Any
) -> None:
    import httpx
    from websockets.sync.client import connect as ws_connect

    from tests.api_server import api_server
    from tests.test_api import AUTH, completion, receive, run_worker, seed

    db = f"sqlite:///{tmp_path / 'api.db'}"
    seed(db)
    with api_server(db, topo_url) as base, httpx.Client(base_url=base, timeout=30) as http:
        assert http.get("/readyz").status_code == 200
        with ws_connect(base.replace("http://", "ws://") + "/ws/tutors") as feed:
            assert receive(feed) == {"type": "subscribed", "tutor_id": None}
            reply = http.post("/api/sessions/TOPO-1/complete", json=completion(2), headers=AUTH)
            assert reply.status_code == 202, reply.text
            (entry,) = opened(topo_url).xrange(STREAM)
            assert events.tutor_of(entry[1]) == "T0001"
            run_worker(db, topo_url)
            update = receive(feed, timeout=30)
            assert update["tutor_id"] == "T0001", update


# -- failover under load --------------------------------------------------------------------------


class Producer:
    """A marketplace in miniature: commits one held-back session at a time to the database,
    then publishes its envelope, retrying through a failover; can be paused."""

    def __init__(self, client: redis.Redis, engine: sa.Engine, sessions: pl.DataFrame) -> None:
        self.client = client
        self.engine = engine
        self.sessions = sessions
        self.done = 0
        self.written: dict[str, datetime] = {}
        self.limit = 0
        """Sessions to have produced: the thread waits while `done` has reached it."""
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def write(self, row: pl.DataFrame) -> None:
        with self.engine.begin() as conn:
            persist(conn, "sessions", row.with_columns(created_at=None, updated_at=None))
        self.written[row["tutor_id"][0]] = datetime.now(UTC)

    def _run(self) -> None:
        try:
            self._produce()
        except BaseException as exc:  # seen by the test through `error`
            self.error = exc
            raise

    def produce(self, n: int) -> None:
        """Produce up to `n` sessions in all, and wait until they are."""
        self.limit = min(n, self.sessions.height)
        _wait(lambda: self.done >= self.limit, 60, f"{n} sessions produced", self)

    def check(self) -> None:
        if self.error is not None:
            raise AssertionError(f"the producer failed: {self.error!r}")

    def _produce(self) -> None:
        while not self.stop.is_set() and self.done < self.sessions.height:
            if self.done >= self.limit:
                time.sleep(0.01)
                continue
            row = self.sessions.slice(self.done, 1)
            self.write(row)
            while True:
                try:
                    publish(self.client, STREAM, [events.flat(row["tutor_id"][0])])
                    break
                except topology.TRANSIENT:
                    time.sleep(0.1)
            self.done += 1
            time.sleep(0.02)


def _worker(db: str, url: str, log: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tutormax_cli", "--redis-url", url, "--database-url", db,
         "worker", "run", "--debounce", "0.1", "--max-wait", "0.3", "--sweep", "0",
         "--no-rollover", "--verify-every", "0", "--stream-retention", "0"],
        stdout=subprocess.DEVNULL, stderr=log,
    )  # fmt: skip


def _up_to_date(engine: sa.Engine, written: dict[str, datetime]) -> list[str]:
    """Tutors whose stored rows were computed before their last write."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT tutor_id, max(calculation_date) FROM tutor_performance_metrics "
                "GROUP BY tutor_id"
            )
        ).all()
    latest = {r[0]: datetime.fromisoformat(str(r[1])).replace(tzinfo=UTC) for r in rows}
    return sorted(
        t for t, at in written.items() if latest.get(t, datetime.min.replace(tzinfo=UTC)) < at
    )


def _settled(client: redis.Redis) -> bool:
    try:
        summary: Any = client.xpending(STREAM, GROUP)
        group = next(g for g in client.xinfo_groups(STREAM) if g["name"] == GROUP.encode())
    except (redis.RedisError, StopIteration):
        return False
    # after a failover a replica's group may not know its lag (entries-read unknown): look
    last = group["last-delivered-id"].decode()
    return int(summary["pending"]) == 0 and not client.xrange(STREAM, f"({last}", "+", count=1)


def _wait(check: Any, timeout: float, what: str, producer: Producer | None = None) -> None:
    """`topologies.wait_for`, failing at once when the producer thread has failed."""

    def step() -> bool:
        if producer is not None:
            producer.check()
        return bool(check())

    topologies.wait_for(step, timeout, what)


def test_sentinel_failover_while_consuming_loses_nothing(tmp_path: Path, opened: Any) -> None:
    """The replica stops receiving (its link is cut), sessions are committed and published to
    the master only, the master dies and the stale replica is promoted: the entries of those
    sessions are gone for good. The worker re-resolves the master, notices it is a new one,
    and reconciles the tutors changed since its watermark, so every tutor ends up up to date
    with nothing pending."""
    tutors = 8
    db, engine, tables = _database(tmp_path, tutors)
    # 20 sessions before the failover, 10 lost with it (two tutors' only, nobody else's),
    # 30 after it for the other tutors: only the reconciliation can bring those two up to date
    recent = tables["sessions"].sort("scheduled_start").reverse()
    lost_tutors = ["T0001", "T0002"]
    others = recent.filter(~pl.col("tutor_id").is_in(lost_tutors)).head(50)
    lost_rows = recent.filter(pl.col("tutor_id").is_in(lost_tutors)).head(10)
    held = pl.concat([others.head(20), lost_rows, others.tail(30)])
    with engine.begin() as conn:
        ids = held["session_id"].to_list()
        conn.execute(
            sa.text("DELETE FROM student_feedback WHERE session_id IN :ids").bindparams(
                sa.bindparam("ids", expanding=True)
            ),
            {"ids": ids},
        )
        conn.execute(
            sa.text("DELETE FROM sessions WHERE session_id IN :ids").bindparams(
                sa.bindparam("ids", expanding=True)
            ),
            {"ids": ids},
        )
    assert cli("recompute", url="redis://127.0.0.1:1", db=db).exit_code == 0
    with topologies.sentinel_set(tmp_path / "sentinel", proxied=True) as s:
        assert s.link is not None
        log = tmp_path / "worker.log"
        log_file = log.open("wb")
        worker = _worker(db, s.url, log_file)
        producer = Producer(opened(s.url), engine, held)
        try:
            producer.thread.start()
            producer.produce(20)
            observer = opened(s.url)
            _wait(lambda: _settled(observer), 60, "the worker caught up before the failover")
            # the lost writes: the worker frozen between flushes (everything acknowledged,
            # so committed: it holds no lock), the replication link cut, ten sessions
            # committed and published to the master alone; then the master dies
            worker.send_signal(signal.SIGSTOP)
            s.link.stop()
            first_lost = producer.done
            producer.produce(first_lost + 10)
            assert set(held["tutor_id"].slice(first_lost, 10).to_list()) == set(lost_tutors)
            old_port = s.master.port
            s.master.kill()
            worker.send_signal(signal.SIGCONT)
            _wait(lambda: s.master_port() != old_port, 60, "a Sentinel promotion")
            producer.produce(held.height)
            producer.thread.join(30)
            assert producer.done == held.height
            new = opened(s.url)
            _wait(lambda: _settled(new), 60, "nothing pending on the new master")
            _wait(lambda: not _up_to_date(engine, producer.written), 60,
                  f"every tutor up to date (entries of {lost_tutors} lost)")  # fmt: skip
        finally:
            producer.stop.set()
            if worker.poll() is None:
                worker.send_signal(signal.SIGCONT)
                worker.terminate()
            worker.wait(30)
            log_file.close()
        text = log.read_text()
        assert "reconciling what changed since" in text, text[-3000:]
        assert "reconciliation:" in text
    verify = cli("verify", "--json", url="redis://127.0.0.1:1", db=db)
    assert verify.exit_code == 0, verify.output


def test_cluster_node_failover_while_consuming(tmp_path: Path, opened: Any) -> None:
    """The primary that holds the metrics stream dies; its replica takes over the slot. The
    worker keeps retrying through the failover and drains everything."""
    db, engine, _ = _database(tmp_path, 5)
    with topologies.cluster(tmp_path / "cluster") as c:
        log = tmp_path / "worker.log"
        log_file = log.open("wb")
        worker = _worker(db, c.url, log_file)
        client = opened(c.url)
        try:
            publish(client, STREAM, [events.flat(f"T000{1 + i % 5}") for i in range(200)])
            _wait(lambda: _settled(client), 60, "the first entries consumed")
            primary = c.node_serving(STREAM)
            primary.kill()

            def published() -> bool:
                try:
                    publish(client, STREAM, [events.flat(f"T000{1 + i % 5}") for i in range(200)])
                    return True
                except topology.TRANSIENT:
                    return False

            _wait(published, 60, "the stream's slot served again")
            _wait(lambda: c.node_serving(STREAM).port != primary.port, 30, "a new primary")
            _wait(lambda: _settled(client), 60, "everything consumed after the failover")
        finally:
            worker.terminate()
            worker.wait(30)
            log_file.close()
        assert worker.returncode == 0, log.read_text()[-3000:]
        # the stream's slot moved to another node: the worker noticed and reconciled
        assert "reconciling what changed since" in log.read_text()
    assert count_rows(engine) == 15


def test_the_api_keeps_answering_through_a_sentinel_failover(tmp_path: Path, opened: Any) -> None:
    """Completions posted while the master dies get 503 (saved, retry) or 202; once a replica
    is promoted every post is 202 again and every 202 is on the new master's stream."""
    import httpx

    from tests.api_server import api_server
    from tests.test_api import AUTH, completion, seed

    db = f"sqlite:///{tmp_path / 'api.db'}"
    seed(db)
    with (
        topologies.sentinel_set(tmp_path / "sentinel") as s,
        api_server(db, s.url) as base,
        httpx.Client(base_url=base, timeout=30) as http,
    ):
        accepted: list[str] = []

        def post(n: int) -> int:
            session_id = f"FAIL-{n}"
            reply = http.post(f"/api/sessions/{session_id}/complete", json=completion(1),
                              headers=AUTH)  # fmt: skip
            if reply.status_code == 202:
                accepted.append(session_id)
            assert reply.status_code in (202, 503), reply.text
            return reply.status_code

        assert [post(n) for n in range(5)] == [202] * 5
        old = s.master_port()
        s.current_master().kill()
        n = 5
        _wait(lambda: s.master_port() != old, 60, "a Sentinel promotion")
        deadline = time.monotonic() + 60
        while post(n) != 202:  # until the API's client finds the new master
            n += 1
            assert time.monotonic() < deadline, "the API never published to the new master"
            time.sleep(0.2)
        for _ in range(5):
            n += 1
            assert post(n) == 202
        stream: Any = opened(s.url).xrange(STREAM)
        published = {events.decode(dict(f)).session_id for _, f in stream}  # type: ignore[union-attr]
        assert set(accepted) - {f"FAIL-{i}" for i in range(5)} <= published


@pytest.mark.parametrize("kind", ["cluster", "sentinel"])
def test_tls_topologies_end_to_end(kind: str, tmp_path: Path, opened: Any) -> None:
    """rediss+cluster:// and rediss+sentinel:// against servers (Sentinels included) that
    speak only TLS, with a CA of the test's own given as `?ssl_ca_certs=`."""
    tls = topologies.make_tls(tmp_path / "tls")
    db, engine, _ = _database(tmp_path)
    servers = (
        topologies.cluster(tmp_path / kind, tls=tls)
        if kind == "cluster"
        else topologies.sentinel_set(tmp_path / kind, tls=tls)
    )
    with servers as topo:
        url = topo.url
        assert url.startswith(f"rediss+{kind}://") and url.endswith(tls.query)
        done = cli("events", "publish", "--tutor", "T0001", url=url, db=db)
        assert done.exit_code == 0, done.output
        run = cli(*BURST, url=url, db=db)
        assert run.exit_code == 0, run.output
        assert count_rows(engine) == 3
        doc = json.loads(cli("pending", "--json", url=url).stdout)
        assert (doc["pending"], doc["lag"], doc["redis"]) == (0, 0, url)
        # without the CA the certificate is refused: one line, exit 1
        plain = url.split("?", 1)[0]
        refused = cli("pending", url=plain)
        assert refused.exit_code == 1
        assert len(refused.output.strip().splitlines()) == 1, refused.output
