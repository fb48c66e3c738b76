"""API benchmark: throughput and latency of a real `tutormax api serve` process, per --workers.

    python bench/api_bench.py [--database-url postgresql://root@127.0.0.1:5432/tutormax_bench]
        [--redis-url redis://127.0.0.1:6379/14] [--workers 1,4] [--concurrency 16]
        [--posts 3000] [--gets 3000] [--boards 300] [--floor 1000]

For each --workers value it starts the server (SIGTERM at the end, as systemd stops it), waits
for `/healthz`, then drives it from this process with `--concurrency` threads, each with its own
keep-alive `httpx.Client`, and measures three phases after a short warm-up each:

1. `POST /api/sessions/{id}/complete` with a feedback object, for random existing tutors and
   students (scheduled in the last day): requests/s, p50/p95/p99 latency, non-202 answers
   (must be 0), and that the enrichment stream grew by exactly the number of 202s;
2. `GET /api/tutors/{id}/metrics` for random tutors (non-200 must be 0);
3. `GET /api/tutors?window=30day&limit=50`, the leaderboard (fewer requests);
4. `GET /healthz`, the floor: what HTTP, uvicorn and the load generator cost without a query.

On Linux, uvicorn (0.54 at least) leaves Nagle's algorithm on for the connections of
`--workers N > 1` (its pre-bound socket has proto 0, so asyncio skips TCP_NODELAY: uvicorn
issue #3149), and each keep-alive request after a connection's first then waited ~40 ms for
the client's delayed ACK; `tutormax api serve` now sets TCP_NODELAY on each connection
(`tutormax_cli/api/server.py`), and the floor phase shows whether that holds.

Latency is measured client-side (request sent to body read). The CPU columns are CPU time over
the phase's wall time (100% = one core): the server's processes, this load generator, the
database's PostgreSQL backends, and the whole machine (anything not idle, other users
included). The machine has 2 cores and the load generator competes with the server (and
PostgreSQL and Redis) for them, so the rates are lower bounds of what the server would do on
cores of its own. "PG held" counts the database connections the server holds after a phase,
"PG connects" the connections opened to the database during it (pg_stat_database.sessions:
the server's pool churn, plus anything else connecting to that database), "RSS MB" the
server processes' resident memory after it.

The database must hold tutors, students and metric rows (run `tutormax recompute` first). The
sessions posted are ids `APIBENCH-<run>-w<workers>-<n>`; they and their feedback rows are
deleted at the end, even on failure. The Redis db is flushed before each round and at the end:
give it a db index nothing else uses.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import redis
import sqlalchemy as sa

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tutormax_cli import keys
from tutormax_cli.store.db import open_engine

SUBJECTS = ("Algebra", "Geometry", "Chemistry", "Physics", "Biology", "SAT Prep", "Essay Writing")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- the server ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def descendants(pid: int) -> list[int]:
    """`pid` and its live descendants (uvicorn's supervisor, its workers), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(parents.get(p, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of `pids` (threads included), in seconds."""
    total = 0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def database_backends(database: str) -> list[int]:
    """PostgreSQL backends serving `database` (their title names it), from /proc."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                title = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if title.startswith("postgres:") and f" {database} " in title:
                out.append(int(entry))
    return out


def machine_busy() -> float:
    """CPU seconds all cores spent on anything but idle and I/O wait, since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / CLOCK_TICKS


class CpuMeter:
    """CPU used during a phase by the server, this process, the database's backends and the
    whole machine. The backends are sampled every 0.1 s, since a pool's overflow connections
    may open and close within the phase (a backend's CPU is counted up to its last sample)."""

    def __init__(self, server: list[int], database: str) -> None:
        self.server, self.database = server, database
        self.pg_start = self._backends()
        self.pg_seen = dict(self.pg_start)
        self.start = cpu_seconds(server), time.process_time(), machine_busy()
        self.done = threading.Event()
        self.sampler = threading.Thread(target=self._sample, daemon=True)
        self.sampler.start()

    def _backends(self) -> dict[int, float]:
        return {p: cpu_seconds([p]) for p in database_backends(self.database)}

    def _sample(self) -> None:
        while not self.done.wait(0.1):
            self.pg_seen.update(self._backends())

    def stop(self) -> dict[str, float]:
        server, client, machine = cpu_seconds(self.server), time.process_time(), machine_busy()
        self.done.set()
        self.sampler.join()
        self.pg_seen.update(self._backends())
        s_server, s_client, s_machine = self.start
        return {
            "server": server - s_server,
            "client": client - s_client,
            "postgres": sum(cpu - self.pg_start.get(p, 0.0) for p, cpu in self.pg_seen.items()),
            "machine": machine - s_machine,
        }


def rss_mb(pids: list[int]) -> float:
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


@dataclass
class Server:
    base: str
    proc: subprocess.Popen[bytes]
    log: Path

    def pids(self) -> list[int]:
        return descendants(self.proc.pid)


@contextmanager
def api_server(
    database_url: str, redis_url: str, token: str, workers: int, log: Path
) -> Iterator[Server]:
    """Start `tutormax api serve`, wait for `/healthz` and its workers, yield it; SIGTERM after
    (as tests/api_server.py does) and check it shut down cleanly."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TUTORMAX_", "PROMETHEUS_"))}
    env.update(
        TUTORMAX_DATABASE_URL=database_url, TUTORMAX_REDIS_URL=redis_url, TUTORMAX_API_TOKEN=token
    )
    out = open(log, "wb")  # noqa: SIM115 - closed below, after the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "tutormax_cli", "api", "serve", "--port", str(port),
         "--workers", str(workers), "--log-level", "WARNING"],
        env=env, stdout=out, stderr=subprocess.STDOUT,
    )  # fmt: skip
    server = Server(f"http://127.0.0.1:{port}", proc, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"api serve exited {proc.returncode}:\n{log.read_text()}")
            try:
                up = httpx.get(f"{server.base}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                up = False
            # with --workers N: the supervisor, N workers (and multiprocessing's tracker)
            if up and (workers == 1 or len(server.pids()) > workers):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"api serve did not come up within 60 s:\n{log.read_text()}")
            time.sleep(0.1)
        yield server
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
            print(f"WARNING: api serve did not exit within 30 s of SIGTERM (killed); see {log}")
        out.close()
        if code not in (0, -signal.SIGTERM):
            print(f"WARNING: api serve exited {code} on SIGTERM; see {log}")


# --- the load generator ----------------------------------------------------------------------

Job = Callable[[httpx.Client], httpx.Response]


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int | str] = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)
    wall: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)

    def quantile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000


def drive(
    base: str,
    headers: dict[str, str],
    jobs: list[Job],
    concurrency: int,
    expect: int,
    meter: Callable[[], CpuMeter] | None = None,
) -> Result:
    """Run `jobs` on `concurrency` threads (one keep-alive client each), as fast as they go;
    `meter` measures the CPU used from the first job to the last answer."""
    result = Result()
    lock = threading.Lock()
    position = iter(range(len(jobs)))
    start = threading.Barrier(concurrency + 1)

    def work() -> None:
        latencies: list[float] = []
        statuses: Counter[int | str] = Counter()
        samples: list[str] = []
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        with httpx.Client(base_url=base, headers=headers, timeout=60, limits=limits) as client:
            client.get("/healthz")  # open the connection before the clock starts
            start.wait()
            while True:
                with lock:
                    i = next(position, None)
                if i is None:
                    break
                began = time.perf_counter()
                try:
                    response = jobs[i](client)
                    status: int | str = response.status_code
                except httpx.HTTPError as exc:
                    response, status = None, type(exc).__name__
                latencies.append(time.perf_counter() - began)
                statuses[status] += 1
                if status != expect and len(samples) < 3:
                    samples.append(f"{status}: {response.text[:300] if response else ''}")
        with lock:
            result.latencies.extend(latencies)
            result.statuses.update(statuses)
            result.samples.extend(samples)

    threads = [threading.Thread(target=work) for _ in range(concurrency)]
    for t in threads:
        t.start()
    start.wait()
    began, cpu = time.perf_counter(), meter() if meter else None
    for t in threads:
        t.join()
    result.wall = time.perf_counter() - began
    result.cpu = cpu.stop() if cpu else {}
    return result


def completion(tutor: str, student: str, rng: random.Random, now: datetime) -> dict[str, Any]:
    """A valid completion with feedback, scheduled in the day before `now`."""
    start = (now - timedelta(minutes=rng.randint(60, 23 * 60))).replace(second=0, microsecond=0)
    late = rng.choice((0, 0, 0, 2, 5, 12))
    duration = rng.choice((30, 45, 60, 60, 90))
    return {
        "tutor_id": tutor, "student_id": student, "session_number": rng.randint(1, 12),
        "scheduled_start": start.isoformat(),
        "actual_start": (start + timedelta(minutes=late)).isoformat(),
        "duration_minutes": duration, "subject": rng.choice(SUBJECTS),
        "session_type": rng.choice(("1-on-1", "1-on-1", "group")),
        "tutor_initiated_reschedule": False, "no_show": False, "late_start_minutes": late,
        "engagement_score": round(rng.uniform(0.3, 1.0), 3),
        "learning_objectives_met": rng.random() < 0.8, "technical_issues": rng.random() < 0.05,
        "feedback": {
            "overall_rating": rng.randint(2, 5), "subject_knowledge_rating": rng.randint(2, 5),
            "communication_rating": rng.randint(2, 5), "patience_rating": rng.randint(2, 5),
            "engagement_rating": rng.randint(2, 5), "helpfulness_rating": rng.randint(2, 5),
            "would_recommend": rng.random() < 0.85, "improvement_areas": ["pacing"],
            "free_text_feedback": "Clear explanations, good pace.",
        },
    }  # fmt: skip


def post_job(session_id: str, body: dict[str, Any]) -> Job:
    return lambda c: c.post(f"/api/sessions/{session_id}/complete", json=body)


def get_job(path: str) -> Job:
    return lambda c: c.get(path)


# --- one round per --workers -----------------------------------------------------------------


@dataclass
class Row:
    workers: int
    phase: str
    expect: int
    result: Result
    rss: float
    connections: int
    connects: int
    note: str = ""


def database_sessions(engine: sa.Engine) -> int:
    """Connections ever opened to the database (PostgreSQL 14+; flushed within about 1 s)."""
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT pg_stat_clear_snapshot()"))
        return int(
            conn.execute(
                sa.text("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
            ).scalar_one()
        )


def api_connections(engine: sa.Engine) -> int:
    """PostgreSQL connections the API processes hold (their application_name)."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'tutormax' "
                    "AND datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
        )


def run_round(
    args: argparse.Namespace,
    workers: int,
    prefix: str,
    engine: sa.Engine,
    r: redis.Redis,
    ids: tuple[list[str], list[str]],
    log_dir: Path,
) -> list[Row]:
    tutors, students = ids
    rng = random.Random(f"{args.seed}-{workers}")
    token = secrets.token_hex(16)
    headers = {"Authorization": f"Bearer {token}"}
    now = datetime.now(UTC)
    r.flushdb()
    stream = keys.ENRICHMENT_STREAM
    rows: list[Row] = []
    log = log_dir / f"api-w{workers}.log"
    database = sa.make_url(args.database_url).database or ""
    with api_server(args.database_url, args.redis_url, token, workers, log) as server:

        def phase(name: str, jobs: list[Job], warm: list[Job], expect: int) -> Result:
            if warm:
                drive(server.base, headers, warm, args.concurrency, expect)
            pids = server.pids()
            meter = lambda: CpuMeter(pids, database)  # noqa: E731
            sessions = database_sessions(engine)
            result = drive(server.base, headers, jobs, args.concurrency, expect, meter)
            time.sleep(1.5)  # let the backends flush their session counts
            connects = database_sessions(engine) - sessions
            held = api_connections(engine)
            row = Row(workers, name, expect, result, rss_mb(pids), held, connects)
            rows.append(row)
            for sample in result.samples:
                print(f"  workers={workers} {name}: unexpected answer {sample}")
            return result

        def posts(tag: str, n: int) -> list[Job]:
            return [
                post_job(
                    f"{prefix}-w{workers}-{tag}{i}",
                    completion(rng.choice(tutors), rng.choice(students), rng, now),
                )
                for i in range(n)
            ]

        warm_posts = posts("warm", args.warmup)
        drive(server.base, headers, warm_posts, args.concurrency, 202)
        before = r.xlen(stream)
        result = phase("POST complete", posts("", args.posts), [], 202)
        grew = r.xlen(stream) - before
        accepted = result.statuses[202]
        rows[-1].note = f"stream +{grew:,} ({'=' if grew == accepted else '≠'} {accepted:,} 202s)"

        def metrics_jobs(n: int) -> list[Job]:
            return [get_job(f"/api/tutors/{rng.choice(tutors)}/metrics") for _ in range(n)]

        phase("GET tutor metrics", metrics_jobs(args.gets), metrics_jobs(args.warmup), 200)
        board = get_job("/api/tutors?window=30day&limit=50")
        phase("GET leaderboard", [board] * args.boards, [board] * args.concurrency, 200)
        sizes = httpx.get(f"{server.base}/api/tutors?window=30day&limit=50").json()["count"]
        rows[-1].note = f"{sizes} rows each"
        if args.floor:
            health = get_job("/healthz")
            phase("GET /healthz (floor)", [health] * args.floor, [health] * args.concurrency, 200)
            rows[-1].note = "no database: HTTP and client overhead"
    errors = [line for line in log.read_text().splitlines() if "ERROR" in line or "Trace" in line]
    if errors:
        print(f"  workers={workers}: {len(errors)} error lines in {log}, first: {errors[0]}")
    return rows


def cleanup(engine: sa.Engine, prefix: str) -> tuple[int, int, int]:
    """Delete the bench's feedback and sessions; the rows deleted and the sessions left."""
    like = {"like": f"{prefix}-%"}
    with engine.begin() as conn:
        feedback = conn.execute(
            sa.text("DELETE FROM student_feedback WHERE session_id LIKE :like"), like
        ).rowcount
        sessions = conn.execute(
            sa.text("DELETE FROM sessions WHERE session_id LIKE :like"), like
        ).rowcount
    with engine.connect() as conn:
        left = conn.execute(
            sa.text(
                "SELECT (SELECT count(*) FROM sessions WHERE session_id LIKE 'APIBENCH-%') + "
                "(SELECT count(*) FROM student_feedback WHERE session_id LIKE 'APIBENCH-%')"
            )
        ).scalar_one()
    return feedback, sessions, int(left)


def table(rows: list[Row]) -> str:
    out = [
        "| workers | phase | requests | unexpected | req/s | p50 ms | p95 ms | p99 ms | server CPU "
        "| client CPU | PG CPU | machine CPU | RSS MB | PG held | PG connects | notes |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        res, cpu = row.result, row.result.cpu
        n = len(res.latencies)
        bad = {k: v for k, v in res.statuses.items() if k != row.expect}
        out.append(
            f"| {row.workers} | {row.phase} | {n:,} | {sum(bad.values()) or 0}"
            f"{' ' + str(dict(bad)) if bad else ''} | {n / res.wall:,.0f} "
            f"| {res.quantile(0.5):.1f} | {res.quantile(0.95):.1f} | {res.quantile(0.99):.1f} "
            f"| {cpu['server'] / res.wall:.0%} | {cpu['client'] / res.wall:.0%} "
            f"| {cpu['postgres'] / res.wall:.0%} | {cpu['machine'] / res.wall:.0%} "
            f"| {row.rss:,.0f} | {row.connections} | {row.connects:,} | {row.note} |"
        )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--database-url", default="postgresql://root@127.0.0.1:5432/tutormax_bench")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    ap.add_argument("--workers", default="1,4", help="Comma-separated --workers values.")
    ap.add_argument("--concurrency", type=int, default=16, help="Client threads.")
    ap.add_argument("--posts", type=int, default=3_000)
    ap.add_argument("--gets", type=int, default=3_000)
    ap.add_argument("--boards", type=int, default=300)
    ap.add_argument("--floor", type=int, default=1_000, help="/healthz requests (0: skip).")
    ap.add_argument("--warmup", type=int, default=200, help="Requests before a phase's clock.")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--log-dir", type=Path, default=None, help="Server logs (default: a temp dir).")
    args = ap.parse_args()
    worker_counts = [int(w) for w in args.workers.split(",")]
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="tutormax-api-bench-"))
    log_dir.mkdir(parents=True, exist_ok=True)

    engine = open_engine(args.database_url)
    with engine.connect() as conn:
        tutors = list(conn.execute(sa.text("SELECT tutor_id FROM tutors")).scalars())
        students = list(conn.execute(sa.text("SELECT student_id FROM students")).scalars())
        metric_rows = conn.execute(sa.text("SELECT count(*) FROM tutor_performance_metrics"))
        n_metrics = metric_rows.scalar_one()
    if not tutors or not students or not n_metrics:
        raise SystemExit(
            f"{len(tutors)} tutors, {len(students)} students, {n_metrics} metric rows: "
            "seed the database and run `tutormax recompute` first"
        )
    r = redis.Redis.from_url(args.redis_url)
    prefix = f"APIBENCH-{secrets.token_hex(4)}"
    print(f"data: {len(tutors):,} tutors, {len(students):,} students, {n_metrics:,} metric rows; "
          f"{os.cpu_count()} CPUs; concurrency {args.concurrency}; session ids {prefix}-*; "
          f"server logs in {log_dir}")  # fmt: skip
    print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    rows: list[Row] = []
    try:
        for workers in worker_counts:
            rows += run_round(args, workers, prefix, engine, r, (tutors, students), log_dir)
            time.sleep(1)
    finally:
        feedback, sessions, left = cleanup(engine, prefix)
        r.flushdb()
        engine.dispose()
        print(f"cleanup: deleted {sessions:,} sessions and {feedback:,} feedback rows; "
              f"APIBENCH sessions + feedback rows left: {left}")  # fmt: skip
    print("load average after: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print()
    print(table(rows))
    failed = [
        f"workers={row.workers} {row.phase}"
        for row in rows
        if row.result.statuses[row.expect] != len(row.result.latencies) or "≠" in row.note
    ]
    if failed:
        raise SystemExit(f"FAIL: unexpected answers or stream growth in {', '.join(failed)}")


if __name__ == "__main__":
    main()
