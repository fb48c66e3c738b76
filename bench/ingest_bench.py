"""Ingest benchmark (issue 6): sessions per second that `tutormax ingest sessions` loads from a
100k-row CSV into PostgreSQL, as a whole process (start-up, read, validate, upsert, publish).

    python bench/ingest_bench.py [--pg-url postgresql://root@127.0.0.1:5432/test]
        [--redis-url redis://127.0.0.1:6379/13] [--rows 100000] [--batch-size 5000]

With `--cumulative`, `tutormax db partials enable` runs first, so the loads pay for its
triggers. Runs, each on the same file: a first load that publishes every session, the same load with
`--no-publish` into an emptied table, and a rerun over the loaded table (nothing changes, every
session is published again). It creates (and drops) its own PostgreSQL database and flushes the
given Redis db.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import redis
import sqlalchemy as sa

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tutormax_cli import keys
from tutormax_cli.sample import SampleSpec, generate
from tutormax_cli.store.db import open_engine
from tutormax_cli.store.migrate import upgrade
from tutormax_cli.store.seed import save_tables, write_csv_tables

SESSIONS_PER_TUTOR = 130  # what the generator yields per tutor over 120 days, roughly


def create_db(admin_url: str) -> tuple[str, sa.Engine, str]:
    name = f"tutormax_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(
        sa.make_url(admin_url).set(drivername="postgresql+psycopg2"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    return url, admin, name


def ingest(env: dict[str, str], path: Path, *extra: str) -> tuple[float, str]:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "tutormax_cli", "ingest", "sessions", str(path), *extra],
        env=env,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"ingest failed ({proc.returncode}):\n{proc.stderr}")
    return elapsed, proc.stderr.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg-url", default="postgresql://root@127.0.0.1:5432/test")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=5_000)
    parser.add_argument(
        "--cumulative",
        action="store_true",
        help="enable `db partials` first: what its triggers cost the write path",
    )
    args = parser.parse_args()

    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    tutors = args.rows // SESSIONS_PER_TUTOR + 1
    tables = generate(SampleSpec(tutors=tutors, days=120, seed=11, end=end))
    if tables["sessions"].height < args.rows:
        raise SystemExit(f"generated only {tables['sessions'].height} sessions")
    tables["sessions"] = tables["sessions"].head(args.rows)

    url, admin, name = create_db(args.pg_url)
    rclient = redis.Redis.from_url(args.redis_url)
    try:
        engine = open_engine(url)
        upgrade(engine)
        save_tables(engine, {k: tables[k] for k in ("tutors", "students")})
        if args.cumulative:
            from tutormax_cli.store import cumulative

            cumulative.enable(engine)
        env = dict(os.environ, TUTORMAX_DATABASE_URL=url, TUTORMAX_REDIS_URL=args.redis_url)
        batch = ("--batch-size", str(args.batch_size))
        with tempfile.TemporaryDirectory() as tmp:
            write_csv_tables({"sessions": tables["sessions"]}, Path(tmp))
            path = Path(tmp) / "sessions.csv"
            size = path.stat().st_size / 1e6
            print(
                f"{args.rows:,} sessions, {size:.1f} MB CSV, PostgreSQL, batch {args.batch_size:,}"
                + (", cumulative partials enabled" if args.cumulative else "")
            )
            rclient.flushdb()
            runs = [("first load, publishing", ingest(env, path, *batch))]
            published = rclient.xlen(keys.ENRICHMENT_STREAM)
            with engine.begin() as conn:
                conn.execute(sa.text("TRUNCATE sessions"))
            runs.append(("first load, --no-publish", ingest(env, path, *batch, "--no-publish")))
            runs.append(("rerun, nothing changes", ingest(env, path, *batch)))
        for label, (seconds, summary) in runs:
            rate = args.rows / seconds
            print(f"  {label:26s} {seconds:6.2f}s  {rate:8,.0f} sessions/s  [{summary}]")
        print(f"  entries published by the first load: {published:,}")
        engine.dispose()
    finally:
        rclient.flushdb()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
