"""Cumulative partials (PostgreSQL): whatever any writer does to sessions, feedback and events,
a snapshot read from the cumulative table equals the one aggregated from the raw rows."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from tests.helpers import sample, stored_metrics
from tutormax_cli import recompute as rc
from tutormax_cli.metrics.rolling import end_of_day_rows, input_range, window_sums
from tutormax_cli.passes import PassRunner
from tutormax_cli.recompute import RecomputeRequest, Shard, recompute_as_of, run
from tutormax_cli.store import cumulative
from tutormax_cli.store.load import load_daily_partials, load_window_partials
from tutormax_cli.store.seed import save_tables
from tutormax_cli.store.sources import PROBE_DAYS, CumulativePartials

END = datetime(2026, 3, 3, tzinfo=UTC)
BASE = sample(tutors=12, days=60, seed=11, end=END)
BASE_FIRST = (END - timedelta(days=61)).date()
"""A day before the sample's history starts."""


def _truncate(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "TRUNCATE sessions, student_feedback, tutor_events, tutors, students, "
                "tutor_performance_metrics"
            )
        )


@pytest.fixture
def pg(pg_engine: sa.Engine) -> Iterator[sa.Engine]:
    """The test PostgreSQL database with the base sample and cumulative partials enabled; they
    are disabled again afterwards so other tests keep exercising the raw path."""
    cumulative.disable(pg_engine)
    _truncate(pg_engine)
    save_tables(pg_engine, BASE)
    assert cumulative.enable(pg_engine) > 0
    try:
        yield pg_engine
    finally:
        cumulative.disable(pg_engine)
        _truncate(pg_engine)


def assert_same_snapshot(engine: sa.Engine, t: datetime, tutors: list[str] | None = None) -> None:
    with engine.connect() as conn:
        raw = load_window_partials(conn, t, tutors).frame.sort("tutor_id", "window")
        cum = cumulative.window_partials(conn, t, tutors).frame.sort("tutor_id", "window")
    assert_frame_equal(raw, cum, check_exact=False, rel_tol=1e-12, abs_tol=1e-9)


INSTANTS = [
    END,
    END - timedelta(days=3, hours=5, minutes=7),
    END - timedelta(days=29, microseconds=1),
    END + timedelta(days=45),  # the windows empty out
    END - timedelta(days=59, hours=23),  # the history starts inside every window
]


def test_enabling_fills_the_table_and_every_snapshot_matches(pg: sa.Engine) -> None:
    with pg.connect() as conn:
        status = cumulative.state(conn)
    assert status["enabled"] and status["rows"] > 0 and status["dirty_pairs"] == 0
    with pg.connect() as conn:  # analyzed once filled, whether autovacuum runs or not
        analyzed = conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_stat_user_tables WHERE relname IN (:t, :s) "
                "AND last_analyze IS NOT NULL"
            ),
            {"t": cumulative.TABLE, "s": cumulative.SPANS},
        ).scalar_one()
    assert analyzed == 2
    for t in INSTANTS:
        assert_same_snapshot(pg, t)
        assert_same_snapshot(pg, t, ["T0002", "T0007", "NOBODY"])
    assert cumulative.enable(pg) == 0  # idempotent


# -- any writer, any statement ---------------------------------------------------------------

MUTATIONS = {
    "insert sessions": (
        "INSERT INTO sessions SELECT 'X{i}' || session_id, tutor_id, student_id, session_number, "
        "scheduled_start - interval '{n} hours', actual_start, duration_minutes, subject, "
        "session_type, tutor_initiated_reschedule, no_show, late_start_minutes, "
        "engagement_score, learning_objectives_met, technical_issues, created_at, updated_at "
        "FROM sessions WHERE abs(hashtext(session_id)) % 7 = {k}"
    ),
    "flip no-shows": (
        "UPDATE sessions SET no_show = NOT no_show WHERE abs(hashtext(session_id)) % 5 = {k}"
    ),
    "move sessions to another tutor": (
        "UPDATE sessions SET tutor_id = 'T000' || (1 + {n} % 9) "
        "WHERE abs(hashtext(session_id)) % 9 = {k}"
    ),
    "move sessions in time": (
        "UPDATE sessions SET scheduled_start = scheduled_start - interval '{n} days 3 hours' "
        "WHERE abs(hashtext(session_id)) % 6 = {k}"
    ),
    "delete sessions": "DELETE FROM sessions WHERE abs(hashtext(session_id)) % 8 = {k}",
    "change ratings": (
        "UPDATE student_feedback SET overall_rating = 1 + (overall_rating + {n}) % 5 "
        "WHERE abs(hashtext(feedback_id)) % 4 = {k}"
    ),
    "delete feedback": "DELETE FROM student_feedback WHERE abs(hashtext(feedback_id)) % 3 = {k}",
    "insert events": (
        "INSERT INTO tutor_events SELECT 'X{i}' || event_id, tutor_id, event_type, "
        "event_timestamp + interval '{n} hours', metadata, created_at FROM tutor_events "
        "WHERE abs(hashtext(event_id)) % 6 = {k}"
    ),
    "change response times": (
        "UPDATE tutor_events SET metadata = jsonb_build_object('response_time_minutes', {n}) "
        "WHERE event_type = 'message_response' AND abs(hashtext(event_id)) % 4 = {k}"
    ),
    "logins become other events": (
        "UPDATE tutor_events SET event_type = 'profile_update' "
        "WHERE event_type = 'login' AND abs(hashtext(event_id)) % 5 = {k}"
    ),
    "delete events": "DELETE FROM tutor_events WHERE abs(hashtext(event_id)) % 7 = {k}",
    "truncate events": "TRUNCATE tutor_events",
}


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(sorted(MUTATIONS)),
            st.integers(0, 2),
            st.integers(1, 40),
        ),
        min_size=1,
        max_size=4,
    ),
    offset=st.integers(-60 * 24 * 60, 10 * 24 * 60),
)
def test_snapshots_match_the_raw_rows_after_any_writes(
    pg: sa.Engine, steps: list[tuple[str, int, int]], offset: int
) -> None:
    cumulative.disable(pg)
    _truncate(pg)
    save_tables(pg, BASE)
    cumulative.enable(pg)
    for i, (name, k, n) in enumerate(steps):
        with pg.begin() as conn:
            conn.execute(sa.text(MUTATIONS[name].format(i=i, k=k, n=n)))
    t = END + timedelta(minutes=offset)
    assert_same_snapshot(pg, t)
    assert_same_snapshot(pg, t, ["T0001", "T0004", "T0009"])
    with pg.connect() as conn:
        assert cumulative.state(conn)["dirty_pairs"] == 0


def test_lookups_split_over_connections_give_the_same_snapshot(
    pg: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cumulative, "PARALLEL_FROM", 1)
    for threads in (2, 3):
        monkeypatch.setattr(cumulative, "STATEMENTS_AT_ONCE", threads)
        assert_same_snapshot(pg, END - timedelta(hours=30))
        assert_same_snapshot(pg, END, ["T0001", "T0002", "T0003", "T0004"])


COPY_SESSION = (
    "INSERT INTO sessions SELECT :new, tutor_id, student_id, session_number, "
    "scheduled_start + interval '1 minute', actual_start, duration_minutes, subject, "
    "session_type, tutor_initiated_reschedule, no_show, late_start_minutes, engagement_score, "
    "learning_objectives_met, technical_issues, created_at, updated_at "
    "FROM sessions WHERE session_id = :old"
)
ADD_FEEDBACK = (
    "INSERT INTO student_feedback (feedback_id, session_id, student_id, tutor_id, "
    "overall_rating, is_first_session, submitted_at) SELECT 'F-' || :new, :new, student_id, "
    "tutor_id, 5, false, scheduled_start FROM sessions WHERE session_id = :old"
)


def _recent_session(engine: sa.Engine) -> str:
    with engine.connect() as conn:
        sql = "SELECT min(session_id) FROM sessions WHERE scheduled_start BETWEEN :a AND :b"
        days = {"a": END - timedelta(days=5), "b": END - timedelta(days=2)}
        return str(conn.execute(sa.text(sql), days).scalar_one())


def _refresh_while(
    engine: sa.Engine,
    still_open: sa.Connection,
    rebuild: Callable[[sa.Engine], object] = cumulative.refresh,
) -> None:
    """A refresh (or `rebuild`) started while `still_open` has written but not committed: it
    must wait for the commit (and then see the rows), not run past them."""
    done = threading.Event()

    def refresh() -> None:
        rebuild(engine)
        done.set()

    worker = threading.Thread(target=refresh)
    worker.start()
    ran_past = done.wait(0.5)
    still_open.commit()  # before any assertion: an open writer would block the teardown
    still_open.close()
    worker.join(10)
    assert not ran_past, "the refresh ran past an uncommitted write"
    assert done.is_set()


def test_a_second_write_to_a_queued_day_is_not_lost(pg: sa.Engine) -> None:
    """Writer 1 commits (tutor, day) into the queue; writer 2 writes the same pair (its trigger
    finds it queued) and a refresh starts before writer 2 commits."""
    old = _recent_session(pg)
    with pg.begin() as first:
        first.execute(sa.text(COPY_SESSION), {"new": "W1-" + old, "old": old})
    second = pg.connect()
    second.execute(sa.text(COPY_SESSION), {"new": "W2-" + old, "old": old})
    _refresh_while(pg, second)
    assert_same_snapshot(pg, END)


def test_feedback_written_before_its_session_commits_is_not_lost(pg: sa.Engine) -> None:
    """The feedback's trigger cannot see the uncommitted session, so it queues nothing; the
    session's commit queues the pair, and a refresh must not run before the feedback commits."""
    old = _recent_session(pg)
    sessions, feedback = pg.connect(), pg.connect()
    sessions.execute(sa.text(COPY_SESSION), {"new": "S-" + old, "old": old})
    feedback.execute(sa.text(ADD_FEEDBACK), {"new": "S-" + old, "old": old})
    sessions.commit()
    sessions.close()
    _refresh_while(pg, feedback)
    assert_same_snapshot(pg, END)


def test_a_huge_value_long_before_the_window_cancels_nothing(pg: sa.Engine) -> None:
    """Running totals are exact (`numeric`): one 1e20-minute response 400 days back does not
    swallow the window's small ones when two totals are subtracted."""
    with pg.begin() as conn:
        for i, (days, minutes) in enumerate([(400, 1e20), (3, 1), (2, 2.5)]):
            conn.execute(
                sa.text(
                    "INSERT INTO tutor_events (event_id, tutor_id, event_type, event_timestamp, "
                    "metadata) VALUES (:id, 'T0001', 'message_response', :ts, CAST(:m AS json))"
                ),
                {"id": f"HUGE{i}", "ts": END - timedelta(days=days),
                 "m": f'{{"response_time_minutes": {minutes}}}'},
            )  # fmt: skip
    assert_same_snapshot(pg, END)
    with pg.connect() as conn:
        week = cumulative.window_partials(conn, END, ["T0001"]).frame.filter(
            pl.col("window") == "7day"
        )
        raw = load_window_partials(conn, END, ["T0001"]).frame.filter(pl.col("window") == "7day")
    assert week["resp_sum"].item() == pytest.approx(raw["resp_sum"].item(), rel=1e-12)
    assert week["resp_sum"].item() > 3.5  # not swallowed: float totals would give 0 here


def test_recompute_and_the_worker_path_store_the_same_rows_either_way(pg: sa.Engine) -> None:
    t = END - timedelta(hours=7)
    run(pg, RecomputeRequest(as_of=t))
    with_table = stored_metrics(pg)
    recompute_as_of(pg, t, tutors=["T0003", "T0005"])  # the worker's flush
    assert stored_metrics(pg).equals(with_table)
    run(pg, RecomputeRequest(as_of=t, shard=Shard.parse("1/3")))  # chunks of the prefetch
    assert stored_metrics(pg).equals(with_table)
    with pg.begin() as conn:
        conn.execute(sa.text("DELETE FROM tutor_performance_metrics"))
    run(pg, RecomputeRequest(as_of=t, raw=True))  # --raw: the cross-check, table in place
    assert stored_metrics(pg).equals(with_table)
    cumulative.disable(pg)
    with pg.begin() as conn:
        conn.execute(sa.text("DELETE FROM tutor_performance_metrics"))
    run(pg, RecomputeRequest(as_of=t))
    assert stored_metrics(pg).equals(with_table)
    assert with_table.height == 3 * with_table["tutor_id"].n_unique() > 0
    assert set(with_table["window"]) == {"7day", "30day", "90day"}
    assert with_table.filter(pl.col("sessions_scheduled") > 0).height > 0


def assert_same_days(
    engine: sa.Engine, first: date, last: date, tutors: list[str] | None = None
) -> int:
    key = ["tutor_id", "day"]
    with engine.connect() as conn:
        raw = load_daily_partials(conn, first, last, tutors).frame.sort(key)
        cum = cumulative.daily_partials(conn, first, last, tutors).frame.sort(key)
    assert_frame_equal(raw, cum, check_exact=False, rel_tol=1e-12, abs_tol=1e-9)
    return raw.height


def test_daily_partials_are_differences_of_cumulative_rows(pg: sa.Engine) -> None:
    last = END.date() - timedelta(days=1)
    for first in (last - timedelta(days=95), last - timedelta(days=6), last, BASE_FIRST):
        assert assert_same_days(pg, first, last) > 0
        assert assert_same_days(pg, first, last, ["T0002", "T0007", "NOBODY"]) > 0
    assert assert_same_days(pg, last + timedelta(days=3), last + timedelta(days=40)) == 0
    with pg.begin() as conn:  # a write the triggers queue: the backfill refreshes first
        conn.execute(sa.text(MUTATIONS["flip no-shows"].format(i=0, k=1, n=3)))
    assert_same_days(pg, last - timedelta(days=30), last)


def assert_same_windows(
    engine: sa.Engine, first: date, last: date, tutors: list[str] | None = None
) -> int:
    """The windows looked up in the cumulative table equal the raw rows' daily partials rolled;
    returns the tutor-days with a session in their longest window."""
    key = ["tutor_id", "window", "metric_date"]
    with engine.connect() as conn:
        daily = load_daily_partials(conn, *input_range(first, last), tutors).frame
        rolled = window_sums(daily, first, last).sort(key)
        looked_up = cumulative.end_of_day_partials(conn, first, last, tutors).frame
    active = looked_up.join(rolled.select(key), on=key, how="semi").sort(key)
    assert_frame_equal(rolled, active, check_exact=False, rel_tol=1e-12, abs_tol=1e-9)
    assert end_of_day_rows(looked_up).equals(end_of_day_rows(rolled))
    # the tutor-days left out by the rolled sums are those without a session in 90 days
    left_out = looked_up.join(rolled.select(key), on=key, how="anti")
    assert (left_out.filter(pl.col("window") == "90day")["n_sessions"] == 0).all()
    return rolled.height // 3


def test_windows_are_differences_of_two_cumulative_rows(pg: sa.Engine) -> None:
    last = END.date() - timedelta(days=1)
    for first in (last - timedelta(days=6), last, BASE_FIRST, last - timedelta(days=20)):
        assert assert_same_windows(pg, first, last) > 0
        assert assert_same_windows(pg, first, last, ["T0002", "T0007", "NOBODY"]) > 0
    assert assert_same_windows(pg, last + timedelta(days=95), last + timedelta(days=100)) == 0
    with pg.begin() as conn:  # a write the triggers queue: the lookups refresh first
        conn.execute(sa.text(MUTATIONS["flip no-shows"].format(i=0, k=1, n=3)))
    assert assert_same_windows(pg, last - timedelta(days=6), last) > 0


@pytest.mark.parametrize("days", [7, PROBE_DAYS + 1])
def test_a_backfill_by_lookups_or_daily_rows_stores_the_raw_backfills_rows(
    pg: sa.Engine, days: int
) -> None:
    last = END.date() - timedelta(days=1)
    request = RecomputeRequest(since=last - timedelta(days=days - 1), until=last, chunk_size=5)
    run(pg, request)  # cumulative partials, chunks of 5 tutors
    from_cumulative = stored_metrics(pg)
    with pg.begin() as conn:
        conn.execute(sa.text("DELETE FROM tutor_performance_metrics"))
    run(pg, replace(request, raw=True, chunk_size=None))
    assert stored_metrics(pg).equals(from_cumulative)
    assert from_cumulative["metric_date"].n_unique() == days


def test_an_export_reads_its_passes_at_once_in_order_and_writes_nothing(
    pg: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With nothing to write, a backfill's cumulative lookups run `STATEMENTS_AT_ONCE` passes
    at once (a dry run or export would leave a core idle otherwise); the file still holds the
    rows a written run stores, chunk after chunk in the order they were submitted — the first
    pass is made the slowest, so passes settled as they finish would come out of order."""
    seen: list[bool] = []
    threads: set[int] = set()

    class Recording(PassRunner):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            seen.append(kwargs["reads_at_once"])
            super().__init__(*args, **kwargs)

    lookups = CumulativePartials.end_of_day_partials

    def first_one_slow(self: CumulativePartials, *args: Any) -> pl.DataFrame:
        threads.add(threading.get_ident())
        if len(threads) == 1 and not seen[1:]:
            time.sleep(0.5)
        return lookups(self, *args)

    monkeypatch.setattr(rc, "PassRunner", Recording)
    monkeypatch.setattr(CumulativePartials, "end_of_day_partials", first_one_slow)
    last = END.date() - timedelta(days=1)
    out = tmp_path / "days.parquet"
    request = RecomputeRequest(
        since=last - timedelta(days=6), until=last, chunk_size=3, output=out, write=False
    )
    exported = run(pg, request)
    assert exported.chunks > 2 and seen == [True] and len(threads) == 2
    assert stored_metrics(pg).height == 0
    got = pl.read_parquet(out)
    run(pg, replace(request, output=None, write=True))
    assert seen == [True, False]  # a written backfill pipelines its light reads with the writes
    assert_frame_equal(got.sort("tutor_id", "window", "metric_date"), stored_metrics(pg))
    chunk_order = got["tutor_id"].unique(maintain_order=True).to_list()
    assert chunk_order == sorted(chunk_order)


def test_a_backfill_from_cumulative_rows_stores_the_raw_backfills_rows(pg: sa.Engine) -> None:
    last = END.date() - timedelta(days=1)
    request = RecomputeRequest(since=last - timedelta(days=6), until=last)
    run(pg, request)  # cumulative partials
    from_cumulative = stored_metrics(pg)
    with pg.begin() as conn:
        conn.execute(sa.text("DELETE FROM tutor_performance_metrics"))
    run(pg, replace(request, raw=True))  # the backfill on raw rows
    assert stored_metrics(pg).equals(from_cumulative)
    assert from_cumulative["metric_date"].n_unique() == 7
    assert from_cumulative.height % 3 == 0 and from_cumulative.height > 0


def test_an_interrupted_fill_is_finished_by_enabling_again(pg: sa.Engine) -> None:
    cumulative.disable(pg)
    seen: list[tuple[int, int]] = []

    def interrupt(done: int, total: int) -> None:
        seen.append((done, total))
        raise KeyboardInterrupt  # the operator's Ctrl-C after the first chunk committed

    with pytest.raises(KeyboardInterrupt):
        cumulative.enable(pg, interrupt, chunk_tutors=5)
    assert seen == [(5, 12)]
    with pg.connect() as conn:
        half = cumulative.state(conn)
        spans = conn.execute(sa.text(f"SELECT count(*) FROM {cumulative.SPANS}")).scalar_one()
    assert half["enabled"] and half["dirty_pairs"] > 0 and spans == 5
    seen.clear()
    assert cumulative.enable(pg, lambda d, t: seen.append((d, t)), 5) > 0
    assert seen == [(5, 7), (7, 7)]
    with pg.connect() as conn:
        assert cumulative.state(conn)["dirty_pairs"] == 0
    for t in INSTANTS:
        assert_same_snapshot(pg, t)
    assert cumulative.enable(pg) == 0


def test_a_resumed_fill_waits_for_an_uncommitted_write(pg: sa.Engine) -> None:
    """The fill's ranges run on connections of their own; the lock that makes writers and the
    fill wait for each other is held by the chunk's guard transaction, so a write in flight
    when a fill resumes is seen by it or queued after it, never lost."""
    cumulative.disable(pg)

    def interrupt(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cumulative.enable(pg, interrupt, chunk_tutors=3)
    old = _recent_session(pg)
    writer = pg.connect()
    writer.execute(sa.text(COPY_SESSION), {"new": "F-" + old, "old": old})
    _refresh_while(pg, writer, cumulative.enable)
    with pg.connect() as conn:
        assert cumulative.state(conn)["dirty_pairs"] == 0
    for t in INSTANTS:
        assert_same_snapshot(pg, t)


def test_the_queue_starts_every_tutor_on_its_first_day_with_relevant_rows(pg: sa.Engine) -> None:
    """The queue's skip scans of the (tutor, time) indexes find what aggregating every row
    finds: events of kinds no metric reads neither start a tutor's history nor queue it."""
    early = datetime.combine(BASE_FIRST - timedelta(days=9), datetime.min.time(), UTC)
    with pg.connect() as conn:
        someone = conn.execute(sa.text("SELECT min(tutor_id) FROM sessions")).scalar_one()
    events = [
        ("E-x1", someone, "logout", early),  # before its history: not its first day
        ("E-x2", "A-events-only", "login", early + timedelta(hours=30)),
        ("E-x3", "A-events-only", "logout", early),
        ("E-x4", "Z-logouts-only", "logout", early),
    ]
    with pg.begin() as conn:
        for event_id, tutor, kind, at in events:
            conn.execute(
                sa.text(
                    "INSERT INTO tutor_events (event_id, tutor_id, event_type, event_timestamp) "
                    "VALUES (:i, :t, :k, :at)"
                ),
                {"i": event_id, "t": tutor, "k": kind, "at": at},
            )
        queued: dict[str, date] = dict(conn.execute(sa.text(cumulative._FIRST_DAYS)).all())
        every_row: dict[str, date] = dict(
            conn.execute(
                sa.text(
                    "SELECT tutor_id, min(day) FROM (SELECT tutor_id, "
                    "(scheduled_start AT TIME ZONE 'UTC')::date AS day FROM sessions UNION ALL "
                    "SELECT tutor_id, (event_timestamp AT TIME ZONE 'UTC')::date FROM tutor_events "
                    "WHERE event_type IN ('login', 'message_response')) AS h GROUP BY tutor_id"
                )
            ).all()
        )
    assert queued == every_row
    assert queued["A-events-only"] == (early + timedelta(hours=30)).date()
    assert queued[someone] > early.date() and "Z-logouts-only" not in queued


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 12])
@pytest.mark.parametrize("parts", [1, 2, 3])
def test_a_chunk_is_cut_into_contiguous_ranges_that_cover_it(n: int, parts: int) -> None:
    tutors = [f"T{i:03d}" for i in range(n)]
    ranges = cumulative._ranges(tutors, parts)
    assert len(ranges) == min(n, parts) or (n > parts and len(ranges) <= parts)
    covered = [t for first, last in ranges for t in tutors if first <= t <= last]
    assert covered == tutors  # each tutor once, in order


def test_disabling_removes_every_trigger(pg: sa.Engine) -> None:
    assert cumulative.disable(pg) is True
    with pg.connect() as conn:
        left = conn.execute(
            sa.text("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'tutormax%'")
        ).scalar_one()
        assert left == 0 and not cumulative.enabled(conn)
    assert cumulative.disable(pg) is False


def test_the_cli_enables_reports_and_disables(pg_database_url: str, pg: sa.Engine) -> None:
    from typer.testing import CliRunner

    from tutormax_cli.cli.app import app

    runner = CliRunner()
    env = {"TUTORMAX_DATABASE_URL": pg_database_url}
    shown = runner.invoke(app, ["db", "partials", "status", "--json"], env=env)
    assert shown.exit_code == 0, shown.output
    assert '"enabled": true' in shown.output and '"dirty_pairs": 0' in shown.output
    again = runner.invoke(app, ["db", "partials", "enable"], env=env)
    assert again.exit_code == 0 and "already enabled" in again.output
    off = runner.invoke(app, ["db", "partials", "disable"], env=env)
    assert off.exit_code == 0 and "disabled" in off.output
    assert runner.invoke(app, ["db", "partials", "status"], env=env).exit_code == 1
    on = runner.invoke(app, ["db", "partials", "enable"], env=env)
    assert on.exit_code == 0 and "enabled:" in on.output


def test_sqlite_says_it_needs_postgresql(sqlite_url: str) -> None:
    from typer.testing import CliRunner

    from tutormax_cli.cli.app import app
    from tutormax_cli.store.db import open_engine
    from tutormax_cli.store.migrate import upgrade

    upgrade(open_engine(sqlite_url))
    result = CliRunner().invoke(
        app, ["db", "partials", "enable"], env={"TUTORMAX_DATABASE_URL": sqlite_url}
    )
    assert result.exit_code == 2
    assert result.output.strip() == (
        "Error: cumulative partials need PostgreSQL; SQLite computes from raw rows"
    )


def test_a_writer_without_rights_on_tutormax_tables_still_writes(
    pg: sa.Engine, pg_database_url: str
) -> None:
    """The pipeline's own database role writes sessions; the triggers' functions run with the
    rights of whoever enabled them, so it needs no grant on tutormax's tables."""
    import uuid

    from tutormax_cli.store.db import open_engine

    role = f"tm_writer_{uuid.uuid4().hex[:8]}"
    with pg.begin() as conn:
        conn.execute(sa.text(f"CREATE ROLE {role} LOGIN"))
        conn.execute(sa.text(f"GRANT SELECT, INSERT ON sessions TO {role}"))
    writer = open_engine(sa.make_url(pg_database_url).set(username=role).render_as_string(False))
    try:
        old = _recent_session(pg)
        with writer.begin() as conn:
            conn.execute(sa.text("SET search_path = pg_catalog, public"))
            conn.execute(sa.text(COPY_SESSION), {"new": "R-" + old, "old": old})
        assert_same_snapshot(pg, END)
    finally:
        writer.dispose()
        with pg.begin() as conn:
            conn.execute(sa.text(f"REVOKE ALL ON sessions FROM {role}"))
            conn.execute(sa.text(f"DROP ROLE {role}"))
