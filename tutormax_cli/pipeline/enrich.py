"""Enrichment: the derived fields an analyst expects next to a session or a feedback row.

They are extra frame columns, not table columns: the contract tables stay as production
TutorMax has them (docs/metrics.md §1), `persist` writes only contract columns, `publish` carries
the derived fields in the envelope's `data` for stream consumers. Everything is computed from
the row alone, in UTC, so enriching twice gives the same values.
"""

from __future__ import annotations

import functools

import polars as pl

from tutormax_cli.metrics.partials import ON_TIME_LIMIT_MINUTES, SUCCESS_RATING
from tutormax_cli.pipeline.validate import table_name

LATE_START_MINUTES = ON_TIME_LIMIT_MINUTES
"""A start later than this is late: the same line as the on-time share of the engagement
metric (docs/metrics.md §3), so it is that rule, imported."""

POSITIVE_RATING = SUCCESS_RATING
"""A rating at least this is positive: the first-session success line, imported."""
POOR_RATING = 3

TIME_OF_DAY = ((6, "night"), (12, "morning"), (17, "afternoon"), (22, "evening"), (24, "night"))
"""Parts of the day by UTC hour: each name holds until the hour beside it."""

SESSION_COLUMNS = ("is_weekend", "time_of_day", "is_late_start")
FEEDBACK_COLUMNS = ("is_positive", "is_poor")


_PART_OF_HOUR = {hour: next(name for end, name in TIME_OF_DAY if hour < end) for hour in range(24)}


def _time_of_day(hour: pl.Expr) -> pl.Expr:
    return hour.replace_strict(_PART_OF_HOUR, return_dtype=pl.String)


@functools.cache
def _derived(table: str) -> dict[str, pl.Expr]:
    """The derived columns of `table` (none for most), built once: building them cost a batch
    of completions more than computing them."""
    if table == "sessions":
        start = pl.col("scheduled_start")
        return {
            "is_weekend": start.dt.weekday() >= 6,
            "time_of_day": _time_of_day(start.dt.hour()),
            "is_late_start": pl.col("late_start_minutes") > LATE_START_MINUTES,
        }
    if table == "student_feedback":
        rating = pl.col("overall_rating")
        return {"is_positive": rating >= POSITIVE_RATING, "is_poor": rating < POOR_RATING}
    return {}


def enrich(table: str, df: pl.DataFrame) -> pl.DataFrame:
    """`df` (valid rows from `validate`) with the derived columns of its table added; tables
    without derived fields come back unchanged."""
    derived = _derived(table_name(table))
    return df.with_columns(**derived) if derived else df
