"""The drift audit: stored rows against a recomputation from the raw rows, each as of its own
calculation_date; the CLI's exit codes and the worker's periodic sample."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import redis
import sqlalchemy as sa
from typer.testing import CliRunner, Result

from tests.helpers import T, sample
from tests.test_worker import FakeClock, make_worker
from tutormax_cli import keys
from tutormax_cli.cli.app import app
from tutormax_cli.recompute import recompute_as_of
from tutormax_cli.store.seed import save_tables
from tutormax_cli.stream import events
from tutormax_cli.stream.producer import publish
from tutormax_cli.verify import verify


def cli(db_url: str, *args: str) -> Result:
    return CliRunner().invoke(app, ["--database-url", db_url, "verify", *args])


def alter(engine: sa.Engine, tutor: str, window: str, sql_set: str) -> None:
    """Change a tutor's newest row in one window by hand, as psql would."""
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                f'UPDATE tutor_performance_metrics SET {sql_set} WHERE tutor_id = :t AND "window" '
                "= :w AND metric_date = (SELECT max(metric_date) FROM tutor_performance_metrics "
                'WHERE tutor_id = :t AND "window" = :w)'
            ),
            {"t": tutor, "w": window},
        )


@pytest.fixture
def kept_current(engine: sa.Engine, rclient: redis.Redis) -> list[str]:
    """A database the worker keeps current: yesterday's snapshot by a recompute, then a flush
    of half the tutors at other instants, so rows carry several calculation_dates."""
    tables = sample(tutors=12)
    save_tables(engine, tables)
    recompute_as_of(engine, T - timedelta(hours=20))
    tutors = tables["tutors"]["tutor_id"].to_list()
    clock = FakeClock()
    worker = make_worker(rclient, engine, clock, debounce=0, max_wait=0, burst=True)
    publish(rclient, keys.ENRICHMENT_STREAM, [events.flat(t) for t in tutors[:6]])
    worker.run()
    clock.advance(3600)
    publish(rclient, keys.ENRICHMENT_STREAM, [events.flat(t) for t in tutors[3:9]])
    make_worker(rclient, engine, clock, debounce=0, max_wait=0, burst=True).run()
    return tutors


def test_verify_all_passes_on_a_kept_current_database(
    engine: sa.Engine, db_url: str, kept_current: list[str]
) -> None:
    out = cli(db_url, "--all")
    assert out.exit_code == 0, out.output
    assert out.stdout.startswith(f"Verified 36 rows of {len(kept_current)} tutors")
    assert "nothing differs." in out.stdout
    result = verify(engine, sample=None)
    assert result.ok and result.rows == 36 and result.tutors == 12


def test_a_hand_altered_row_is_named(
    engine: sa.Engine, db_url: str, kept_current: list[str]
) -> None:
    alter(engine, "T0003", "30day", "avg_rating = avg_rating + 0.5")
    alter(engine, "T0007", "7day", "performance_tier = 'Exemplary', no_show_count = 9")
    out = cli(db_url, "--all")
    assert out.exit_code == 1
    assert "2 rows differ." in out.stdout
    assert "  avg_rating: 1 rows, by up to 0.5; tutors T0003" in out.stdout
    assert "  no_show_count: 1 rows, by up to " in out.stdout
    doc = json.loads(cli(db_url, "--all", "--json").stdout)
    assert doc["rows_differing"] == 2
    assert doc["metrics"]["avg_rating"] == {"rows": 1, "max_abs_diff": 0.5, "tutors": ["T0003"]}
    assert doc["metrics"]["no_show_count"]["tutors"] == ["T0007"]
    if doc["metrics"].get("performance_tier"):  # unless T0007 was Exemplary already
        assert doc["metrics"]["performance_tier"]["tutors"] == ["T0007"]
    assert set(doc["metrics"]) <= {"avg_rating", "no_show_count", "performance_tier"}
    sampled = verify(engine, sample=3)
    assert sampled.tutors == 3 and sampled.rows == 9


def test_as_of_audits_the_rows_current_then(engine: sa.Engine, db_url: str) -> None:
    save_tables(engine, sample(tutors=5))
    recompute_as_of(engine, T - timedelta(days=1))
    recompute_as_of(engine, T)
    alter_day = "metric_date = metric_date"  # a no-op first: the older rows are true
    alter(engine, "T0002", "90day", alter_day)
    earlier = (T - timedelta(hours=12)).isoformat()
    assert cli(db_url, "--all", "--as-of", earlier).exit_code == 0
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE tutor_performance_metrics SET sessions_completed = sessions_completed + 1 "
                "WHERE tutor_id = 'T0002' AND metric_date = (SELECT min(metric_date) "
                "FROM tutor_performance_metrics)"
            )
        )
    old = cli(db_url, "--all", "--as-of", earlier, "--json")
    assert old.exit_code == 1
    assert json.loads(old.stdout)["metrics"]["sessions_completed"]["rows"] == 3
    assert cli(db_url, "--all").exit_code == 0  # the newest rows are untouched


def test_usage_errors(sqlite_url: str) -> None:
    out = cli(sqlite_url, "--all", "--sample", "3")
    assert out.exit_code == 2
    assert "--sample and --all cannot be combined" in out.stderr
    out = cli(sqlite_url, "--as-of", "noon")
    assert out.exit_code == 2 and "--as-of: 'noon' is not an ISO-8601 time" in out.stderr


def test_the_worker_audits_a_sample_and_exports_it(
    engine: sa.Engine, rclient: redis.Redis, kept_current: list[str]
) -> None:
    clock = FakeClock(start=T + timedelta(hours=2))
    worker = make_worker(rclient, engine, clock, consumer="auditor", verify_every=600,
                         verify_sample=50)  # fmt: skip
    worker.run_once()
    assert worker.handler.last_audit is not None and worker.handler.last_audit.rows == 36
    assert worker.metrics.verify_mismatches._value.get() == 0
    alter(engine, "T0011", "90day", "engagement_score = 1.0")
    clock.advance(300)
    worker.run_once()  # not due yet
    assert worker.metrics.verify_mismatches._value.get() == 0
    clock.advance(300)
    worker.run_once()
    assert worker.metrics.verify_mismatches._value.get() == 1
    assert set(worker.handler.last_audit.metrics) == {"engagement_score"}
