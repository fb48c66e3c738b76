"""Daily backfills, catch-up, shards, chunks and the run lock.

The property test is the contract of `metrics/rolling.py`: one vectorized pass over a range of
days equals the as-of engine run at the end of every one of those days, row for row. The
database tests then hold the PostgreSQL partials (aggregated in SQL) equal to the polars ones,
and the chunked, sharded, blocked runs equal the plain one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import polars as pl
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from tests.helpers import T, count_rows, expected_metrics, sample, sort_metrics, stored_metrics
from tutormax_cli import recompute as rc
from tutormax_cli.errors import LockHeld, UsageError
from tutormax_cli.metrics import frames
from tutormax_cli.metrics.engine import compute_metrics
from tutormax_cli.metrics.rolling import compute_daily, daily_partials
from tutormax_cli.metrics.tiers import DEFAULT_TIERS, Threshold, TierRules
from tutormax_cli.metrics.windows import end_of_day
from tutormax_cli.recompute import RecomputeRequest, Shard, run, shard_of
from tutormax_cli.store import load
from tutormax_cli.store.lock import lock_file, lock_key, run_lock
from tutormax_cli.store.seed import save_tables
from tutormax_cli.store.sources import SqlPartials
from tutormax_cli.store.state import get_state

US = timedelta(microseconds=1)
KEY = ["tutor_id", "metric_date", "window"]

# -- the property: one pass == the as-of engine at every end of day --------------------------

OFFSETS = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
tutor_ids = st.text(
    alphabet=st.characters(exclude_categories=("Cc", "Cs", "Co", "Cn", "Zl", "Zp")),
    min_size=1,
    max_size=12,
)
_window_edges = st.builds(
    lambda edge, k: edge + k, st.sampled_from([-90, -89, -30, -29, -7, -6, 0]), st.integers(0, 5)
)
"""The first or last day of some snapshot day's 7-, 30- or 90-day window."""
day_offsets = st.one_of(_window_edges, _window_edges, st.integers(-96, 2))
"""Which UTC day (relative to the first snapshot day) an input falls on."""
times_of_day = st.one_of(
    st.sampled_from([0, 1, 86_400 * 10**6 - 1]).map(lambda us: us * US),  # on and at midnight
    st.integers(0, 86_400 * 10**6 - 1).map(lambda us: us * US),
)
engagement = st.one_of(st.none(), st.integers(0, 1000).map(lambda k: k / 1000))
response = st.one_of(st.none(), st.integers(0, 100_000).map(lambda k: k / 100))


@st.composite
def datasets(draw: st.DrawFn) -> dict[str, Any]:
    first = draw(st.dates(min_value=date(2024, 1, 1), max_value=date(2027, 12, 31)))
    span = draw(st.integers(0, 5))
    tutors = draw(st.lists(tutor_ids, min_size=1, max_size=3, unique=True))
    base = datetime(first.year, first.month, first.day, tzinfo=UTC)

    def instant() -> datetime:
        moment = base + timedelta(days=draw(day_offsets)) + draw(times_of_day)
        return moment.astimezone(draw(st.sampled_from(OFFSETS)))  # any offset, same instant

    sessions, feedback = [], []
    for i in range(draw(st.integers(0, 25))):
        start = instant()
        sessions.append(
            {
                "session_id": f"S{i}",
                "tutor_id": draw(st.sampled_from(tutors)),
                "session_number": draw(st.sampled_from([1, 1, 2, 7])),
                "scheduled_start": start,
                "actual_start": draw(st.sampled_from([None, start + timedelta(minutes=3)])),
                "tutor_initiated_reschedule": draw(st.booleans()),
                "no_show": draw(st.booleans()),
                "late_start_minutes": draw(st.sampled_from([0, 10, 11, 45])),
                "engagement_score": draw(engagement),
                "learning_objectives_met": draw(st.one_of(st.none(), st.booleans())),
            }
        )
        rating = draw(st.one_of(st.none(), st.integers(1, 5)))
        if rating is not None:
            feedback.append({"session_id": f"S{i}", "overall_rating": rating})
    events = [
        {
            "tutor_id": draw(st.sampled_from([*tutors, "no-sessions"])),
            "event_type": draw(st.sampled_from(["login", "message_response", "logout"])),
            "event_timestamp": instant(),
            "response_time_minutes": draw(response),
        }
        for _ in range(draw(st.integers(0, 25)))
    ]
    tiers = None
    if draw(st.booleans()):  # a rule set of the operator's, so the tier is not always default
        cut = draw(st.integers(0, 100))
        tiers = TierRules(
            tuple(
                Threshold(th.metric, th.direction, float(cut), float(cut))
                if th.metric.endswith(("_rate", "_pct", "score"))
                else th
                for th in DEFAULT_TIERS.thresholds
            ),
            strong_min_green=draw(st.integers(1, 4)),
        )
    return {
        "first": first,
        "last": first + timedelta(days=span),
        "sessions": sessions,
        "feedback": feedback,
        "events": events,
        "tiers": tiers or DEFAULT_TIERS,
    }


def frame(rows: list[dict[str, Any]], schema: pl.Schema) -> pl.DataFrame:
    """What a loader hands the engine: the schema's columns, instants in UTC."""
    if not rows:
        return frames.empty(schema)
    utc = [
        {k: v.astimezone(UTC) if isinstance(v, datetime) else v for k, v in row.items()}
        for row in rows
    ]
    return pl.DataFrame(utc, schema=schema)


@settings(
    max_examples=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(datasets())
def test_one_pass_equals_as_of_engine_every_day(data: dict[str, Any]) -> None:
    sessions = frame(data["sessions"], frames.SESSIONS)
    feedback = frame(data["feedback"], frames.FEEDBACK)
    events = frame(data["events"], frames.EVENTS)
    first, last, tiers = data["first"], data["last"], data["tiers"]
    got = compute_daily(sessions, feedback, events, first, last, tiers)
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    want = pl.concat(
        [compute_metrics(sessions, feedback, events, end_of_day(d), tiers) for d in days]
    )
    assert got.schema == frames.METRICS
    assert_frame_equal(got.sort(KEY), want.sort(KEY), check_exact=True)


def test_daily_rows_only_while_a_session_is_in_the_90_day_window() -> None:
    s = frame(
        [
            {
                "session_id": "a",
                "tutor_id": "T1",
                "session_number": 1,
                "scheduled_start": datetime(2026, 1, 1, 23, 59, 59, 999999, tzinfo=UTC),
                "actual_start": None,
                "tutor_initiated_reschedule": False,
                "no_show": True,
                "late_start_minutes": 0,
                "engagement_score": None,
                "learning_objectives_met": None,
            }
        ],
        frames.SESSIONS,
    )
    got = compute_daily(
        s, frames.empty(frames.FEEDBACK), frames.empty(frames.EVENTS), date(2025, 12, 31),
        date(2026, 4, 2),
    )  # fmt: skip
    days = got["metric_date"].unique().sort()
    assert days[0] == date(2026, 1, 1) and days[-1] == date(2026, 3, 31)  # 90 days
    assert got.height == 90 * 3
    assert got.filter(pl.col("window") == "7day", pl.col("sessions_scheduled") == 0).height == 83


# -- the database paths -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tables() -> dict[str, pl.DataFrame]:
    return sample(tutors=24, days=120, seed=5)


def _expected_days(tables: dict[str, pl.DataFrame], first: date, last: date) -> pl.DataFrame:
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    return sort_metrics(pl.concat([expected_metrics(tables, end_of_day(d)) for d in days]))


def test_backfill_equals_as_of_per_day_and_rerun_upserts(
    engine: sa.Engine, tables: dict[str, pl.DataFrame]
) -> None:
    save_tables(engine, tables)
    first, last = date(2026, 2, 20), date(2026, 3, 2)
    result = run(engine, RecomputeRequest(since=first, until=last))
    expected = _expected_days(tables, first, last)
    assert result.rows == expected.height == count_rows(engine) > 0
    assert result.mode == "daily" and result.days == 11 and result.written
    assert_frame_equal(stored_metrics(engine), expected)
    with engine.connect() as conn:
        before = conn.execute(sa.text("SELECT metric_id, updated_at FROM "
                                      "tutor_performance_metrics ORDER BY 1")).all()  # fmt: skip
    again = run(engine, RecomputeRequest(since=first, until=last))
    with engine.connect() as conn:
        after = conn.execute(sa.text("SELECT metric_id, updated_at FROM "
                                     "tutor_performance_metrics ORDER BY 1")).all()  # fmt: skip
    assert again.rows == result.rows and before == after  # same keys, nothing rewritten


def test_backfill_counts_tutors_per_tier_per_day_not_tutor_days(
    engine: sa.Engine, tables: dict[str, pl.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tier counts of a daily run are of tutors on each day (the old sum over the run counted
    each tutor once per day), also when chunks of tutors and blocks of days split the run."""
    save_tables(engine, tables)
    first, last = date(2026, 2, 1), date(2026, 3, 2)
    monkeypatch.setattr(rc, "GRID_BUDGET", 5 * (14 + 89))  # 5-tutor chunks -> 14-day blocks
    result = run(engine, RecomputeRequest(since=first, until=last, chunk_size=5))
    assert result.chunks > 1
    with engine.connect() as conn:
        stored = conn.execute(sa.text(
            "SELECT metric_date, \"window\", performance_tier, count(DISTINCT tutor_id) "
            "FROM tutor_performance_metrics GROUP BY 1, 2, 3"
        )).all()  # fmt: skip
    expected: dict[str, dict[str, dict[str, int]]] = {}
    for day, window, tier, tutors in stored:
        expected.setdefault(str(day), {}).setdefault(window, {})[tier] = tutors
    assert result.tiers_by_day == expected and len(expected) == 30
    assert result.tiers == expected["2026-03-02"]
    assert sum(result.tiers["30day"].values()) <= result.tutors
    snapshot = run(engine, RecomputeRequest(as_of=end_of_day(last), write=False))
    assert snapshot.tiers_by_day is None
    assert snapshot.tiers == result.tiers  # the last day's tutors, as a snapshot counts them


def test_chunks_blocks_and_shards_change_nothing(
    engine: sa.Engine, tables: dict[str, pl.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    save_tables(engine, tables)
    first, last = date(2026, 2, 1), date(2026, 3, 2)
    whole = run(engine, RecomputeRequest(since=first, until=last, write=False, output=None))
    monkeypatch.setattr(rc, "GRID_BUDGET", 5 * (14 + 89))  # 5-tutor chunks -> 14-day blocks
    parts = [
        run(engine, RecomputeRequest(since=first, until=last, shard=Shard(k, 3), chunk_size=5))
        for k in range(3)
    ]
    assert [p.chunks for p in parts] == [-(-p.tutors // 5) for p in parts]
    assert sum(p.tutors for p in parts) == whole.tutors == 24
    assert sum(p.rows for p in parts) == whole.rows == count_rows(engine)
    assert_frame_equal(stored_metrics(engine), _expected_days(tables, first, last))


def test_a_failing_pass_fails_the_run_and_a_rerun_completes_it(
    engine: sa.Engine, tables: dict[str, pl.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Passes run two at once on PostgreSQL: a pass that fails fails the run with its own
    error once the passes under way have ended (no thread left writing, the run lock
    released), what committed stays, and a rerun stores exactly the engine's rows."""
    save_tables(engine, tables)
    at = T - timedelta(hours=3)
    calls: list[object] = []
    real = rc._unit

    def second_fails(conn: sa.Connection, **kwargs: Any) -> pl.DataFrame:
        calls.append(kwargs["unit"])
        if len(calls) == 2:
            raise RuntimeError("pass 2 broke")
        return real(conn, **kwargs)

    monkeypatch.setattr(rc, "_unit", second_fails)
    with pytest.raises(RuntimeError, match="pass 2 broke"):
        run(engine, RecomputeRequest(as_of=at, chunk_size=5))
    assert 0 < count_rows(engine) < 72 and not [t for t in threading.enumerate()
                                                 if t.name.startswith("tutormax-pass")]  # fmt: skip
    monkeypatch.setattr(rc, "_unit", real)
    result = run(engine, RecomputeRequest(as_of=at, chunk_size=5))
    assert result.chunks == 5 and result.rows == 72
    assert_frame_equal(stored_metrics(engine), sort_metrics(expected_metrics(tables, at)))


def test_as_of_chunked_equals_engine(engine: sa.Engine, tables: dict[str, pl.DataFrame]) -> None:
    save_tables(engine, tables)
    at = T - timedelta(hours=7, minutes=3, microseconds=5)
    result = run(engine, RecomputeRequest(as_of=at, chunk_size=7))
    assert result.chunks == 4 and result.tutors == 24
    assert_frame_equal(stored_metrics(engine), sort_metrics(expected_metrics(tables, at)))


def test_tutor_filter_and_unknown_tutors(
    engine: sa.Engine, tables: dict[str, pl.DataFrame]
) -> None:
    save_tables(engine, tables)
    result = run(engine, RecomputeRequest(as_of=T, tutors=("T0003", "nobody", "T0011")))
    assert result.tutors == 2 and result.rows == 6
    assert set(stored_metrics(engine)["tutor_id"]) == {"T0003", "T0011"}


@pytest.mark.postgres
def test_postgres_partials_equal_polars_partials(
    pg_engine: sa.Engine, tables: dict[str, pl.DataFrame]
) -> None:
    """The SQL twins of the engine's partial expressions, on generated data plus edge rows:
    microsecond boundaries, a 'Login' event, string and missing response times, nulls."""
    from tests.conftest import _empty_tables

    _empty_tables(pg_engine)
    save_tables(pg_engine, tables)
    _edge_rows(pg_engine)
    first, last = date(2026, 1, 1), date(2026, 3, 3)
    with pg_engine.connect() as conn:
        sql = load.load_daily_partials(conn, first, last).frame
        inputs = load.load_metric_inputs(conn, end_of_day(first) - timedelta(days=1),
                                         end_of_day(last))  # fmt: skip
        for at in (T, T - timedelta(days=7) + US, datetime(2026, 2, 20, 13, 1, tzinfo=UTC)):
            window = load.load_window_partials(conn, at).frame
            raw = load.load_metric_inputs(conn, at - timedelta(days=90), at)
            ours = rc._snapshot(conn, SqlPartials(), at, None, DEFAULT_TIERS, {})
            engine_rows = compute_metrics(raw.sessions, raw.feedback, raw.events, at)
            assert window.height == engine_rows.height
            assert_frame_equal(ours, engine_rows)
    polars = daily_partials(inputs.sessions, inputs.feedback, inputs.events)
    key = ["tutor_id", "day"]
    assert_frame_equal(sql.sort(key), polars.sort(key), check_exact=False, rel_tol=1e-12)
    assert sql.filter(pl.col("tutor_id") == "EDGE").height > 0


def _edge_rows(engine: sa.Engine) -> None:
    t7 = T - timedelta(days=7)
    rows = [("E1", t7), ("E2", t7 - US), ("E3", T - US), ("E4", T)]
    with engine.begin() as conn:
        for sid, at in rows:
            conn.execute(
                sa.text(
                    "INSERT INTO sessions (session_id, tutor_id, student_id, session_number, "
                    "scheduled_start, actual_start, duration_minutes, subject, session_type, "
                    "tutor_initiated_reschedule, no_show, late_start_minutes, engagement_score, "
                    "learning_objectives_met, technical_issues) VALUES (:s, 'EDGE', 'S', 1, :t, "
                    "NULL, 60, 'Math', '1-on-1', true, false, 10, NULL, NULL, false)"
                ),
                {"s": sid, "t": at},
            )
        conn.execute(
            sa.text(
                "INSERT INTO student_feedback (feedback_id, session_id, student_id, tutor_id, "
                "overall_rating, is_first_session, submitted_at) VALUES "
                "('F1', 'E1', 'S', 'SOMEONE-ELSE', 4, true, :t)"
            ),
            {"t": T},
        )
        events = [
            ("V1", "login", t7, None),
            ("V2", "Login", t7, None),
            ("V3", "message_response", t7 - US, '{"response_time_minutes": 12.5}'),
            ("V4", "message_response", T - US, '{"response_time_minutes": "12"}'),
            ("V5", "message_response", T - US, '{"response_time_minutes": 7}'),
            ("V6", "message_response", T - US, None),
        ]
        for eid, kind, at, meta in events:
            conn.execute(
                sa.text(
                    "INSERT INTO tutor_events (event_id, tutor_id, event_type, event_timestamp, "
                    "metadata) VALUES (:e, 'EDGE', :k, :t, CAST(:m AS jsonb))"
                ),
                {"e": eid, "k": kind, "t": at, "m": meta},
            )


@pytest.mark.postgres
def test_shard_hash_is_stable_and_computable_in_sql(pg_engine: sa.Engine) -> None:
    ids = ["T0001", "tutor-ß-東京", "x" * 50, "a'b\"c"]
    assert [shard_of(i, 7) for i in ids] == [shard_of(i, 7) for i in ids]
    assert shard_of("T0001", 4) == 1  # pinned: a change would reshuffle every fleet
    with pg_engine.connect() as conn:
        for tutor in ids:
            sql = "SELECT ('x' || substr(md5(:t), 1, 14))::bit(56)::bigint % 7"
            assert conn.execute(sa.text(sql), {"t": tutor}).scalar() == shard_of(tutor, 7)


def test_shard_parse() -> None:
    assert Shard.parse("2/5") == Shard(2, 5) and str(Shard(2, 5)) == "2/5"
    for bad in ("5/5", "-1/3", "1/0", "x", "1/2/3"):
        with pytest.raises(UsageError):
            Shard.parse(bad)


# -- catch-up -----------------------------------------------------------------------------------


def _add_event(engine: sa.Engine, tutor: str, event_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO tutor_events (event_id, tutor_id, event_type, event_timestamp) "
                "VALUES (:e, :t, 'login', :at)"
            ),
            {"e": event_id, "t": tutor, "at": T - timedelta(days=1)},
        )


def test_changed_since_auto_continues_from_the_stored_mark(
    engine: sa.Engine, tables: dict[str, pl.DataFrame]
) -> None:
    save_tables(engine, tables)  # created/updated long ago: nothing is "changed" now
    auto = RecomputeRequest(changed_auto=True)
    first = run(engine, auto, now=T)
    assert first.changed_since is None and first.tutors == 24  # no mark yet: everyone
    with engine.connect() as conn:
        mark = get_state(conn, rc.MARK_KEY)
    assert mark is not None and first.mark == mark
    assert run(engine, auto, now=T).tutors == 0
    _add_event(engine, "T0005", "NEW-1")
    second = run(engine, auto, now=T)
    assert second.tutors == 1 and second.rows == 3
    assert second.changed_since is not None and second.changed_since < mark
    explicit = RecomputeRequest(changed_since=datetime(2000, 1, 1, tzinfo=UTC), write=False)
    assert run(engine, explicit, now=T).tutors == 24


def test_changed_since_sees_updated_sessions_and_new_feedback(
    engine: sa.Engine, tables: dict[str, pl.DataFrame]
) -> None:
    save_tables(engine, tables)
    since = datetime.now(UTC) - timedelta(minutes=1)
    with engine.begin() as conn:
        latest = "ORDER BY scheduled_start DESC LIMIT 1"
        sid = conn.execute(sa.text("SELECT session_id FROM sessions WHERE tutor_id = 'T0002' "
                                   + latest)).scalar_one()  # fmt: skip
        conn.execute(
            sa.text("UPDATE sessions SET no_show = NOT no_show, updated_at = :now "
                    "WHERE session_id = :s"), {"s": sid, "now": datetime.now(UTC)},
        )  # fmt: skip
        other = conn.execute(sa.text(
            "SELECT s.session_id FROM sessions s LEFT JOIN student_feedback f "
            "ON f.session_id = s.session_id WHERE s.tutor_id = 'T0009' AND f.session_id IS NULL "
            "ORDER BY s.scheduled_start DESC LIMIT 1")).scalar_one()  # fmt: skip
        conn.execute(
            sa.text(
                "INSERT INTO student_feedback (feedback_id, session_id, student_id, tutor_id, "
                "overall_rating, is_first_session, submitted_at) "
                "VALUES ('NEWF', :s, 'S', 'T0009', 5, false, :t)"
            ),
            {"s": other, "t": T},
        )
    result = run(engine, RecomputeRequest(changed_since=since), now=T)
    assert sorted(set(stored_metrics(engine)["tutor_id"])) == ["T0002", "T0009"]
    assert result.tutors == 2 and result.mark is not None


# -- the run lock -------------------------------------------------------------------------------


@contextmanager
def held_elsewhere(engine: sa.Engine, name: str, seconds: float | None = None) -> Iterator[None]:
    """Hold the run lock from another thread (its own connection or file descriptor, as a
    second process would), releasing it after `seconds` or when the block ends."""
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        with run_lock(engine, name):
            taken.set()
            release.wait(seconds)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert taken.wait(10)
    try:
        yield
    finally:
        release.set()
        thread.join(10)


def test_second_run_is_skipped_while_the_lock_is_held(
    engine: sa.Engine, tables: dict[str, pl.DataFrame]
) -> None:
    save_tables(engine, tables)
    with held_elsewhere(engine, "recompute"), pytest.raises(LockHeld) as info:
        run(engine, RecomputeRequest(as_of=T))
    assert str(info.value).startswith("another tutormax recompute is running (lock held by pid ")
    assert str(info.value).endswith("skipped; pass --wait to wait for it")
    assert count_rows(engine) == 0
    with held_elsewhere(engine, "recompute"):  # another shard's lock is another lock
        assert run(engine, RecomputeRequest(as_of=T, shard=Shard(0, 2))).rows > 0


def test_wait_proceeds_when_the_lock_is_released(
    engine: sa.Engine, tables: dict[str, pl.DataFrame]
) -> None:
    save_tables(engine, tables)
    waited: list[float] = []
    started = time.monotonic()
    with held_elsewhere(engine, "recompute", seconds=0.6):
        result = run(
            engine,
            RecomputeRequest(as_of=T, wait=True),
            on_wait=lambda: waited.append(time.monotonic()),
        )
    assert len(waited) == 1 and time.monotonic() - started >= 0.6
    assert result.rows == count_rows(engine) == 72


def test_lock_names() -> None:
    assert lock_key("recompute") == lock_key("recompute") != lock_key("recompute-shard-0of2")
    assert -(2**63) <= lock_key("recompute") < 2**63
    assert lock_file("/data/tutormax.db", "recompute").as_posix() == (
        "/data/tutormax.db.recompute.lock"
    )
