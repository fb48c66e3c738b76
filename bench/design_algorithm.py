"""The design document's algorithm, for comparison: per tutor, per window, three queries
(sessions, feedback, events) and Python arithmetic, then one upsert of three rows.

This is `PerformanceCalculator.calculate_metrics(tutor_id, window)` as
realtime_metrics_architecture.md describes it, written straightforwardly and correctly (same
docs/metrics.md values), so the benchmarks compare algorithms, not bugs.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import sqlalchemy as sa

from tutormax_cli.metrics.tiers import DEFAULT_TIERS
from tutormax_cli.metrics.windows import WINDOWS, metric_date_of
from tutormax_cli.store.save import save_metrics


def _r(x: float | None) -> float | None:
    if x is None:
        return None
    return float(Decimal(repr(x)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def calculate_metrics(conn: sa.Connection, tutor_id: str, days: int, t: datetime) -> dict[str, Any]:
    """One tutor, one window: three queries, Python arithmetic."""
    start = t - timedelta(days=days)
    sessions = conn.execute(
        sa.text(
            "SELECT session_id, session_number, actual_start, no_show, tutor_initiated_reschedule, "
            "late_start_minutes, engagement_score, learning_objectives_met FROM sessions "
            "WHERE tutor_id = :t AND scheduled_start >= :s AND scheduled_start < :e"
        ),
        {"t": tutor_id, "s": start, "e": t},
    ).all()
    feedback = conn.execute(
        sa.text(
            "SELECT f.overall_rating, s.session_number FROM student_feedback f JOIN sessions s "
            "ON s.session_id = f.session_id WHERE s.tutor_id = :t AND s.scheduled_start >= :s "
            "AND s.scheduled_start < :e"
        ),
        {"t": tutor_id, "s": start, "e": t},
    ).all()
    evts = conn.execute(
        sa.text(
            "SELECT event_type, metadata FROM tutor_events WHERE tutor_id = :t "
            "AND event_timestamp >= :s AND event_timestamp < :e"
        ),
        {"t": tutor_id, "s": start, "e": t},
    ).all()
    n = len(sessions)
    ratings = [f[0] for f in feedback]
    first_rated = [f[0] for f in feedback if f[1] == 1]
    resched = sum(1 for s in sessions if s.tutor_initiated_reschedule)
    noshow = sum(1 for s in sessions if s.no_show)
    eng = [s.engagement_score for s in sessions if s.engagement_score is not None]
    lo = [s.learning_objectives_met for s in sessions if s.learning_objectives_met is not None]
    logins = sum(1 for e in evts if e.event_type == "login")
    responses = []
    for e in evts:
        if e.event_type != "message_response":
            continue
        meta = e.metadata if not isinstance(e.metadata, str) else json.loads(e.metadata)
        value = (meta or {}).get("response_time_minutes")
        if isinstance(value, int | float) and not isinstance(value, bool):
            responses.append(float(value))
    engagement = None
    if n:
        login = min(100.0, 100.0 * logins / n)
        session = 100.0 * sum(eng) / len(eng) if eng else 50.0
        on_time = 100.0 * sum(1 for s in sessions if s.late_start_minutes <= 10) / n
        engagement = 0.4 * login + 0.4 * session + 0.2 * on_time
    row: dict[str, Any] = {
        "sessions_scheduled": n,
        "sessions_completed": sum(
            1 for s in sessions if not s.no_show and s.actual_start is not None
        ),
        "avg_rating": _r(sum(ratings) / len(ratings)) if ratings else None,
        "first_session_success_rate": _r(
            100.0 * sum(1 for r in first_rated if r >= 4) / len(first_rated)
        )
        if first_rated
        else None,
        "first_sessions_count": sum(1 for s in sessions if s.session_number == 1),
        "reschedule_rate": _r(100.0 * resched / n) if n else None,
        "reschedule_count": resched,
        "no_show_count": noshow,
        "no_show_rate": _r(100.0 * noshow / n) if n else None,
        "engagement_score": _r(engagement),
        "learning_objectives_met_pct": _r(100.0 * sum(lo) / len(lo)) if lo else None,
        "response_time_avg_minutes": _r(sum(responses) / len(responses)) if responses else None,
    }
    greens = reds = 0
    for th in DEFAULT_TIERS.thresholds:
        flag = th.flag_of(row[th.metric])
        greens += flag == "green"
        reds += flag == "red"
    row["performance_tier"] = DEFAULT_TIERS.tier_of(greens, reds)
    return row


def recompute_tutor(engine: sa.Engine, tutor_id: str, t: datetime) -> None:
    """The design's per-event work: three windows, nine queries, one write of three rows."""
    import polars as pl

    from tutormax_cli.metrics import frames

    with engine.connect() as conn:
        rows = []
        for window, days in WINDOWS.items():
            m = calculate_metrics(conn, tutor_id, days, t)
            rows.append(
                {"tutor_id": tutor_id, "window": window, "metric_date": metric_date_of(t),
                 "calculation_date": t, **m}
            )  # fmt: skip
        save_metrics(conn, pl.DataFrame(rows, schema=frames.METRICS))
        conn.commit()
