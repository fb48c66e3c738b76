"""Metrics that move with the clock: the window sweep (edges crossed with no entry at all), its
lease between workers, redo after a crash, and the day rollover — on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import json
import signal
import time
from datetime import UTC, datetime, timedelta

import polars as pl
import redis
import sqlalchemy as sa
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from tests.helpers import T, expected_metrics, sample, sort_metrics, stored_metrics
from tests.test_worker import FakeClock, _start_worker, make_worker
from tutormax_cli.cli.app import app
from tutormax_cli.metrics.windows import end_of_day
from tutormax_cli.recompute import recompute_as_of
from tutormax_cli.store.edges import crossed_tutors, edge_ranges
from tutormax_cli.store.seed import save_tables
from tutormax_cli.store.state import get_instant, get_state

WATCHED = "TZ"
"""A tutor made to change tier when a session leaves its 7-day window."""


def _sessions_of(tables: dict[str, pl.DataFrame], tutor: str, starts: list[datetime],
                 **overrides: object) -> pl.DataFrame:  # fmt: skip
    template = tables["sessions"].head(1)
    rows = []
    for i, start in enumerate(starts):
        rows.append(
            template.with_columns(
                session_id=pl.lit(f"{tutor}-S{i}"),
                tutor_id=pl.lit(tutor),
                student_id=pl.lit(f"{tutor}-st{i}"),
                session_number=pl.lit(1, dtype=pl.Int64),
                scheduled_start=pl.lit(start, dtype=template["scheduled_start"].dtype),
                **{k: pl.lit(v, dtype=template[k].dtype) for k, v in overrides.items()},
            )
        )
    return pl.concat(rows)


def at_risk_until(tables: dict[str, pl.DataFrame], leaves_at: datetime) -> dict[str, pl.DataFrame]:
    """`tables` plus tutor TZ: four no-show, tutor-rescheduled sessions in its 7-day window, the
    oldest leaving it at `leaves_at`. With four no-shows its 7-day tier is At Risk (no-shows,
    reschedules, engagement red); with three, Needs Attention."""
    starts = [leaves_at - timedelta(days=7)] + [leaves_at - timedelta(days=d) for d in (3, 2, 1)]
    tz = _sessions_of(
        tables, WATCHED, starts,
        no_show=True, actual_start=None, tutor_initiated_reschedule=True, late_start_minutes=0,
        engagement_score=None, learning_objectives_met=None,
    )  # fmt: skip
    out = dict(tables)
    out["sessions"] = pl.concat([tables["sessions"], tz])
    return out


def assert_rows_true_at_their_calculation_date(
    engine: sa.Engine, tables: dict[str, pl.DataFrame]
) -> pl.DataFrame:
    stored = stored_metrics(engine)
    for (calc,), rows in stored.group_by("calculation_date"):
        tutors = rows["tutor_id"].unique()
        want = expected_metrics(tables, calc).filter(pl.col("tutor_id").is_in(tutors.implode()))
        assert_frame_equal(sort_metrics(rows), sort_metrics(want))
    return stored


def _tier(engine: sa.Engine, tutor: str, window: str = "7day") -> str:
    rows = stored_metrics(engine).filter(
        (pl.col("tutor_id") == tutor) & (pl.col("window") == window)
    )
    return str(rows.sort("metric_date")["performance_tier"][-1])


def test_edge_ranges_follow_the_half_open_windows() -> None:
    a, b = T, T + timedelta(seconds=40)
    ranges = edge_ranges(a, b)
    assert ranges[0] == (a - timedelta(days=7), b - timedelta(days=7))
    assert ranges[-1] == (a, b) and len(ranges) == 4
    assert edge_ranges(b, a) == []


def test_crossed_tutors_are_found_by_range(engine: sa.Engine) -> None:
    tables = sample(tutors=4)
    edge = T + timedelta(seconds=30)
    tables = at_risk_until(tables, edge)
    ahead = _sessions_of(tables, "TF", [T + timedelta(seconds=10)])  # scheduled ahead
    tables["sessions"] = pl.concat([tables["sessions"], ahead])
    save_tables(engine, tables)
    with engine.connect() as conn:
        found = crossed_tutors(conn, T, T + timedelta(seconds=40))
        assert {WATCHED, "TF"} <= set(found)
        assert WATCHED not in crossed_tutors(conn, T, edge)  # [a − 7d, b − 7d): edge excluded
        assert WATCHED in crossed_tutors(conn, edge, edge + timedelta(microseconds=1))
        assert "TF" not in crossed_tutors(conn, T + timedelta(seconds=11), T + timedelta(hours=1))


def test_the_sweep_keeps_rows_true_with_no_entry(
    engine: sa.Engine, db_url: str, rclient: redis.Redis, redis_url: str
) -> None:
    edge = T + timedelta(seconds=30)
    tables = at_risk_until(sample(tutors=6), edge)
    save_tables(engine, tables)
    recompute_as_of(engine, T)  # rows true as of T
    assert _tier(engine, WATCHED) == "At Risk"
    clock = FakeClock()
    worker = make_worker(rclient, engine, clock, sweep=10)
    worker.run_once()  # the group's first sweep: edges are swept from now (T) on
    with engine.connect() as conn:
        assert get_instant(conn, "worker.sweep.metrics-workers") == T
    clock.advance(25)
    worker.run_once()
    assert _tier(engine, WATCHED) == "At Risk"  # the edge is 5 s ahead
    clock.advance(15)  # the edge has passed; at most --sweep later the sweep runs
    worker.run_once()
    assert _tier(engine, WATCHED) == "Needs Attention"
    stored = assert_rows_true_at_their_calculation_date(engine, tables)
    tz = stored.filter((pl.col("tutor_id") == WATCHED) & (pl.col("calculation_date") > T))
    assert set(tz["calculation_date"]) == {T + timedelta(seconds=40)}  # the new day's rows
    assert tz.filter(pl.col("window") == "7day")["sessions_scheduled"].to_list() == [3]
    sweeps = [(d.start, d.end) for d in worker.handler.sweep.history]  # type: ignore[union-attr]
    assert sweeps == [(T, T + timedelta(seconds=25)), (T + timedelta(seconds=25), clock.now())]
    out = CliRunner().invoke(
        app, ["--database-url", db_url, "--redis-url", redis_url, "show", "changes",
              "--since", "2026-03-01T00:00Z", "--json"],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    changes = json.loads(out.stdout)
    mine = [c for c in changes if c["tutor_id"] == WATCHED]
    assert [(c["window"], c["from"], c["to"], c["source"]) for c in mine] == [
        ("7day", "At Risk", "Needs Attention", "sweep")
    ]
    assert mine[0]["metrics"]["no_show_count"] == 3
    assert mine[0]["as_of"] == (T + timedelta(seconds=40)).isoformat()


def test_two_workers_never_sweep_the_same_interval(engine: sa.Engine, rclient: redis.Redis) -> None:
    edge = T + timedelta(seconds=30)
    tables = at_risk_until(sample(tutors=6), edge)
    save_tables(engine, tables)
    recompute_as_of(engine, T)
    clock = FakeClock()
    one = make_worker(rclient, engine, clock, consumer="w1", sweep=10, sweep_batch=1)
    two = make_worker(rclient, engine, clock, consumer="w2", sweep=10, sweep_batch=1)
    one.run_once()
    two.run_once()
    for i in range(12):  # 2 minutes; whoever polls first takes the lease
        clock.advance(10)
        for _ in range(4):
            for worker in (one, two) if i % 2 else (two, one):
                worker.run_once()
    assert one.handler.sweep is not None and two.handler.sweep is not None
    done = sorted([*one.handler.sweep.history, *two.handler.sweep.history], key=lambda d: d.start)
    assert {d.owner for d in done} == {"w1", "w2"}  # both swept, never together
    for before, after in itertools.pairwise(done):
        assert before.end == after.start  # contiguous: nothing skipped, nothing twice
    assert done[0].start == T and done[-1].end == clock.now()
    swept = sum(d.tutors for d in done)
    recomputed = one.metrics.swept_tutors._value.get() + two.metrics.swept_tutors._value.get()
    assert recomputed == swept
    assert_rows_true_at_their_calculation_date(engine, tables)
    assert _tier(engine, WATCHED) == "Needs Attention"


def test_a_sweep_interrupted_by_a_crash_is_redone(engine: sa.Engine, rclient: redis.Redis) -> None:
    edge = T + timedelta(seconds=30)
    tables = at_risk_until(sample(tutors=6), edge)
    save_tables(engine, tables)
    recompute_as_of(engine, T)
    clock = FakeClock()
    victim = make_worker(rclient, engine, clock, consumer="victim", sweep=10, sweep_batch=1,
                         lease_ttl=2.0)  # fmt: skip
    victim.run_once()
    clock.advance(3 * 86400)  # three days without a sweep: the first one covers all of it
    victim.run_once()  # takes the lease, flushes one tutor of the interval, then "dies"
    assert (
        victim.handler.sweep is not None
        and victim.handler.sweep.running
        and victim.handler.sweep.pending
    )
    rescuer = make_worker(rclient, engine, clock, consumer="rescuer", sweep=10, lease_ttl=2.0)
    rescuer.run_once()
    # the lease is held
    assert rescuer.handler.sweep is not None and rescuer.handler.sweep.history == []
    time.sleep(2.1)  # the victim's lease runs out (Redis time)
    clock.advance(10)
    rescuer.run_once()
    [redone] = rescuer.handler.sweep.history
    assert redone.start == T and redone.end == clock.now()
    assert_rows_true_at_their_calculation_date(engine, tables)
    assert _tier(engine, WATCHED) == "Needs Attention"


def test_the_rollover_writes_the_day_that_ended(engine: sa.Engine, db_url: str,
                                                rclient: redis.Redis) -> None:  # fmt: skip
    tables = sample(tutors=8)
    save_tables(engine, tables)
    evening = T - timedelta(hours=2)  # 22:00 on 2026-03-02
    clock = FakeClock(start=evening)
    worker = make_worker(rclient, engine, clock, rollover=True, sweep_batch=3)
    worker.run_once()  # a new group: days before 2026-03-02 are the nightly's
    with engine.connect() as conn:
        assert get_state(conn, "worker.rollover.metrics-workers") == "2026-03-01"
    assert stored_metrics(engine).is_empty()
    clock.advance(2 * 3600 + 1)  # past midnight
    for _ in range(6):
        clock.advance(11)
        worker.run_once()
    stored = stored_metrics(engine)
    midnight = end_of_day(T.date() - timedelta(days=1))
    assert_frame_equal(stored, sort_metrics(expected_metrics(tables, midnight)))
    with engine.connect() as conn:
        assert get_state(conn, "worker.rollover.metrics-workers") == "2026-03-02"
    # the nightly safety net finds nothing to change
    out = CliRunner().invoke(
        app, ["--database-url", db_url, "recompute", "--since", "2026-03-02", "--until",
              "2026-03-02"],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "(0 new or changed, 0 tier changes)" in out.stdout


def test_worker_run_sweeps_on_the_real_clock(
    db_url: str, redis_url: str, rclient: redis.Redis
) -> None:
    from tutormax_cli import keys
    from tutormax_cli.store.db import open_engine

    engine = open_engine(db_url)
    tables = sample(tutors=3, end=datetime.now(UTC).replace(microsecond=0))
    save_tables(engine, tables)
    proc = _start_worker(db_url, redis_url, "--consumer", "sweeper", "--sweep", "1",
                         "--no-rollover")  # fmt: skip
    beat = keys.heartbeat_key(keys.ENRICHMENT_STREAM, keys.METRICS_GROUP, "sweeper")
    try:
        deadline = time.monotonic() + 60
        while not rclient.exists(beat):  # the worker is up and sweeping
            assert proc.poll() is None and time.monotonic() < deadline, "the worker did not start"
            time.sleep(0.1)
        now = datetime.now(UTC)
        edge = now + timedelta(seconds=3)
        tables = at_risk_until(tables, edge)  # no entry on the stream for TZ, ever
        save_tables(engine, tables)
        recompute_as_of(engine, now, tutors=[WATCHED])
        assert _tier(engine, WATCHED) == "At Risk"
        while _tier(engine, WATCHED) != "Needs Attention":
            if time.monotonic() > deadline:
                proc.send_signal(signal.SIGTERM)
                raise AssertionError(f"the sweep did not pass the edge: {proc.communicate()[1]}")
            time.sleep(0.1)
        passed = datetime.now(UTC)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    # within --sweep (1 s) and one flush of the edge; slack for a loaded test machine
    assert passed - edge < timedelta(seconds=1 + 4), err
    stored = assert_rows_true_at_their_calculation_date(engine, tables)
    tz = stored.filter(pl.col("tutor_id") == WATCHED)
    assert (tz["calculation_date"] >= edge).all()
    engine.dispose()
