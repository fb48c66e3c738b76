"""Worker benchmark (issue 3): throughput of `worker run --burst --debounce 0` as a whole
process, the design document's algorithm on the same data, and freshness at a steady rate.

    python bench/worker_bench.py [--pg-url postgresql://root@127.0.0.1:5432/test]
        [--redis-url redis://127.0.0.1:6379/9] [--tutors 600] [--entries 6000]

It creates (and drops) its own PostgreSQL database and uses the given Redis db index (flushed).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import polars as pl
import redis
import sqlalchemy as sa

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.design_algorithm import recompute_tutor
from tutormax_cli import keys
from tutormax_cli.metrics.engine import compute_metrics
from tutormax_cli.sample import SampleSpec, generate
from tutormax_cli.store.db import open_engine
from tutormax_cli.store.load import load_metric_inputs
from tutormax_cli.store.migrate import upgrade
from tutormax_cli.store.seed import save_tables
from tutormax_cli.stream import events
from tutormax_cli.stream.producer import publish


def create_db(admin_url: str) -> tuple[str, sa.Engine]:
    name = f"tutormax_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(
        sa.make_url(admin_url).set(drivername="postgresql+psycopg2"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    return sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False), admin


def cli(env: dict[str, str], *args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "tutormax_cli", *args], env=env, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"tutormax {' '.join(args)} failed:\n{proc.stderr}")
    return elapsed, proc


def entries_for(tutors: list[str], n: int, rng: random.Random) -> list[dict[str, str]]:
    out = []
    for i in range(n):
        t = rng.choice(tutors)
        if i % 2:
            out.append(events.envelope({"tutor_id": t, "session_id": f"S{i}"}, channel="bench"))
        else:
            out.append(events.flat(t, f"S{i}"))
    return out


MALFORMED = [
    {"session_id": "no tutor"},
    {"message": "{not json"},
    {"tutor_id": "x" * 80},
    {"message": '{"data": {"tutor_id": "T0001"}, "checksum": "0"}'},
]


def verify(engine: sa.Engine) -> int:
    """Every stored row equals the engine run on the database's data at its calculation_date."""
    with engine.connect() as conn:
        stored = pl.DataFrame(
            conn.execute(sa.text(
                "SELECT tutor_id, \"window\", calculation_date, sessions_scheduled, avg_rating, "
                "engagement_score, performance_tier FROM tutor_performance_metrics"
            )).all(),
            orient="row",
            schema=["tutor_id", "window", "calculation_date", "sessions_scheduled", "avg_rating",
                    "engagement_score", "performance_tier"],
        )  # fmt: skip
        mismatches = 0
        for (calc,), group in stored.group_by("calculation_date"):
            assert isinstance(calc, datetime)
            inputs = load_metric_inputs(conn, calc - timedelta(days=90), calc)
            tutors = group["tutor_id"].unique().to_list()
            expected = compute_metrics(
                inputs.sessions, inputs.feedback, inputs.events, calc, tutors=tutors
            )
            cols = ["tutor_id", "window", "sessions_scheduled", "avg_rating", "engagement_score",
                    "performance_tier"]  # fmt: skip
            joined = group.select(cols).join(
                expected.select(cols), on=["tutor_id", "window"], how="full", suffix="_e"
            )
            for c in cols[2:]:
                mismatches += joined.filter(pl.col(c).ne_missing(pl.col(f"{c}_e"))).height
    return mismatches


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pg-url", default="postgresql://root@127.0.0.1:5432/test")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    ap.add_argument("--tutors", type=int, default=600)
    ap.add_argument("--entries", type=int, default=6000)
    ap.add_argument("--rate", type=int, default=300)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--design-sample", type=int, default=200)
    args = ap.parse_args()

    url, admin = create_db(args.pg_url)
    env = dict(os.environ, TUTORMAX_DATABASE_URL=url, TUTORMAX_REDIS_URL=args.redis_url)
    r = redis.Redis.from_url(args.redis_url)
    try:
        engine = open_engine(url)
        upgrade(engine)
        now = datetime.now(UTC).replace(microsecond=0)
        tables = generate(SampleSpec(tutors=args.tutors, days=120, seed=1, end=now))
        save_tables(engine, tables)
        with engine.begin() as conn:
            conn.execute(sa.text("ANALYZE"))
        tutors = tables["tutors"]["tutor_id"].to_list()
        print(f"data: {args.tutors} tutors, {tables['sessions'].height:,} sessions, "
              f"{tables['student_feedback'].height:,} feedback, "
              f"{tables['tutor_events'].height:,} events")  # fmt: skip

        # 1. burst throughput, whole process
        rng = random.Random(3)
        r.flushdb()
        batch = entries_for(tutors, args.entries, rng) + MALFORMED * 5
        publish(r, keys.ENRICHMENT_STREAM, batch)
        elapsed, proc = cli(env, "worker", "run", "--burst", "--debounce", "0")
        pending = r.xpending(keys.ENRICHMENT_STREAM, keys.METRICS_GROUP)["pending"]
        dead = r.xlen(keys.DEAD_LETTER_STREAM)
        flushes = proc.stderr.count("flush:")
        print(f"burst: {len(batch):,} entries in {elapsed:.2f}s wall (process start included) = "
              f"{len(batch) / elapsed:,.0f} entries/s; {flushes} flushes; pending after: "
              f"{pending}; dead letters: {dead}/{len(MALFORMED) * 5}")  # fmt: skip
        for line in proc.stderr.splitlines():
            if "flush:" in line or "exiting" in line:
                print("  worker log:", line.split(": ", 1)[1])
        mismatches = verify(engine)
        print(f"verify: {mismatches} mismatching values against the engine at calculation_date")

        # 2. the design's algorithm on the same entries (one recompute per entry, no debounce)
        sample_entries = [e for e in batch[: args.design_sample]]
        started = time.perf_counter()
        for fields in sample_entries:
            event = events.decode(fields)  # type: ignore[arg-type]
            if isinstance(event, events.SessionEvent):
                recompute_tutor(engine, event.tutor_id, datetime.now(UTC))
        design = time.perf_counter() - started
        design_rate = len(sample_entries) / design
        print(
            f"design algorithm: {len(sample_entries)} entries in {design:.2f}s = "
            f"{design_rate:,.1f} entries/s -> tutormax is "
            f"{len(batch) / elapsed / design_rate:,.0f}x"
        )

        # 3. freshness at a steady rate with --debounce 1
        r.flushdb()
        worker = subprocess.Popen(
            [sys.executable, "-m", "tutormax_cli", "worker", "run", "--debounce", "1",
             "--max-wait", "2", "--log-level", "WARNING"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(2.0)
        last_sent: dict[str, float] = {}
        lock = threading.Lock()
        total = args.rate * args.seconds
        started = time.time()
        for i in range(total):
            target = started + i / args.rate
            delay = target - time.time()
            if delay > 0:
                time.sleep(delay)
            t = rng.choice(tutors)
            r.xadd(keys.ENRICHMENT_STREAM, events.flat(t))  # type: ignore[arg-type]
            with lock:
                last_sent[t] = time.time()
        sent_rate = total / (time.time() - started)
        deadline = time.time() + 30
        while time.time() < deadline:
            info = r.xpending(keys.ENRICHMENT_STREAM, keys.METRICS_GROUP)
            groups = r.xinfo_groups(keys.ENRICHMENT_STREAM)
            if info["pending"] == 0 and all(g.get("lag", 0) == 0 for g in groups):
                break
            time.sleep(0.2)
        worker.terminate()
        worker.communicate(timeout=30)
        with engine.connect() as conn:
            # extract(epoch ...) is numeric: psycopg2 returns Decimal
            updated: dict[str, Decimal] = dict(conn.execute(sa.text(
                "SELECT tutor_id, extract(epoch from max(updated_at)) FROM "
                "tutor_performance_metrics GROUP BY tutor_id"
            )).all())  # fmt: skip
        lags = sorted(float(updated[t]) - sent for t, sent in last_sent.items() if t in updated)
        missing = len(set(last_sent) - set(updated))
        p50 = statistics.median(lags)
        p99 = lags[int(len(lags) * 0.99) - 1]
        print(f"freshness at {sent_rate:,.0f} entries/s for {args.seconds}s, --debounce 1: "
              f"tutors {len(lags)}, last entry -> updated_at p50 {p50:.2f}s, p99 {p99:.2f}s, "
              f"max {lags[-1]:.2f}s; tutors never written: {missing}")  # fmt: skip

    finally:
        r.flushdb()
        name = sa.make_url(url).database
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
