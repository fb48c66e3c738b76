"""`tutormax recompute` as cron and an operator run it: exit codes, exact messages, output
formats, exports, and the run lock seen from the command line."""

from __future__ import annotations

import json
import os
import re
import threading
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest
import sqlalchemy as sa
from polars.testing import assert_frame_equal
from typer.testing import CliRunner, Result

from tests.helpers import T, count_rows, expected_metrics, sample, sort_metrics, stored_metrics
from tutormax_cli.cli.app import app
from tutormax_cli.metrics import frames
from tutormax_cli.metrics.windows import end_of_day
from tutormax_cli.store.db import open_engine
from tutormax_cli.store.lock import run_lock
from tutormax_cli.store.seed import save_tables

AS_OF = "2026-03-03T00:00:00Z"
_READS = "(recompute reads the 90 days before it): use a time from 0002-01-01 to before 9999-01-01"


def cli(db_url: str, *args: str) -> Result:
    return CliRunner().invoke(app, ["--database-url", db_url, "recompute", *args])


@pytest.fixture(scope="module")
def tables() -> dict[str, pl.DataFrame]:
    return sample(tutors=12, days=120, seed=9)


@pytest.fixture
def seeded(engine: sa.Engine, db_url: str, tables: dict[str, pl.DataFrame]) -> str:
    save_tables(engine, tables)
    return db_url


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--as-of", AS_OF, "--since", "2026-03-01"],
         "--as-of cannot be combined with --since: --since computes end-of-day snapshots"),
        (["--until", "2026-03-01"], "--until needs --since"),
        (["--since", "2026-03-05", "--until", "2026-03-01"],
         "--since 2026-03-05 is after --until 2026-03-01"),
        (["--since", "2026-02-30"], "--since: '2026-02-30' is not a date (YYYY-MM-DD)"),
        (["--shard", "4/4"], "--shard: '4/4' needs N ≥ 1 and 0 ≤ K < N (e.g. 0/4)"),
        (["--shard", "first"], "--shard: 'first' is not K/N (e.g. 0/4)"),
        (["--output", "rows.json"], "--output rows.json: the file must end in .parquet or .csv"),
        (["--output", "no/such/dir/rows.csv"],
         "--output no/such/dir/rows.csv: directory no/such/dir does not exist"),
        (["--dry-run", "--write"], "--dry-run and --write cannot be combined"),
        (["--changed-since", "auto", "--tutor", "T0001"],
         "--changed-since cannot be combined with --tutor"),
        (["--changed-since", "auto", "--as-of", AS_OF],
         "--changed-since cannot be combined with --as-of or --since: "
         "it recomputes changed tutors as of now"),
        (["--changed-since", "yesterday"],
         "--changed-since: 'yesterday' is not an ISO-8601 time (e.g. 2026-03-02T14:05:00Z)"),
        # out of range: these were `unexpected OverflowError` (exit 1)
        (["--as-of", "0001-01-01"],
         f"--as-of 0001-01-01T00:00:00Z is out of range {_READS}"),
        (["--as-of", "9999-12-31T23:59:59Z", "--dry-run"],
         f"--as-of 9999-12-31T23:59:59Z is out of range {_READS}"),
        (["--as-of", "0001-01-01T00:00:00+05:00"],
         "--as-of: '0001-01-01T00:00:00+05:00' is outside 0001-01-01 … 9999-12-31 in UTC"),
        (["--since", "0001-03-01"], f"--since 0001-03-01 is out of range {_READS}"),
        (["--since", "9998-12-01", "--until", "9999-01-01"],
         f"--until 9999-01-01 is out of range {_READS}"),
        (["--changed-since", "0001-01-01"],
         f"--changed-since 0001-01-01T00:00:00Z is out of range {_READS}"),
    ],
)  # fmt: skip
def test_usage_errors_exit_2_with_one_line(sqlite_url: str, args: list[str], message: str) -> None:
    result = cli(sqlite_url, *args)
    assert (result.exit_code, result.stderr, result.stdout) == (2, f"Error: {message}\n", "")


def test_an_output_that_is_a_directory_is_refused_up_front(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It was an unexpected IsADirectoryError, raised only after the rows were computed."""
    (tmp_path / "f" / "dir.csv").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    result = cli(sqlite_url, "--output", "f/dir.csv")
    assert (result.exit_code, result.stderr) == (2, "Error: --output f/dir.csv is a directory\n")


def test_the_first_and_last_instants_accepted_run(seeded: str) -> None:
    """At the bounds the lookback and the day arithmetic stay within what datetime holds."""
    for args in (["--as-of", "0002-01-01"], ["--as-of", "9998-12-31T23:59:59.999999Z"],
                 ["--since", "0002-01-01", "--until", "0002-01-02"],
                 ["--since", "9998-12-30", "--until", "9998-12-31"]):  # fmt: skip
        result = cli(seeded, *args, "--dry-run")
        assert result.exit_code == 0, (args, result.output)


def test_typer_usage_errors_exit_2(sqlite_url: str) -> None:
    assert cli(sqlite_url, "--chunk-size", "0").exit_code == 2
    assert cli(sqlite_url, "--bogus").exit_code == 2


def test_failure_exits_1(sqlite_url: str) -> None:
    Path(sqlite_url.removeprefix("sqlite:///")).touch()  # an existing file without the schema
    result = cli(sqlite_url)
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: database sqlite:///") and result.stderr.endswith(
        "has no tutormax schema: run `tutormax db init`\n"
    )


def test_help_documents_every_mode(sqlite_url: str) -> None:
    result = CliRunner().invoke(app, ["recompute", "--help"])
    assert result.exit_code == 0
    for option in ("--since", "--until", "--changed-since", "--shard", "--chunk-size",
                   "--output", "--write", "--wait", "--quiet", "--json"):  # fmt: skip
        assert option in result.stdout


def test_as_of_one_line_summary_and_silent_stderr(seeded: str, engine: sa.Engine) -> None:
    result = cli(seeded, "--as-of", AS_OF)
    assert result.exit_code == 0 and result.stderr == ""  # not a terminal: no progress
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        "Wrote 36 rows for 12 tutors (36 new or changed, 0 tier changes), "
        "as of 2026-03-03T00:00:00Z (metric_date 2026-03-02); "
        "1 chunk, "
    )
    assert count_rows(engine) == 36


def test_summary_says_nothing_changed_on_a_rerun_and_counts_what_changed(
    seeded: str, engine: sa.Engine
) -> None:
    """ "Wrote N rows" counts the rows the database inserted or changed, never rows computed
    again as they are stored."""
    assert cli(seeded, "--as-of", AS_OF).exit_code == 0
    again = cli(seeded, "--as-of", AS_OF)
    assert again.exit_code == 0
    assert again.stdout.startswith(
        "Nothing changed: 36 rows for 12 tutors computed, every one as stored (0 new or changed, "
        "0 tier changes), "
        "as of 2026-03-03T00:00:00Z (metric_date 2026-03-02); 1 chunk, "
    ), again.stdout
    assert json.loads(cli(seeded, "--as-of", AS_OF, "--json").stdout)["rows_changed"] == 0
    with engine.begin() as conn:  # one tutor's sessions change: its 3 rows, no one else's
        tutor = conn.execute(sa.text("SELECT min(tutor_id) FROM sessions")).scalar_one()
        conn.execute(
            sa.text("UPDATE sessions SET no_show = NOT no_show, actual_start = NULL "
                    "WHERE tutor_id = :t"),
            {"t": tutor},
        )  # fmt: skip
    before = stored_metrics(engine)
    changed = cli(seeded, "--as-of", AS_OF)
    assert changed.exit_code == 0
    after = stored_metrics(engine)
    differ = len({repr(r) for r in after.rows()} - {repr(r) for r in before.rows()})
    assert 0 < differ < 36  # rows with any value changed
    assert re.match(
        rf"Wrote {differ} of 36 rows for 12 tutors \({differ} new or changed, \d+ tier changes, "
        rf"{36 - differ} as stored\), ",
        changed.stdout,
    ), changed.stdout
    assert count_rows(engine) == 36


def test_json_quiet_tutor_tiers_dry_run(seeded: str, engine: sa.Engine, tmp_path: Path) -> None:
    strict = tmp_path / "strict.toml"
    strict.write_text("[thresholds.avg_rating]\ngreen = 5.1\nred = 5.0\n", encoding="utf-8")
    result = cli(seeded, "--as-of", AS_OF, "--tutor", "T0002", "--tiers", str(strict),
                 "--dry-run", "--json")  # fmt: skip
    assert result.exit_code == 0
    payload = json.loads(result.stdout)
    assert payload["rows"] == 3 and payload["tutors"] == 1 and payload["written"] is False
    assert payload["mode"] == "as-of" and payload["metric_date"] == "2026-03-02"
    assert set(payload["seconds"]) >= {"plan", "load", "compute"}
    assert count_rows(engine) == 0
    quiet = cli(seeded, "--as-of", AS_OF, "--quiet")
    assert (quiet.exit_code, quiet.stdout, quiet.stderr) == (0, "", "")
    assert count_rows(engine) == 36


def test_backfill_then_rerun_upserts(
    seeded: str, engine: sa.Engine, tables: dict[str, pl.DataFrame]
) -> None:
    first = cli(seeded, "--since", "2026-02-25", "--until", "2026-03-02", "--json")
    assert first.exit_code == 0, first.stderr
    rows = json.loads(first.stdout)["rows"]
    again = cli(seeded, "--since", "2026-02-25", "--until", "2026-03-02", "--chunk-size", "5")
    assert again.exit_code == 0
    assert "end-of-day snapshots of 6 days, 2026-02-25 … 2026-03-02; 3 chunks" in again.stdout
    assert count_rows(engine) == rows == 6 * 36
    days = [date(2026, 2, 25) + timedelta(days=i) for i in range(6)]
    expected = pl.concat([expected_metrics(tables, end_of_day(d)) for d in days])
    assert_frame_equal(stored_metrics(engine), sort_metrics(expected))


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_output_exports_instead_of_writing(
    seeded: str, engine: sa.Engine, tmp_path: Path, tables: dict[str, pl.DataFrame], suffix: str
) -> None:
    out = tmp_path / f"rows{suffix}"
    result = cli(seeded, "--as-of", AS_OF, "--output", str(out), "--chunk-size", "5")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith(f"Exported to {out} (database untouched) 36 rows")
    assert count_rows(engine) == 0
    got = pl.read_csv(out, schema=frames.METRICS) if suffix == ".csv" else pl.read_parquet(out)
    assert_frame_equal(sort_metrics(got), sort_metrics(expected_metrics(tables, T)))
    both = cli(seeded, "--as-of", AS_OF, "--output", str(out), "--write")
    assert both.exit_code == 0 and both.stdout.startswith(f"Wrote and exported to {out} ")
    assert count_rows(engine) == 36
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tutormax-export-")]


def test_changed_since_auto_from_the_command_line(seeded: str) -> None:
    first = cli(seeded, "--changed-since", "auto", "--json")
    payload = json.loads(first.stdout)
    assert payload["mode"] == "changed" and payload["changed_since"] is None
    assert payload["mark"] is not None
    second = cli(seeded, "--changed-since", "auto")
    assert second.exit_code == 0
    assert (
        second.stdout.startswith("Nothing to write: 0 rows for 0 tutors, ")
        and "tutors changed since 20" in second.stdout
    )


def _hold(db_url: str, release_after: float | None) -> tuple[threading.Event, threading.Event]:
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        eng = open_engine(db_url)
        with run_lock(eng, "recompute"):
            taken.set()
            release.wait(release_after)
        eng.dispose()

    threading.Thread(target=hold, daemon=True).start()
    assert taken.wait(10)
    return taken, release


def test_lock_held_exits_0_with_a_message_or_quietly(seeded: str, engine: sa.Engine) -> None:
    _, release = _hold(seeded, None)
    try:
        result = cli(seeded, "--as-of", AS_OF)
        assert result.exit_code == 0 and result.stdout == ""
        assert result.stderr.startswith("another tutormax recompute is running (lock held")
        assert result.stderr.endswith("skipped; pass --wait to wait for it\n")
        quiet = cli(seeded, "--as-of", AS_OF, "--quiet")
        assert (quiet.exit_code, quiet.stdout, quiet.stderr) == (0, "", "")
        assert count_rows(engine) == 0
    finally:
        release.set()


def test_wait_runs_once_the_lock_is_released(seeded: str, engine: sa.Engine) -> None:
    _hold(seeded, 0.5)
    result = cli(seeded, "--as-of", AS_OF, "--wait")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == "Another recompute holds the lock: waiting for it…\n"
    assert result.stdout.startswith("Wrote 36 rows")
    assert count_rows(engine) == 36


def test_unknown_tutors_are_refused_unless_allowed(seeded: str, engine: sa.Engine) -> None:
    refused = cli(seeded, "--as-of", AS_OF, "--tutor", "T0002", "--tutor", "T9999")
    assert refused.exit_code == 1
    assert refused.stderr == (
        "Error: --tutor: unknown tutor T9999 (--allow-unknown to go ahead anyway)\n"
    )
    assert count_rows(engine) == 0  # nothing written for the known one either
    allowed = cli(seeded, "--as-of", AS_OF, "--tutor", "T0002", "--tutor", "T9999",
                  "--allow-unknown", "--json")  # fmt: skip
    assert allowed.exit_code == 0, allowed.output
    assert json.loads(allowed.stdout)["tutors"] == 1
    assert count_rows(engine) == 3


def test_ctrl_c_says_what_was_committed_and_how_to_finish(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    url = f"sqlite:///{tmp_path / 'big.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUTORMAX_")}
    env["TUTORMAX_DATABASE_URL"] = url
    tutormax = [sys.executable, "-m", "tutormax_cli"]
    subprocess.run([*tutormax, "db", "init"], env=env, check=True, capture_output=True)
    subprocess.run([*tutormax, "sample", "generate", "--tutors", "200", "--days", "60",
                    "--seed", "3", "--end", "2026-03-01T00:00:00Z"],
                   env=env, check=True, capture_output=True)  # fmt: skip
    proc = subprocess.Popen(
        [*tutormax, "recompute", "--since", "2026-01-01", "--until", "2026-02-28",
         "--chunk-size", "1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    engine = sa.create_engine(url)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:  # interrupt mid-run
        with engine.connect() as conn:
            if conn.execute(sa.text("SELECT count(*) FROM tutor_performance_metrics")).scalar():
                break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert out == b""
    match = re.search(
        rb"Interrupted: (\d+) of (\d+) chunks written and committed\. Run the same command again "
        rb"to finish: chunks already written are upserted again unchanged\.\n$",
        err,
    )
    assert match, err
    with engine.connect() as conn:
        tutors = conn.execute(
            sa.text("SELECT count(DISTINCT tutor_id) FROM tutor_performance_metrics")
        ).scalar_one()
    done, total = int(match.group(1)), int(match.group(2))
    assert 1 <= done < total and 1 <= tutors <= done  # chunks of one tutor, committed ones only
    engine.dispose()
