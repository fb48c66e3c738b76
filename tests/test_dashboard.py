"""The dashboard's JSON endpoints on a real server over real data (SQLite file and PostgreSQL):
each equals the CLI document it shares code with, and the numbers equal the stored rows."""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
import polars as pl

from tests.api_server import api_server
from tests.dashboard_data import as_instants, cli_json, seed_with_history, without
from tests.helpers import stored_metrics
from tutormax_cli.metrics.tiers import DEFAULT_TIERS, FLAGGED_METRICS, TIER_NAMES
from tutormax_cli.metrics.windows import WINDOWS
from tutormax_cli.store.db import open_engine


def latest_rows(stored: pl.DataFrame, window: str) -> pl.DataFrame:
    """Each tutor's newest stored row of `window`, computed here without the project's query."""
    rows = stored.filter(pl.col("window") == window)
    return rows.filter(pl.col("metric_date") == pl.col("metric_date").max().over("tutor_id"))


def hand_tier_changes(stored: pl.DataFrame, days: int) -> set[tuple[str, str, str, str, str]]:
    """(tutor, window, day, from, to) for each row whose tier differs from the tutor's previous
    row of the window, on the newest `days` metric dates: a loop over the rows."""
    newest = stored["metric_date"].max()
    out = set()
    for (tutor, window), rows in stored.sort("metric_date").group_by(["tutor_id", "window"]):
        previous = None
        for row in rows.iter_rows(named=True):
            tier = row["performance_tier"]
            recent = (newest - row["metric_date"]).days < days
            if previous is not None and tier != previous and recent:
                out.add((str(tutor), str(window), row["metric_date"].isoformat(), previous, tier))
            previous = tier
    return out


def test_report_endpoints_equal_the_cli_and_the_rows(db_url: str, redis_url: str) -> None:
    seed_with_history(db_url)
    engine = open_engine(db_url)
    stored = stored_metrics(engine)
    engine.dispose()
    with api_server(db_url, redis_url) as base, httpx.Client(base_url=base, timeout=30) as http:
        # tiers: the CLI's document for each window, and counts equal the stored latest rows
        tiers = http.get("/api/tiers").json()["windows"]
        assert [d["window"] for d in tiers] == list(WINDOWS)
        for doc in tiers:
            window = doc["window"]
            assert as_instants(doc) == as_instants(
                cli_json(db_url, "show", "tiers", "--window", window)
            )
            counts = Counter(latest_rows(stored, window)["performance_tier"].to_list())
            assert {t["tier"]: t["tutors"] for t in doc["tiers"]} == {
                name: counts.get(name, 0) for name in TIER_NAMES
            }
            assert doc["compared_with"] is not None  # ten days of history: a week back exists
        one = http.get("/api/tiers", params={"window": "7day"}).json()["windows"]
        assert one == [tiers[0]]

        # one tutor: `show tutor --explain --json`, plus the thresholds
        report = http.get("/api/tutors/T0001/report", params={"window": "7day"}).json()
        shown = cli_json(db_url, "show", "tutor", "T0001", "--explain", "--window", "7day")
        for doc in (report, shown):
            for name, row in doc["windows"].items():
                row.pop("tutor_id", None)
                assert row.pop("window", name) == name
        assert as_instants(without(report, "age_s", "thresholds")) == as_instants(
            without(shown, "age_s")
        )
        assert set(report["thresholds"]) == set(FLAGGED_METRICS)
        assert report["thresholds"]["avg_rating"] == {
            "green": DEFAULT_TIERS.threshold("avg_rating").describe("green"),
            "red": DEFAULT_TIERS.threshold("avg_rating").describe("red"),
        }
        week = latest_rows(stored, "7day").filter(pl.col("tutor_id") == "T0001").to_dicts()[0]
        for name in ("sessions_completed", "avg_rating", "no_show_count", "performance_tier"):
            assert report["windows"]["7day"][name] == week[name], name
        lean = http.get("/api/tutors/T0001/report", params={"explain": "false"}).json()
        assert lean.get("explain") is None and lean["trend"]["window"] == "30day"

        # needs action: exactly the At Risk and Needs Attention tutors, worst first
        needs = http.get("/api/needs-action", params={"window": "30day", "limit": 1000}).json()
        month = latest_rows(stored, "30day")
        flagged = month.filter(pl.col("performance_tier").is_in(["At Risk", "Needs Attention"]))
        assert needs["count"] == flagged.height > 0
        assert {t["tutor_id"] for t in needs["tutors"]} == set(flagged["tutor_id"])
        order = [(t["performance_tier"] != "At Risk", -len(t["red"])) for t in needs["tutors"]]
        assert order == sorted(order)
        for t in needs["tutors"]:
            row = month.filter(pl.col("tutor_id") == t["tutor_id"]).to_dicts()[0]
            reds = [
                m for m in FLAGGED_METRICS if DEFAULT_TIERS.threshold(m).flag_of(row[m]) == "red"
            ]
            assert t["red"] == reds
            assert {m: f["value"] for m, f in t["flags"].items()} == {m: row[m] for m in reds}
            assert (
                len(t["trend"]["dates"]) == 30
                and t["trend"]["tiers"][-1] == row["performance_tier"]
            )
        capped = http.get("/api/needs-action", params={"limit": 2}).json()
        assert capped["count"] == needs["count"] and len(capped["tutors"]) == 2
        assert capped["tutors"] == needs["tutors"][:2]

        # tier changes from the daily rows, against a loop over the stored rows
        changes = http.get("/api/tier-changes", params={"days": 7, "limit": 1000}).json()
        assert changes["source"] == "daily rows"
        got = {
            (c["tutor_id"], c["window"], c["metric_date"], c["from"], c["to"])
            for c in changes["changes"]
        }
        assert got == hand_tier_changes(stored, 7) != set()
        days = [c["metric_date"] for c in changes["changes"]]
        assert days == sorted(days, reverse=True)
        rank = {name: i for i, name in enumerate(TIER_NAMES)}
        for c in changes["changes"]:
            assert c["direction"] == ("up" if rank[c["to"]] < rank[c["from"]] else "down")
        only = http.get("/api/tier-changes", params={"window": "90day", "limit": 1000}).json()
        assert {c["window"] for c in only["changes"]} <= {"90day"}

        # worker status: `tutormax status --json`'s document (on a stream that exists: a
        # missing one is "not found", not healthy)
        import redis

        with redis.Redis.from_url(redis_url) as client:
            client.xgroup_create(
                "tutormax:sessions:enrichment", "metrics-workers", id="$", mkstream=True
            )
        status = http.get("/api/status").json()
        expected = cli_json(db_url, "status", redis_url=redis_url)
        volatile = ("newest_age_s", "oldest_age_s", "lag_s", "idle_s", "inactive_s")
        assert without(as_instants(status), *volatile) == without(as_instants(expected), *volatile)
        assert status["healthy"] is True and status["streams"][0]["group"] == "metrics-workers"


def test_report_endpoints_refuse_bad_input_in_one_line(sqlite_url: str, redis_url: str) -> None:
    seed_with_history(sqlite_url, tutors=3)
    with (
        api_server(sqlite_url, redis_url) as base,
        httpx.Client(base_url=base, timeout=30) as http,
    ):
        for path in ("/api/tiers", "/api/needs-action", "/api/tier-changes",
                     "/api/tutors/T0001/report"):  # fmt: skip
            bad = http.get(path, params={"window": "8day"})
            assert bad.status_code == 400, path
            assert bad.json() == {"detail": "window '8day' is not one of 7day, 30day, 90day"}
        nobody = http.get("/api/tutors/NOBODY/report")
        assert nobody.status_code == 404
        assert nobody.json() == {"detail": "no metrics for tutor 'NOBODY'"}
        assert http.get("/api/needs-action", params={"limit": 0}).status_code == 422
        assert http.get("/api/tier-changes", params={"days": 91}).status_code == 422

        # the pages and their files; nothing outside the static folder
        for page in ("/", "/tutors/T0001"):
            reply = http.get(page)
            assert reply.status_code == 200 and reply.headers["content-type"].startswith(
                "text/html"
            )
        assert 'src="/static/overview.js"' in http.get("/").text
        assert 'src="/static/tutor.js"' in http.get("/tutors/T0001").text
        for name in ("common.js", "overview.js", "tutor.js", "dashboard.css"):
            assert http.get(f"/static/{name}").status_code == 200, name
        for sneaky in ("/static/..%2Fapp.py", "/static/.hidden", "/static/nope.js"):
            assert http.get(sneaky).status_code == 404, sneaky


def test_status_names_an_unreadable_database_as_a_problem(
    sqlite_url: str, redis_url: str, tmp_path: Any
) -> None:
    """The worker panel keeps working when the database does not: a problem, not a 503."""
    import sqlalchemy as sa

    seed_with_history(sqlite_url, tutors=2)
    import redis

    with redis.Redis.from_url(redis_url) as client:  # the stream exists: only the database fails
        client.xgroup_create(
            "tutormax:sessions:enrichment", "metrics-workers", id="$", mkstream=True
        )
    with api_server(sqlite_url, redis_url) as base, httpx.Client(base_url=base) as http:
        engine = open_engine(sqlite_url)
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE tutors"))
        engine.dispose()
        status = http.get("/api/status")
        assert status.status_code == 200
        body = status.json()
        assert body["healthy"] is False and body["freshness"] is None
        assert len(body["problems"]) == 1 and "database unavailable" in body["problems"][0]
    shown = cli_json(sqlite_url, "status", redis_url=redis_url)  # the CLI says the same
    assert shown["healthy"] is False and shown["problems"] == body["problems"]
