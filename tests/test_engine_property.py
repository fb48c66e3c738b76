"""Property: the polars engine, and every source of partials a recompute reads (raw rows from
SQLite, SQL partials in PostgreSQL, cumulative partials), equal the plain-Python reference on
random data.

The data is drawn to hit what the contract is strict about: instants exactly on, just before
and just after the window boundaries (to the microsecond), inputs written in other UTC offsets,
nulls where docs/metrics.md allows them, feedback for a random subset of sessions, events with and
without `response_time_minutes`, non-ASCII tutor ids, random as-of instants and rule sets.
Float inputs carry few decimals (mostly 3), so many results are exact ties at the third
decimal and exercise the half-away-from-zero rounding, and none is within float noise of a tie
without being one. Floats are compared exactly: both sides round to 2 decimals.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reference import reference_metrics, rules_like
from tests.sources import DATABASE_SOURCES, source_compute
from tutormax_cli.metrics import frames
from tutormax_cli.metrics.engine import compute_metrics
from tutormax_cli.metrics.tiers import DEFAULT_TIERS, FLAGGED_METRICS, Threshold, TierRules

US = timedelta(microseconds=1)
OFFSETS = [
    UTC,
    timezone(timedelta(hours=5, minutes=30)),
    timezone(timedelta(hours=-5)),
    timezone(timedelta(hours=14)),
    timezone(timedelta(hours=-12)),
    timezone(timedelta(hours=5, minutes=45)),
    timezone(timedelta(hours=-3, minutes=-30)),
]
BOUNDARY_DAYS = (0, 7, 30, 90)
EVENT_TYPES = ["login", "login", "message_response", "message_response", "logout", "Login"]

tz_offsets = st.sampled_from(OFFSETS)
tutor_ids = st.text(
    alphabet=st.characters(
        exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"),
        include_characters=" ",
    ),
    min_size=1,
    max_size=50,
)
as_of_instants = st.one_of(
    st.datetimes(
        min_value=datetime(2024, 1, 1),
        max_value=datetime(2028, 1, 1),
        timezones=st.just(UTC),
    ),
    # end-of-day snapshots: midnight UTC
    st.dates(min_value=datetime(2024, 1, 1).date(), max_value=datetime(2028, 1, 1).date()).map(
        lambda d: datetime(d.year, d.month, d.day, tzinfo=UTC)
    ),
)
engagement_scores = st.one_of(
    st.none(),
    st.integers(0, 1000).map(lambda k: k / 1000),
    st.integers(600, 1000).map(lambda k: k / 1000),
    st.sampled_from([0.0, 1.0, 0.5, 0.125, 0.499875, 0.875]),
)
response_times = st.one_of(
    st.none(),
    # 3 decimals: one value in ten is a tie at 2 decimals (1.235), and its float is often
    # just below the tie
    st.integers(0, 20_000).map(lambda k: k / 1000),
    st.integers(0, 600).map(float),
    st.sampled_from([0.145, 2.675, 1.005, 0.001, 12.5]),
)


offsets_from_as_of = st.one_of(
    # exactly on a boundary (t, t − 7 d, t − 30 d, t − 90 d) or one microsecond off it
    st.builds(
        lambda days, us: -timedelta(days=days) + us * US,
        st.sampled_from(BOUNDARY_DAYS),
        st.sampled_from([-1, 0, 1]),
    ),
    # within a few hours of a boundary
    st.builds(
        lambda days, seconds: -timedelta(days=days, seconds=seconds),
        st.sampled_from(BOUNDARY_DAYS),
        st.integers(-3 * 3600, 3 * 3600),
    ),
    # within the 7-day window, where sessions and logins meet most
    st.integers(-7 * 86_400 * 10**6, -1).map(lambda us: us * US),
    # anywhere from before the 90-day window to after t, to the microsecond
    st.integers(-95 * 86_400 * 10**6, 2 * 86_400 * 10**6).map(lambda us: us * US),
)
"""Where an instant falls relative to the as-of instant."""


def raw_sessions(flag_weight: int) -> st.SearchStrategy[dict[str, Any]]:
    """Session fields; a reschedule or no-show comes once in `flag_weight` sessions or so."""
    flags = st.sampled_from([False] * (flag_weight - 1) + [True])
    return st.fixed_dictionaries(
        {
            "tutor": st.integers(0, 3),
            "offset": offsets_from_as_of,
            "tz": tz_offsets,
            "suffix": st.text(max_size=4),
            "session_number": st.sampled_from([1, 1, 2, 3, 12]),
            "actual_delay": st.one_of(st.none(), st.integers(-5, 60)),
            "tutor_initiated_reschedule": flags,
            "no_show": flags,
            "late_start_minutes": st.one_of(
                st.sampled_from([0, 10, 11]), st.integers(-5, 15), st.integers(-5, 60)
            ),
            "engagement_score": engagement_scores,
            "learning_objectives_met": st.one_of(st.none(), st.booleans(), st.just(True)),
            "rating": st.one_of(st.none(), st.integers(1, 5), st.integers(4, 5)),
        }
    )


# Mostly well-run tutors, so that every tier turns up and not only At Risk, and some sloppy ones.
tidy_sessions, sloppy_sessions = raw_sessions(10), raw_sessions(2)
raw_events = st.fixed_dictionaries(
    {
        "tutor": st.integers(0, 3),
        "ghost": st.sampled_from([False, False, False, False, True]),  # a tutor without rows
        "offset": offsets_from_as_of,
        "tz": tz_offsets,
        "event_type": st.sampled_from(EVENT_TYPES),
        "response_time_minutes": response_times,
    }
)


def build_sessions(
    raw: list[dict[str, Any]], tutors: list[str], as_of: datetime
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for i, r in enumerate(raw):
        start = (as_of + r["offset"]).astimezone(r["tz"])
        delay = r["actual_delay"]
        rows.append(
            {
                "session_id": f"S{i}|{r['suffix']}",
                "tutor_id": tutors[r["tutor"] % len(tutors)],
                "session_number": r["session_number"],
                "scheduled_start": start,
                "actual_start": None if delay is None else start + timedelta(minutes=delay),
                "tutor_initiated_reschedule": r["tutor_initiated_reschedule"],
                "no_show": r["no_show"],
                "late_start_minutes": r["late_start_minutes"],
                "engagement_score": r["engagement_score"],
                "learning_objectives_met": r["learning_objectives_met"],
            }
        )
    return rows


def build_events(
    raw: list[dict[str, Any]], tutors: list[str], as_of: datetime
) -> list[dict[str, Any]]:
    return [
        {
            "tutor_id": "ghost-tutor" if r["ghost"] else tutors[r["tutor"] % len(tutors)],
            "event_type": r["event_type"],
            "event_timestamp": (as_of + r["offset"]).astimezone(r["tz"]),
            "response_time_minutes": r["response_time_minutes"],
        }
        for r in raw
    ]


threshold_values = st.one_of(
    # values the metrics often take exactly, so that "≥" and ">" differ
    st.sampled_from([0.0, 1.0, 2.0, 3.0, 4.0, 4.5, 5.0, 25.0, 33.33, 50.0, 66.67, 75.0, 100.0]),
    st.sampled_from([3.5, 10.0, 15.0, 60.0, 70.0, 80.0, 85.0, 90.0]),
    st.integers(0, 100).map(float),
    st.integers(0, 10_000).map(lambda k: k / 100),
)


@st.composite
def tier_rules(draw: st.DrawFn) -> TierRules | None:
    """None for the docs/metrics.md defaults, else a random consistent rule set."""
    if draw(st.booleans()):
        return None
    thresholds = []
    for metric in FLAGGED_METRICS:
        default = DEFAULT_TIERS.threshold(metric)
        a, b = draw(threshold_values), draw(threshold_values)
        low, high = min(a, b), max(a, b)
        if default.direction == "higher":
            thresholds.append(Threshold(metric, "higher", high, low))
        else:
            thresholds.append(Threshold(metric, "lower", low, high))
    counts = {
        "exemplary_min_green": draw(st.integers(3, 6)),
        "at_risk_min_red": draw(st.integers(2, 6)),
        "needs_attention_min_red": draw(st.integers(1, 3)),
        "strong_min_green": draw(st.integers(2, 5)),
    }
    return TierRules(tuple(thresholds), **counts)


@st.composite
def datasets(draw: st.DrawFn) -> dict[str, Any]:
    tutors = draw(st.lists(tutor_ids, min_size=1, max_size=4, unique=True))
    as_of = draw(as_of_instants)
    # draw the sizes first: plain st.lists keeps most lists short
    # and often keep them very short, so that a tutor may have no session in the 90 days
    n_sessions = draw(st.one_of(st.integers(0, 4), st.integers(0, 30)))
    n_events = draw(st.one_of(st.integers(0, 6), st.integers(0, 40)))
    kind = draw(st.sampled_from([tidy_sessions, tidy_sessions, sloppy_sessions]))
    raw = draw(st.lists(kind, min_size=n_sessions, max_size=n_sessions))
    sessions = build_sessions(raw, tutors, as_of)
    feedback = [
        {"session_id": s["session_id"], "overall_rating": r["rating"]}
        for s, r in zip(sessions, raw, strict=True)
        if r["rating"] is not None
    ]
    # feedback whose session is not loaded joins nothing
    feedback += [{"session_id": "orphan", "overall_rating": 1}] * draw(st.integers(0, 1))
    selected = draw(
        st.one_of(st.none(), st.lists(st.sampled_from([*tutors, "not-a-tutor"]), max_size=3))
    )
    return {
        "sessions": sessions,
        "feedback": draw(st.permutations(feedback)),
        "events": build_events(
            draw(st.lists(raw_events, min_size=n_events, max_size=n_events)), tutors, as_of
        ),
        # the as-of instant too may be given in any offset
        "as_of": as_of.astimezone(draw(tz_offsets)),
        "tiers": draw(tier_rules()),
        "tutors": selected,
    }


def to_frame(rows: Iterable[Mapping[str, Any]], schema: pl.Schema) -> pl.DataFrame:
    """What a loader hands the engine: the schema's columns, timestamps converted to UTC."""
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


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(datasets())
def test_engine_equals_reference(data: dict[str, Any]) -> None:
    tiers = data["tiers"]
    got = compute_metrics(
        to_frame(data["sessions"], frames.SESSIONS),
        to_frame(data["feedback"], frames.FEEDBACK),
        to_frame(data["events"], frames.EVENTS),
        data["as_of"],
        tiers=DEFAULT_TIERS if tiers is None else tiers,
        tutors=data["tutors"],
    )
    assert got.schema == frames.METRICS
    expected = reference_metrics(
        data["sessions"],
        data["feedback"],
        data["events"],
        data["as_of"],
        # the defaults are the reference's own literal docs/metrics.md thresholds
        rules=None if tiers is None else rules_like(tiers),
        tutors=data["tutors"],
    )
    rows = got.to_dicts()
    assert [(r["tutor_id"], r["window"]) for r in rows] == [
        (r["tutor_id"], r["window"]) for r in expected
    ]
    for row, want in zip(rows, expected, strict=True):
        assert row == want, {k: (row[k], want[k]) for k in row if row[k] != want[k]}


@pytest.mark.parametrize("source", DATABASE_SOURCES)
def test_every_source_equals_reference(request: pytest.FixtureRequest, source: str) -> None:
    """The same property through a database: rows written as other programs write them, the
    partials computed by the source (SQL aggregates, cumulative differences, raw rows)."""
    compute = source_compute(request, source)

    @settings(
        max_examples=40,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(datasets())
    def check(data: dict[str, Any]) -> None:
        tiers = data["tiers"]
        got = compute(
            data["sessions"],
            data["feedback"],
            data["events"],
            data["as_of"],
            engine_tiers=DEFAULT_TIERS if tiers is None else tiers,
            tutors=data["tutors"],
        )
        expected = reference_metrics(
            data["sessions"],
            data["feedback"],
            data["events"],
            data["as_of"],
            rules=None if tiers is None else rules_like(tiers),
            tutors=data["tutors"],
        )
        assert list(got) == [(r["tutor_id"], r["window"]) for r in expected], data
        for want in expected:
            row = got[(want["tutor_id"], want["window"])]
            assert row == want, {k: (row[k], want[k]) for k in row if row[k] != want[k]}

    check()
