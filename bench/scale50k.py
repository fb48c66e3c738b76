"""The 50,000-tutor scenario database of issue 15, and what `sample generate` costs to make it.

    python bench/scale50k.py [--admin-url URL] [--database tutormax_bench50k]
                             [--tutors 50000] [--days 120] [--seed 5] [--end 2026-09-01T00:00:00Z]

Drops and recreates the database (on the server of `--admin-url`, default the test server),
runs `tutormax db init`, then `tutormax sample generate` as its own process, and finally
`VACUUM ANALYZE` so the benchmarks that use it start from planner statistics. It prints the
command's wall time, its CPU time and peak RSS (`wait4`), the CPU time of its PostgreSQL
backend (sampled from /proc while it runs, so only when the server is on this machine) and the
row counts. The machine is shared: CPU seconds say more than wall time when it is loaded.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tutormax_cli.store.db import open_engine  # noqa: E402


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _BackendCpu(threading.Thread):
    """Polls pg_stat_activity for the command's backend and remembers its CPU seconds."""

    def __init__(self, admin: sa.Engine, database: str) -> None:
        super().__init__(daemon=True)
        self.admin, self.database = admin, database
        self.seconds: dict[int, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        query = sa.text(
            "SELECT pid FROM pg_stat_activity WHERE datname = :d AND pid <> pg_backend_pid()"
        )
        with self.admin.connect() as conn:
            while not self.stop.wait(0.5):
                for (pid,) in conn.execute(query, {"d": self.database}):
                    cpu = _cpu_seconds(pid)
                    if cpu is not None:
                        self.seconds[pid] = cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--admin-url", default="postgresql://root@127.0.0.1:5432/test")
    parser.add_argument("--database", default="tutormax_bench50k")
    parser.add_argument("--tutors", type=int, default=50_000)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--end", default="2026-09-01T00:00:00Z")
    args = parser.parse_args()

    admin = open_engine(args.admin_url).execution_options(isolation_level="AUTOCOMMIT")
    url = admin.url.set(database=args.database)
    target = url.render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{args.database}"'))
    env = {**os.environ, "TUTORMAX_DATABASE_URL": target}
    tutormax = [sys.executable, "-m", "tutormax_cli"]
    subprocess.run([*tutormax, "db", "init"], check=True, env=env, cwd=ROOT)
    command = [
        *tutormax,
        "sample",
        "generate",
        "--tutors",
        str(args.tutors),
        "--days",
        str(args.days),
        "--seed",
        str(args.seed),
        "--end",
        args.end,
    ]
    print("$", " ".join(command[2:]), flush=True)
    backend = _BackendCpu(admin, args.database)
    backend.start()
    started = time.perf_counter()
    proc = subprocess.Popen(command, env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    backend.stop.set()
    backend.join()
    stderr = proc.stderr.read() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"sample generate failed:\n{stderr}")
    print(stderr.strip())
    server = sum(backend.seconds.values()) if backend.seconds else float("nan")
    print(
        f"wall {wall:.1f} s; command CPU {usage.ru_utime + usage.ru_stime:.1f} s, peak RSS "
        f"{usage.ru_maxrss / 1024:,.0f} MB; PostgreSQL backend CPU {server:.1f} s"
    )
    started = time.perf_counter()
    with open_engine(target).execution_options(isolation_level="AUTOCOMMIT").connect() as conn:
        conn.execute(sa.text("VACUUM ANALYZE"))
        counts = {
            t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
            for t in ("tutors", "students", "sessions", "student_feedback", "tutor_events")
        }
    print(f"VACUUM ANALYZE {time.perf_counter() - started:.1f} s; rows {counts}")


if __name__ == "__main__":
    main()
