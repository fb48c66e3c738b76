"""A plain-Python reference of docs/metrics.md §2–§4, written independently of the polars engine.

One tutor, one window at a time, with loops over lists of dicts. Arithmetic is exact
(`fractions.Fraction`, each float input read as the decimal its `repr` spells), and the only
rounding is the final one, to 2 decimals half away from zero with `decimal`. The tier thresholds
of docs/metrics.md §4 are written out here literally; callers may pass others.

Input rows carry the columns of `frames.SESSIONS`, `frames.FEEDBACK` and `frames.EVENTS`;
timestamps are timezone-aware datetimes in any UTC offset (naive ones are taken as UTC).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, localcontext
from fractions import Fraction
from typing import Any

WINDOWS: tuple[tuple[str, int], ...] = (("7day", 7), ("30day", 30), ("90day", 90))
"""Window name and length in days, in the order rows are listed."""

# metric -> (direction, green, red): "higher" means >= green is green and < red is red,
# "lower" means <= green is green and > red is red (docs/metrics.md §4).
DEFAULT_THRESHOLDS: dict[str, tuple[str, Decimal, Decimal]] = {
    "avg_rating": ("higher", Decimal("4.5"), Decimal("3.5")),
    "first_session_success_rate": ("higher", Decimal("85"), Decimal("70")),
    "reschedule_rate": ("lower", Decimal("10"), Decimal("15")),
    "no_show_count": ("lower", Decimal("0"), Decimal("3")),
    "engagement_score": ("higher", Decimal("80"), Decimal("60")),
    "learning_objectives_met_pct": ("higher", Decimal("90"), Decimal("80")),
}
DEFAULT_COUNTS: dict[str, int] = {
    "exemplary_min_green": 5,
    "at_risk_min_red": 3,
    "needs_attention_min_red": 1,
    "strong_min_green": 3,
}

METRIC_COLUMNS = (
    "tutor_id",
    "window",
    "metric_date",
    "calculation_date",
    "sessions_scheduled",
    "sessions_completed",
    "avg_rating",
    "first_session_success_rate",
    "first_sessions_count",
    "reschedule_rate",
    "reschedule_count",
    "no_show_count",
    "no_show_rate",
    "engagement_score",
    "learning_objectives_met_pct",
    "response_time_avg_minutes",
    "performance_tier",
)


def utc(moment: datetime) -> datetime:
    """The same instant in UTC; a naive datetime is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def exact(value: float | int) -> Fraction:
    """The decimal value a float input stands for (`0.145` is 145/1000, not its binary twin)."""
    return Fraction(Decimal(repr(value)))


def round2(value: Fraction | None) -> Decimal | None:
    """Round an exact value to 2 decimals, half away from zero."""
    if value is None:
        return None
    with localcontext() as ctx:
        # Enough digits that a value which is not a tie can never be pushed onto one: a tie is
        # a finite decimal, and then the division below is exact.
        ctx.prec = 200
        as_decimal = Decimal(value.numerator) / Decimal(value.denominator)
        return as_decimal.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def _ratio(num: int | Fraction, den: int, scale: int = 100) -> Fraction | None:
    return None if den == 0 else Fraction(scale) * Fraction(num) / den


def _in_window(moment: datetime, start: datetime, end: datetime) -> bool:
    return start <= utc(moment) < end


def _session_metrics(
    window_sessions: Sequence[Mapping[str, Any]],
    ratings: Mapping[str, int],
    window_events: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    n = len(window_sessions)
    window_ratings = [
        ratings[s["session_id"]] for s in window_sessions if s["session_id"] in ratings
    ]
    firsts = [s for s in window_sessions if s["session_number"] == 1]
    first_rated = [ratings[s["session_id"]] for s in firsts if s["session_id"] in ratings]
    reschedules = sum(1 for s in window_sessions if s["tutor_initiated_reschedule"])
    no_shows = sum(1 for s in window_sessions if s["no_show"])
    completed = sum(
        1 for s in window_sessions if not s["no_show"] and s["actual_start"] is not None
    )

    engagement: Fraction | None = None
    if n:
        logins = sum(1 for e in window_events if e["event_type"] == "login")
        login = min(Fraction(100), Fraction(100 * logins, n))
        scores = [
            exact(s["engagement_score"])
            for s in window_sessions
            if s["engagement_score"] is not None
        ]
        session = 100 * sum(scores, Fraction(0)) / len(scores) if scores else Fraction(50)
        on_time = Fraction(
            100 * sum(1 for s in window_sessions if s["late_start_minutes"] <= 10), n
        )
        engagement = Fraction(2, 5) * login + Fraction(2, 5) * session + Fraction(1, 5) * on_time

    objectives = [s["learning_objectives_met"] for s in window_sessions]
    objectives = [met for met in objectives if met is not None]
    responses = [
        exact(e["response_time_minutes"])
        for e in window_events
        if e["event_type"] == "message_response" and e["response_time_minutes"] is not None
    ]
    return {
        "sessions_scheduled": n,
        "sessions_completed": completed,
        "avg_rating": _ratio(sum(window_ratings), len(window_ratings), 1),
        "first_session_success_rate": _ratio(
            sum(1 for r in first_rated if r >= 4), len(first_rated)
        ),
        "first_sessions_count": len(firsts),
        "reschedule_rate": _ratio(reschedules, n),
        "reschedule_count": reschedules,
        "no_show_count": no_shows,
        "no_show_rate": _ratio(no_shows, n),
        "engagement_score": engagement,
        "learning_objectives_met_pct": _ratio(sum(1 for m in objectives if m), len(objectives)),
        "response_time_avg_minutes": _ratio(sum(responses, Fraction(0)), len(responses), 1),
    }


def _as_decimal(value: Decimal | float | int) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(repr(value))


def make_rules(
    thresholds: Mapping[str, tuple[str, Decimal | float | int, Decimal | float | int]]
    | None = None,
    **counts: int,
) -> dict[str, Any]:
    """A rule set: the docs/metrics.md defaults, given thresholds and rule counts replaced."""
    merged = dict(DEFAULT_THRESHOLDS)
    for metric, (direction, green, red) in (thresholds or {}).items():
        if metric not in merged:
            raise KeyError(metric)
        merged[metric] = (direction, _as_decimal(green), _as_decimal(red))
    unknown = set(counts) - set(DEFAULT_COUNTS)
    if unknown:
        raise KeyError(sorted(unknown)[0])
    return {"thresholds": merged, **DEFAULT_COUNTS, **counts}


def rules_like(tier_rules: Any) -> dict[str, Any]:
    """The reference rule set equal to an engine `TierRules` (read through its attributes)."""
    return make_rules(
        {th.metric: (th.direction, th.green, th.red) for th in tier_rules.thresholds},
        **{name: getattr(tier_rules, name) for name in DEFAULT_COUNTS},
    )


def flag(value: Decimal | int | None, direction: str, green: Decimal, red: Decimal) -> str | None:
    """`green`, `red` or None for one rounded metric value."""
    if value is None:
        return None
    if direction == "higher":
        if value >= green:
            return "green"
        return "red" if value < red else None
    if value <= green:
        return "green"
    return "red" if value > red else None


def tier(values: Mapping[str, Decimal | int | None], rules: Mapping[str, Any] | None = None) -> str:
    """The performance tier of one row of rounded values (docs/metrics.md §4, first match wins)."""
    rules = rules if rules is not None else make_rules()
    flags = [
        flag(values[metric], direction, green, red)
        for metric, (direction, green, red) in rules["thresholds"].items()
    ]
    greens, reds = flags.count("green"), flags.count("red")
    if greens >= rules["exemplary_min_green"] and reds == 0:
        return "Exemplary"
    if reds >= rules["at_risk_min_red"]:
        return "At Risk"
    if reds >= rules["needs_attention_min_red"]:
        return "Needs Attention"
    if greens >= rules["strong_min_green"]:
        return "Strong"
    return "Developing"


def reference_metrics(
    sessions: Iterable[Mapping[str, Any]],
    feedback: Iterable[Mapping[str, Any]],
    events: Iterable[Mapping[str, Any]],
    as_of: datetime,
    rules: Mapping[str, Any] | None = None,
    tutors: Iterable[str] | None = None,
) -> list[dict[str, Any]]:
    """The metric rows as of `as_of`, one per tutor and window, sorted like the engine's.

    Floats are returned as the float of the rounded decimal, `metric_date` as a `date` and
    `calculation_date` as an aware UTC datetime.
    """
    t = utc(as_of)
    metric_date = (t - timedelta(microseconds=1)).date()
    sessions = list(sessions)
    events = list(events)
    wanted = None if tutors is None else set(tutors)
    ratings = {row["session_id"]: row["overall_rating"] for row in feedback}
    longest = max(days for _, days in WINDOWS)

    tutor_ids = {
        s["tutor_id"]
        for s in sessions
        if _in_window(s["scheduled_start"], t - timedelta(days=longest), t)
        and (wanted is None or s["tutor_id"] in wanted)
    }
    rows = []
    for tutor_id in sorted(tutor_ids):
        mine = [s for s in sessions if s["tutor_id"] == tutor_id]
        my_events = [e for e in events if e["tutor_id"] == tutor_id]
        for window, days in WINDOWS:
            start = t - timedelta(days=days)
            in_s = [s for s in mine if _in_window(s["scheduled_start"], start, t)]
            in_e = [e for e in my_events if _in_window(e["event_timestamp"], start, t)]
            values = {
                name: round2(value) if isinstance(value, Fraction) or value is None else value
                for name, value in _session_metrics(in_s, ratings, in_e).items()
            }
            row: dict[str, Any] = {
                "tutor_id": tutor_id,
                "window": window,
                "metric_date": metric_date,
                "calculation_date": t,
                **{
                    name: float(value) if isinstance(value, Decimal) else value
                    for name, value in values.items()
                },
                "performance_tier": tier(values, rules),
            }
            rows.append({name: row[name] for name in METRIC_COLUMNS})
    return rows
