"""The HTTP API as deployed: a real `tutormax api serve` process on a free port, a real SQLite
file and PostgreSQL database, a real Redis, the real worker, a real WebSocket client."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
import redis
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner
from websockets.sync.client import connect as ws_connect

from tests.api_server import TOKEN, ClientFor, api_server, free_port
from tests.helpers import count_rows, recent_sample, stored_metrics
from tutormax_cli import keys
from tutormax_cli.api.observe import API_METRIC_NAMES
from tutormax_cli.cli.app import app
from tutormax_cli.metrics.tiers import TIER_NAMES
from tutormax_cli.store.db import open_engine
from tutormax_cli.store.migrate import upgrade
from tutormax_cli.store.seed import save_tables

AUTH = {"Authorization": f"Bearer {TOKEN}"}
NOW = datetime.now(UTC).replace(microsecond=0)


def seed(url: str) -> None:
    """Three tutors and their students, no sessions: every metric row comes from the API."""
    engine = open_engine(url)
    upgrade(engine)
    tables = recent_sample(tutors=3)
    save_tables(engine, {k: v for k, v in tables.items() if k in ("tutors", "students")})
    engine.dispose()


def completion(hours_ago: float, tutor: str = "T0001", **changes: Any) -> dict[str, Any]:
    start = NOW - timedelta(hours=hours_ago)
    body = {
        "tutor_id": tutor, "student_id": "S00001", "session_number": 2,
        "scheduled_start": start.isoformat(),
        "actual_start": (start + timedelta(minutes=3)).isoformat(),
        "duration_minutes": 60, "subject": "Algebra", "session_type": "1-on-1",
        "tutor_initiated_reschedule": False, "no_show": False, "late_start_minutes": 3,
        "engagement_score": 0.8, "learning_objectives_met": True, "technical_issues": False,
    }  # fmt: skip
    body.update(changes)
    return body


def run_worker(db_url: str, redis_url: str) -> None:
    env = dict(os.environ, TUTORMAX_DATABASE_URL=db_url, TUTORMAX_REDIS_URL=redis_url)
    result = CliRunner().invoke(app, ["worker", "run", "--burst", "--debounce", "0"], env=env)
    assert result.exit_code == 0, result.output


def receive(ws: Any, timeout: float = 10) -> dict[str, Any]:
    return dict(json.loads(ws.recv(timeout=timeout)))


def test_completions_reach_metrics_and_websockets(
    db_url: str, redis_url: str, rclient: redis.Redis, client_for: ClientFor
) -> None:
    seed(db_url)
    engine = open_engine(db_url)
    with api_server(db_url, redis_url) as base:
        http = client_for(base)
        ws_base = base.replace("http://", "ws://")
        with (
            ws_connect(f"{ws_base}/ws/tutors/T0001") as one,
            ws_connect(f"{ws_base}/ws/tutors") as every,
        ):
            assert receive(one) == {"type": "subscribed", "tutor_id": "T0001"}
            assert receive(every) == {"type": "subscribed", "tutor_id": None}
            first = completion(30, feedback={"overall_rating": 4, "would_recommend": True})
            for session_id, body in (
                ("API-1", first),
                ("API-2", completion(20, late_start_minutes=15, learning_objectives_met=False)),
                ("API-3", completion(10, tutor="T0002", session_number=1)),
                ("API-1", first),  # a retry: idempotent
            ):
                reply = http.post(f"/api/sessions/{session_id}/complete", json=body, headers=AUTH)
                assert reply.status_code == 202, reply.text
                assert reply.json()["session_id"] == session_id
            assert count_rows(engine, "sessions") == 3
            assert count_rows(engine, "student_feedback") == 1
            assert rclient.xlen(keys.ENRICHMENT_STREAM) == 4  # every accepted post publishes

            run_worker(db_url, redis_url)

            update = receive(one)
            assert update["type"] == "metrics.updated" and update["tutor_id"] == "T0001"
            assert {update[f"tier_{w}"] for w in ("7day", "30day", "90day")} <= set(TIER_NAMES)
            seen = {receive(every)["tutor_id"], receive(every)["tutor_id"]}
            assert seen == {"T0001", "T0002"}
            with pytest.raises(TimeoutError):
                one.recv(timeout=0.5)  # T0002's update is not T0001's subscriber's business

        got = http.get("/api/tutors/T0001/metrics").json()
        stored = stored_metrics(engine).filter(pl.col("tutor_id") == "T0001")
        assert [m["window"] for m in got["metrics"]] == ["7day", "30day", "90day"]
        for row in got["metrics"]:
            want = stored.filter(pl.col("window") == row["window"]).to_dicts()[0]
            for name, value in want.items():
                if name == "calculation_date":
                    assert datetime.fromisoformat(row[name]) == value
                elif name == "metric_date":
                    assert row[name] == value.isoformat()
                else:
                    assert row[name] == value, name
        week = got["metrics"][0]
        # by hand: two sessions, one rating (4), one late start (15 > 10 min), one objective met
        assert week["sessions_scheduled"] == 2 and week["sessions_completed"] == 2
        assert week["avg_rating"] == 4.0
        assert week["learning_objectives_met_pct"] == 50.0
        assert week["reschedule_count"] == 0 and week["no_show_count"] == 0

        only = http.get("/api/tutors/T0001/metrics", params={"window": "30day"}).json()
        assert [m["window"] for m in only["metrics"]] == ["30day"]
        history = http.get("/api/tutors/T0001/metrics/history", params={"window": "7day"}).json()
        assert history["window"] == "7day" and [r["metric_date"] for r in history["rows"]] == [
            week["metric_date"]
        ]
        board = http.get("/api/tutors", params={"window": "7day"}).json()
        assert board["count"] == 2 and [t["rank"] for t in board["tutors"]] == [1, 2]
        assert {t["tutor_id"] for t in board["tutors"]} == {"T0001", "T0002"}
        tier = board["tutors"][0]["performance_tier"]
        narrowed = http.get("/api/tutors", params={"window": "7day", "tier": tier.lower()}).json()
        assert narrowed["tiers"] == [tier] and narrowed["count"] >= 1
        assert all(t["performance_tier"] == tier for t in narrowed["tutors"])

        known = http.get("/api/tutors/T0003/metrics")  # a tutor without metrics yet
        assert known.status_code == 200 and known.json()["metrics"] == []
        assert http.get("/api/tutors/NOBODY/metrics").status_code == 404
        assert http.get("/api/tutors/NOBODY/metrics/history").json() == {
            "detail": "unknown tutor 'NOBODY'"
        }
        assert http.get("/readyz").json()["status"] == "ready"

        exported = http.get("/metrics")
        assert exported.headers["content-type"].startswith("text/plain")
        names = {s.name for f in text_string_to_metric_families(exported.text) for s in f.samples}
        missing = {n for n in API_METRIC_NAMES if n not in names and f"{n}_bucket" not in names}
        assert missing == set()
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(exported.text)
            for s in f.samples
        }
        assert samples[("tutormax_api_sessions_accepted_total", ())] == 4
        accepted = (("method", "POST"), ("route", "/api/sessions/{session_id}/complete"),
                    ("status", "202"))  # fmt: skip
        assert samples[("tutormax_api_requests_total", accepted)] == 4
        assert samples[("tutormax_api_updates_pushed_total", ())] == 3
        seven = [v for (n, lab), v in samples.items() if n == "tutormax_metrics_tutors"
                 and ("window", "7day") in lab]  # fmt: skip
        assert sum(seven) == 2
    engine.dispose()


def test_bad_requests_are_refused_and_write_nothing(
    sqlite_url: str, redis_url: str, rclient: redis.Redis, client_for: ClientFor
) -> None:
    seed(sqlite_url)
    engine = open_engine(sqlite_url)
    with api_server(sqlite_url, redis_url) as base:
        http = client_for(base)

        def post(body: Any, session_id: str = "BAD-1", **kw: Any) -> httpx.Response:
            headers = kw.pop("headers", AUTH)
            return http.post(f"/api/sessions/{session_id}/complete", json=body,
                             headers=headers, **kw)  # fmt: skip

        def where(reply: httpx.Response) -> list[list[Any]]:
            assert reply.status_code == 422, reply.text
            return [e["loc"] for e in reply.json()["detail"]]

        unauthorized = post(completion(1), headers={})
        assert unauthorized.status_code == 401
        assert unauthorized.headers["www-authenticate"] == "Bearer"
        assert post(completion(1), headers={"Authorization": "Bearer nope"}).status_code == 401

        no_tutor = completion(1)
        del no_tutor["tutor_id"]
        assert where(post(no_tutor)) == [["body", "tutor_id"]]
        assert where(post(completion(1, duration_minutes="an hour"))) == [
            ["body", "duration_minutes"]
        ]
        assert where(post(completion(1, colour="red"))) == [["body", "colour"]]
        # rules the ingest stage owns, answered in the same shape
        late = post(completion(1, duration_minutes=20, late_start_minutes=30))
        assert where(late) == [["body", "late_start_minutes"]]
        assert late.json()["detail"][0]["msg"] == "30 is above duration_minutes (20)"
        assert where(post(completion(1, no_show=True))) == [["body", "actual_start"]]
        stranger = post(completion(1, tutor="T9999"))
        assert where(stranger) == [["body", "tutor_id"]]
        assert stranger.json()["detail"][0]["msg"] == "unknown tutor 'T9999'"
        assert where(post(completion(-24 * 40))) == [["body", "scheduled_start"]]
        # year 1 at +05:00 is year 0 in UTC: it answered 202, then broke every replay
        year0 = post(completion(1, scheduled_start="0001-01-01T00:00:00+05:00", actual_start=None))
        assert where(year0) == [["body", "scheduled_start"]]
        assert year0.json()["detail"][0]["msg"] == (
            "'0001-01-01T00:00:00+05:00' is before 0001-01-01T00:00:00Z (UTC), "
            "the earliest time tutormax can read back"
        )
        late_fb = {"overall_rating": 5, "submitted_at": "9999-12-31T23:59:59-05:00"}
        assert where(post(completion(1, feedback=late_fb))) == [
            ["body", "feedback", "submitted_at"]
        ]
        assert where(post(completion(1, feedback={"overall_rating": 7}))) == [
            ["body", "feedback", "overall_rating"]
        ]
        # the session is valid, its feedback is not: the session must not be written either
        nul = post(completion(1, feedback={"overall_rating": 5, "free_text_feedback": "a\x00b"}))
        assert where(nul) == [["body", "feedback", "free_text_feedback"]]
        assert where(post({**completion(1), "session_id": "OTHER"})) == [["body", "session_id"]]
        assert where(post(completion(1), session_id="X" * 51)) == [["path", "session_id"]]
        malformed = http.post("/api/sessions/BAD-1/complete", content=b"{oops",
                              headers={**AUTH, "content-type": "application/json"})  # fmt: skip
        assert malformed.status_code == 422

        huge = post(
            completion(1, feedback={"overall_rating": 5, "free_text_feedback": "x" * 70_000})
        )
        assert huge.status_code == 413 and "65536" in huge.json()["detail"]

        def chunks() -> Iterator[bytes]:
            yield b'{"tutor_id": "'
            for _ in range(100):
                yield b"y" * 1000
            yield b'"}'

        streamed = http.post("/api/sessions/BAD-1/complete", content=chunks(),
                             headers={**AUTH, "content-type": "application/json"})  # fmt: skip
        assert streamed.status_code == 413

        for path in ("/api/tutors/T0001/metrics", "/api/tutors/T0001/metrics/history",
                     "/api/tutors"):  # fmt: skip
            bad = http.get(path, params={"window": "8day"})
            assert bad.status_code == 400
            assert bad.json() == {"detail": "window '8day' is not one of 7day, 30day, 90day"}
        assert http.get("/api/tutors", params={"tier": "Legendary"}).status_code == 400
        assert where(http.get("/api/tutors/T0001/metrics/history", params={"days": 0})) == [
            ["query", "days"]
        ]
        assert http.get("/no/such/route").status_code == 404
    assert count_rows(engine, "sessions") == 0
    assert count_rows(engine, "student_feedback") == 0
    assert rclient.exists(keys.ENRICHMENT_STREAM) == 0
    engine.dispose()


def test_a_redis_outage_is_a_503_and_the_retry_publishes(
    sqlite_url: str, redis_url: str, rclient: redis.Redis, client_for: ClientFor
) -> None:
    seed(sqlite_url)
    engine = open_engine(sqlite_url)
    down = f"redis://:hunter2@127.0.0.1:{free_port()}/0"  # nothing listens there
    body = completion(2)
    with api_server(sqlite_url, down) as base:
        http = client_for(base)
        assert http.get("/healthz").status_code == 200
        ready = http.get("/readyz")
        assert ready.status_code == 503
        checks = ready.json()["checks"]
        assert checks["database"] == {"ok": True, "error": None}
        assert not checks["redis"]["ok"] and "hunter2" not in ready.text
        status = http.get("/api/status")  # a report of the outage, not a 500
        assert status.status_code == 200, status.text
        report = status.json()
        assert report["healthy"] is False and report["dead_letter"] is None
        assert report["problems"] and "hunter2" not in status.text
        reply = http.post("/api/sessions/RETRY-1/complete", json=body, headers=AUTH)
        assert reply.status_code == 503
        assert "saved but was not published" in reply.json()["detail"]
        assert "hunter2" not in reply.text
    assert count_rows(engine, "sessions") == 1  # committed before publishing: nothing lost
    with api_server(sqlite_url, redis_url, workers=2) as base:
        http = client_for(base)
        reply = http.post("/api/sessions/RETRY-1/complete", json=body, headers=AUTH)
        assert reply.status_code == 202
        for _ in range(6):
            assert http.get("/healthz").status_code == 200
        text = http.get("/metrics").text
        healthz = [
            s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name == "tutormax_api_requests_total" and s.labels["route"] == "/healthz"
        ]
        # both worker processes' counts, summed (the readiness wait adds its own /healthz)
        assert sum(healthz) >= 7
    assert count_rows(engine, "sessions") == 1
    assert rclient.xlen(keys.ENRICHMENT_STREAM) == 1
    engine.dispose()


def test_credentials_never_reach_logs_or_answers(
    pg_database_url: str, redis_url: str, tmp_path: Path, client_for: ClientFor
) -> None:
    """PostgreSQL here trusts local connections, so any password works and must be hidden."""
    url = sa.make_url(pg_database_url).set(password="s3cret-pw").render_as_string(False)
    seed(url)
    log = tmp_path / "api.log"
    with api_server(url, redis_url, log=log, extra=("--log-level", "DEBUG")) as base:
        http = client_for(base)
        assert http.get("/readyz").json()["status"] == "ready"
        assert http.get("/api/tutors/NOBODY/metrics").status_code == 404
    text = log.read_text()
    assert "API on database postgresql://root:***@" in text
    assert "s3cret-pw" not in text and TOKEN not in text


def test_credential_files_feed_the_cli(tmp_path: Path, sqlite_url: str) -> None:
    secret = tmp_path / "database-url"
    secret.write_text(sqlite_url + "\n")
    env = {"TUTORMAX_DATABASE_URL_FILE": str(secret)}
    runner = CliRunner()
    result = runner.invoke(app, ["db", "status", "--json"], env=env)
    assert result.exit_code in (0, 1), result.output
    assert Path(sqlite_url.removeprefix("sqlite:///")).name in result.output
    # the variable itself, or the option, wins over the file
    env_wins = runner.invoke(
        app, ["db", "status", "--json"],
        env={**env, "TUTORMAX_DATABASE_URL": f"sqlite:///{tmp_path / 'other.db'}"},
    )  # fmt: skip
    assert "other.db" in env_wins.output
    secret.write_text("\n")
    empty = runner.invoke(app, ["db", "status"], env=env)
    assert empty.exit_code == 2
    assert empty.output.strip() == f"Error: TUTORMAX_DATABASE_URL_FILE: {secret} is empty"
    missing = runner.invoke(app, ["db", "status"], env={"TUTORMAX_DATABASE_URL_FILE": "/nope"})
    assert missing.exit_code == 2 and "cannot read /nope" in missing.output


def test_api_workers_read_credentials_from_files(tmp_path: Path) -> None:
    from tutormax_cli.api.config import ApiConfig

    (tmp_path / "token").write_text("from-a-file\n")
    (tmp_path / "redis").write_text("redis://:pw@10.0.0.1:6379/2\n")
    config = ApiConfig.from_env(
        {"TUTORMAX_API_TOKEN_FILE": str(tmp_path / "token"),
         "TUTORMAX_REDIS_URL_FILE": str(tmp_path / "redis")}
    )  # fmt: skip
    assert config.token == "from-a-file"
    assert config.settings.redis_url == "redis://:pw@10.0.0.1:6379/2"
    assert config.settings.redis_label == "redis://:***@10.0.0.1:6379/2"
    assert ApiConfig.from_env(config.environ()) == config  # what `api serve` hands its workers
    assert ApiConfig.from_env({}).token is None


def test_the_committed_openapi_schema_is_current() -> None:
    from tutormax_cli.api.app import create_app
    from tutormax_cli.api.config import ApiConfig

    committed = json.loads((Path(__file__).parent.parent / "docs" / "openapi.json").read_text())
    assert committed == create_app(ApiConfig()).openapi(), (
        "run `tutormax api openapi --output docs/openapi.json` and commit it"
    )


def test_a_feedback_id_of_another_session_is_refused(
    sqlite_url: str, redis_url: str, client_for: ClientFor
) -> None:
    seed(sqlite_url)
    engine = open_engine(sqlite_url)
    with api_server(sqlite_url, redis_url) as base:
        http = client_for(base)
        first = completion(5, feedback={"overall_rating": 5, "feedback_id": "F-A"})
        assert http.post("/api/sessions/SA/complete", json=first, headers=AUTH).status_code == 202
        theft = completion(4, feedback={"overall_rating": 1, "feedback_id": "F-A"})
        reply = http.post("/api/sessions/SB/complete", json=theft, headers=AUTH)
        assert reply.status_code == 422
        assert reply.json()["detail"][0] == {
            "loc": ["body", "feedback", "feedback_id"],
            "msg": "'F-A' is the feedback of session 'SA'",
            "type": "value_error",
        }
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT feedback_id, session_id, overall_rating "
                                    "FROM student_feedback")).all()  # fmt: skip
    assert [tuple(r) for r in rows] == [("F-A", "SA", 5)]
    assert count_rows(engine, "sessions") == 1  # SB was refused whole
    engine.dispose()


def test_the_fast_path_answers_as_the_fastapi_route(
    sqlite_url: str, redis_url: str, client_for: ClientFor
) -> None:
    """A plain completion is answered before routing (`api.fast_path`); the same completion
    sent with a JSON media type the fast path leaves to FastAPI gets the same answer, and both
    are counted under the route's template."""
    seed(sqlite_url)
    engine = open_engine(sqlite_url)
    feedback = {"overall_rating": 4}
    with api_server(sqlite_url, redis_url) as base:
        http = client_for(base)
        answers = {}
        for sid, media in (("FAST-1", "application/json"),
                           ("SLOW-1", "application/vnd.tutormax+json")):  # fmt: skip
            body = json.dumps(completion(2, feedback=feedback)).encode()
            reply = http.post(f"/api/sessions/{sid}/complete", content=body,
                              headers={**AUTH, "content-type": media})  # fmt: skip
            assert reply.status_code == 202, reply.text
            assert reply.headers["content-type"] == "application/json"
            answers[sid] = reply.json()
        fast, slow = answers["FAST-1"], answers["SLOW-1"]
        assert list(fast) == list(slow) == ["session_id", "status", "feedback_id", "stream"]
        assert fast["session_id"] == "FAST-1" and slow["session_id"] == "SLOW-1"
        assert fast["status"] == slow["status"] == "accepted"
        assert fast["stream"] == slow["stream"] == keys.ENRICHMENT_STREAM
        # a rule of the ingest stage, answered by the fast path: FastAPI's shape
        bad = completion(1, duration_minutes=20, late_start_minutes=30)
        late = http.post("/api/sessions/FAST-2/complete", headers=AUTH, json=bad)
        assert late.status_code == 422
        assert late.json() == {"detail": [{
            "loc": ["body", "late_start_minutes"], "msg": "30 is above duration_minutes (20)",
            "type": "value_error",
        }]}  # fmt: skip
        # the id, the token and the model are checked as the route checks them
        assert http.post(f"/api/sessions/{'X' * 51}/complete", headers=AUTH,
                         json=completion(1)).status_code == 422  # fmt: skip
        lower = {"Authorization": f"bearer {TOKEN}"}
        assert http.post("/api/sessions/FAST-3/complete", json=completion(1),
                         headers=lower).status_code == 202  # fmt: skip
        basic = {"Authorization": f"Basic {TOKEN}"}
        assert http.post("/api/sessions/FAST-4/complete", json=completion(1),
                         headers=basic).status_code == 401  # fmt: skip
        # a header HTTPBearer parses leniently: the fast path reads it the same way
        spaced = {"Authorization": f"Bearer  {TOKEN}"}
        statuses = [
            http.post(f"/api/sessions/{sid}/complete", headers={**spaced, "content-type": media},
                      content=json.dumps(completion(1)).encode()).status_code
            for sid, media in (("SPACED-F", "application/json"),
                               ("SPACED-S", "application/vnd.tutormax+json"))
        ]  # fmt: skip
        assert statuses[0] == statuses[1]
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(http.get("/metrics").text)
            for s in family.samples
        }
        route = "/api/sessions/{session_id}/complete"
        counted = (("method", "POST"), ("route", route), ("status", "202"))
        spaced_ok = 2 if statuses[0] == 202 else 0
        assert samples[("tutormax_api_requests_total", counted)] == 3 + spaced_ok
        assert samples[("tutormax_api_sessions_accepted_total", ())] == 3 + spaced_ok
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT session_id FROM sessions ORDER BY 1")).scalars()
        spaced_rows = ["SPACED-F", "SPACED-S"] if spaced_ok else []
        assert list(rows) == sorted(["FAST-1", "FAST-3", "SLOW-1", *spaced_rows])
    assert count_rows(engine, "student_feedback") == 2
    engine.dispose()


def test_a_path_id_that_is_not_utf8_is_refused(
    sqlite_url: str, redis_url: str, client_for: ClientFor
) -> None:
    """`%FF` and `%FE` both decoded to U+FFFD and were stored as one session; now each is a 422
    on the path id, by the fast path and by the route alike, and nothing is written."""
    seed(sqlite_url)
    engine = open_engine(sqlite_url)
    body = json.dumps(completion(2)).encode()
    with api_server(sqlite_url, redis_url) as base:
        http = client_for(base)
        for raw in ("%FF", "%FE", "A%ED%A0%80"):  # the last: a surrogate, UTF-8 encoded
            for media in ("application/json", "application/vnd.tutormax+json"):
                reply = http.post(f"/api/sessions/{raw}/complete", content=body,
                                  headers={**AUTH, "content-type": media})  # fmt: skip
                assert reply.status_code == 422, (raw, media, reply.text)
                (error,) = reply.json()["detail"]
                assert error["loc"] == ["path", "session_id"] and error["input"] == raw
                assert error["msg"].startswith("is not valid UTF-8 text")
        # non-ASCII UTF-8 is an id like any other
        reply = http.post("/api/sessions/%C3%A9-1/complete", content=body,
                          headers={**AUTH, "content-type": "application/json"})  # fmt: skip
        assert reply.status_code == 202 and reply.json()["session_id"] == "é-1", reply.text
    with engine.connect() as conn:
        assert list(conn.execute(sa.text("SELECT session_id FROM sessions")).scalars()) == ["é-1"]
    engine.dispose()
