"""Batch recomputation: load a slice, run the engine once, upsert once.

The same three phases serve `tutormax recompute --as-of`, the worker's flush and the backfill;
each phase is timed so an operator sees where the seconds went.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import polars as pl
import sqlalchemy as sa

from tutormax_cli.metrics.engine import compute_metrics
from tutormax_cli.metrics.tiers import DEFAULT_TIERS, TierRules
from tutormax_cli.metrics.windows import LONGEST_DAYS, as_utc, metric_date_of
from tutormax_cli.store.load import load_metric_inputs
from tutormax_cli.store.save import save_metrics

Progress = Callable[[str], None]
"""Called with a phase name (`load`, `compute`, `write`) as each phase starts."""


@dataclass
class RecomputeResult:
    """What a recomputation did, for the summary line, `--json` and tests."""

    as_of: datetime
    metric_date: str
    tutors: int = 0
    rows: int = 0
    rows_read: int = 0
    written: bool = False
    seconds: dict[str, float] = field(default_factory=dict)
    tiers: dict[str, dict[str, int]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready view."""
        return {
            "as_of": self.as_of.isoformat(),
            "metric_date": self.metric_date,
            "tutors": self.tutors,
            "rows": self.rows,
            "rows_read": self.rows_read,
            "written": self.written,
            "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
            "tiers": self.tiers,
        }


@contextmanager
def timed(seconds: dict[str, float], phase: str, progress: Progress | None) -> Iterator[None]:
    """Time one phase into `seconds[phase]` and announce it to `progress`."""
    if progress is not None:
        progress(phase)
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[phase] = seconds.get(phase, 0.0) + time.perf_counter() - start


def tier_counts(metrics: pl.DataFrame) -> dict[str, dict[str, int]]:
    """Tier distribution per window: {window: {tier: tutors}}."""
    counts: dict[str, dict[str, int]] = {}
    grouped = metrics.group_by("window", "performance_tier").len()
    for window, tier, n in grouped.sort("window", "performance_tier").iter_rows():
        counts.setdefault(window, {})[tier] = n
    return counts


def recompute_as_of(
    engine: sa.Engine,
    as_of: datetime,
    *,
    tutors: Sequence[str] | None = None,
    tiers: TierRules = DEFAULT_TIERS,
    write: bool = True,
    progress: Progress | None = None,
) -> tuple[RecomputeResult, pl.DataFrame]:
    """Compute (and unless `write` is false, upsert) the snapshot at `as_of`."""
    t = as_utc(as_of)
    result = RecomputeResult(as_of=t, metric_date=metric_date_of(t).isoformat())
    with engine.connect() as conn:
        with timed(result.seconds, "load", progress):
            inputs = load_metric_inputs(conn, t - timedelta(days=LONGEST_DAYS), t, tutors)
        result.rows_read = inputs.rows
        with timed(result.seconds, "compute", progress):
            metrics = compute_metrics(
                inputs.sessions, inputs.feedback, inputs.events, t, tiers, tutors
            )
        if write:
            with timed(result.seconds, "write", progress):
                save_metrics(conn, metrics)
                conn.commit()
            result.written = True
    result.rows = metrics.height
    result.tutors = metrics["tutor_id"].n_unique()
    result.tiers = tier_counts(metrics)
    return result, metrics
