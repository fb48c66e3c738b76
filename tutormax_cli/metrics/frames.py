"""The shapes of the frames the engine reads and writes.

Every loader (SQLite, PostgreSQL, CSV, the sample generator) produces exactly these schemas, so
the engine never has to guess a dtype or a time zone. Timestamps are microsecond UTC.
"""

from __future__ import annotations

import polars as pl

TS = pl.Datetime("us", "UTC")

SESSIONS = pl.Schema(
    {
        "session_id": pl.String(),
        "tutor_id": pl.String(),
        "session_number": pl.Int64(),
        "scheduled_start": TS,
        "actual_start": TS,
        "tutor_initiated_reschedule": pl.Boolean(),
        "no_show": pl.Boolean(),
        "late_start_minutes": pl.Int64(),
        "engagement_score": pl.Float64(),
        "learning_objectives_met": pl.Boolean(),
    }
)
"""The session columns the metrics need (docs/metrics.md §1 `sessions`)."""

FEEDBACK = pl.Schema({"session_id": pl.String(), "overall_rating": pl.Int64()})
"""Feedback joins its session on `session_id`; the session's tutor is the one that counts."""

EVENTS = pl.Schema(
    {
        "tutor_id": pl.String(),
        "event_type": pl.String(),
        "event_timestamp": TS,
        "response_time_minutes": pl.Float64(),
    }
)
"""Only `partials.RELEVANT_EVENT_TYPES` matter. `response_time_minutes` is
`metadata.response_time_minutes` when it is a JSON number, else null."""

METRICS = pl.Schema(
    {
        "tutor_id": pl.String(),
        "window": pl.String(),
        "metric_date": pl.Date(),
        "calculation_date": TS,
        "sessions_scheduled": pl.Int64(),
        "sessions_completed": pl.Int64(),
        "avg_rating": pl.Float64(),
        "first_session_success_rate": pl.Float64(),
        "first_sessions_count": pl.Int64(),
        "reschedule_rate": pl.Float64(),
        "reschedule_count": pl.Int64(),
        "no_show_count": pl.Int64(),
        "no_show_rate": pl.Float64(),
        "engagement_score": pl.Float64(),
        "learning_objectives_met_pct": pl.Float64(),
        "response_time_avg_minutes": pl.Float64(),
        "performance_tier": pl.String(),
    }
)
"""One row per (tutor_id, window, metric_date): the `tutor_performance_metrics` contract."""

FLOAT_METRICS = tuple(name for name, dtype in METRICS.items() if dtype == pl.Float64)


def empty(schema: pl.Schema) -> pl.DataFrame:
    """An empty frame of the schema, for callers that have no rows of a kind."""
    return pl.DataFrame(schema=schema)


def conform(df: pl.DataFrame, schema: pl.Schema) -> pl.DataFrame:
    """Select and cast `df` to `schema` (columns in order), so every source looks the same."""
    return df.select([pl.col(name).cast(dtype) for name, dtype in schema.items()])
