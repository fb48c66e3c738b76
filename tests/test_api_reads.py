"""The read queries behind the API and the CLI views, against a naive definition of "each
tutor's newest row": the indexed queries (leaderboard walk, tier counts, freshness) must
return exactly what reading every row and picking in Python returns, on both backends, with
tutors whose newest row is days old, null ratings, ties and unknown tier names."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest
import sqlalchemy as sa

from tests.helpers import recent_sample
from tutormax_cli import views
from tutormax_cli.metrics import frames
from tutormax_cli.metrics.tiers import TIER_NAMES
from tutormax_cli.store import query
from tutormax_cli.store.save import save_metrics
from tutormax_cli.store.seed import save_tables

TODAY = date(2026, 3, 2)
NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)


def metric_rows(tutors: list[str], seed: int = 3) -> pl.DataFrame:
    rng = random.Random(seed)
    rows = []
    for n, tutor in enumerate(tutors):
        lag = rng.choice((0, 0, 0, 1, 4))  # some tutors were last computed days ago
        for window in ("7day", "30day", "90day"):
            for back in range(lag, lag + 6):
                rows.append({
                    **dict.fromkeys(frames.METRICS.names()),
                    "tutor_id": tutor, "window": window, "metric_date": TODAY - timedelta(back),
                    "calculation_date": NOW - timedelta(days=back, minutes=n),
                    "sessions_scheduled": 10, "sessions_completed": rng.choice((8, 9, 10)),
                    "avg_rating": rng.choice((None, 3.5, 4.0, 4.5, 4.5, 5.0)),
                    "first_sessions_count": 1, "reschedule_count": 0, "no_show_count": 0,
                    "performance_tier": rng.choice((*TIER_NAMES, "Legendary")),
                })  # fmt: skip
    return pl.DataFrame(rows, schema=frames.METRICS)


def naive_latest(rows: pl.DataFrame, window: str, on_or_before: date | None = None) -> pl.DataFrame:
    df = rows.filter(pl.col("window") == window)
    if on_or_before is not None:
        df = df.filter(pl.col("metric_date") <= on_or_before)
    return df.filter(pl.col("metric_date") == pl.col("metric_date").max().over("tutor_id"))


@pytest.fixture
def loaded(engine: sa.Engine) -> tuple[sa.Engine, pl.DataFrame, list[str]]:
    tables = recent_sample(tutors=40)
    save_tables(engine, {"tutors": tables["tutors"]})
    tutors = tables["tutors"]["tutor_id"].to_list()
    rows = metric_rows(tutors)
    with engine.begin() as conn:
        save_metrics(conn, rows)
    active = tables["tutors"].filter(pl.col("status") == "active")["tutor_id"].to_list()
    return engine, rows, active


def test_indexed_reads_equal_the_naive_definition(
    loaded: tuple[sa.Engine, pl.DataFrame, list[str]],
) -> None:
    engine, rows, active = loaded
    names = list(views.METRICS)
    with engine.connect() as conn:
        for window in ("7day", "30day", "90day"):
            want = naive_latest(rows, window)
            got = query.latest_in_window(conn, window)
            key = ["tutor_id", "metric_date", *names, "performance_tier"]
            assert got.select(key).sort("tutor_id").equals(want.select(key).sort("tutor_id"))
            full = views.leaderboard(want)
            for limit in (1, 5, 17, 40, 100):
                top = views.leaderboard(query.leaderboard(conn, window, limit=limit))
                assert top["tutor_id"].to_list() == full["tutor_id"].head(limit).to_list()
            for tiers in (["Strong"], ["At Risk", "Exemplary"], ["Legendary"]):
                board = views.leaderboard(want, tiers=tiers, limit=7)
                top = views.leaderboard(query.leaderboard(conn, window, tiers=tiers, limit=7))
                assert top["tutor_id"].to_list() == board["tutor_id"].to_list()
            assert query.tier_counts(conn, window) == views.tier_counts(want)
            week = TODAY - timedelta(days=3)
            assert query.tier_counts(conn, window, week) == views.tier_counts(
                naive_latest(rows, window, week)
            )
        fresh = views.freshness(query.active_freshness(conn), NOW)
    for window in ("7day", "30day", "90day"):
        latest = naive_latest(rows, window).filter(pl.col("tutor_id").is_in(active))
        assert fresh[window]["tutors"] == latest.height
        assert fresh[window]["newest"] == latest["calculation_date"].max()
        assert fresh[window]["oldest"] == latest["calculation_date"].min()
