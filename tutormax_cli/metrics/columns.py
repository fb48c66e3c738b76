"""The columns of a metric row (`tutor_performance_metrics`, docs/metrics.md §2) in contract
order, each with its kind: plain data, so that reading a few rows (the CLI's `show` and
`status`) needs no polars. `frames.METRICS` is built from this."""

from __future__ import annotations

from typing import Literal

Kind = Literal["str", "date", "ts", "int", "float"]
"""`ts` is a microsecond UTC timestamp (`frames.TS`)."""

METRIC_COLUMNS: dict[str, Kind] = {
    "tutor_id": "str",
    "window": "str",
    "metric_date": "date",
    "calculation_date": "ts",
    "sessions_scheduled": "int",
    "sessions_completed": "int",
    "avg_rating": "float",
    "first_session_success_rate": "float",
    "first_sessions_count": "int",
    "reschedule_rate": "float",
    "reschedule_count": "int",
    "no_show_count": "int",
    "no_show_rate": "float",
    "engagement_score": "float",
    "learning_objectives_met_pct": "float",
    "response_time_avg_minutes": "float",
    "performance_tier": "str",
}
