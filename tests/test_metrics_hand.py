"""Every metric and the tier of docs/metrics.md §2–§4 against values computed by hand.

Each test runs through the polars engine, the plain-Python reference (`tests/reference.py`) and
every source of partials a recompute can use (`tests/sources.py`: raw rows from SQLite, SQL
partials in PostgreSQL, cumulative partials), and all must give the literal numbers written
here. The property tests then only have to show that they agree on random data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from tests.reference import make_rules, reference_metrics, rules_like
from tests.sources import DATABASE_SOURCES, source_compute
from tutormax_cli.errors import TiersFileError
from tutormax_cli.metrics import frames
from tutormax_cli.metrics.engine import compute_metrics
from tutormax_cli.metrics.tiers import DEFAULT_TIERS, TierRules, load_tiers

T = datetime(2026, 3, 2, 14, 5, tzinfo=UTC)
"""The default as-of instant: the worker computing at 14:05 on 2026-03-02."""
DAY = timedelta(days=1)
US = timedelta(microseconds=1)
IST = timezone(timedelta(hours=5, minutes=30))
EST = timezone(timedelta(hours=-5))

Rows = dict[tuple[str, str], dict[str, Any]]
Compute = Callable[..., Rows]


# --------------------------------------------------------------------------- builders


def session(sid: str, start: datetime, tutor: str = "T1", **fields: Any) -> dict[str, Any]:
    """A session that flags nothing by itself: held on time, not a first session."""
    row: dict[str, Any] = {
        "session_id": sid,
        "tutor_id": tutor,
        "session_number": 2,
        "scheduled_start": start,
        "actual_start": start,
        "tutor_initiated_reschedule": False,
        "no_show": False,
        "late_start_minutes": 0,
        "engagement_score": None,
        "learning_objectives_met": None,
    }
    row.update(fields)
    return row


def event(
    event_type: str, at: datetime, tutor: str = "T1", response: float | None = None
) -> dict[str, Any]:
    return {
        "tutor_id": tutor,
        "event_type": event_type,
        "event_timestamp": at,
        "response_time_minutes": response,
    }


def rating(sid: str, overall: int) -> dict[str, Any]:
    return {"session_id": sid, "overall_rating": overall}


def profile(
    n: int,
    *,
    tutor: str = "T1",
    ratings: Sequence[int] = (),
    first: int = 0,
    reschedules: int = 0,
    no_shows: int = 0,
    logins: int | None = None,
    late: Sequence[int] = (),
    scores: Sequence[float | None] = (),
    objectives: Sequence[bool | None] = (),
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """`n` sessions in the last few hours before T, shaped by counts.

    Session i is a first session when i < first, rescheduled when i < reschedules, a no-show
    when i >= n - no_shows, and carries late[i], scores[i], objectives[i], ratings[i] when
    given (0 minutes late, null, null, no feedback otherwise). `logins` defaults to n / 2,
    which with null scores and on-time sessions puts engagement at 0.4×50 + 0.4×50 + 0.2×100
    = 60, neither green nor red.
    """
    sessions = [
        session(
            f"{tutor}-s{i}",
            T - timedelta(hours=1, minutes=i),
            tutor=tutor,
            session_number=1 if i < first else 2,
            tutor_initiated_reschedule=i < reschedules,
            no_show=i >= n - no_shows,
            late_start_minutes=late[i] if i < len(late) else 0,
            engagement_score=scores[i] if i < len(scores) else None,
            learning_objectives_met=objectives[i] if i < len(objectives) else None,
        )
        for i in range(n)
    ]
    feedback = [rating(f"{tutor}-s{i}", r) for i, r in enumerate(ratings)]
    count = n // 2 if logins is None else logins
    events = [event("login", T - timedelta(minutes=30 + i), tutor) for i in range(count)]
    return sessions, feedback, events


def to_frame(rows: Iterable[Mapping[str, Any]], schema: pl.Schema) -> pl.DataFrame:
    """The frame a loader would build: every timestamp converted to UTC first."""
    converted = [
        {
            name: value.astimezone(UTC) if isinstance(value, datetime) else value
            for name, value in row.items()
        }
        for row in rows
    ]
    if not converted:
        return frames.empty(schema)
    return pl.DataFrame(converted, schema=schema)


def keyed(rows: list[dict[str, Any]]) -> Rows:
    out = {(row["tutor_id"], row["window"]): row for row in rows}
    assert len(out) == len(rows), "duplicate (tutor_id, window) rows"
    return out


def run_engine(
    sessions: Sequence[Mapping[str, Any]],
    feedback: Sequence[Mapping[str, Any]] = (),
    events: Sequence[Mapping[str, Any]] = (),
    as_of: datetime = T,
    *,
    engine_tiers: TierRules = DEFAULT_TIERS,
    reference_rules: Mapping[str, Any] | None = None,
    tutors: Iterable[str] | None = None,
) -> Rows:
    result = compute_metrics(
        to_frame(sessions, frames.SESSIONS),
        to_frame(feedback, frames.FEEDBACK),
        to_frame(events, frames.EVENTS),
        as_of,
        tiers=engine_tiers,
        tutors=tutors,
    )
    assert result.schema == frames.METRICS
    return keyed(result.to_dicts())


def run_reference(
    sessions: Sequence[Mapping[str, Any]],
    feedback: Sequence[Mapping[str, Any]] = (),
    events: Sequence[Mapping[str, Any]] = (),
    as_of: datetime = T,
    *,
    engine_tiers: TierRules = DEFAULT_TIERS,
    reference_rules: Mapping[str, Any] | None = None,
    tutors: Iterable[str] | None = None,
) -> Rows:
    # The reference takes the rows as given, in whatever UTC offset they were written.
    return keyed(
        reference_metrics(sessions, feedback, events, as_of, rules=reference_rules, tutors=tutors)
    )


@pytest.fixture(params=["engine", "reference", *DATABASE_SOURCES])
def compute(request: pytest.FixtureRequest) -> Compute:
    if request.param in DATABASE_SOURCES:
        return source_compute(request, request.param)
    return run_engine if request.param == "engine" else run_reference


def windows(rows: Rows, tutor: str, column: str) -> tuple[Any, ...]:
    """One column of a tutor's 7-day, 30-day and 90-day rows."""
    return tuple(rows[(tutor, w)][column] for w in ("7day", "30day", "90day"))


# --------------------------------------------------------------------------- §2 windows


def test_session_window_start_inclusive_end_exclusive_to_the_microsecond(
    compute: Compute,
) -> None:
    sessions = [
        session("at-7d", T - 7 * DAY),  # 7, 30, 90
        session("before-7d", T - 7 * DAY - US),  # 30, 90
        session("at-30d", T - 30 * DAY),  # 30, 90
        session("before-30d", T - 30 * DAY - US),  # 90
        session("at-90d", T - 90 * DAY),  # 90
        session("before-90d", T - 90 * DAY - US),  # none
        session("just-before-t", T - US),  # 7, 30, 90
        session("at-t", T),  # none: the window ends before t
    ]
    feedback = [
        rating("at-7d", 5),
        rating("before-7d", 1),
        rating("at-30d", 3),
        rating("before-30d", 4),
        rating("at-90d", 2),
        rating("before-90d", 1),
        rating("just-before-t", 4),
        rating("at-t", 1),
    ]
    rows = compute(sessions, feedback)
    assert list(rows) == [("T1", "7day"), ("T1", "30day"), ("T1", "90day")]
    assert windows(rows, "T1", "sessions_scheduled") == (2, 4, 6)
    # feedback follows its session into the window:
    # 7day (5+4)/2 = 4.5; 30day (5+1+3+4)/4 = 3.25; 90day (5+1+3+4+4+2)/6 = 19/6 = 3.1666… → 3.17
    assert windows(rows, "T1", "avg_rating") == (4.5, 3.25, 3.17)
    for row in rows.values():
        assert row["calculation_date"] == T
        assert row["metric_date"] == date(2026, 3, 2)


def test_event_window_start_inclusive_end_exclusive_to_the_microsecond(
    compute: Compute,
) -> None:
    sessions = [session(f"s{i}", T - timedelta(hours=1)) for i in range(4)]
    events = [
        event("message_response", T - 7 * DAY, response=10),  # 7, 30, 90
        event("message_response", T - 7 * DAY - US, response=40),  # 30, 90
        event("message_response", T - US, response=30),  # 7, 30, 90
        event("message_response", T, response=1000),  # none
        event("message_response", T - 30 * DAY, response=50),  # 30, 90
        event("message_response", T - 30 * DAY - US, response=60),  # 90
        event("message_response", T - 90 * DAY, response=70),  # 90
        event("message_response", T - 90 * DAY - US, response=5000),  # none
        event("login", T - 7 * DAY),  # 7, 30, 90
        event("login", T - 7 * DAY - US),  # 30, 90
        event("login", T - US),  # 7, 30, 90
        event("login", T),  # none
        event("login", T - 90 * DAY - US),  # none
    ]
    rows = compute(sessions, (), events)
    # 7day (10+30)/2 = 20; 30day (10+40+30+50)/4 = 32.5; 90day (130+60+70)/6 = 43.333… → 43.33
    assert windows(rows, "T1", "response_time_avg_minutes") == (20.0, 32.5, 43.33)
    # 4 sessions, null scores (50), all on time (100); logins 2 / 3 / 3:
    # 7day 0.4×(100×2/4) + 0.4×50 + 0.2×100 = 20 + 20 + 20 = 60
    # 30day, 90day 0.4×(100×3/4) + 20 + 20 = 30 + 20 + 20 = 70
    assert windows(rows, "T1", "engagement_score") == (60.0, 70.0, 70.0)


def test_tutor_with_sessions_only_just_outside_the_90_day_window_gets_no_rows(
    compute: Compute,
) -> None:
    sessions = [session("old", T - 90 * DAY - US), session("now", T)]
    events = [event("login", T - DAY), event("message_response", T - DAY, response=3.0)]
    assert compute(sessions, (), events) == {}


def test_no_sessions_at_all_gives_no_rows(compute: Compute) -> None:
    assert compute([], [], [event("login", T - DAY)]) == {}


def test_as_of_in_another_utc_offset_gives_the_same_rows(compute: Compute) -> None:
    # T = 2026-03-02T14:05Z = 2026-03-02T19:35+05:30 = 2026-03-02T09:05-05:00.
    sessions = [
        session("at-7d-ist", datetime(2026, 2, 23, 19, 35, tzinfo=IST)),  # = T − 7 d: in
        session("before-7d-ist", datetime(2026, 2, 23, 19, 34, 59, 999999, tzinfo=IST)),  # out
        session("at-30d-est", datetime(2026, 1, 31, 9, 5, tzinfo=EST)),  # = T − 30 d: in 30day
        session("at-t-ist", datetime(2026, 3, 2, 19, 35, tzinfo=IST)),  # = T: in no window
    ]
    feedback = [rating("at-7d-ist", 5), rating("before-7d-ist", 3), rating("at-t-ist", 1)]
    utc_rows = compute(sessions, feedback, (), T)
    for as_of in (T.astimezone(IST), T.astimezone(EST)):
        rows = compute(sessions, feedback, (), as_of)
        assert rows == utc_rows
    assert windows(utc_rows, "T1", "sessions_scheduled") == (1, 3, 3)
    # 7day: 5; 30day and 90day: (5+3)/2 = 4.0
    assert windows(utc_rows, "T1", "avg_rating") == (5.0, 4.0, 4.0)
    for row in utc_rows.values():
        assert row["calculation_date"] == T
        assert row["calculation_date"].utcoffset() == timedelta(0)
        assert row["metric_date"] == date(2026, 3, 2)


def test_inputs_written_in_an_offset_whose_local_date_is_a_day_later_count(
    compute: Compute,
) -> None:
    # 18:00Z written in +14:00 is 08:00 the next local day (hypothesis found SQLite's loose
    # text bound one day too tight for it)
    t = datetime(2024, 1, 1, 19, 0, tzinfo=UTC)
    plus14 = timezone(timedelta(hours=14))
    at = datetime(2024, 1, 1, 18, 0, tzinfo=UTC).astimezone(plus14)
    rows = compute([session("late-local", at)], [rating("late-local", 5)], [], t)
    assert windows(rows, "T1", "sessions_scheduled") == (1, 1, 1)
    assert windows(rows, "T1", "avg_rating") == (5.0, 5.0, 5.0)


@pytest.mark.parametrize(
    ("as_of", "expected"),
    [
        (datetime(2026, 3, 2, 14, 5, tzinfo=UTC), date(2026, 3, 2)),  # the worker at 14:05
        (datetime(2026, 3, 3, 0, 0, tzinfo=UTC), date(2026, 3, 2)),  # end-of-day of 03-02
        (datetime(2026, 3, 3, 0, 0, 0, 1, tzinfo=UTC), date(2026, 3, 3)),  # 1 µs later
        (datetime(2026, 3, 2, 23, 59, 59, 999999, tzinfo=UTC), date(2026, 3, 2)),
        (datetime(2026, 3, 1, 0, 0, tzinfo=UTC), date(2026, 2, 28)),  # 2026 is not a leap year
        (datetime(2024, 3, 1, 0, 0, tzinfo=UTC), date(2024, 2, 29)),  # 2024 is
        (datetime(2027, 1, 1, 0, 0, tzinfo=UTC), date(2026, 12, 31)),
        # local date 03-03, UTC instant 2026-03-03T00:00Z: the UTC day decides
        (datetime(2026, 3, 3, 5, 30, tzinfo=IST), date(2026, 3, 2)),
        # local date 03-02, UTC instant 2026-03-03T04:30Z
        (datetime(2026, 3, 2, 23, 30, tzinfo=EST), date(2026, 3, 3)),
        # local 03-02 14:05+05:30 is 08:35Z the same day
        (datetime(2026, 3, 2, 14, 5, tzinfo=IST), date(2026, 3, 2)),
    ],
)
def test_metric_date_is_the_utc_day_of_t_minus_one_microsecond(
    compute: Compute, as_of: datetime, expected: date
) -> None:
    rows = compute([session("s", as_of - timedelta(hours=1))], (), (), as_of)
    assert len(rows) == 3
    for row in rows.values():
        assert row["metric_date"] == expected
        assert row["calculation_date"] == as_of
        assert row["calculation_date"].utcoffset() == timedelta(0)


def test_end_of_day_snapshot_window(compute: Compute) -> None:
    as_of = datetime(2026, 3, 3, tzinfo=UTC)
    sessions = [
        session("last-instant", datetime(2026, 3, 2, 23, 59, 59, 999999, tzinfo=UTC)),  # in
        session("next-day", datetime(2026, 3, 3, tzinfo=UTC)),  # out
        session("first-instant", datetime(2026, 2, 24, tzinfo=UTC)),  # = t − 7 d: in
    ]
    rows = compute(sessions, (), (), as_of)
    assert windows(rows, "T1", "sessions_scheduled") == (2, 2, 2)
    assert {row["metric_date"] for row in rows.values()} == {date(2026, 3, 2)}


# --------------------------------------------------------------------------- §3 metrics


def test_counts_completion_reschedules_and_no_shows(compute: Compute) -> None:
    start = T - DAY
    sessions = [
        session("held", start),  # completed
        session("no-actual-start", start, actual_start=None),  # not completed
        session("no-show", start, no_show=True, actual_start=None),  # not completed
        session("no-show-with-start", start, no_show=True),  # no-show wins: not completed
        session("rescheduled", start, tutor_initiated_reschedule=True),  # completed
    ]
    row = compute(sessions)[("T1", "7day")]
    assert row["sessions_scheduled"] == 5
    assert row["sessions_completed"] == 2
    assert row["reschedule_count"] == 1
    assert row["reschedule_rate"] == 20.0  # 100 × 1/5
    assert row["no_show_count"] == 2
    assert row["no_show_rate"] == 40.0  # 100 × 2/5


def test_feedback_on_a_no_show_session_counts_in_avg_rating(compute: Compute) -> None:
    sessions = [
        session("held", T - DAY),
        session("no-show", T - DAY, no_show=True, actual_start=None),
    ]
    feedback = [
        rating("held", 5),
        rating("no-show", 2),
        rating("unknown-session", 1),  # no session: joins nothing
    ]
    row = compute(sessions, feedback)[("T1", "7day")]
    assert row["avg_rating"] == 3.5  # (5 + 2) / 2
    assert row["no_show_count"] == 1
    assert row["no_show_rate"] == 50.0  # 100 × 1/2
    assert row["sessions_completed"] == 1


def test_first_session_success_rate_excludes_first_sessions_without_feedback(
    compute: Compute,
) -> None:
    sessions = [
        session("f1", T - DAY, session_number=1),
        session("f2", T - DAY, session_number=1),
        session("f3", T - DAY, session_number=1),
        session("f4-no-feedback", T - DAY, session_number=1),
        session("later", T - DAY, session_number=2),
    ]
    feedback = [rating("f1", 5), rating("f2", 4), rating("f3", 3), rating("later", 1)]
    row = compute(sessions, feedback)[("T1", "7day")]
    assert row["first_sessions_count"] == 4
    # rated first sessions: 5, 4, 3 → 2 of 3 are ≥ 4 → 100 × 2/3 = 66.666… → 66.67
    assert row["first_session_success_rate"] == 66.67
    assert row["avg_rating"] == 3.25  # (5 + 4 + 3 + 1) / 4


def test_first_session_success_rate_is_null_when_no_first_session_has_feedback(
    compute: Compute,
) -> None:
    sessions = [
        session("f1", T - DAY, session_number=1),
        session("f2", T - DAY, session_number=1),
        session("later", T - DAY, session_number=3),
    ]
    row = compute(sessions, [rating("later", 5)])[("T1", "7day")]
    assert row["first_sessions_count"] == 2
    assert row["first_session_success_rate"] is None
    assert row["avg_rating"] == 5.0


def test_no_feedback_and_no_first_sessions_give_nulls_and_zero(compute: Compute) -> None:
    row = compute([session("s", T - DAY)])[("T1", "7day")]
    assert row["first_sessions_count"] == 0
    assert row["first_session_success_rate"] is None
    assert row["avg_rating"] is None


def test_engagement_with_all_scores_null_uses_50_for_the_session_component(
    compute: Compute,
) -> None:
    sessions, _, _ = profile(4, late=[0, 10, 11, 30])
    events = [
        event("login", T - 2 * DAY),
        event("login", T - 3 * DAY),
        event("login", T - 4 * DAY),
        event("login", T),  # outside: the window ends before t
        event("logout", T - DAY),  # not a login
        event("Login", T - DAY),  # event_type must be exactly 'login'
    ]
    row = compute(sessions, (), events)[("T1", "7day")]
    # login 100 × 3/4 = 75; session 50 (all null); on_time 100 × 2/4 = 50 (10 is on time)
    # 0.4×75 + 0.4×50 + 0.2×50 = 30 + 20 + 10 = 60
    assert row["engagement_score"] == 60.0


def test_engagement_averages_non_null_scores_and_caps_logins_at_100(compute: Compute) -> None:
    sessions, _, events = profile(4, scores=[0.9, None, 0.6, None], logins=6)
    row = compute(sessions, (), events)[("T1", "7day")]
    # login min(100, 100 × 6/4 = 150) = 100; session 100 × (0.9+0.6)/2 = 75; on_time 100
    # 0.4×100 + 0.4×75 + 0.2×100 = 40 + 30 + 20 = 90
    assert row["engagement_score"] == 90.0


def test_engagement_with_no_logins(compute: Compute) -> None:
    sessions, _, events = profile(2, scores=[0.8, 0.7], late=[0, 45], logins=0)
    row = compute(sessions, (), events)[("T1", "7day")]
    # login 0; session 100 × 0.75 = 75; on_time 100 × 1/2 = 50 → 0 + 30 + 10 = 40
    assert row["engagement_score"] == 40.0


@pytest.mark.parametrize(
    ("objectives", "expected"),
    [
        ([None, None], None),  # none known → null, never 0
        ([True, False, None, True], 66.67),  # 100 × 2/3 = 66.666… → 66.67
        ([False, None], 0.0),  # 100 × 0/1
        ([True, True, None], 100.0),
    ],
)
def test_learning_objectives_met_pct(
    compute: Compute, objectives: list[bool | None], expected: float | None
) -> None:
    sessions, _, _ = profile(len(objectives), objectives=objectives)
    assert compute(sessions)[("T1", "7day")]["learning_objectives_met_pct"] == expected


def test_response_time_averages_message_responses_that_carry_a_number(compute: Compute) -> None:
    events = [
        event("message_response", T - DAY, response=12.5),
        event("message_response", T - DAY, response=None),  # no number: ignored
        event("login", T - DAY, response=99.0),  # not a message_response: ignored
        event("message_sent", T - DAY, response=1.0),  # ignored
        event("message_response", T - 2 * DAY, response=7.5),
    ]
    row = compute([session("s", T - DAY)], (), events)[("T1", "7day")]
    assert row["response_time_avg_minutes"] == 10.0  # (12.5 + 7.5) / 2


def test_response_time_is_null_when_no_message_response_carries_the_number(
    compute: Compute,
) -> None:
    events = [
        event("message_response", T - DAY, response=None),
        event("login", T - DAY, response=5.0),
    ]
    row = compute([session("s", T - DAY)], (), events)[("T1", "7day")]
    assert row["response_time_avg_minutes"] is None


def test_events_of_other_tutors_do_not_count(compute: Compute) -> None:
    sessions = [session("a", T - DAY, tutor="A"), session("b", T - DAY, tutor="B")]
    events = [
        event("login", T - DAY, tutor="B"),
        event("message_response", T - DAY, tutor="B", response=4.0),
        event("message_response", T - DAY, tutor="nobody", response=8.0),
    ]
    rows = compute(sessions, (), events)
    assert sorted({tutor for tutor, _ in rows}) == ["A", "B"]
    assert rows[("A", "7day")]["response_time_avg_minutes"] is None
    assert rows[("B", "7day")]["response_time_avg_minutes"] == 4.0
    # A: login 0, session 50, on_time 100 → 0 + 20 + 20 = 40; B: login 100 → 40 + 20 + 20 = 80
    assert rows[("A", "7day")]["engagement_score"] == 40.0
    assert rows[("B", "7day")]["engagement_score"] == 80.0


def test_tutor_present_only_in_the_90_day_window(compute: Compute) -> None:
    sessions = [
        session("s40", T - 40 * DAY, session_number=1, learning_objectives_met=True),
        session("s60", T - 60 * DAY, learning_objectives_met=True),
    ]
    feedback = [rating("s40", 5), rating("s60", 5)]
    events = [
        event("message_response", T - 2 * DAY, response=6.0),  # in every window
        event("login", T - 50 * DAY),  # 90day only
    ]
    rows = compute(sessions, feedback, events)
    assert list(rows) == [("T1", "7day"), ("T1", "30day"), ("T1", "90day")]
    for window in ("7day", "30day"):
        row = rows[("T1", window)]
        assert row["sessions_scheduled"] == 0
        assert row["sessions_completed"] == 0
        assert row["first_sessions_count"] == 0
        assert row["reschedule_count"] == 0
        assert row["no_show_count"] == 0
        for column in (
            "avg_rating",
            "first_session_success_rate",
            "reschedule_rate",
            "no_show_rate",
            "engagement_score",
            "learning_objectives_met_pct",
        ):
            assert row[column] is None, (window, column)
        # events do not depend on sessions: E holds the message_response of T − 2 d
        assert row["response_time_avg_minutes"] == 6.0
        # the only non-null flagged metric is no_show_count = 0 (green): 1 green → Developing
        assert row["performance_tier"] == "Developing"
    row = rows[("T1", "90day")]
    assert row["sessions_scheduled"] == 2
    assert row["sessions_completed"] == 2
    assert row["avg_rating"] == 5.0  # green
    assert row["first_sessions_count"] == 1
    assert row["first_session_success_rate"] == 100.0  # green
    assert row["reschedule_rate"] == 0.0  # green
    assert row["no_show_count"] == 0  # green
    assert row["no_show_rate"] == 0.0
    # login 100 × 1/2 = 50, session 50, on_time 100 → 20 + 20 + 20 = 60: no flag
    assert row["engagement_score"] == 60.0
    assert row["learning_objectives_met_pct"] == 100.0  # green
    assert row["response_time_avg_minutes"] == 6.0
    # 5 greens, 0 reds
    assert row["performance_tier"] == "Exemplary"


def test_tutors_filter(compute: Compute) -> None:
    sessions = [session(tutor, T - DAY, tutor=tutor) for tutor in ("A", "B", "C")]
    events = [event("login", T - DAY, tutor=tutor) for tutor in ("A", "B", "C")]
    rows = compute(sessions, (), events, tutors=["B", "nobody"])
    assert list(rows) == [("B", "7day"), ("B", "30day"), ("B", "90day")]
    assert compute(sessions, (), events, tutors=[]) == {}
    assert len(compute(sessions, (), events, tutors=None)) == 9


def test_rows_are_sorted_by_tutor_then_window_with_unicode_ids(compute: Compute) -> None:
    long_id = "🎓" + "é" * 48 + "Ω"  # 50 characters
    assert len(long_id) == 50
    ids = ["日本語", "é", "a b", "Z", "ab", long_id, "Ötzi-β"]
    sessions = [session(f"s-{i}", T - DAY, tutor=tutor) for i, tutor in enumerate(ids)]
    rows = compute(sessions)
    # Code point order: Z (U+005A) < a (U+0061), and " " (U+0020) < "b" so "a b" < "ab";
    # then Ö (U+00D6) < é (U+00E9) < 日 (U+65E5) < 🎓 (U+1F393).
    expected_tutors = ["Z", "a b", "ab", "Ötzi-β", "é", "日本語", long_id]
    assert list(rows) == [(t, w) for t in expected_tutors for w in ("7day", "30day", "90day")]


# --------------------------------------------------------------------------- rounding


def test_avg_rating_tie_rounds_half_up(compute: Compute) -> None:
    sessions, feedback, _ = profile(8, ratings=[5, 5, 5, 5, 4, 4, 4, 1])
    # (20 + 12 + 1) / 8 = 33/8 = 4.125 → 4.13 (half-to-even would give 4.12)
    assert compute(sessions, feedback)[("T1", "7day")]["avg_rating"] == 4.13


def test_rates_with_ties_round_half_up(compute: Compute) -> None:
    sessions, _, _ = profile(32, reschedules=1, no_shows=3)
    row = compute(sessions)[("T1", "7day")]
    assert row["reschedule_rate"] == 3.13  # 100 × 1/32 = 3.125 → 3.13
    assert row["no_show_rate"] == 9.38  # 100 × 3/32 = 9.375 → 9.38


def test_no_show_rate_repeating_decimal(compute: Compute) -> None:
    sessions, _, _ = profile(7, no_shows=1)
    assert compute(sessions)[("T1", "7day")]["no_show_rate"] == 14.29  # 100/7 = 14.2857…


@pytest.mark.parametrize(
    ("responses", "expected"),
    [
        ([0.145], 0.15),  # the float 0.145 is 0.14499999…; its decimal value is a tie → up
        ([2.675], 2.68),  # round(2.675, 2) == 2.67 in Python; decimal rounding gives 2.68
        ([1.0, 1.01], 1.01),  # (1.0 + 1.01) / 2 = 1.005 → 1.01
        ([-0.145], -0.15),  # half away from zero, below zero too
        ([-1.0, -1.01], -1.01),  # −1.005 → −1.01
        ([0.144], 0.14),
        ([10.0, 20.0, 20.0], 16.67),  # 50/3 = 16.666…
    ],
)
def test_response_time_rounds_half_away_from_zero(
    compute: Compute, responses: list[float], expected: float
) -> None:
    events = [event("message_response", T - DAY, response=r) for r in responses]
    row = compute([session("s", T - DAY)], (), events)[("T1", "7day")]
    assert row["response_time_avg_minutes"] == expected


def near_tie_response() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    # 1.0049999999 is below the tie 1.005 by 1e-10: rounded half away from zero it is 1.00
    return [session("s", T - DAY)], [event("message_response", T - DAY, response=1.0049999999)]


def test_reference_rounds_the_whole_decimal_value_just_below_a_tie() -> None:
    sessions, events = near_tie_response()
    row = run_reference(sessions, (), events)[("T1", "7day")]
    assert row["response_time_avg_minutes"] == 1.0


@pytest.mark.xfail(
    strict=True,
    reason="engine.round2 first rounds x × 100 to 7 decimals, so a value within 5e-10 of a "
    "tie (1.0049999999) rounds up to 1.01; rounding its decimal value gives 1.00",
)
def test_engine_rounds_the_whole_decimal_value_just_below_a_tie() -> None:
    sessions, events = near_tie_response()
    row = run_engine(sessions, (), events)[("T1", "7day")]
    assert row["response_time_avg_minutes"] == 1.0


# --------------------------------------------------------------------------- §4 tiers

# Each boundary case starts from a profile whose other flagged metrics give a known number of
# greens and no red, so the tested metric alone moves the tier:
#   green → Strong (3 greens), no flag → Developing (2 greens), red → Needs Attention.
# `profile` defaults: no feedback (avg_rating, first_session_success_rate null), no
# reschedules (0 → green), no no-shows (0 → green), null objectives, engagement 60 (no flag).
BOUNDARY_CASES = [
    # avg_rating (greens besides it: reschedule_rate, no_show_count)
    ("avg 4.5 green", dict(n=20, ratings=[5, 4]), "avg_rating", 4.5, "Strong"),
    # (49×5 + 51×4)/100 = 449/100 = 4.49
    ("avg 4.49", dict(n=100, ratings=[5] * 49 + [4] * 51), "avg_rating", 4.49, "Developing"),
    # (4 + 3)/2 = 3.5 is not red
    ("avg 3.5 not red", dict(n=20, ratings=[4, 3]), "avg_rating", 3.5, "Developing"),
    # (51×3 + 49×4)/100 = 349/100 = 3.49
    (
        "avg 3.49 red",
        dict(n=100, ratings=[3] * 51 + [4] * 49),
        "avg_rating",
        3.49,
        "Needs Attention",
    ),
    # (101×4 + 99×5)/200 = 899/200 = 4.495 → rounds to 4.50 → green: tier on the rounded value
    ("avg 4.495→4.5", dict(n=200, ratings=[4] * 101 + [5] * 99), "avg_rating", 4.5, "Strong"),
    # (101×3 + 99×4)/200 = 699/200 = 3.495 → 3.50 → not red
    ("avg 3.495→3.5", dict(n=200, ratings=[3] * 101 + [4] * 99), "avg_rating", 3.5, "Developing"),
    # first_session_success_rate; its ratings also set avg_rating, kept between 3.5 and 4.5
    # 17 of 20 ≥ 4 → 85; avg (17×5 + 3×1)/20 = 88/20 = 4.4
    (
        "first 85 green",
        dict(n=20, first=20, ratings=[5] * 17 + [1] * 3),
        "first_session_success_rate",
        85.0,
        "Strong",
    ),
    # 14 of 20 → 70 (not red); avg (14×4 + 6×3)/20 = 74/20 = 3.7
    (
        "first 70 not red",
        dict(n=20, first=20, ratings=[4] * 14 + [3] * 6),
        "first_session_success_rate",
        70.0,
        "Developing",
    ),
    # 69 of 100 → 69 (red); avg (69×5 + 31×1)/100 = 376/100 = 3.76
    (
        "first 69 red",
        dict(n=100, first=100, ratings=[5] * 69 + [1] * 31),
        "first_session_success_rate",
        69.0,
        "Needs Attention",
    ),
    # 84 of 100 → 84 (no flag); avg (84×5 + 16×1)/100 = 436/100 = 4.36
    (
        "first 84",
        dict(n=100, first=100, ratings=[5] * 84 + [1] * 16),
        "first_session_success_rate",
        84.0,
        "Developing",
    ),
    # reschedule_rate (greens besides it: no_show_count and objectives 100)
    (
        "resched 10 green",
        dict(n=20, reschedules=2, objectives=[True] * 20),
        "reschedule_rate",
        10.0,
        "Strong",
    ),
    (
        "resched 15 not red",
        dict(n=20, reschedules=3, objectives=[True] * 20),
        "reschedule_rate",
        15.0,
        "Developing",
    ),
    # 100 × 31/200 = 15.5
    (
        "resched 15.5 red",
        dict(n=200, reschedules=31, objectives=[True] * 200),
        "reschedule_rate",
        15.5,
        "Needs Attention",
    ),
    # 100 × 21/200 = 10.5
    (
        "resched 10.5",
        dict(n=200, reschedules=21, objectives=[True] * 200),
        "reschedule_rate",
        10.5,
        "Developing",
    ),
    # no_show_count (greens besides it: reschedule_rate and objectives 100)
    (
        "no-show 0 green",
        dict(n=20, no_shows=0, objectives=[True] * 20),
        "no_show_count",
        0,
        "Strong",
    ),
    ("no-show 1", dict(n=20, no_shows=1, objectives=[True] * 20), "no_show_count", 1, "Developing"),
    (
        "no-show 3 not red",
        dict(n=20, no_shows=3, objectives=[True] * 20),
        "no_show_count",
        3,
        "Developing",
    ),
    (
        "no-show 4 red",
        dict(n=20, no_shows=4, objectives=[True] * 20),
        "no_show_count",
        4,
        "Needs Attention",
    ),
    # engagement_score (greens besides it: reschedule_rate, no_show_count)
    # login 100 × 20/20 = 100: 40 + 20 + 20 = 80
    ("engagement 80 green", dict(n=20, logins=20), "engagement_score", 80.0, "Strong"),
    # login 50: 20 + 20 + 20 = 60 is not red
    ("engagement 60 not red", dict(n=20, logins=10), "engagement_score", 60.0, "Developing"),
    # login 100 × 9/20 = 45: 18 + 20 + 20 = 58
    ("engagement 58 red", dict(n=20, logins=9), "engagement_score", 58.0, "Needs Attention"),
    # login 50, session 100 × 0.499875 = 49.9875, on_time 100:
    # 20 + 19.995 + 20 = 59.995 → 60.00 → not red
    (
        "engagement 59.995→60",
        dict(n=2, logins=1, scores=[0.499875, None]),
        "engagement_score",
        60.0,
        "Developing",
    ),
    # session 100 × 0.4998 = 49.98: 20 + 19.992 + 20 = 59.992 → 59.99 → red
    (
        "engagement 59.99 red",
        dict(n=2, logins=1, scores=[0.4998, None]),
        "engagement_score",
        59.99,
        "Needs Attention",
    ),
    # login 100, session 49.9875: 40 + 19.995 + 20 = 79.995 → 80.00 → green
    (
        "engagement 79.995→80",
        dict(n=2, logins=2, scores=[0.499875]),
        "engagement_score",
        80.0,
        "Strong",
    ),
    # learning_objectives_met_pct (greens besides it: reschedule_rate, no_show_count)
    (
        "objectives 90 green",
        dict(n=20, objectives=[True] * 18 + [False] * 2),
        "learning_objectives_met_pct",
        90.0,
        "Strong",
    ),
    (
        "objectives 80 not red",
        dict(n=20, objectives=[True] * 16 + [False] * 4),
        "learning_objectives_met_pct",
        80.0,
        "Developing",
    ),
    (
        "objectives 75 red",
        dict(n=20, objectives=[True] * 15 + [False] * 5),
        "learning_objectives_met_pct",
        75.0,
        "Needs Attention",
    ),
    # 100 × 179/200 = 89.5
    (
        "objectives 89.5",
        dict(n=200, objectives=[True] * 179 + [False] * 21),
        "learning_objectives_met_pct",
        89.5,
        "Developing",
    ),
]


@pytest.mark.parametrize(
    ("kwargs", "metric", "value", "tier"),
    [case[1:] for case in BOUNDARY_CASES],
    ids=[case[0] for case in BOUNDARY_CASES],
)
def test_threshold_boundaries(
    compute: Compute, kwargs: dict[str, Any], metric: str, value: float, tier: str
) -> None:
    sessions, feedback, events = profile(**kwargs)
    row = compute(sessions, feedback, events)[("T1", "7day")]
    assert row[metric] == value
    assert row["performance_tier"] == tier


RULE_CASES = [
    # avg 5 G, first 100 G, reschedule 0 G, no-show 0 G, engagement 80 G, objectives 100 G
    (
        "6 greens",
        dict(n=20, ratings=[5] * 20, first=20, logins=20, objectives=[True] * 20),
        "Exemplary",
    ),
    # the same with engagement 60 (no flag): 5 greens, 0 reds
    (
        "5 greens",
        dict(n=20, ratings=[5] * 20, first=20, logins=10, objectives=[True] * 20),
        "Exemplary",
    ),
    # the same with engagement 58 (red): 5 greens, 1 red → not Exemplary
    (
        "5 greens 1 red",
        dict(n=20, ratings=[5] * 20, first=20, logins=9, objectives=[True] * 20),
        "Needs Attention",
    ),
    # avg 3.0 R, reschedule 100 × 4/20 = 20 R, no-show 4 R, engagement 60, rest null: 3 reds
    ("3 reds", dict(n=20, ratings=[3] * 20, reschedules=4, no_shows=4), "At Risk"),
    # avg 1 R, first 0 R, reschedule 100 R, no-show 20 R, objectives 0 R,
    # engagement: login 0, session 50, on_time 0 → 0 + 20 + 0 = 20 R: 6 reds
    (
        "6 reds",
        dict(
            n=20,
            ratings=[1] * 20,
            first=20,
            reschedules=20,
            no_shows=20,
            logins=0,
            late=[30] * 20,
            objectives=[False] * 20,
        ),
        "At Risk",
    ),
    # avg 3.0 R, reschedule 20 R, no-show 0 G, objectives 100 G: 2 reds, 2 greens
    (
        "2 reds",
        dict(n=20, ratings=[3] * 20, reschedules=4, objectives=[True] * 20),
        "Needs Attention",
    ),
    # avg 5 G, first 100 G, reschedule 0 G, objectives 100 G, no-show 4 R, engagement 58 R
    (
        "4 greens 2 reds",
        dict(n=20, ratings=[5] * 20, first=20, no_shows=4, logins=9, objectives=[True] * 20),
        "Needs Attention",
    ),
    # avg 5 G, first 100 G, reschedule 0 G, objectives 100 G, no-show 1, engagement 60
    (
        "4 greens",
        dict(n=20, ratings=[5] * 20, first=20, no_shows=1, objectives=[True] * 20),
        "Strong",
    ),
    # reschedule 0 G, no-show 0 G, engagement 80 G, rest null
    ("3 greens", dict(n=20, logins=20), "Strong"),
    # reschedule 15, no-show 1, engagement 60, rest null: no flag at all
    ("no flags", dict(n=20, reschedules=3, no_shows=1), "Developing"),
    # reschedule 0 G, no-show 0 G, engagement 60
    ("2 greens", dict(n=20), "Developing"),
]


@pytest.mark.parametrize(
    ("kwargs", "tier"),
    [case[1:] for case in RULE_CASES],
    ids=[case[0] for case in RULE_CASES],
)
def test_tier_rules(compute: Compute, kwargs: dict[str, Any], tier: str) -> None:
    sessions, feedback, events = profile(**kwargs)
    rows = compute(sessions, feedback, events)
    # every session is in every window, so all three rows agree
    assert windows(rows, "T1", "performance_tier") == (tier, tier, tier)


def test_default_tiers_are_the_metrics_md_thresholds() -> None:
    assert load_tiers(None) is DEFAULT_TIERS
    assert rules_like(DEFAULT_TIERS) == make_rules()


CUSTOM_TIERS = [
    (
        "lower avg_rating bar",
        """
        [thresholds.avg_rating]
        direction = "higher"
        green = 4.0
        red = 3.0
        """,
        make_rules({"avg_rating": ("higher", Decimal("4.0"), Decimal("3.0"))}),
        # avg 4.2 is green under the file: reschedule G, no-show G, avg G → 3 greens
        "Strong",
    ),
    (
        "engagement and rules",
        """
        [thresholds.engagement_score]
        direction = "higher"
        green = 60
        red = 50

        [rules]
        exemplary_min_green = 3
        """,
        make_rules(
            {"engagement_score": ("higher", Decimal("60"), Decimal("50"))},
            exemplary_min_green=3,
        ),
        # avg 4.2 no flag; reschedule G, no-show G, engagement 60 G → 3 greens, 0 reds
        "Exemplary",
    ),
    (
        "stricter avg_rating",
        """
        [thresholds.avg_rating]
        direction = "higher"
        green = 4.8
        red = 4.25
        """,
        make_rules({"avg_rating": ("higher", Decimal("4.8"), Decimal("4.25"))}),
        # avg 4.2 < 4.25 is red
        "Needs Attention",
    ),
]


@pytest.mark.parametrize(
    ("text", "reference_rules", "tier"),
    [case[1:] for case in CUSTOM_TIERS],
    ids=[case[0] for case in CUSTOM_TIERS],
)
def test_custom_tiers_file_changes_the_tier(
    compute: Compute,
    tmp_path: Path,
    text: str,
    reference_rules: dict[str, Any],
    tier: str,
) -> None:
    # avg (4×5 + 16×4)/20 = 84/20 = 4.2; reschedule 0; no-show 0; engagement 60
    sessions, feedback, events = profile(20, ratings=[5] * 4 + [4] * 16)
    default_row = compute(sessions, feedback, events)[("T1", "7day")]
    assert default_row["avg_rating"] == 4.2
    assert default_row["performance_tier"] == "Developing"  # 2 greens under the defaults

    path = tmp_path / "tiers.toml"
    path.write_text("\n".join(line.strip() for line in text.splitlines()), encoding="utf-8")
    custom = load_tiers(path)
    assert rules_like(custom) == reference_rules
    rows = compute(sessions, feedback, events, engine_tiers=custom, reference_rules=reference_rules)
    assert windows(rows, "T1", "performance_tier") == (tier, tier, tier)
    # the rule set changes the tier only: the metric values stay the same
    assert {k: v for k, v in rows[("T1", "7day")].items() if k != "performance_tier"} == {
        k: v for k, v in default_row.items() if k != "performance_tier"
    }


BROKEN_TIERS = [
    ("not toml", "[thresholds.avg_rating\ngreen = 4.5\n"),
    ("bad direction", '[thresholds.avg_rating]\ndirection = "sideways"\ngreen = 4.5\nred = 3.5\n'),
    ("non-numeric", '[thresholds.avg_rating]\ndirection = "higher"\ngreen = "high"\nred = 3.5\n'),
    ("missing red", '[thresholds.avg_rating]\ndirection = "higher"\ngreen = 4.5\n'),
    ("overlap", '[thresholds.avg_rating]\ndirection = "higher"\ngreen = 3.0\nred = 4.0\n'),
    ("overlap lower", '[thresholds.no_show_count]\ndirection = "lower"\ngreen = 5\nred = 2\n'),
    ("unknown metric", '[thresholds.speed]\ndirection = "higher"\ngreen = 1\nred = 0\n'),
    ("thresholds not a table", "thresholds = 3\n"),
    (
        "bad rules value",
        '[thresholds.avg_rating]\ngreen = 4.5\nred = 3.5\n[rules]\nstrong_min_green = "many"\n',
    ),
    ("unknown rule", "[thresholds.avg_rating]\ngreen = 4.5\nred = 3.5\n[rules]\nbogus = 1\n"),
]


@pytest.mark.parametrize(
    "text", [case[1] for case in BROKEN_TIERS], ids=[c[0] for c in BROKEN_TIERS]
)
def test_broken_tiers_file_raises_one_line_error_naming_the_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "my-tiers.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(TiersFileError) as info:
        load_tiers(path)
    message = str(info.value)
    assert str(path) in message
    assert "\n" not in message


def test_missing_tiers_file_raises_one_line_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(TiersFileError) as info:
        load_tiers(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_undecodable_tiers_file_raises_one_line_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b"# caf\xe9\n[thresholds.avg_rating]\ngreen = 4.5\nred = 3.5\n")
    with pytest.raises(TiersFileError) as info:
        load_tiers(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)
