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
        # a tutor's newest rows, several tutors in one read: each tutor's newest metric date
        # over all windows (lags differ per tutor), absent without rows, unknown ids absent
        asked = [*rows["tutor_id"].unique().sort().to_list()[:7], "NOBODY"]
        together = query.latest_for_tutors_dicts(conn, asked)
        assert query.known_tutors(conn, asked) == set(asked) - {"NOBODY"}
    assert set(together) == set(asked) - {"NOBODY"}
    for tutor in asked[:-1]:
        mine = rows.filter(pl.col("tutor_id") == tutor)
        newest = mine.filter(pl.col("metric_date") == pl.col("metric_date").max())
        assert sorted(
            (r["window"], r["metric_date"], r["avg_rating"]) for r in together[tutor]
        ) == [
            (r["window"], r["metric_date"], r["avg_rating"])
            for r in newest.sort("window").to_dicts()
        ]
    for window in ("7day", "30day", "90day"):
        latest = naive_latest(rows, window).filter(pl.col("tutor_id").is_in(active))
        assert fresh[window]["tutors"] == latest.height
        assert fresh[window]["newest"] == latest["calculation_date"].max()
        assert fresh[window]["oldest"] == latest["calculation_date"].min()


def test_postgres_reads_are_served_by_the_contract_indexes(
    loaded: tuple[sa.Engine, pl.DataFrame, list[str]],
) -> None:
    """Each statement of the leaderboard, tier counts, freshness and newest date has a plan
    without a scan of the metrics table or a sort of its rows (sequential scans disabled, so
    the planner picks an index whenever one can serve it, and falls back to a scan when none
    can): the indexes of migration 0004 are what serves them."""
    engine, _rows, _active = loaded
    if engine.dialect.name != "postgresql":
        pytest.skip("plans are PostgreSQL's")
    issued: list[tuple[str, object]] = []

    def record(_conn: object, _cursor: object, statement: str, params: object, *_: object) -> None:
        if statement.startswith("SELECT") and "tutor_performance_metrics" in statement:
            issued.append((statement, params))

    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE tutor_performance_metrics")  # as in production
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        with engine.connect() as conn:
            query.leaderboard(conn, "30day", limit=5)
            query.leaderboard(conn, "30day", tiers=["At Risk"], limit=3)
            query.tier_counts(conn, "30day")
            query.tier_counts(conn, "30day", TODAY - timedelta(days=3))
            query.newest_metric_date(conn, "30day")
            query.active_freshness(conn)
            conn.exec_driver_sql("SET enable_seqscan = off")
            plans = []
            for statement, params in list(issued):
                explained = conn.exec_driver_sql(f"EXPLAIN {statement}", params)  # type: ignore[arg-type]
                lines = explained.scalars().all()
                plans.append((statement, "\n".join(lines)))
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    assert len(plans) >= 6
    for statement, plan in plans:
        assert "Seq Scan on tutor_performance_metrics" not in plan, (statement, plan)
        if "DISTINCT ON" in statement:  # in the index's order: no sort, no table pages
            index = "ix_tutor_performance_metrics_window_latest"
            assert f"Index Only Scan Backward using {index}" in plan, (statement, plan)
        if "max(metric_date)" in statement:
            index = "ix_tutor_performance_metrics_window_metric_date"
            assert f"Index Only Scan Backward using {index}" in plan, (statement, plan)
        if "LIMIT" in statement:
            assert "Index Scan Backward using ix_tutor_performance_metrics_ranking" in plan


def test_postgres_reads_several_tutors_newest_rows_by_index_probes(
    loaded: tuple[sa.Engine, pl.DataFrame, list[str]],
) -> None:
    """Several tutors' newest rows (the API's grouped metric reads) are one backward probe of
    the (tutor_id, metric_date) index per tutor, with the planner left to choose: joined back
    by an aggregate instead, PostgreSQL picked a scan of the whole table from ~16 ids."""
    engine, rows, _active = loaded
    if engine.dialect.name != "postgresql":
        pytest.skip("plans are PostgreSQL's")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE tutor_performance_metrics")
    issued: list[tuple[str, object]] = []

    def record(_conn: object, _cursor: object, statement: str, params: object, *_: object) -> None:
        issued.append((statement, params))

    tutors = rows["tutor_id"].unique().to_list()
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        with engine.connect() as conn:
            query.latest_for_tutors_dicts(conn, tutors)
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    ((statement, params),) = issued
    with engine.connect() as conn:
        plan = "\n".join(conn.exec_driver_sql(f"EXPLAIN {statement}", params).scalars())  # type: ignore[arg-type]
    assert "Seq Scan on tutor_performance_metrics" not in plan, plan
    index = "ix_tutor_performance_metrics_tutor_id_metric_date"
    assert f"Index Only Scan Backward using {index}" in plan, plan
