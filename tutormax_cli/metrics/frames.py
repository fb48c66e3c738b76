"""The shapes of the frames the engine reads and writes.

Every loader (SQLite, PostgreSQL, CSV, the sample generator) produces exactly these schemas, so
the engine never has to guess a dtype or a time zone. Timestamps are microsecond UTC.
"""

from __future__ import annotations

import polars as pl

from tutormax_cli.metrics.columns import METRIC_COLUMNS

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

_KINDS = {"str": pl.String(), "date": pl.Date(), "ts": TS, "int": pl.Int64(), "float": pl.Float64()}

METRICS = pl.Schema({name: _KINDS[kind] for name, kind in METRIC_COLUMNS.items()})
"""One row per (tutor_id, window, metric_date): the `tutor_performance_metrics` contract."""

FLOAT_METRICS = tuple(name for name, dtype in METRICS.items() if dtype == pl.Float64)


def empty(schema: pl.Schema) -> pl.DataFrame:
    """An empty frame of the schema, for callers that have no rows of a kind."""
    return pl.DataFrame(schema=schema)


def conform(df: pl.DataFrame, schema: pl.Schema) -> pl.DataFrame:
    """Select and cast `df` to `schema` (columns in order), so every source looks the same."""
    return df.select([pl.col(name).cast(dtype) for name, dtype in schema.items()])
