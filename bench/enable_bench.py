"""`tutormax db partials enable` timed as a whole process, interleaved with another checkout.

    python bench/enable_bench.py --db-url URL [--before DIR] [--repeat 2]

Each round disables the cumulative partials, then times `db partials enable` from this
checkout (and from `--before`, by `PYTHONPATH`, in the same round), with the table's MD5 after
each fill: the same rows from every checkout, or the fill is wrong.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import sqlalchemy as sa  # noqa: E402

from bench.recompute_bench import before_env, run_process, tutormax  # noqa: E402
from tutormax_cli.store import cumulative  # noqa: E402
from tutormax_cli.store.db import open_engine  # noqa: E402


def table_md5(url: str) -> tuple[int, str]:
    """Rows and a digest of every value of the cumulative table, in key order."""
    engine = open_engine(url)
    sql = (
        f"SELECT count(*), md5(string_agg(t::text, '|' ORDER BY tutor_id, day)) "
        f"FROM {cumulative.TABLE} t"
    )
    with engine.connect() as conn:
        n, digest = conn.execute(sa.text(sql)).one()
    engine.dispose()
    return int(n), str(digest)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--before", default="")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    trees = {"after": None, **({"before": before_env(args.before)} if args.before else {})}
    times: dict[str, list[float]] = {name: [] for name in trees}
    peaks: dict[str, int] = {}
    prints: dict[str, set[tuple[int, str]]] = {name: set() for name in trees}
    for round_ in range(args.repeat):
        for name, env in trees.items():
            run_process(tutormax(args.db_url, "db", "partials", "disable"), env)
            seconds, peak, _ = run_process(tutormax(args.db_url, "db", "partials", "enable"), env)
            times[name].append(seconds)
            peaks[name] = max(peak, peaks.get(name, 0))
            prints[name].add(table_md5(args.db_url))
            print(f"round {round_ + 1}: {name} {seconds:.1f} s", flush=True)
    print("\n| `db partials enable` | median s | runs | peak RSS MB |\n|---|---|---|---|")
    for name, values in times.items():
        runs = ", ".join(f"{v:.1f}" for v in values)
        print(f"| {name} | {statistics.median(values):.1f} | {runs} | {peaks[name]} |")
    for name, fps in prints.items():
        print(f"  {name}: " + "; ".join(f"{n} rows, md5 {d}" for n, d in sorted(fps)))


if __name__ == "__main__":
    main()
