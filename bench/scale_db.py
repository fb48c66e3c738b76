"""A metrics database at marketplace scale, built in seconds inside PostgreSQL.

    python bench/scale_db.py [--database-url postgresql://root@127.0.0.1:5432/tutormax_scale]
        [--tutors 50000] [--days 7] [--students 20000] [--recreate]

Creates the database (with `--recreate`, drops it first), applies the schema (`tutormax db
init`'s migrations), then inserts `--tutors` active tutors, `--students` students and, per
tutor, one `tutor_performance_metrics` row per window per day for the last `--days` days
(50,000 × 3 × 7 = 1,050,000 rows), with `generate_series` in one statement per table: no rows
go through Python. Values are synthetic but in range (a tier for every row, ~3 % of tutors
with their newest row a few days old, as when the worker has not seen them lately), so the
views have realistic work: the latest row of each tutor is not on one date. Ends with
`VACUUM ANALYZE`, as a production database would be.

Then time the operator's commands as whole processes, e.g.:

    export TUTORMAX_DATABASE_URL=postgresql://root@127.0.0.1:5432/tutormax_scale
    for c in "show tutor T00001" "show tutors --limit 20" "show tiers"; do
      python bench/scale_db.py --time "$c"; done
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import sqlalchemy as sa

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tutormax_cli.metrics.tiers import TIER_NAMES
from tutormax_cli.store.db import open_engine
from tutormax_cli.store.migrate import upgrade

DEFAULT_URL = "postgresql://root@127.0.0.1:5432/tutormax_scale"


def create(url: str, recreate: bool) -> None:
    target = sa.make_url(url)
    admin = sa.create_engine(
        target.set(drivername="postgresql+psycopg2", database="postgres"),
        isolation_level="AUTOCOMMIT",
    )
    with admin.connect() as conn:
        exists = conn.execute(
            sa.text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": target.database}
        ).first()
        if exists and recreate:
            conn.execute(sa.text(f'DROP DATABASE "{target.database}" WITH (FORCE)'))
            exists = None
        if not exists:
            conn.execute(sa.text(f'CREATE DATABASE "{target.database}"'))
    admin.dispose()


def fill(url: str, tutors: int, students: int, days: int) -> dict[str, int]:
    engine = open_engine(url)
    upgrade(engine)
    tiers = "ARRAY[" + ", ".join(f"'{t}'" for t in TIER_NAMES) + "]"
    with engine.begin() as conn:
        for table in ("tutor_performance_metrics", "student_feedback", "sessions", "students",
                      "tutors"):  # fmt: skip
            conn.execute(sa.text(f"TRUNCATE {table} CASCADE"))
        conn.execute(sa.text(
            "INSERT INTO tutors (tutor_id, name, email, onboarding_date, status, subjects) "
            "SELECT 'T' || lpad(g::text, 5, '0'), 'Tutor ' || g, 't' || g || '@example.com', "
            "now() - interval '400 days', CASE WHEN g % 20 = 0 THEN 'inactive' ELSE 'active' "
            "END, '{Algebra}' FROM generate_series(1, :n) g"
        ), {"n": tutors})  # fmt: skip
        conn.execute(sa.text(
            "INSERT INTO students (student_id, name) "
            "SELECT 'S' || lpad(g::text, 5, '0'), 'Student ' || g FROM generate_series(1, :n) g"
        ), {"n": students})  # fmt: skip
        # a tutor with g % 33 = 0 was last computed 3 days before the others
        conn.execute(sa.text(
            "INSERT INTO tutor_performance_metrics (metric_id, tutor_id, \"window\", "
            "metric_date, calculation_date, sessions_scheduled, sessions_completed, avg_rating, "
            "first_session_success_rate, first_sessions_count, reschedule_rate, "
            "reschedule_count, no_show_count, no_show_rate, engagement_score, "
            "learning_objectives_met_pct, response_time_avg_minutes, performance_tier) "
            "SELECT md5(g || w || d), 'T' || lpad(g::text, 5, '0'), w, "
            "current_date - d - CASE WHEN g % 33 = 0 THEN 3 ELSE 0 END, "
            "now() - make_interval(days => d), 10 + (g * 7 + d) % 30, 9 + (g * 7 + d) % 28, "
            "round((3 + ((g * 13 + d * 7) % 200) / 100.0)::numeric, 2), 0.8, 2, 0.05, 1, 0, 0.0, "
            "0.7, 80.0, 12.5, "
            f"({tiers})[1 + (g * 31 + d * 17 + length(w)) % 5] "
            "FROM generate_series(1, :n) g, unnest(ARRAY['7day', '30day', '90day']) w, "
            "generate_series(0, :days - 1) d"
        ), {"n": tutors, "days": days})  # fmt: skip
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE"))
        counts = {
            t: int(conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one())
            for t in ("tutors", "students", "tutor_performance_metrics")
        }
    engine.dispose()
    return counts


def time_command(command: str, runs: int = 5) -> tuple[float, list[float]]:
    """Median wall time of `tutormax <command>` as a whole process (output discarded)."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "tutormax_cli", *command.split()],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        times.append(time.perf_counter() - started)
        if done.returncode not in (0, 1):
            raise SystemExit(f"tutormax {command} failed: {done.stderr.decode().strip()}")
    return statistics.median(times), times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--tutors", type=int, default=50_000)
    parser.add_argument("--students", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--recreate", action="store_true")
    parser.add_argument(
        "--time", metavar="COMMAND", action="append",
        help="time `tutormax COMMAND` (median of 5 runs) instead of building",
    )  # fmt: skip
    args = parser.parse_args()
    if args.time:
        os.environ.setdefault("TUTORMAX_DATABASE_URL", args.database_url)
        for command in args.time:
            median, runs = time_command(command)
            each = ", ".join(f"{t:.3f}" for t in runs)
            print(f"tutormax {command}: median {median:.3f} s ({each})")
        return
    started = time.perf_counter()
    create(args.database_url, args.recreate)
    counts = fill(args.database_url, args.tutors, args.students, args.days)
    print(f"{counts} in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
