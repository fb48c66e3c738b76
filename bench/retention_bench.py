"""Stream retention benchmark (issue 12): a worker drains 1,000,000 entries with
`--stream-retention 0`, then consumes a steady stream with a short retention; the stream's
length and memory are sampled every second beside the worker.

    python bench/retention_bench.py [--entries 1000000] [--tutors 200] [--rate 3000]
        [--steady 60] [--retention 20]

It starts its own redis-server on a free port (persistence off) and a SQLite database in a
temporary directory, so it touches neither the machine's Redis nor its PostgreSQL.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import redis

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tutormax_cli import keys
from tutormax_cli.sample import SampleSpec, generate
from tutormax_cli.store.db import open_engine
from tutormax_cli.store.migrate import upgrade
from tutormax_cli.store.seed import save_tables
from tutormax_cli.stream import events
from tutormax_cli.stream.producer import publish

STREAM = keys.ENRICHMENT_STREAM
WORKER = ["worker", "run", "--debounce", "1", "--max-wait", "2", "--sweep", "0",
          "--no-rollover", "--verify-every", "0"]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sampler(threading.Thread):
    """XLEN and MEMORY USAGE of the stream every `every` seconds."""

    def __init__(self, client: redis.Redis, every: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.client, self.every = client, every
        self.samples: list[tuple[float, int, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        while not self.stop.is_set():
            length = int(self.client.xlen(STREAM))
            memory = int(self.client.memory_usage(STREAM, samples=0) or 0)
            self.samples.append((time.monotonic() - started, length, memory))
            self.stop.wait(self.every)


def mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--tutors", type=int, default=200)
    parser.add_argument("--rate", type=int, default=3000, help="steady phase entries/s")
    parser.add_argument("--steady", type=float, default=60.0, help="steady phase seconds")
    parser.add_argument("--retention", type=float, default=20.0, help="steady phase retention")
    args = parser.parse_args()

    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit("redis-server is not installed")
    tmp = Path(tempfile.mkdtemp(prefix="tutormax-retention-"))
    port = free_port()
    redis_proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    db = f"sqlite:///{tmp / 'bench.db'}"
    env = dict(os.environ, TUTORMAX_REDIS_URL=url, TUTORMAX_DATABASE_URL=db)
    try:
        client = redis.Redis(port=port)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        engine = open_engine(db)
        upgrade(engine)
        save_tables(
            engine,
            generate(SampleSpec(tutors=args.tutors, days=120, seed=5, end=datetime.now(UTC))),
        )
        tutors = [f"T{i:04d}" for i in range(1, args.tutors + 1)]
        rng = random.Random(5)

        # -- phase 1: a backlog of --entries, drained with retention 0 -------------------------
        started = time.perf_counter()
        batch = 50_000
        for start in range(0, args.entries, batch):
            n = min(batch, args.entries - start)
            publish(client, STREAM, [events.flat(rng.choice(tutors)) for _ in range(n)])
        full_len = int(client.xlen(STREAM))
        full_mem = int(client.memory_usage(STREAM, samples=0) or 0)
        print(f"published {full_len:,} entries in {time.perf_counter() - started:.1f} s: "
              f"{mib(full_mem)} ({full_mem / full_len:,.0f} B/entry)")  # fmt: skip
        sampler = Sampler(client)
        sampler.start()
        started = time.perf_counter()
        drain = subprocess.run(
            [sys.executable, "-m", "tutormax_cli", *WORKER, "--burst", "--stream-retention", "0"],
            env=env, capture_output=True, text=True,
        )  # fmt: skip
        drained = time.perf_counter() - started
        sampler.stop.set()
        sampler.join()
        if drain.returncode != 0:
            raise SystemExit(drain.stderr[-2000:])
        left = int(client.xlen(STREAM))
        left_mem = int(client.memory_usage(STREAM, samples=0) or 0)
        trimmed = client.hget(keys.trim_key(STREAM), "dropped")
        print(f"drained in {drained:.1f} s ({full_len / drained:,.0f} entries/s); "
              f"XLEN {full_len:,} -> {left:,}, memory {mib(full_mem)} -> {mib(left_mem)}, "
              f"trimmed {int(trimmed or 0):,}")  # fmt: skip
        during = sampler.samples
        step = max(1, len(during) // 8)
        shown = ", ".join(f"{t:.0f}s {n:,} {mib(m)}" for t, n, m in during[::step])
        print(f"during the drain (s, XLEN, memory): {shown}")

        # -- phase 2: a steady stream with a short retention ------------------------------------
        worker = subprocess.Popen(
            [sys.executable, "-m", "tutormax_cli", *WORKER,
             "--stream-retention", str(args.retention)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        sampler = Sampler(client)
        sampler.start()
        deadline = time.monotonic() + args.steady
        sent = 0
        while time.monotonic() < deadline:
            tick = time.monotonic()
            n = args.rate // 10
            publish(client, STREAM, [events.flat(rng.choice(tutors)) for _ in range(n)])
            sent += n
            time.sleep(max(0.0, 0.1 - (time.monotonic() - tick)))
        sampler.stop.set()
        sampler.join()
        worker.terminate()
        worker.wait(60)
        settled = [s for s in sampler.samples if s[0] > args.retention + 10]
        lengths = [n for _, n, _ in settled] or [0]
        memories = [m for _, _, m in settled] or [0]
        window = args.retention * args.rate
        print(f"steady {args.rate:,}/s for {args.steady:.0f} s with retention {args.retention:g} s "
              f"(window ≈ {window:,.0f} entries): after the first {args.retention + 10:.0f} s "
              f"XLEN {min(lengths):,}–{max(lengths):,}, memory "
              f"{mib(min(memories))}–{mib(max(memories))}")  # fmt: skip
    finally:
        redis_proc.terminate()
        redis_proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
