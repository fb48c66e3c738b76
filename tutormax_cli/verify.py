"""The drift audit: recompute stored rows from the raw rows and say where they differ.

Every path that writes metrics takes a shortcut somewhere — cumulative partials kept by
triggers, SQL partials, a debounced worker, a sweep that must not miss an edge. The audit takes
none: for each chosen tutor it reads the latest stored row per window (as of `--as-of`, default
now), loads that tutor's raw sessions, feedback and events (never the cumulative partials), and
recomputes every row *as of its own calculation_date* — the instant the row claims to be true
at — with the engine's partial expressions and `finalize`, the one definition of each metric.
A row that differs is drift: a missed sweep, a partial out of step, a hand edit.

All rows of a chunk are recomputed in one vectorized pass (each row joined with its tutor's
inputs and filtered to its own window), not one engine call per distinct calculation_date. On
PostgreSQL the stored rows and the raw rows are read in one REPEATABLE READ snapshot, so a
flush committing meanwhile cannot make a row look wrong.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import sqlalchemy as sa

from tutormax_cli.metrics import frames
from tutormax_cli.metrics.engine import finalize, with_ratings
from tutormax_cli.metrics.partials import polars_aggs, zero_filled
from tutormax_cli.metrics.tiers import DEFAULT_TIERS, TierRules
from tutormax_cli.metrics.windows import LONGEST_DAYS, WINDOWS, as_utc
from tutormax_cli.store.db import is_postgres
from tutormax_cli.store.load import load_metric_inputs, parse_utc

COMPARED = tuple(
    name
    for name in frames.METRICS.names()
    if name not in ("tutor_id", "window", "calculation_date")
)
"""What is compared: every stored value, `metric_date` (the key) and the tier included."""

TOLERANCE = 1e-6
"""Floats are stored rounded to 2 decimals: any difference above float noise is real."""

CHUNK = 2000
"""Tutors audited per pass (their raw rows are held in memory together)."""

SHOWN_TUTORS = 20
"""Tutors named per metric in the summary (`--json` has them all)."""


@dataclass
class MetricDrift:
    """One metric's differences: how many rows, by how much at most, whose."""

    rows: int = 0
    max_abs_diff: float | None = None
    tutors: set[str] = field(default_factory=set)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, tutors sorted."""
        return {"rows": self.rows, "max_abs_diff": self.max_abs_diff, "tutors": sorted(self.tutors)}


@dataclass
class VerifyResult:
    """What an audit checked and found."""

    as_of: datetime
    tutors: int = 0
    rows: int = 0
    rows_differing: int = 0
    metrics: dict[str, MetricDrift] = field(default_factory=dict)
    unreproducible: list[tuple[str, str]] = field(default_factory=list)
    """(tutor, window) of stored rows the raw rows give no row for (no session in 90 days)."""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Nothing differs."""
        return self.rows_differing == 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "as_of": self.as_of.isoformat(),
            "tutors": self.tutors,
            "rows": self.rows,
            "rows_differing": self.rows_differing,
            "metrics": {k: v.as_dict() for k, v in sorted(self.metrics.items())},
            "unreproducible": [{"tutor_id": t, "window": w} for t, w in self.unreproducible],
            "seconds": round(self.seconds, 3),
        }


def _tutor_filter(conn: sa.Connection, tutors: Sequence[str] | None) -> tuple[str, dict[str, Any]]:
    if tutors is None:
        return "", {}
    if is_postgres(conn):
        return " AND tutor_id = ANY(:tutors)", {"tutors": list(tutors)}
    return " AND tutor_id IN (SELECT value FROM json_each(:tutors))", {
        "tutors": json.dumps(list(tutors))
    }


def audited_tutors(conn: sa.Connection, as_of: datetime | None) -> list[str]:
    """Every tutor with a stored row (computed at or before `as_of`), sorted."""
    sql = "SELECT DISTINCT tutor_id FROM tutor_performance_metrics"
    params: dict[str, Any] = {}
    if as_of is not None:
        sql += " WHERE calculation_date <= :as_of"
        params["as_of"] = _bind_ts(conn, as_of)
    return sorted(str(r[0]) for r in conn.execute(sa.text(sql), params))


def _bind_ts(conn: sa.Connection, moment: datetime) -> Any:
    # SQLite compares text: SQLAlchemy stores 'YYYY-MM-DD HH:MM:SS.ffffff' (naive UTC)
    t = as_utc(moment)
    return t if is_postgres(conn) else t.replace(tzinfo=None).isoformat(sep=" ")


def latest_rows(
    conn: sa.Connection, tutors: Sequence[str] | None, as_of: datetime | None
) -> pl.DataFrame:
    """The newest stored row per (tutor, window) of `tutors`, computed at or before `as_of`
    (None: the newest of all), as `frames.METRICS`."""
    cols = ", ".join(f'"{c}"' for c in frames.METRICS.names())
    where, params = _tutor_filter(conn, tutors)
    if as_of is not None:
        where += " AND calculation_date <= :as_of"
        params["as_of"] = _bind_ts(conn, as_of)
    sql = (
        f"SELECT {cols} FROM (SELECT {cols}, row_number() OVER (PARTITION BY tutor_id, "
        f'"window" ORDER BY metric_date DESC, calculation_date DESC) AS rn '
        f"FROM tutor_performance_metrics WHERE 1 = 1{where}) latest WHERE rn = 1"
    )
    rows = conn.execute(sa.text(sql), params).all()
    raw = {
        c: (pl.String if c in ("calculation_date", "metric_date") else t)
        for c, t in frames.METRICS.items()
    }
    text = [tuple(v.isoformat() if hasattr(v, "isoformat") else v for v in row) for row in rows]
    df = pl.DataFrame(text, schema=raw, orient="row")
    return df.with_columns(
        parse_utc(pl.col("calculation_date")).alias("calculation_date"),
        pl.col("metric_date").str.slice(0, 10).str.to_date(),
    )


def recompute_rows(
    stored: pl.DataFrame,
    sessions: pl.DataFrame,
    feedback: pl.DataFrame,
    events: pl.DataFrame,
    tiers: TierRules = DEFAULT_TIERS,
) -> pl.DataFrame:
    """Each stored row's values recomputed from raw rows as of its own calculation_date
    (METRICS.md §2–§4); rows with no session in the tutor's 90-day window are left out."""
    lengths = pl.DataFrame(
        {"window": list(WINDOWS), "days": [int(d) for d in WINDOWS.values()]},
        schema={"window": pl.String, "days": pl.Int64},
    )
    asof = (
        stored.select("tutor_id", "window", pl.col("calculation_date").alias("t"))
        .join(lengths, on="window", how="left")
        .lazy()
    )
    keys = ["tutor_id", "window", "t"]

    def in_window(column: str, days: pl.Expr) -> pl.Expr:
        start = pl.col("t") - pl.duration(days=days)
        return (pl.col(column) >= start) & (pl.col(column) < pl.col("t"))

    s = with_ratings(sessions.lazy(), feedback.lazy())
    joined = asof.join(s, on="tutor_id", how="inner")
    session_parts = (
        joined.filter(in_window("scheduled_start", pl.col("days")))
        .group_by(keys)
        .agg(polars_aggs("sessions"))
    )
    event_parts = (
        asof.join(events.lazy(), on="tutor_id", how="inner")
        .filter(in_window("event_timestamp", pl.col("days")))
        .group_by(keys)
        .agg(polars_aggs("events"))
    )
    active = (
        asof.select("tutor_id", "t")
        .unique()
        .join(s.select("tutor_id", "scheduled_start"), on="tutor_id", how="inner")
        .filter(in_window("scheduled_start", pl.lit(LONGEST_DAYS)))
        .select("tutor_id", "t")
        .unique()
    )
    partials = (
        asof.join(active, on=["tutor_id", "t"], how="semi")
        .join(session_parts, on=keys, how="left")
        .join(event_parts, on=keys, how="left")
        .with_columns(
            zero_filled(),
            metric_date=(pl.col("t") - pl.duration(microseconds=1)).dt.date(),
            calculation_date=pl.col("t"),
        )
    )
    return finalize(partials, tiers).collect()


def compare(stored: pl.DataFrame, fresh: pl.DataFrame, result: VerifyResult) -> None:
    """Add the differences between stored rows and their recomputation to `result`."""
    key = ["tutor_id", "window"]
    both = stored.join(fresh, on=key, how="left", suffix="_fresh")
    result.rows += stored.height
    missing = both.filter(pl.col("calculation_date_fresh").is_null())
    result.unreproducible.extend(missing.select(key).iter_rows())
    differing: set[tuple[str, str]] = set(missing.select(key).iter_rows())
    present = both.filter(pl.col("calculation_date_fresh").is_not_null())
    for name in COMPARED:
        old, new = pl.col(name), pl.col(f"{name}_fresh")
        nulls = old.is_null() != new.is_null()
        if frames.METRICS[name] == pl.Float64:
            off = nulls | ((old - new).abs() > TOLERANCE).fill_null(False)
        else:
            off = nulls | (old != new).fill_null(False)
        bad = present.filter(off)
        if bad.is_empty():
            continue
        drift = result.metrics.setdefault(name, MetricDrift())
        drift.rows += bad.height
        drift.tutors.update(bad["tutor_id"].to_list())
        if frames.METRICS[name] in (pl.Float64, pl.Int64):
            diff = bad.select((old.cast(pl.Float64) - new.cast(pl.Float64)).abs().max()).item()
            if diff is not None:
                drift.max_abs_diff = max(drift.max_abs_diff or 0.0, round(float(diff), 6))
        differing.update(bad.select(key).iter_rows())
    result.rows_differing += len(differing)


def verify(
    engine: sa.Engine,
    *,
    sample: int | None = 100,
    as_of: datetime | None = None,
    tiers: TierRules = DEFAULT_TIERS,
    exclude: Collection[str] = (),
    rng: random.Random | None = None,
) -> VerifyResult:
    """Audit `sample` random tutors (None: all) with stored rows; `exclude`: tutors known to
    be in flight (a worker's buffered ones), whose rows are about to change anyway."""
    started = time.perf_counter()
    result = VerifyResult(as_of=as_utc(as_of) if as_of is not None else datetime.now(UTC))
    with engine.connect() as conn:
        if is_postgres(conn):
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        candidates = [t for t in audited_tutors(conn, as_of) if t not in exclude]
        if sample is not None and sample < len(candidates):
            candidates = sorted((rng or random.Random()).sample(candidates, sample))
        result.tutors = len(candidates)
        for i in range(0, len(candidates), CHUNK):
            chunk = candidates[i : i + CHUNK]
            stored = latest_rows(conn, chunk, as_of)
            if stored.is_empty():
                continue
            t_min = stored["calculation_date"].min()
            t_max = stored["calculation_date"].max()
            assert isinstance(t_min, datetime) and isinstance(t_max, datetime)
            inputs = load_metric_inputs(
                conn, t_min - timedelta(days=LONGEST_DAYS), t_max + timedelta(microseconds=1),
                chunk,
            )  # fmt: skip
            fresh = recompute_rows(stored, inputs.sessions, inputs.feedback, inputs.events, tiers)
            compare(stored, fresh, result)
        conn.rollback()
    result.seconds = time.perf_counter() - started
    return result
