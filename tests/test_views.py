"""The operator's views: leaderboard, tier distribution, trends, explanations and what-if tiers,
as library functions on frames and as commands against SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from tests.helpers import T, sample
from tutormax_cli import views
from tutormax_cli.cli.app import app
from tutormax_cli.errors import UsageError
from tutormax_cli.metrics import frames
from tutormax_cli.metrics import tiers as tiers_module
from tutormax_cli.metrics.tiers import DEFAULT_TIERS, load_tiers, tier_expr
from tutormax_cli.recompute import recompute_as_of
from tutormax_cli.store.query import active_freshness, latest_in_window
from tutormax_cli.store.seed import save_tables

STRICT = """
[thresholds.avg_rating]
green = 4.8
red = 4.2
[rules]
at_risk_min_red = 2
"""


def row(tutor: str, tier: str, **metrics: Any) -> dict[str, Any]:
    base: dict[str, Any] = dict.fromkeys(frames.METRICS.names())
    base.update(
        tutor_id=tutor,
        window="30day",
        metric_date=date(2026, 3, 2),
        calculation_date=T,
        sessions_completed=10,
        performance_tier=tier,
    )
    base.update(metrics)
    return base


def frame(*rows: dict[str, Any]) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=frames.METRICS)


def test_leaderboard_orders_filters_and_limits() -> None:
    latest = frame(
        row("T3", "Strong", avg_rating=4.9),
        row("T1", "At Risk", avg_rating=3.0, no_show_count=5),
        row("T2", "Exemplary", avg_rating=4.6),
        row("T4", "Strong", avg_rating=None),
        row("T5", "Strong", avg_rating=4.95),
    )
    assert views.leaderboard(latest)["tutor_id"].to_list() == ["T2", "T5", "T3", "T4", "T1"]
    by_rating = views.leaderboard(latest, sort="avg_rating", descending=True, limit=3)
    assert by_rating["tutor_id"].to_list() == ["T5", "T3", "T2"]
    assert by_rating["rank"].to_list() == [1, 2, 3]
    assert views.leaderboard(latest, sort="avg_rating")["tutor_id"].to_list()[-1] == "T4"
    strong = views.leaderboard(latest, tiers=["Strong"])
    assert strong["tutor_id"].to_list() == ["T5", "T3", "T4"]
    with pytest.raises(UsageError, match="cannot sort by 'nope'"):
        views.leaderboard(latest, sort="nope")


def test_cli_window_choices_are_the_windows() -> None:
    from typing import get_args

    from tutormax_cli.cli.show import DEFAULT_WINDOW, WindowName
    from tutormax_cli.metrics.windows import WINDOWS

    assert get_args(WindowName) == tuple(WINDOWS) and DEFAULT_WINDOW in WINDOWS


def test_tier_names_accept_any_case() -> None:
    assert views.tier_names(["at risk", "STRONG"]) == ["At Risk", "Strong"]
    assert views.tier_names(None) is None
    with pytest.raises(UsageError, match="unknown tier 'Great': use one of Exemplary"):
        views.tier_names(["Great"])


def test_tier_distribution_against_earlier() -> None:
    now = frame(row("T1", "Strong"), row("T2", "Strong"), row("T3", "At Risk"))
    then = frame(row("T1", "Developing"), row("T2", "Strong"))
    dist = {r["tier"]: r for r in views.tier_distribution(now, then).to_dicts()}
    assert list(dist) == ["Exemplary", "Strong", "Developing", "Needs Attention", "At Risk"]
    assert (dist["Strong"]["tutors"], dist["Strong"]["earlier"], dist["Strong"]["change"]) == (
        2,
        1,
        1,
    )
    assert dist["Developing"]["change"] == -1 and dist["At Risk"]["change"] == 1
    assert dist["Strong"]["share_pct"] == 66.7
    unknown = views.tier_distribution(now, None).to_dicts()
    assert all(r["earlier"] is None and r["change"] is None for r in unknown)


def test_explain_names_the_deciding_flags_and_sessions() -> None:
    r = row(
        "T1",
        "At Risk",
        window="7day",
        avg_rating=3.2,
        no_show_count=4,
        engagement_score=55.0,
        learning_objectives_met_pct=95.0,
    )
    sessions = pl.DataFrame(
        {
            "session_id": ["S1", "S2", "S3", "S4"],
            "scheduled_start": [T - timedelta(days=d) for d in (1, 2, 3, 4)],
            "no_show": [True, False, False, True],
            "tutor_initiated_reschedule": [False, True, False, False],
            "overall_rating": [None, 2, 5, None],
            "session_number": [1, 1, 1, 2],
        }
    )
    ex = views.explain(r, sessions, DEFAULT_TIERS)
    assert ex.rule == "3 red flags (≥ 3) → At Risk"
    assert ex.reds == ex.decisive == ["avg_rating", "no_show_count", "engagement_score"]
    assert ex.greens == ["learning_objectives_met_pct"]
    assert ex.flags["avg_rating"] == {"value": 3.2, "flag": "red", "rule": "< 3.5"}
    assert [s["session_id"] for s in ex.sessions["no_shows"]] == ["S1", "S4"]
    assert [s["session_id"] for s in ex.sessions["lowest_ratings"]] == ["S2"]
    assert [s["session_id"] for s in ex.sessions["reschedules"]] == ["S2"]
    assert [s["session_id"] for s in ex.sessions["failed_first_sessions"]] == ["S2"]
    assert ex.counts == {
        "sessions": 4,
        "no_shows": 2,
        "lowest_ratings": 1,
        "reschedules": 1,
        "failed_first_sessions": 1,
    }
    assert not ex.stored_tier_differs
    calm = views.explain(row("T2", "Developing", avg_rating=4.0), sessions.head(0), DEFAULT_TIERS)
    assert calm.rule == "0 green flags and no red → Developing" and calm.decisive == []


def test_trend_fills_missing_days() -> None:
    history = frame(
        row("T1", "Strong", metric_date=date(2026, 3, 2), avg_rating=4.5),
        row("T1", "Strong", metric_date=date(2026, 2, 28), avg_rating=4.1),
        row("T1", "Strong", metric_date=date(2026, 3, 2), window="7day", avg_rating=1.0),
    )
    trend = views.trend(history, "30day", days=4)
    assert trend["dates"] == [
        date(2026, 2, 27),
        date(2026, 2, 28),
        date(2026, 3, 1),
        date(2026, 3, 2),
    ]
    assert trend["metrics"]["avg_rating"] == [None, 4.1, None, 4.5]
    assert views.trend(history, "90day")["dates"] == []


def test_simulate_moves_tutors_without_writing(tmp_path: Path) -> None:
    latest = frame(
        row("T1", "Exemplary", avg_rating=4.6, first_session_success_rate=90.0,
            reschedule_rate=5.0, no_show_count=0, engagement_score=85.0),
        row("T2", "Needs Attention", avg_rating=4.0, no_show_count=5),
        row("T3", "Strong", avg_rating=4.9, reschedule_rate=1.0, no_show_count=0),
    )  # fmt: skip
    path = tmp_path / "strict.toml"
    path.write_text(STRICT)
    sim = views.simulate(latest, load_tiers(path), "30day")
    moves = {
        r["tutor_id"]: (r["current"], r["simulated"], r["direction"]) for r in sim.moves.to_dicts()
    }
    assert moves == {
        "T1": ("Exemplary", "Strong", "down"),
        "T2": ("Needs Attention", "At Risk", "down"),
    }
    dist = {
        r["tier"]: (r["current"], r["simulated"], r["change"]) for r in sim.distribution.to_dicts()
    }
    assert dist["Exemplary"] == (1, 0, -1) and dist["Strong"] == (1, 2, 1)
    assert dist["Needs Attention"] == (1, 0, -1) and dist["At Risk"] == (0, 1, 1)
    assert views.simulate(latest.head(1), DEFAULT_TIERS, "30day").moves.is_empty()


# -- against the databases ---------------------------------------------------------------------


def cli(db_url: str, *args: str) -> Any:
    return CliRunner().invoke(app, ["--database-url", db_url, *args])


@pytest.fixture
def history(engine: sa.Engine) -> sa.Engine:
    """Twelve tutors with daily snapshots today, yesterday and a week ago."""
    save_tables(engine, sample(tutors=12, days=100))
    for days in (7, 1, 0):
        recompute_as_of(engine, T - timedelta(days=days))
    return engine


def sql_rows(engine: sa.Engine, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(sql), params)]


def test_views_on_the_database(history: sa.Engine, db_url: str, tmp_path: Path) -> None:
    engine = history
    at_risk = cli(db_url, "show", "tutors", "--tier", "At Risk", "--window", "30day", "--json")
    assert at_risk.exit_code == 0, at_risk.output
    listed = json.loads(at_risk.stdout)
    expected = sql_rows(
        engine,
        "SELECT tutor_id FROM tutor_performance_metrics m WHERE \"window\" = '30day' "
        "AND performance_tier = 'At Risk' AND metric_date = (SELECT max(metric_date) "
        "FROM tutor_performance_metrics x WHERE x.tutor_id = m.tutor_id "
        "AND x.\"window\" = '30day')",
    )
    assert sorted(d["tutor_id"] for d in listed) == sorted(r[0] for r in expected)
    assert listed and all(
        d["performance_tier"] == "At Risk" and d["window"] == "30day" for d in listed
    )
    assert {"avg_rating", "no_show_count", "engagement_score", "metric_date"} <= set(listed[0])

    everyone = json.loads(cli(db_url, "show", "tutors", "--json").stdout)
    assert len(everyone) == 12 and {d["metric_date"] for d in everyone} == {"2026-03-02"}
    table = cli(db_url, "show", "tutors", "--limit", "3")
    assert table.exit_code == 0 and everyone[0]["tutor_id"] in table.stdout
    assert table.stderr == "… 9 more tutors (--limit N or --all to see them)\n"
    assert everyone[3]["tutor_id"] not in table.stdout
    whole = cli(db_url, "show", "tutors", "--all")
    assert whole.stderr == "" and all(d["tutor_id"] in whole.stdout for d in everyone)
    assert cli(db_url, "show", "tutors", "--all", "--limit", "3").exit_code == 2

    tiers = json.loads(cli(db_url, "show", "tiers", "--window", "7day", "--json").stdout)
    assert tiers["metric_date"] == "2026-03-02" and tiers["compared_with"] == "2026-02-23"
    counts = dict(
        sql_rows(
            engine,
            "SELECT performance_tier, count(*) FROM tutor_performance_metrics "
            "WHERE \"window\" = '7day' AND metric_date = :d GROUP BY performance_tier",
            d=date(2026, 2, 23),
        )
    )
    for r in tiers["tiers"]:
        assert r["earlier"] == counts.get(r["tier"], 0)
    assert sum(r["tutors"] for r in tiers["tiers"]) == 12
    chart = cli(db_url, "show", "tiers")
    assert chart.exit_code == 0 and "█" in chart.stdout and "Exemplary" in chart.stdout

    worst = listed[0]["tutor_id"]
    doc = json.loads(cli(db_url, "show", "tutor", worst, "--explain", "--json").stdout)
    assert set(doc["windows"]) == {"7day", "30day", "90day"}
    assert {"age_s", "flags", "performance_tier"} <= set(doc["windows"]["30day"])
    assert len(doc["trend"]["dates"]) == 30 and doc["trend"]["window"] == "30day"
    assert sum(v is not None for v in doc["trend"]["metrics"]["avg_rating"]) == 3
    ex, w30 = doc["explain"], doc["windows"]["30day"]
    assert ex["tier"] == "At Risk" and len(ex["red"]) >= 3
    assert ex["counts"]["sessions"] == w30["sessions_scheduled"]
    assert ex["counts"]["no_shows"] == w30["no_show_count"]
    assert ex["counts"]["reschedules"] == w30["reschedule_count"]
    screen = cli(db_url, "show", "tutor", worst, "--explain")
    assert screen.exit_code == 0 and "Why At Risk in the 30day window" in screen.stdout

    rules = tmp_path / "strict.toml"
    rules.write_text(STRICT)
    sim = json.loads(cli(db_url, "tiers", "simulate", str(rules), "--json").stdout)
    with engine.connect() as conn:
        latest = latest_in_window(conn, "30day")
    recomputed = latest.select("tutor_id", tier_expr(load_tiers(rules)).alias("t"))
    assert {m["tutor_id"]: m["simulated"] for m in sim["moves"]} == {
        t: s
        for t, s, cur in zip(
            recomputed["tutor_id"], recomputed["t"], latest["performance_tier"], strict=True
        )
        if s != cur
    }
    defaults = Path(tiers_module.__file__).parent / "default_tiers.toml"
    same = json.loads(cli(db_url, "tiers", "simulate", str(defaults), "--json").stdout)
    assert same["moves"] == [] and same["tutors"] == 12

    with engine.connect() as conn:
        fresh = views.freshness(active_freshness(conn), T + timedelta(hours=1))
    active = sql_rows(engine, "SELECT count(*) FROM tutors WHERE status = 'active'")[0][0]
    assert fresh["30day"]["tutors"] == active
    assert fresh["30day"]["newest_age_s"] == fresh["30day"]["oldest_age_s"] == 3600.0


def test_latest_in_window_as_of_a_day(history: sa.Engine) -> None:
    with history.connect() as conn:
        week = latest_in_window(conn, "7day", date(2026, 2, 28))
        none = latest_in_window(conn, "7day", date(2026, 1, 1))
    assert set(week["metric_date"].to_list()) == {date(2026, 2, 23)} and week.height == 12
    assert none.is_empty()


def test_show_tutors_prints_a_screenful_by_default(engine: sa.Engine, db_url: str) -> None:
    from tutormax_cli.cli.show import BOARD_LIMIT

    save_tables(engine, sample(tutors=BOARD_LIMIT + 2, days=20))
    recompute_as_of(engine, T)
    table = cli(db_url, "show", "tutors")
    assert table.exit_code == 0
    assert table.stderr == "… 2 more tutors (--limit N or --all to see them)\n"
    assert len(json.loads(cli(db_url, "show", "tutors", "--json").stdout)) == BOARD_LIMIT + 2
    one_more = cli(db_url, "show", "tutors", "--limit", str(BOARD_LIMIT + 1))
    assert one_more.stderr == "… 1 more tutor (--limit N or --all to see them)\n"


def test_show_errors(sqlite_url: str) -> None:
    from tutormax_cli.store.db import open_engine
    from tutormax_cli.store.migrate import upgrade

    engine = open_engine(sqlite_url)
    upgrade(engine)
    unknown = cli(sqlite_url, "show", "tutor", "T404")
    assert unknown.exit_code == 1
    assert unknown.stderr == (
        "Error: unknown tutor 'T404': check the id (`tutormax show tutors`)\n"
    )
    save_tables(engine, {"tutors": sample(tutors=1, days=1)["tutors"]})
    no_rows = cli(sqlite_url, "show", "tutor", "T0001")
    assert no_rows.exit_code == 1
    assert no_rows.stderr == (
        "Error: tutor T0001 has no metrics yet: run `tutormax recompute --tutor T0001`\n"
    )
    case = cli(sqlite_url, "show", "tutor", "t0001")
    assert case.stderr == "Error: unknown tutor 't0001': did you mean T0001?\n"
    empty = cli(sqlite_url, "show", "tutors", "--json")
    assert empty.exit_code == 0 and json.loads(empty.stdout) == []
    bad_tier = cli(sqlite_url, "show", "tutors", "--tier", "Great")
    assert bad_tier.exit_code == 2 and bad_tier.stderr.startswith("Error: unknown tier 'Great'")
    bad_window = cli(sqlite_url, "show", "tiers", "--window", "9day")
    assert bad_window.exit_code == 2 and "9day" in bad_window.output
    missing = cli(sqlite_url, "tiers", "simulate", "nope.toml")
    assert (
        missing.exit_code == 1 and missing.stderr == "Error: tiers file nope.toml does not exist\n"
    )
    now = datetime.now(UTC)
    assert views.freshness(
        pl.DataFrame(schema={"window": pl.String, "calculation_date": frames.TS}), now
    )["7day"] == {
        "tutors": 0,
        "newest": None,
        "oldest": None,
        "newest_age_s": None,
        "oldest_age_s": None,
    }
