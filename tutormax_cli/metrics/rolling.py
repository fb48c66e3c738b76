"""End-of-day snapshots for a range of days in one vectorized pass (docs/metrics.md §2).

An end-of-day snapshot of day D is computed as of the next midnight UTC, so its N-day window is
exactly the UTC days D−N+1 … D: bucketing inputs by UTC day loses nothing. Every metric is a
function of additive partials (`metrics/partials.py`), so the snapshot of every day is a trailing
sum of per-(tutor, day) partials followed by the engine's own `finalize()`. A 14-day backfill is
one group-by, one rolling sum per partial and window, and one finalize — not 14 as-of runs —
and it shares the engine's definition of every metric and tier.

Pure: frames in, frames out. The daily partials may come from `daily_partials` (polars, any
backend) or straight from SQL (`store.load.load_daily_partials` on PostgreSQL); `roll` does not
care which.
"""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl

from tutormax_cli.metrics import frames, partials
from tutormax_cli.metrics.engine import finalize, with_ratings
from tutormax_cli.metrics.tiers import DEFAULT_TIERS, TierRules
from tutormax_cli.metrics.windows import LONGEST_DAYS, WINDOWS

DAILY = pl.Schema(
    {
        "tutor_id": pl.String(),
        "day": pl.Date(),
        **partials.DTYPES,
    }
)
"""One row per (tutor, UTC day) with at least one session or relevant event that day."""

LOOKBACK_DAYS = LONGEST_DAYS - 1
"""Days before the first snapshot day whose inputs its longest window still covers."""


def input_range(first: date, last: date) -> tuple[date, date]:
    """The UTC days (inclusive) whose inputs the snapshots of `first` … `last` read."""
    return first - timedelta(days=LOOKBACK_DAYS), last


def daily_partials(
    sessions: pl.DataFrame | pl.LazyFrame,
    feedback: pl.DataFrame | pl.LazyFrame,
    events: pl.DataFrame | pl.LazyFrame,
) -> pl.DataFrame:
    """Per-(tutor, UTC day) partials of the inputs (schemas of `frames`), schema `DAILY`.

    Uses the engine's partial expressions, so a day's partials are exactly what the as-of
    engine would aggregate for that day's rows.
    """
    keys = ["tutor_id", "day"]
    s = with_ratings(sessions.lazy(), feedback.lazy()).with_columns(
        day=pl.col("scheduled_start").dt.date()
    )
    e = events.lazy().with_columns(day=pl.col("event_timestamp").dt.date())
    session_parts = s.group_by(keys).agg(partials.polars_aggs("sessions"))
    event_parts = e.group_by(keys).agg(partials.polars_aggs("events"))
    joined = session_parts.join(event_parts, on=keys, how="full", coalesce=True)
    return joined.select(*keys, *partials.zero_filled()).collect()


def roll(
    daily: pl.DataFrame | pl.LazyFrame,
    first: date,
    last: date,
    tiers: TierRules = DEFAULT_TIERS,
) -> pl.DataFrame:
    """The end-of-day snapshot rows of every day in `first` … `last` (inclusive).

    A (tutor, day) gets its three rows when the tutor has a session in that day's 90-day window,
    exactly as `compute_metrics(as_of=end_of_day(day))` decides. `daily` may hold days and
    tutors outside the range; they are ignored. Rows are sorted by tutor, day, window.
    """
    return end_of_day_rows(window_sums(daily, first, last), tiers)


WINDOWED = pl.Schema(
    {
        "tutor_id": pl.String(),
        "window": pl.String(),
        "metric_date": pl.Date(),
        **partials.DTYPES,
    }
)
"""The partials of each window of each end-of-day snapshot: what `end_of_day_rows` finalizes."""


def end_of_day_rows(windowed: pl.DataFrame, tiers: TierRules = DEFAULT_TIERS) -> pl.DataFrame:
    """The stored rows of end-of-day snapshots from their window partials (schema `WINDOWED`,
    from `window_sums` or straight from cumulative totals): a (tutor, day) keeps its rows when
    the tutor has a session in that day's longest window, as `compute_metrics` decides; each
    is stamped as of the next midnight. Sorted by tutor, day, window."""
    longest = max(WINDOWS, key=WINDOWS.__getitem__)
    active = windowed.filter((pl.col("window") == longest) & (pl.col("n_sessions") > 0))
    kept = windowed.lazy().join(
        active.lazy().select("tutor_id", "metric_date"), on=["tutor_id", "metric_date"], how="semi"
    )
    stamped = kept.with_columns(
        calculation_date=pl.col("metric_date").cast(frames.TS) + pl.duration(days=1)
    )
    order = pl.col("window").replace_strict(list(WINDOWS), list(range(len(WINDOWS))))
    return finalize(stamped, tiers).sort(pl.col("tutor_id"), "metric_date", order).collect()


def window_sums(daily: pl.DataFrame | pl.LazyFrame, first: date, last: date) -> pl.DataFrame:
    """Per (tutor, window, day) partials of the end-of-day snapshots of `first` … `last`, as
    trailing sums of the daily partials (schema `WINDOWED`; only tutor-days with a session in
    their longest window)."""
    start, _ = input_range(first, last)
    n_days = (last - start).days + 1
    d = daily.lazy().filter(pl.col("day").is_between(start, last)).collect()
    tutors = d.filter(pl.col("n_sessions") > 0)["tutor_id"].unique().sort()
    if tutors.is_empty():
        return pl.DataFrame(schema=WINDOWED)
    # A dense grid: slot s holds tutor s // n_days on day start + s % n_days. Every tutor has
    # the same days, so a trailing window of N slots is exactly N days, and for every snapshot
    # day (89 days in) it stays within one tutor. The daily rows are scattered into it by
    # position: no join, and the grid costs only its own columns in memory.
    d = d.filter(pl.col("tutor_id").is_in(tutors.implode()))
    numbers = pl.int_range(tutors.len(), dtype=pl.Int64, eager=True)
    tutor_no = pl.col("tutor_id").replace_strict(tutors, numbers)
    at = d.select(tutor_no * n_days + (pl.col("day") - start).dt.total_days()).to_series()
    size = tutors.len() * n_days
    grid = pl.DataFrame(
        [
            pl.zeros(size, dtype=DAILY[p], eager=True).alias(p).scatter(at, d[p])
            for p in partials.NAMES
        ]
    ).with_columns(slot=pl.int_range(size, dtype=pl.Int64))
    del d, at
    grid = grid.with_columns(tutor=pl.col("slot") // n_days, offset=pl.col("slot") % n_days)

    def window_sum(p: str, n: int) -> pl.Expr:
        total = pl.col(p).rolling_sum(n, min_samples=1)
        # Counts are exact whatever the window crosses. Float sums are compensated
        # (unlike a difference of cumulative sums) but would carry the previous tutor's
        # rounding residue, so they are rolled within each tutor.
        return total.over("tutor") if p in partials.FLOAT_NAMES else total

    # Only the snapshot days, and of them (for less work; `end_of_day_rows` applies the same
    # rule) those with a session in their longest window.
    keep = (pl.col("offset") >= LOOKBACK_DAYS) & (window_sum("n_sessions", LONGEST_DAYS) > 0)
    grid = grid.with_columns(keep.alias("keep"))
    per_window = []
    for name, n in WINDOWS.items():
        # one window at a time: peak memory is the grid plus one window's sums
        sums = grid.select(
            "tutor", "offset", "keep", *[window_sum(p, n).alias(p) for p in partials.NAMES]
        ).filter("keep")
        sums = sums.with_columns(tutor_id=tutors.gather(sums["tutor"]))
        per_window.append(
            sums.select(
                "tutor_id",
                pl.lit(name).alias("window"),
                (pl.lit(start) + pl.duration(days=pl.col("offset")))
                .cast(pl.Date)
                .alias("metric_date"),
                *partials.NAMES,
            )
        )
    return pl.concat(per_window)


def compute_daily(
    sessions: pl.DataFrame | pl.LazyFrame,
    feedback: pl.DataFrame | pl.LazyFrame,
    events: pl.DataFrame | pl.LazyFrame,
    first: date,
    last: date,
    tiers: TierRules = DEFAULT_TIERS,
) -> pl.DataFrame:
    """End-of-day snapshots of `first` … `last` from raw inputs: equal, row for row, to
    `compute_metrics(…, as_of=end_of_day(day))` for every day in the range."""
    return roll(daily_partials(sessions, feedback, events), first, last, tiers)
