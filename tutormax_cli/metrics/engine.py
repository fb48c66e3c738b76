"""The metric engine: sessions, feedback and events of any number of tutors in, every metric of
docs/metrics.md §3 with its tier out, for all windows, in one polars pass.

Pure by design: no clock, no database, no Redis. `as_of` is an argument, so the worker, the
backfill and the tests call the same code. Every metric is first reduced to sums and counts
(`metrics/partials.py`) that add up across days and tutors; `finalize` turns them into the
stored values. The daily backfill (`rolling.py`) and the SQL paths build the same partials, so
every path shares one definition of each metric.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

import polars as pl

from tutormax_cli.metrics import frames, partials
from tutormax_cli.metrics.tiers import DEFAULT_TIERS, TierRules, tier_expr
from tutormax_cli.metrics.windows import WINDOWS, as_utc, metric_date_of


def with_ratings(sessions: pl.LazyFrame, feedback: pl.LazyFrame) -> pl.LazyFrame:
    """Sessions with the `overall_rating` of their feedback row (null when there is none)."""
    ratings = feedback.select("session_id", "overall_rating").unique("session_id", keep="last")
    return sessions.join(ratings, on="session_id", how="left")


def round2(expr: pl.Expr) -> pl.Expr:
    """Round to 2 decimals, half away from zero, on the decimal value the float stands for.

    `x * 100` carries binary noise (0.145 * 100 = 14.4999…); it is rounded to 7 decimals
    first so that values written as ties in decimal round up, as a person would round them.
    """
    scaled = (expr * 100).round(7)
    # The final round(2) only removes the float noise of the division by 100.
    return ((scaled.abs() + 0.5).floor() * scaled.sign() / 100).round(2)


def _ratio(num: str, den: str, scale: float = 100.0) -> pl.Expr:
    return pl.when(pl.col(den) > 0).then(scale * pl.col(num) / pl.col(den)).otherwise(None)


def finalize(partials: pl.LazyFrame, tiers: TierRules = DEFAULT_TIERS) -> pl.LazyFrame:
    """Partials (one row per tutor, window, as-of) -> the stored metric row, rounded and tiered.

    Expects the columns of `partials.NAMES` plus `tutor_id`, `window`, `metric_date`,
    `calculation_date`; missing counts must already be zero.
    """
    n = pl.col("n_sessions")
    login = pl.min_horizontal(pl.lit(100.0), 100.0 * pl.col("n_logins") / n)
    session = pl.when(pl.col("eng_n") > 0).then(100.0 * pl.col("eng_sum") / pl.col("eng_n"))
    on_time = 100.0 * pl.col("n_on_time") / n
    engagement = 0.4 * login + 0.4 * session.otherwise(50.0) + 0.2 * on_time
    values = {
        "sessions_scheduled": n,
        "sessions_completed": pl.col("n_completed"),
        "avg_rating": _ratio("fb_sum", "fb_n", 1.0),
        "first_session_success_rate": _ratio("first_fb_ok", "first_fb_n"),
        "first_sessions_count": pl.col("n_first"),
        "reschedule_rate": _ratio("n_reschedule", "n_sessions"),
        "reschedule_count": pl.col("n_reschedule"),
        "no_show_count": pl.col("n_no_show"),
        "no_show_rate": _ratio("n_no_show", "n_sessions"),
        "engagement_score": pl.when(n > 0).then(engagement).otherwise(None),
        "learning_objectives_met_pct": _ratio("lo_true", "lo_n"),
        "response_time_avg_minutes": _ratio("resp_sum", "resp_n", 1.0),
    }
    rounded = [
        (round2(expr) if name in frames.FLOAT_METRICS else expr).alias(name)
        for name, expr in values.items()
    ]
    return (
        partials.select("tutor_id", "window", "metric_date", "calculation_date", *rounded)
        .with_columns(tier_expr(tiers).alias("performance_tier"))
        .select([pl.col(name).cast(dtype) for name, dtype in frames.METRICS.items()])
    )


def window_partials(
    sessions: pl.DataFrame | pl.LazyFrame,
    feedback: pl.DataFrame | pl.LazyFrame,
    events: pl.DataFrame | pl.LazyFrame,
    as_of: datetime,
    tutors: Iterable[str] | None = None,
) -> pl.LazyFrame:
    """Per (tutor, window) partials as of `as_of` (columns `tutor_id`, `window`, then
    `partials.NAMES`), for every tutor with a session in the longest window (or only those of
    `tutors`). Inputs may hold rows outside the windows: they are filtered here."""
    t = as_utc(as_of)
    longest = max(WINDOWS.values())
    start = t - timedelta(days=longest)
    s = sessions.lazy().filter(pl.col("scheduled_start").is_between(start, t, closed="left"))
    if tutors is not None:
        wanted = pl.Series(list(tutors), dtype=pl.String).implode()
        s = s.filter(pl.col("tutor_id").is_in(wanted))
    s = with_ratings(s, feedback.lazy())
    e = events.lazy().filter(pl.col("event_timestamp").is_between(start, t, closed="left"))

    def per_window(frame: pl.LazyFrame, column: str) -> pl.LazyFrame:
        return pl.concat(
            [
                frame.filter(pl.col(column) >= t - timedelta(days=days)).with_columns(
                    window=pl.lit(name)
                )
                for name, days in WINDOWS.items()
            ]
        )

    keys = ["tutor_id", "window"]
    grid = s.select("tutor_id").unique().join(pl.LazyFrame({"window": list(WINDOWS)}), how="cross")
    session_parts = (
        per_window(s, "scheduled_start").group_by(keys).agg(partials.polars_aggs("sessions"))
    )
    event_parts = (
        per_window(e, "event_timestamp").group_by(keys).agg(partials.polars_aggs("events"))
    )
    return (
        grid.join(session_parts, on=keys, how="left")
        .join(event_parts, on=keys, how="left")
        .select("tutor_id", "window", *partials.zero_filled())
    )


def finalize_snapshot(
    window_parts: pl.DataFrame | pl.LazyFrame, as_of: datetime, tiers: TierRules = DEFAULT_TIERS
) -> pl.DataFrame:
    """Per (tutor, window) partials as of `as_of`, from any source -> the stored rows, sorted
    by tutor then window (7, 30, 90 days)."""
    t = as_utc(as_of)
    stamped = window_parts.lazy().with_columns(
        metric_date=pl.lit(metric_date_of(t), dtype=pl.Date),
        calculation_date=pl.lit(t, dtype=frames.TS),
    )
    order = pl.col("window").replace_strict(list(WINDOWS), list(range(len(WINDOWS))))
    return finalize(stamped, tiers).sort(pl.col("tutor_id"), order).collect()


def compute_metrics(
    sessions: pl.DataFrame | pl.LazyFrame,
    feedback: pl.DataFrame | pl.LazyFrame,
    events: pl.DataFrame | pl.LazyFrame,
    as_of: datetime,
    tiers: TierRules = DEFAULT_TIERS,
    tutors: Iterable[str] | None = None,
) -> pl.DataFrame:
    """Every tutor's metric rows for all windows as of `as_of` (docs/metrics.md §2–§4).

    A tutor gets three rows when it has a session in the longest window; `tutors`, when given,
    restricts the result to those ids. Inputs may hold rows outside the windows: they are
    filtered here, so callers may pass whatever superset they loaded.
    """
    parts = window_partials(sessions, feedback, events, as_of, tutors)
    return finalize_snapshot(parts, as_of, tiers)
