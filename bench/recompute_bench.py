"""`tutormax recompute` against the alternatives, on the same PostgreSQL data (issue 4).

    python bench/recompute_bench.py asof     --db-url URL [--as-of T] [--repeat 5]
    python bench/recompute_bench.py design   --db-url URL [--as-of T] [--tutors 200]
    python bench/recompute_bench.py backfill --db-url URL [--as-of T] [--days 14] [--repeat 3]
    python bench/recompute_bench.py memory   --db-url URL [--as-of T] [--history-days N]

`asof` times whole processes, interleaved so background load hits every contestant alike, each
on an emptied `tutor_performance_metrics` (a nightly run inserts a new metric_date):
  sql       the DBA's single statement (bench/sql_single.py) as `psql -c`, INSERT … ON CONFLICT;
  tutormax  `tutormax recompute --as-of T` (partials aggregated in PostgreSQL, polars finalize);
            with --cumulative, also from the cumulative partials table (`db partials enable`);
  raw-*     the engine on raw rows, loaded by COPY+CSV / ADBC / connectorx (`_raw` below).
It checks every contestant wrote the same rows. `design` runs the design document's per-tutor
algorithm (bench/design_algorithm.py) over a sample of tutors and extrapolates to all of them.
Peak RSS is the child's `ru_maxrss` from `wait4`.

`--before DIR` (asof, backfill) also runs every tutormax contestant from another checkout of
the code (e.g. `git worktree add --detach ../before <commit>`), by `PYTHONPATH`, in the same
rounds: before/after figures under the same load, and their rows compared by MD5.

`backfill --floor` also times, in the same rounds, what writing the rows costs this server on
its own: the as-of run's rows (two connections) and the backfill's (one, then two) COPYed
(binary, one statement per connection) into an empty copy of `tutor_performance_metrics` with
all its indexes, each followed by a CHECKPOINT. Every line gets the machine's busy CPU seconds
over the run (all cores, /proc/stat): close to cores x wall, the machine was saturated — by
the contestant only if nothing else was running.

Scenarios: 5,000 tutors (`tutormax sample generate --tutors 5000 --days 120 --seed 5 --end
2026-09-01T00:00:00Z`) and 50,000 tutors (`--tutors 50000`, same other options), each followed
by `VACUUM ANALYZE`, then `--as-of 2026-09-01T00:00:00Z`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.sql_single import render  # noqa: E402
from tutormax_cli.store.db import open_engine  # noqa: E402


def before_env(tree: str | None) -> dict[str, str] | None:
    """The environment that runs `python -m tutormax_cli` from another checkout."""
    if not tree:
        return None
    return {**os.environ, "PYTHONPATH": os.path.abspath(tree)}


def run_process(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """Wall seconds and peak RSS (MB) of a whole process; fails loudly if it fails."""
    started = time.perf_counter()
    # `python -m` puts the working directory first on sys.path: run from the tree being timed
    cwd = env["PYTHONPATH"] if env and "PYTHONPATH" in env else ROOT
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True, cwd=cwd
    )
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    out = proc.stdout.read() if proc.stdout else ""
    err = proc.stderr.read() if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err}")
    return elapsed, usage.ru_maxrss // 1024, out


def tutormax(url: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "tutormax_cli", "--database-url", url, *args]


def clear(url: str) -> None:
    engine = open_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE tutor_performance_metrics"))
    engine.dispose()


def fingerprint(url: str) -> tuple[int, str]:
    """Row count and a digest of every stored value: equal fingerprints, equal rows."""
    engine = open_engine(url)
    cols = (
        'tutor_id, "window", metric_date, calculation_date, sessions_scheduled, '
        "sessions_completed, avg_rating, first_session_success_rate, first_sessions_count, "
        "reschedule_rate, reschedule_count, no_show_count, no_show_rate, engagement_score, "
        "learning_objectives_met_pct, response_time_avg_minutes, performance_tier"
    )
    sql = (
        f"SELECT count(*), md5(string_agg(md5(ROW({cols})::text), '' ORDER BY metric_id)) "
        "FROM tutor_performance_metrics"
    )
    with engine.connect() as conn:
        n, digest = conn.execute(sa.text(sql)).one()
    engine.dispose()
    return int(n), str(digest)


def _raw(url: str, as_of: str, loader: str) -> None:
    """The engine on raw rows (the path before partials moved into SQL), as a whole process."""
    from bench.load_paths import raw_adbc, raw_connectorx, raw_copy
    from tutormax_cli.metrics.engine import compute_metrics
    from tutormax_cli.store.save import save_metrics

    t = datetime.fromisoformat(as_of.replace("Z", "+00:00")).astimezone(UTC)
    read = {"copy": raw_copy, "adbc": raw_adbc, "connectorx": raw_connectorx}[loader]
    inputs = read(url, t - timedelta(days=90), t)
    metrics = compute_metrics(inputs["sessions"], inputs["feedback"], inputs["events"], t)
    engine = open_engine(url)
    with engine.begin() as conn:
        save_metrics(conn, metrics)
    engine.dispose()


def _design_estimate(url: str, t: str, tutors: int) -> float:
    """The per-tutor algorithm's seconds for every tutor, from a sample of `tutors` of them."""
    cmd = [sys.executable, os.path.abspath(__file__), "design", "--db-url", url,
           "--as-of", t, "--tutors", str(tutors)]  # fmt: skip
    return float(run_process(cmd)[2].rsplit("≈", 1)[1].split()[0])


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):6.2f}"


def bench_asof(args: argparse.Namespace) -> None:
    url, t = args.db_url, args.as_of
    at = datetime.fromisoformat(t.replace("Z", "+00:00")).astimezone(UTC)
    psql = ["psql", url, "-q", "-v", "ON_ERROR_STOP=1", "-c"]
    contestants: dict[str, list[str]] = {
        "sql (psql, one statement)": [*psql, render(at)],
        "tutormax recompute --as-of": tutormax(url, "recompute", "--as-of", t, "--quiet"),
    }
    if args.cumulative:
        # the table must be current: enabling fills it, and every run refreshes it first
        run_process(tutormax(url, "db", "partials", "enable"))
        contestants["tutormax recompute --as-of"] = tutormax(
            url, "recompute", "--as-of", t, "--quiet", "--raw"
        )
        contestants["tutormax recompute --as-of, cumulative partials"] = tutormax(
            url, "recompute", "--as-of", t, "--quiet"
        )
    contestants["sql SELECT only, no write (lower bound)"] = [
        *psql,
        render(at, write=False),
        "-o",
        "/dev/null",
    ]
    if args.jit:
        contestants["sql, JIT on (server default)"] = [*psql, render(at, jit=True)]
    if args.raw:
        for loader in ("copy", "adbc", "connectorx"):
            contestants[f"raw rows via {loader} + engine"] = [
                sys.executable, os.path.abspath(__file__), "_raw", "--db-url", url,
                "--as-of", t, "--loader", loader,
            ]  # fmt: skip
    envs: dict[str, dict[str, str] | None] = {name: None for name in contestants}
    if args.before:
        for name in [n for n in contestants if n.startswith("tutormax")]:
            contestants[f"{name} (before)"] = contestants[name]
            envs[f"{name} (before)"] = before_env(args.before)
    times: dict[str, list[float]] = {name: [] for name in contestants}
    peaks: dict[str, list[int]] = {name: [] for name in contestants}
    prints: dict[str, tuple[int, str]] = {}
    designs: list[float] = []
    for round_ in range(args.repeat):
        for name, cmd in contestants.items():
            clear(url)
            seconds, peak, _ = run_process(cmd, envs[name])
            times[name].append(seconds)
            peaks[name].append(peak)
            if round_ == 0:
                prints[name] = fingerprint(url)
        if args.design_sample:  # the per-tutor algorithm, in the same round's conditions
            designs.append(_design_estimate(url, t, args.design_sample))
        print(f"round {round_ + 1}: " + ", ".join(f"{n.split()[0]} {v[-1]:.2f}s"
                                                for n, v in times.items())
              + (f", design ≈{designs[-1]:.0f}s" if designs else ""), flush=True)  # fmt: skip
    rows = {fp for fp in prints.values()}
    sql_fp = prints["sql (psql, one statement)"]
    for name, fp in prints.items():
        # the DBA's statement stamps rows with its own calculation_date type; compare values
        print(f"  {name}: {fp[0]} rows, {'same rows' if fp == sql_fp else 'DIFFERENT'}")
    print(f"\n| as of {t} | median s | min s | max s | peak RSS MB |\n|---|---|---|---|---|")
    for name in contestants:
        v = times[name]
        print(f"| {name} | {_median(v)} | {min(v):.2f} | {max(v):.2f} | {max(peaks[name])} |")
    print(f"\n{len(rows)} distinct row sets (the bare SELECT writes none)")
    _ratios(times, designs, args.design_seconds)


def _ratios(times: dict[str, list[float]], designs: list[float], design_seconds: float) -> None:
    """Each tutormax contestant against the SQL statement and the per-tutor algorithm."""
    base = statistics.median(times["sql (psql, one statement)"])
    bare = statistics.median(times["sql SELECT only, no write (lower bound)"])
    for name, values in times.items():
        if not name.startswith("tutormax"):
            continue
        ours = statistics.median(values)
        line = f"{name}: {ours / base:.2f}× the sql upsert, {ours / bare:.2f}× its SELECT"
        if design_seconds:
            line += f", {design_seconds / ours:.1f}× faster than the per-tutor algorithm"
        if designs:
            paired = [d / x for d, x in zip(designs, values, strict=True)]
            line += (
                f"; per-tutor algorithm / this, paired by round: median "
                f"{statistics.median(paired):.1f}× (min {min(paired):.1f}, max {max(paired):.1f})"
            )
        print(line)


def bench_design(args: argparse.Namespace) -> None:
    from bench.design_algorithm import recompute_tutor

    url = args.db_url
    t = datetime.fromisoformat(args.as_of.replace("Z", "+00:00")).astimezone(UTC)
    engine = open_engine(url)
    sql = (
        "SELECT DISTINCT tutor_id FROM sessions WHERE scheduled_start >= :s "
        "AND scheduled_start < :t ORDER BY 1"
    )
    with engine.connect() as conn:
        rows = conn.execute(sa.text(sql), {"s": t - timedelta(days=90), "t": t})
        everyone = [r[0] for r in rows]
    step = max(1, len(everyone) // args.tutors)
    picked = everyone[::step][: args.tutors]
    started = time.perf_counter()
    for tutor in picked:
        recompute_tutor(engine, tutor, t)
    elapsed = time.perf_counter() - started
    per = elapsed / len(picked)
    print(f"design algorithm: {len(picked)} tutors in {elapsed:.1f}s = {per * 1000:.1f} ms/tutor;"
          f" all {len(everyone)} tutors ≈ {per * len(everyone):.0f} s (extrapolated)")  # fmt: skip
    engine.dispose()


def machine_busy() -> float:
    """CPU seconds all cores have spent busy so far (/proc/stat: user, nice, system, irq,
    softirq). Over a run, busy close to cores x wall says the machine was saturated — by the
    contestant only when nothing else runs, which the load average beside the figures says."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:8]]
    user, nice, system, _idle, _iowait, irq, softirq = fields
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


FLOOR_TABLE = "bench_write_floor"


def write_floor(url: str, connections: int) -> tuple[float, float]:
    """The write's floor: the rows now in `tutor_performance_metrics`, COPYed (binary, one
    statement per connection, `connections` at once, split by tutor) into an empty copy of the
    table with all its indexes — what any writer of these rows pays in this server, before
    reading, computing or comparing anything. (Seconds, machine CPU seconds) from the first
    COPY's start to the last's end; the copy is dropped whatever happens, and a CHECKPOINT
    after it keeps its WAL out of the next contestant's run."""
    import io
    from concurrent.futures import ThreadPoolExecutor

    import psycopg2

    dsn = url.replace("postgresql+psycopg2://", "postgresql://")
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT tutor_id FROM tutor_performance_metrics GROUP BY 1 ORDER BY 1")
        tutors = [r[0] for r in cur.fetchall()]
        if len(tutors) < connections:
            raise SystemExit("the write floor needs the run's rows in tutor_performance_metrics")
        bounds = [tutors[i * len(tutors) // connections] for i in range(1, connections)]
        parts = []
        for lo, hi in zip([None, *bounds], [*bounds, None], strict=True):
            where = [
                c
                for b, c in ((lo, "tutor_id >= %(lo)s"), (hi, "tutor_id < %(hi)s"))
                if b is not None
            ]
            query = cur.mogrify(
                "SELECT * FROM tutor_performance_metrics"
                + (f" WHERE {' AND '.join(where)}" if where else ""),
                {"lo": lo, "hi": hi},
            ).decode()
            buffer = io.BytesIO()
            cur.copy_expert(f"COPY ({query}) TO STDOUT (FORMAT binary)", buffer)
            parts.append(buffer.getvalue())
        cur.execute(f"DROP TABLE IF EXISTS {FLOOR_TABLE}")
        cur.execute(f"CREATE TABLE {FLOOR_TABLE} (LIKE tutor_performance_metrics INCLUDING ALL)")
    writers = [psycopg2.connect(dsn) for _ in parts]

    def copy_in(job: tuple[Any, bytes]) -> None:
        writer, data = job
        with writer.cursor() as c:
            c.copy_expert(f"COPY {FLOOR_TABLE} FROM STDIN (FORMAT binary)", io.BytesIO(data))
        writer.commit()

    try:
        with ThreadPoolExecutor(connections) as pool:
            busy, started = machine_busy(), time.perf_counter()
            list(pool.map(copy_in, zip(writers, parts, strict=True)))
            seconds, cpu = time.perf_counter() - started, machine_busy() - busy
    finally:
        for writer in writers:
            writer.close()
        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {FLOOR_TABLE}")
            conn.commit()
            cur.execute("CHECKPOINT")
    return seconds, cpu


def bench_backfill(args: argparse.Namespace) -> None:
    url, t = args.db_url, args.as_of
    last = (datetime.fromisoformat(t.replace("Z", "+00:00")) - timedelta(microseconds=1)).date()
    first = last - timedelta(days=args.days - 1)
    asof = tutormax(url, "recompute", "--as-of", t, "--quiet")
    backfill = tutormax(url, "recompute", "--since", str(first), "--until", str(last), "--json")
    if args.raw:  # the raw-row paths, even when cumulative partials are enabled
        asof, backfill = [*asof, "--raw"], [*backfill, "--raw"]
    trees: dict[str, dict[str, str] | None] = {"": None}
    if args.before:
        trees[" (before)"] = before_env(args.before)
    times: dict[str, list[float]] = {}
    busy: dict[str, list[float]] = {}
    peaks: dict[str, int] = {}
    counts: dict[str, set[tuple[int, str]]] = {}

    def timed_run(name: str, cmd: list[str], env: dict[str, str] | None) -> None:
        before = machine_busy()
        s, p, _ = run_process(cmd, env)
        busy.setdefault(name, []).append(machine_busy() - before)
        times.setdefault(name, []).append(s)
        peaks[name] = max(p, peaks.get(name, 0))

    def timed_floor(name: str, connections: int) -> None:
        seconds, cpu = write_floor(url, connections)
        times.setdefault(name, []).append(seconds)
        busy.setdefault(name, []).append(cpu)

    for _ in range(args.repeat):
        for suffix, env in trees.items():
            clear(url)
            timed_run(f"as-of{suffix}", asof, env)
            counts.setdefault(f"as-of{suffix}", set()).add(fingerprint(url))
            if args.floor and not suffix:
                timed_floor("floor: COPY of the as-of's rows, 2 connections", 2)
            clear(url)
            timed_run(f"backfill{suffix}", backfill, env)
            counts.setdefault(f"backfill{suffix}", set()).add(fingerprint(url))
            timed_run(f"backfill rerun{suffix}", backfill, env)  # rows exist: an upsert
            counts.setdefault(f"backfill rerun{suffix}", set()).add(fingerprint(url))
            if args.floor and not suffix:  # after the rerun: the same rows, nothing to disturb
                timed_floor("floor: COPY of the backfill's rows, 1 connection", 1)
                timed_floor("floor: COPY of the backfill's rows, 2 connections", 2)
        print(", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()), flush=True)
    _backfill_summary(f"{args.days}-day backfill {first} … {last}", trees, times, busy, peaks)
    for name, prints in counts.items():
        print(f"  {name}: " + "; ".join(f"{n} rows, md5 {d}" for n, d in sorted(prints)))


def _backfill_summary(
    title: str,
    trees: dict[str, dict[str, str] | None],
    times: dict[str, list[float]],
    busy: dict[str, list[float]],
    peaks: dict[str, int],
) -> None:
    print(f"\n| {title} | median s | machine CPU s (both cores) | peak RSS MB |\n|---|---|---|---|")
    for name, v in times.items():
        print(f"| {name} | {_median(v)} | {_median(busy[name])} | {peaks.get(name, '')} |")
    for suffix in trees:
        ratio = statistics.median(times[f"backfill{suffix}"]) / statistics.median(
            times[f"as-of{suffix}"]
        )
        print(f"backfill{suffix} / as-of{suffix} = {ratio:.2f}×")
    for name, v in times.items():
        if name.startswith("floor"):
            ratio = statistics.median(v) / statistics.median(times["as-of"])
            print(f"{name} / as-of = {ratio:.2f}×")


def bench_memory(args: argparse.Namespace) -> None:
    url, t = args.db_url, args.as_of
    last = (datetime.fromisoformat(t.replace("Z", "+00:00")) - timedelta(microseconds=1)).date()
    engine = open_engine(url)
    with engine.connect() as conn:
        sessions, oldest = conn.execute(
            sa.text("SELECT count(*), min(scheduled_start) FROM sessions")
        ).one()
    engine.dispose()
    first = max(oldest.date(), last - timedelta(days=args.history_days - 1))
    runs = {
        "as-of": tutormax(url, "recompute", "--as-of", t, "--quiet"),
        "14-day backfill": tutormax(
            url,
            "recompute",
            "--since",
            str(last - timedelta(days=13)),
            "--until",
            str(last),
            "--quiet",
        ),
        f"backfill of all history ({first} …), shard 0/10": tutormax(
            url,
            "recompute",
            "--since",
            str(first),
            "--until",
            str(last),
            "--shard",
            "0/10",
            "--quiet",
        ),
    }
    print(f"{sessions:,} sessions in {url.rsplit('/', 1)[-1]}")
    for name, cmd in runs.items():
        clear(url)
        seconds, peak, _ = run_process(cmd)
        print(f"| {name} | {peak} MB | {seconds:.1f} s |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="tutormax recompute benchmarks")
    parser.add_argument("command", choices=["asof", "design", "backfill", "memory", "_raw"])
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--as-of", default="2026-03-03T00:00:00+00:00")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--tutors", type=int, default=200)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--history-days", type=int, default=100_000)
    parser.add_argument("--loader", default="copy")
    parser.add_argument(
        "--raw",
        action="store_true",
        help="asof: also the raw-row paths; backfill: run tutormax with --raw",
    )
    parser.add_argument(
        "--before", default="", help="asof, backfill: also run tutormax from this checkout"
    )
    parser.add_argument("--jit", action="store_true", help="asof: also the SQL with JIT on")
    parser.add_argument(
        "--floor",
        action="store_true",
        help="backfill: also time the write's floor, a COPY of the same rows into an empty "
        "copy of the table (one and two connections at once)",
    )
    parser.add_argument(
        "--cumulative",
        action="store_true",
        help="asof: enable `db partials` and time recompute with and without it (--raw)",
    )
    parser.add_argument(
        "--design-sample",
        type=int,
        default=0,
        help="asof: each round also runs the per-tutor algorithm on this many tutors "
        "(extrapolated to all), so ratios compare runs made under the same load",
    )
    parser.add_argument(
        "--design-seconds",
        type=float,
        default=0.0,
        help="asof: the per-tutor algorithm's time for all tutors (from `design`), for ratios",
    )
    args = parser.parse_args()
    commands: dict[str, Any] = {
        "asof": bench_asof,
        "design": bench_design,
        "backfill": bench_backfill,
        "memory": bench_memory,
        "_raw": lambda a: _raw(a.db_url, a.as_of, a.loader),
    }
    commands[args.command](args)


if __name__ == "__main__":
    main()
