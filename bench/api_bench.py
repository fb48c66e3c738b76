"""API benchmark: throughput and latency of one real `tutormax api serve` process, wrk-driven.

    python bench/api_bench.py [--database-url postgresql://root@127.0.0.1:5432/tutormax_bench]
        [--redis-url redis://127.0.0.1:6379/14] [--workers 1] [--connections 16]
        [--threads 1] [--duration 15] [--warmup 3] [--batch 50]

It starts the server once (SIGTERM at the end, as systemd stops it), waits for `/healthz`, and
drives it with `wrk` (Debian's package, a C load generator: one thread takes a few percent of
a core where a Python client took as much CPU as the server) over `--connections` keep-alive
connections, phase after phase against the same process, each after a `--warmup` run of its
own:

1. `GET /healthz`, the floor: HTTP, uvicorn and the load generator without a query;
2. `POST /api/sessions/{id}/complete` with a feedback object, a new session id per request
   (`bench/wrk/complete.lua`), for random existing tutors and students, scheduled in the last
   day;
3. `POST /api/sessions:batch` with `--batch` such completions a request (`bench/wrk/batch.lua`);
4. `GET /api/tutors/{id}/metrics` for random tutors (`bench/wrk/get.lua`);
5. `GET /api/tutors?window=30day&limit=50`, the leaderboard;
6. and 7. the same two reads from a second server started with `--read-cache-seconds 0`:
   every answer a database read. The notes give the share of answers the cache served.

The Lua scripts count answers by status and keep the session id of every 202 (read from the
answer's body); their `done()` writes those ids and the latency percentiles to a file. After
each completion phase the bench CHECKS, against PostgreSQL and the enrichment stream (XRANGE,
each envelope's `data.session_id`): every 202 is a committed session with its feedback row,
every committed session of the phase has exactly one envelope and every envelope a committed
session, no id is answered twice, and the sessions committed without an answer wrk saw are at
most the requests in flight when it stopped (one per connection). Any other answer, or a
failed check, fails the run (exit 1) after the table is printed.

Latency is wrk's (request written to response read). The CPU columns are CPU time over the
phase's wall time (100% = one core): the server's processes, wrk, the database's PostgreSQL
backends, and the whole machine (anything not idle, other users included). "rate / floor" is
the phase's rate over the floor's req/s: completions/s for the completion phases (a batch
request carries `--batch`), requests/s for the reads.

The database must hold tutors, students and metric rows (`bench/scale_db.py --tutors 2000`
makes one). The sessions posted are ids `APIBENCH-<run>-<phase>-<thread>-<n>`; they and their
feedback rows are deleted at the end, even on failure. The Redis db is flushed at the start
and at the end: give it a db index nothing else uses.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import httpx
import redis
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tutormax_cli import keys
from tutormax_cli.api.config import READ_CACHE_SECONDS
from tutormax_cli.store.db import open_engine

WRK_DIR = Path(__file__).resolve().parent / "wrk"
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
        self.start = cpu_seconds(server), children_cpu(), machine_busy()
        self.done = threading.Event()
        self.sampler = threading.Thread(target=self._sample, daemon=True)
        self.sampler.start()

    def _backends(self) -> dict[int, float]:
        return {p: cpu_seconds([p]) for p in database_backends(self.database)}

    def _sample(self) -> None:
        while not self.done.wait(0.1):
            self.pg_seen.update(self._backends())

    def stop(self) -> dict[str, float]:
        server, client, machine = cpu_seconds(self.server), children_cpu(), machine_busy()
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
    database_url: str,
    redis_url: str,
    token: str,
    workers: int,
    log: Path,
    extra: tuple[str, ...] = (),
) -> Iterator[Server]:
    """Start `tutormax api serve`, wait for `/healthz` and its workers, yield it; SIGTERM after
    (as tests/api_server.py does) and check it shut down cleanly."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TUTORMAX_", "PROMETHEUS_"))}
    env.update(
        TUTORMAX_DATABASE_URL=database_url, TUTORMAX_REDIS_URL=redis_url, TUTORMAX_API_TOKEN=token
    )
    out = open(log, "ab")  # noqa: SIM115 - closed below, after the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "tutormax_cli", "api", "serve", "--port", str(port),
         "--workers", str(workers), "--log-level", "WARNING", *extra],
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


@dataclass
class Result:
    """What one wrk run reported (its Lua `done()` file)."""

    requests: int = 0
    seconds: float = 0.0
    statuses: Counter[str] = field(default_factory=Counter)
    socket_errors: tuple[int, ...] = (0, 0, 0, 0)  # connect, read, write, timeout
    latency_ms: dict[str, float] = field(default_factory=dict)
    accepted: list[str] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)


def read_result(path: Path) -> Result:
    result = Result()
    for line in path.read_text().splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "accepted":
            result.accepted.append(rest)
        elif kind == "status":
            status, n = rest.rsplit(" ", 1)
            result.statuses[status] += int(n)
        elif kind == "requests":
            result.requests = int(rest)
        elif kind == "duration_us":
            result.seconds = int(rest) / 1e6
        elif kind == "errors":
            result.socket_errors = tuple(int(x) for x in rest.split())
        elif kind == "latency_us":
            q, us = rest.split()
            result.latency_ms[q] = int(us) / 1000
    return result


def children_cpu() -> float:
    """CPU seconds of this process's waited-for children (each wrk run, once it exited)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Wrk:
    """How to run wrk against one server."""

    base: str
    headers: dict[str, str]
    connections: int
    threads: int
    ids_file: Path
    out_dir: Path

    def run(
        self, name: str, script: str, args: list[str], seconds: float, meter: CpuMeter | None
    ) -> Result:
        out = self.out_dir / f"{name}.out"
        command = [
            "wrk", f"-t{self.threads}", f"-c{self.connections}", f"-d{max(1, round(seconds))}s",
            "--timeout", "30s", "-s", script,
            *[x for k, v in self.headers.items() for x in ("-H", f"{k}: {v}")],
            self.base, "--", str(self.ids_file), str(out), *args,
        ]  # fmt: skip
        done = subprocess.run(command, cwd=WRK_DIR, capture_output=True, text=True)
        cpu = meter.stop() if meter else {}
        if done.returncode != 0 or not out.exists():
            raise SystemExit(f"wrk failed ({done.returncode}): {done.stderr.strip()[:500]}")
        result = read_result(out)
        result.cpu = cpu
        return result


# --- the checks -------------------------------------------------------------------------------


def stream_ids(r: redis.Redis, stream: str) -> Counter[str]:
    """How many envelopes on `stream` name each session id (its `data.session_id`)."""
    seen: Counter[str] = Counter()
    last: bytes | str = "-"
    while True:
        entries = cast(list[tuple[bytes, dict[bytes, bytes]]],
                       r.xrange(stream, min=last, max="+", count=10_000))  # fmt: skip
        if last != "-":
            entries = entries[1:]  # the bound is inclusive
        if not entries:
            return seen
        for _entry_id, fields in entries:
            seen[json.loads(fields[b"message"])["data"]["session_id"]] += 1
        last = entries[-1][0]


def committed(engine: sa.Engine, prefix: str) -> tuple[set[str], set[str]]:
    """Session ids stored under `prefix`, and those of them with a feedback row."""
    like = {"like": f"{prefix}-%"}
    with engine.connect() as conn:
        sessions = set(
            conn.execute(
                sa.text("SELECT session_id FROM sessions WHERE session_id LIKE :like"), like
            ).scalars()
        )
        with_feedback = set(
            conn.execute(
                sa.text(
                    "SELECT s.session_id FROM sessions s JOIN student_feedback f "
                    "ON f.session_id = s.session_id WHERE s.session_id LIKE :like"
                ),
                like,
            ).scalars()
        )
    return sessions, with_feedback


def check_completions(
    result: Result, stored: tuple[set[str], set[str]], published: Counter[str], in_flight: int
) -> list[str]:
    """What is wrong between the 202s wrk saw, the committed rows and the envelopes; [] when
    every 202 is one committed session with its feedback and one envelope."""
    sessions, with_feedback = stored
    accepted = set(result.accepted)
    problems = []
    if len(accepted) != len(result.accepted):
        problems.append(f"{len(result.accepted) - len(accepted)} ids answered 202 twice")
    if missing := accepted - sessions:
        problems.append(f"{len(missing)} 202s without a committed session, e.g. {min(missing)}")
    if no_feedback := accepted - with_feedback:
        problems.append(f"{len(no_feedback)} 202s without their feedback row")
    if doubled := [sid for sid, n in published.items() if n > 1]:
        problems.append(f"{len(doubled)} sessions published more than once")
    if unpublished := sessions - set(published):
        problems.append(f"{len(unpublished)} committed sessions without an envelope")
    if orphans := set(published) - sessions:
        problems.append(f"{len(orphans)} envelopes without a committed session")
    if len(sessions - accepted) > in_flight:
        problems.append(
            f"{len(sessions - accepted)} sessions committed without a 202 seen "
            f"(more than the {in_flight} requests in flight at wrk's stop)"
        )
    return problems


# --- the run ------------------------------------------------------------------------------------


@dataclass
class Row:
    phase: str
    result: Result
    per_request: int  # completions a request carries (0 for reads)
    expect: str  # the status every answer must have
    problems: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def rate(self) -> float:
        """Requests/s."""
        return self.result.requests / self.result.seconds if self.result.seconds else 0.0

    @property
    def unexpected(self) -> int:
        bad = sum(n for s, n in self.result.statuses.items() if s not in (self.expect, "item 202"))
        return bad + sum(self.result.socket_errors)


def run(args: argparse.Namespace, engine: sa.Engine, r: redis.Redis, prefix: str) -> list[Row]:
    token = secrets.token_hex(16)
    database = sa.make_url(args.database_url).database or ""
    stream = keys.ENRICHMENT_STREAM
    out_dir = args.log_dir
    rows: list[Row] = []
    with api_server(
        args.database_url, args.redis_url, token, args.workers, out_dir / "api.log",
        ("--read-cache-seconds", f"{args.read_cache_seconds:g}"),
    ) as server:  # fmt: skip
        wrk = Wrk(
            server.base,
            {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            args.connections,
            args.threads,
            args.ids_file,
            out_dir,
        )

        def phase(
            name: str, script: str, extra: list[str], expect: str, per_request: int = 0
        ) -> Row:
            tag = name.split()[0].lower()
            warm = [f"{prefix}-{tag}warm", *extra[1:]] if per_request else extra
            wrk.run(f"{tag}-warm", script, warm, args.warmup, None)
            pids = server.pids()  # the server of the `with` running now (late binding)
            result = wrk.run(tag, script, extra, args.duration, CpuMeter(pids, database))
            row = Row(name, result, per_request, expect)
            rows.append(row)
            return row

        floor = phase("healthz", "get.lua", ["/healthz"], "200")
        floor.phase = "GET /healthz (floor)"
        for name, script, n in (
            ("single POST …/complete", "complete.lua", 1),
            ("batch POST /api/sessions:batch", "batch.lua", args.batch),
        ):
            tag = name.split()[0]
            extra = [f"{prefix}-{tag}", str(n)]
            row = phase(name, script, extra, "202" if n == 1 else "200", n)
            time.sleep(1.0)  # answers in flight when wrk stopped are committed by now
            stored = committed(engine, f"{prefix}-{tag}")
            published = Counter(
                {k: v for k, v in stream_ids(r, stream).items() if k.startswith(f"{prefix}-{tag}-")}
            )
            in_flight = args.connections * n
            row.problems = check_completions(row.result, stored, published, in_flight)
            row.note = (
                f"{len(row.result.accepted):,} 202s = {len(stored[0]):,} committed "
                f"(+{len(stored[0] - set(row.result.accepted))} in flight) = "
                f"{sum(published.values()):,} envelopes"
                + ("" if not row.problems else " — FAILED: " + "; ".join(row.problems))
            )

        def reads(cache: str) -> None:
            """The two read phases; `cache` names the server's read cache in the rows."""
            before = cache_lookups(server.base)
            for name, path in (
                ("metrics GET /api/tutors/{id}/metrics", "/api/tutors/{tutor}/metrics"),
                ("leaderboard GET /api/tutors?window=30day&limit=50",
                 "/api/tutors?window=30day&limit=50"),
            ):  # fmt: skip
                tag, rest = name.split(" ", 1)
                row = phase(f"{tag}-{cache.split()[0]} {rest} (read cache {cache})", "get.lua",
                            [path], "200")  # fmt: skip
                after = cache_lookups(server.base)
                hits, misses = (after[k] - before[k] for k in ("hit", "miss"))
                before = after
                row.note = f"{hits / max(1, hits + misses):.0%} cache hits"
                if tag == "leaderboard":
                    answer = httpx.get(f"{server.base}{path}").json()
                    row.note += f", {answer['count']} rows each"

        reads(f"on, {args.read_cache_seconds:g} s")
    # the same reads from a server that keeps nothing: every answer a database read
    with api_server(
        args.database_url, args.redis_url, token, args.workers, out_dir / "api.log",
        ("--read-cache-seconds", "0"),
    ) as server:  # fmt: skip
        wrk.base = server.base
        reads("off")
    for row in rows:
        row.phase = row.phase.split(" ", 1)[1] if not row.phase.startswith("GET") else row.phase
    log = (out_dir / "api.log").read_text().splitlines()
    errors = [line for line in log if "ERROR" in line or "Trace" in line]
    if errors:
        print(f"  {len(errors)} error lines in {out_dir / 'api.log'}, first: {errors[0]}")
    return rows


def cache_lookups(base: str) -> Counter[str]:
    """The server's `tutormax_api_read_cache_lookups_total` by result (hit, miss)."""
    counts: Counter[str] = Counter()
    for family in text_string_to_metric_families(httpx.get(f"{base}/metrics").text):
        for sample in family.samples:
            if sample.name == "tutormax_api_read_cache_lookups_total":
                counts[sample.labels["result"]] += int(sample.value)
    return counts


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
    floor = rows[0].rate
    out = [
        "| phase | requests | unexpected | req/s | completions/s | p50 ms | p99 ms "
        "| rate / floor | server CPU | wrk CPU | PG CPU | machine CPU | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        res, cpu = row.result, row.result.cpu
        wall = res.seconds
        completions = row.rate * row.per_request
        rate = completions if row.per_request else row.rate
        bad = {k: v for k, v in res.statuses.items() if k not in (row.expect, "item 202")}
        unexpected = f"{row.unexpected}" + (f" {dict(bad)}" if bad else "")
        if sum(res.socket_errors):
            unexpected += f" socket errors {res.socket_errors}"
        out.append(
            f"| {row.phase} | {res.requests:,} | {unexpected} | {row.rate:,.0f} "
            f"| {f'{completions:,.0f}' if row.per_request else ''} "
            f"| {res.latency_ms['50']:.1f} | {res.latency_ms['99']:.1f} | {rate / floor:.1%} "
            f"| {cpu['server'] / wall:.0%} | {cpu['client'] / wall:.0%} "
            f"| {cpu['postgres'] / wall:.0%} | {cpu['machine'] / wall:.0%} | {row.note} |"
        )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--database-url", default="postgresql://root@127.0.0.1:5432/tutormax_bench")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    ap.add_argument("--workers", type=int, default=1, help="The server's --workers.")
    ap.add_argument("--connections", type=int, default=16, help="wrk's keep-alive connections.")
    ap.add_argument("--threads", type=int, default=1, help="wrk's threads.")
    ap.add_argument("--duration", type=float, default=15, help="Seconds a phase.")
    ap.add_argument("--warmup", type=float, default=3, help="Seconds of warm-up before each.")
    ap.add_argument("--batch", type=int, default=50, help="Completions a batch request.")
    ap.add_argument(
        "--read-cache-seconds", type=float, default=READ_CACHE_SECONDS,
        help="The first server's read cache (the reads then run again without one).",
    )  # fmt: skip
    ap.add_argument("--log-dir", type=Path, default=None, help="Server log and wrk outputs.")
    args = ap.parse_args()
    args.log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="tutormax-api-bench-"))
    args.log_dir.mkdir(parents=True, exist_ok=True)

    engine = open_engine(args.database_url)
    with engine.connect() as conn:
        tutors = list(conn.execute(sa.text("SELECT tutor_id FROM tutors")).scalars())
        students = list(conn.execute(sa.text("SELECT student_id FROM students")).scalars())
        metric_rows = conn.execute(sa.text("SELECT count(*) FROM tutor_performance_metrics"))
        n_metrics = metric_rows.scalar_one()
    if not tutors or not students or not n_metrics:
        raise SystemExit(
            f"{len(tutors)} tutors, {len(students)} students, {n_metrics} metric rows: "
            "seed the database (bench/scale_db.py --tutors 2000) first"
        )
    args.ids_file = args.log_dir / "ids.txt"
    n = max(len(tutors), len(students))
    args.ids_file.write_text(
        "".join(f"{tutors[i % len(tutors)]} {students[i % len(students)]}\n" for i in range(n))
    )
    r = redis.Redis.from_url(args.redis_url)
    r.flushdb()
    prefix = f"APIBENCH-{secrets.token_hex(4)}"
    print(f"data: {len(tutors):,} tutors, {len(students):,} students, {n_metrics:,} metric rows; "
          f"{os.cpu_count()} CPUs; wrk {args.threads} thread(s), {args.connections} connections, "
          f"{args.duration:g} s a phase after {args.warmup:g} s of warm-up; batches of "
          f"{args.batch}; session ids {prefix}-*; outputs in {args.log_dir}")  # fmt: skip
    print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    try:
        rows = run(args, engine, r, prefix)
    finally:
        feedback, sessions, left = cleanup(engine, prefix)
        r.flushdb()
        engine.dispose()
        print(f"cleanup: deleted {sessions:,} sessions and {feedback:,} feedback rows; "
              f"APIBENCH sessions + feedback rows left: {left}")  # fmt: skip
    print("load average after: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print()
    print(table(rows))
    failed = [row.phase for row in rows if row.unexpected or row.problems]
    if failed:
        raise SystemExit(f"FAIL: unexpected answers or failed checks in {', '.join(failed)}")


if __name__ == "__main__":
    main()
