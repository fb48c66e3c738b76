"""Group commit and the batch endpoint, against real databases, a real Redis and a real server.

A burst of concurrent completions mixing valid rows, bad fields, bad feedback and repeated
session ids: every answer and every stored row is checked, one by one, on SQLite and on
PostgreSQL; the same for `POST /api/sessions:batch`; and the batcher's overload answer."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from tests.api_server import api_server
from tests.streams import read
from tests.test_api import AUTH, completion, seed
from tutormax_cli import keys
from tutormax_cli.api.batcher import Batcher, Overloaded
from tutormax_cli.api.completion import Outcome, ingest_completions
from tutormax_cli.api.models import SessionCompletion
from tutormax_cli.store.db import open_engine

FEEDBACK = {"overall_rating": 4, "would_recommend": True}


def stored(engine: sa.Engine) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    with engine.connect() as conn:
        sessions = conn.execute(sa.text("SELECT session_id, tutor_id, subject FROM sessions"))
        feedback = conn.execute(
            sa.text("SELECT session_id, feedback_id, overall_rating FROM student_feedback")
        )
        return (
            {r.session_id: dict(r._mapping) for r in sessions},
            {r.session_id: dict(r._mapping) for r in feedback},
        )


def envelopes(client: redis.Redis) -> Counter[str]:
    """Published envelopes per session id."""
    out: Counter[str] = Counter()
    for _id, fields in read(client, keys.ENRICHMENT_STREAM):
        out[json.loads(fields[b"message"])["data"]["session_id"]] += 1
    return out


def burst() -> list[tuple[str, dict[str, Any], int, list[list[Any]]]]:
    """(session id, body, expected status, expected error locations) of a mixed burst."""
    out: list[tuple[str, dict[str, Any], int, list[list[Any]]]] = []
    for n in range(24):
        fb = {"feedback": {**FEEDBACK, "overall_rating": 1 + n % 5}} if n % 2 else {}
        out.append((f"OK-{n}", completion(30 + n, tutor=f"T000{1 + n % 3}", **fb), 202, []))
    for n in range(6):
        out.append((f"LATE-{n}", completion(5, duration_minutes=20, late_start_minutes=30),
                    422, [["body", "late_start_minutes"]]))  # fmt: skip
        out.append((f"WHO-{n}", completion(5, tutor="T9999"), 422, [["body", "tutor_id"]]))
        bad_fb = {"overall_rating": 5, "free_text_feedback": "a\x00b"}
        out.append((f"BADFB-{n}", completion(5, feedback=bad_fb),
                    422, [["body", "feedback", "free_text_feedback"]]))  # fmt: skip
    return out


def test_a_concurrent_burst_is_answered_and_stored_one_by_one(
    db_url: str, redis_url: str, rclient: redis.Redis
) -> None:
    seed(db_url)
    engine = open_engine(db_url)
    cases = burst()
    dup_bodies = [completion(3, subject="Geometry"), completion(3, subject="Physics")]
    posts = [(sid, body) for sid, body, _, _ in cases] + [("DUP-1", b) for b in dup_bodies]
    barrier = threading.Barrier(len(posts))
    with api_server(db_url, redis_url) as base:

        def post(item: tuple[str, dict[str, Any]]) -> httpx.Response:
            with httpx.Client(base_url=base, timeout=60) as http:
                barrier.wait()  # (not connected before: uvicorn drops idle connections after 5 s)
                return http.post(f"/api/sessions/{item[0]}/complete", json=item[1], headers=AUTH)

        with ThreadPoolExecutor(len(posts)) as pool:
            replies = list(pool.map(post, posts))
        metrics = httpx.get(f"{base}/metrics").text
    for (sid, _body, status, locs), reply in zip(cases, replies, strict=False):
        assert reply.status_code == status, (sid, reply.text)
        if status == 202:
            assert reply.json()["session_id"] == sid
            assert (reply.json()["feedback_id"] is not None) == ("feedback" in _body)
        else:
            assert [e["loc"] for e in reply.json()["detail"]] == locs, sid
    assert [r.status_code for r in replies[-2:]] == [202, 202]  # both posts of DUP-1

    sessions, feedback = stored(engine)
    accepted = {sid for sid, _, status, _ in cases if status == 202}
    assert set(sessions) == accepted | {"DUP-1"}  # no LATE, WHO, nor BADFB session
    assert sessions["DUP-1"]["subject"] in ("Geometry", "Physics")
    for sid, body, status, _ in cases:
        if status == 202:
            assert sessions[sid]["tutor_id"] == body["tutor_id"]
            if "feedback" in body:
                assert feedback[sid]["overall_rating"] == body["feedback"]["overall_rating"]
    assert set(feedback) == {sid for sid, body, s, _ in cases if s == 202 and "feedback" in body}
    published = envelopes(rclient)
    assert {s: n for s, n in published.items() if s != "DUP-1"} == dict.fromkeys(accepted, 1)
    assert 1 <= published["DUP-1"] <= 2  # one per batch it was in: the same session twice

    families = text_string_to_metric_families(metrics)
    samples = {s.name: s.value for f in families for s in f.samples if "route" not in s.labels}
    assert samples["tutormax_api_batch_rows_sum"] == len(posts)
    assert samples["tutormax_api_batch_rows_count"] < len(posts)  # grouped, not one by one
    assert samples["tutormax_api_sessions_accepted_total"] == len(accepted) + 2
    engine.dispose()


def body(**changes: Any) -> SessionCompletion:
    return SessionCompletion.model_validate(completion(4, **changes))


def test_one_batch_last_write_wins_and_a_refused_feedback_writes_neither(
    db_url: str, redis_url: str, rclient: redis.Redis
) -> None:
    seed(db_url)
    engine = open_engine(db_url)
    batch = [
        ("S-1", body(subject="Geometry", feedback={"overall_rating": 2})),
        ("S-2", body(feedback={"overall_rating": 5, "feedback_id": "F-X"})),
        ("S-1", body(subject="Physics", feedback={"overall_rating": 3})),  # the last write
        ("S-3", body(feedback={"overall_rating": 4, "feedback_id": "F-X"})),  # S-2's id
        ("S-4", body(feedback={"overall_rating": 5, "free_text_feedback": "x\x00"})),
        ("S-5", body(session_number=1)),
        ("S-5", body(no_show=True)),  # a bad repeat does not undo the good one
    ]
    outcomes = ingest_completions(engine, rclient, batch, stream=keys.ENRICHMENT_STREAM)
    statuses = [o.status for o in outcomes]
    assert statuses == [202, 202, 202, 422, 422, 202, 422]
    assert outcomes[0].feedback_id == outcomes[2].feedback_id  # the same feedback row
    assert [e.loc for e in outcomes[3].errors] == [("body", "feedback", "feedback_id")]
    assert outcomes[3].errors[0].msg == "'F-X' is the feedback of session 'S-2'"
    assert [e.loc for e in outcomes[4].errors] == [("body", "feedback", "free_text_feedback")]
    assert [e.loc for e in outcomes[6].errors] == [("body", "actual_start")]
    sessions, feedback = stored(engine)
    assert set(sessions) == {"S-1", "S-2", "S-5"}
    assert sessions["S-1"]["subject"] == "Physics"
    assert {k: (v["feedback_id"], v["overall_rating"]) for k, v in feedback.items()} == {
        "S-1": (outcomes[0].feedback_id, 3),
        "S-2": ("F-X", 5),
    }
    assert envelopes(rclient) == {"S-1": 1, "S-2": 1, "S-5": 1}

    again = ingest_completions(engine, rclient, batch[:3], stream=keys.ENRICHMENT_STREAM)
    assert [o.status for o in again] == [202, 202, 202]  # idempotent, and publishes again
    assert stored(engine) == (sessions, feedback)
    assert envelopes(rclient) == {"S-1": 2, "S-2": 2, "S-5": 1}
    engine.dispose()


def test_a_database_outage_answers_every_completion_503(rclient: redis.Redis) -> None:
    engine = open_engine("postgresql://root@127.0.0.1:1/nothing")
    outcomes = ingest_completions(engine, rclient, [("S-1", body()), ("S-2", body())],
                                  stream=keys.ENRICHMENT_STREAM)  # fmt: skip
    assert [o.status for o in outcomes] == [503, 503]
    assert all((o.detail or "").startswith("database unavailable") for o in outcomes)
    assert rclient.exists(keys.ENRICHMENT_STREAM) == 0


def test_the_batch_endpoint_answers_item_by_item(
    db_url: str, redis_url: str, rclient: redis.Redis
) -> None:
    seed(db_url)
    engine = open_engine(db_url)
    items = [
        {**completion(6), "session_id": "B-1", "feedback": FEEDBACK},
        {**completion(6, late_start_minutes=90), "session_id": "B-2"},
        {**completion(6), "session_id": "B-3", "colour": "red"},
        "not an object",
        {**completion(6, subject="Geometry"), "session_id": "B-4"},
        {**completion(6, subject="Physics"), "session_id": "B-4"},
        {**completion(6, tutor="T9999"), "session_id": "B-5"},
    ]
    with api_server(db_url, redis_url) as base, httpx.Client(base_url=base, timeout=60) as http:
        reply = http.post("/api/sessions:batch", json=items, headers=AUTH)
        assert reply.status_code == 200, reply.text
        got = reply.json()
        assert got["count"] == 7 and got["accepted"] == 3
        assert [(i["index"], i["session_id"], i["status"]) for i in got["items"]] == [
            (0, "B-1", 202), (1, "B-2", 422), (2, "B-3", 422), (3, None, 422),
            (4, "B-4", 202), (5, "B-4", 202), (6, "B-5", 422),
        ]  # fmt: skip
        locs = [[e["loc"] for e in i["errors"] or []] for i in got["items"]]
        assert locs[1] == [["late_start_minutes"]] and locs[2] == [["colour"]]
        assert locs[6] == [["tutor_id"]] and got["items"][6]["errors"][0]["msg"] == (
            "unknown tutor 'T9999'"
        )
        assert got["items"][0]["feedback_id"] is not None

        ndjson = "\n".join(json.dumps({**completion(7), "session_id": f"N-{n}"}) for n in range(3))
        reply = http.post("/api/sessions:batch", content=ndjson.encode(),
                          headers={**AUTH, "content-type": "application/x-ndjson"})  # fmt: skip
        assert [i["status"] for i in reply.json()["items"]] == [202, 202, 202]

        too_many = [{"session_id": f"M-{n}"} for n in range(1001)]
        reply = http.post("/api/sessions:batch", json=too_many, headers=AUTH)
        assert reply.status_code == 413 and "at most 1000" in reply.json()["detail"]
        reply = http.post("/api/sessions:batch", content=b"[{", headers=AUTH)
        assert reply.status_code == 400
        assert reply.json()["detail"].startswith("the body is not JSON")
        reply = http.post("/api/sessions:batch", json={"session_id": "x"}, headers=AUTH)
        assert reply.status_code == 400
        assert http.post("/api/sessions:batch", json=[]).status_code == 401
    sessions, feedback = stored(engine)
    assert set(sessions) == {"B-1", "B-4", "N-0", "N-1", "N-2"}
    assert sessions["B-4"]["subject"] == "Physics" and set(feedback) == {"B-1"}
    assert envelopes(rclient) == dict.fromkeys(sessions, 1)
    engine.dispose()


def test_a_full_queue_is_refused_at_once() -> None:
    """The queue bound, with a writer made slow on purpose (no database is involved)."""
    release = threading.Event()

    def slow(batch: Any) -> list[Outcome]:
        release.wait(10)
        return [Outcome(202)] * len(batch)

    seen: list[int] = []

    async def scenario() -> None:
        batcher = Batcher(slow, window=0, max_rows=2, max_pending=3,
                          observe=lambda rows, waits: seen.append(rows))  # fmt: skip
        batcher.start()
        first = [asyncio.create_task(batcher.submit([("a", body())])) for _ in range(3)]
        await asyncio.sleep(0.05)
        with pytest.raises(Overloaded) as refused:
            await batcher.submit([("b", body())])
        assert refused.value.rows == 1
        release.set()
        assert [len(await t) for t in first] == [1, 1, 1]
        assert [o.status for o in await batcher.submit([("c", body()), ("d", body())])] == [202] * 2
        await batcher.stop()

    asyncio.run(scenario())
    assert sum(seen) == 5 and max(seen) <= 2


def _held_write_lock(db_url: str) -> Any:
    """A connection that keeps the API's writer from writing `sessions` until it is closed:
    PostgreSQL, a table lock that conflicts with INSERT; SQLite, the database's write lock."""
    import contextlib
    import sqlite3

    @contextlib.contextmanager
    def held() -> Any:
        if db_url.startswith("sqlite"):
            raw = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
            raw.execute("BEGIN IMMEDIATE")
            try:
                yield
            finally:
                raw.rollback()
                raw.close()
        else:
            engine = open_engine(db_url)
            with engine.connect() as conn:
                conn.execute(sa.text("LOCK TABLE sessions IN SHARE ROW EXCLUSIVE MODE"))
                try:
                    yield
                finally:
                    conn.rollback()
            engine.dispose()

    return held()


def overloaded_total(base: str) -> float:
    families = text_string_to_metric_families(httpx.get(f"{base}/metrics", timeout=10).text)
    return sum(
        s.value
        for f in families
        if f.name == "tutormax_api_overloaded"
        for s in f.samples
        if s.name == "tutormax_api_overloaded_total"
    )


def test_a_full_queue_is_answered_503_over_http(
    db_url: str, redis_url: str, rclient: redis.Redis
) -> None:
    """`--max-pending 1` and a writer held by a lock: the first post waits in the writer, so
    the next single post (answered by the fast path), a post FastAPI routes (a `+json` content
    type, which FastAPI reads as JSON and the fast path leaves to it) and a batch are each
    refused at once with 503 and `Retry-After`, counted, and leave nothing behind; once the
    lock goes, the waiting post is answered 202 and is the only session stored and published."""
    seed(db_url)
    engine = open_engine(db_url)
    with (
        api_server(db_url, redis_url, extra=("--max-pending", "1")) as base,
        ThreadPoolExecutor(1) as pool,
    ):
        with _held_write_lock(db_url):
            waiting = pool.submit(
                httpx.post, f"{base}/api/sessions/Q-1/complete", json=completion(4),
                headers=AUTH, timeout=60,
            )  # fmt: skip
            for _ in range(200):  # until the writer holds the first post
                seen = httpx.get(f"{base}/metrics", timeout=10).text
                if "tutormax_api_batch_rows_count 1.0" in seen:
                    break
                time.sleep(0.05)
            else:
                raise AssertionError("the first post never reached the writer")
            refused = [
                httpx.post(f"{base}/api/sessions/Q-2/complete", json=completion(3),
                           headers=AUTH, timeout=10),
                httpx.post(f"{base}/api/sessions/Q-3/complete",  # a +json type: the route's
                           content=json.dumps(completion(2)).encode(), timeout=10,
                           headers={**AUTH, "content-type": "application/vnd.tutormax+json"}),
                httpx.post(f"{base}/api/sessions:batch",
                           json=[{"session_id": "Q-4", **completion(1)}], headers=AUTH,
                           timeout=10),
            ]  # fmt: skip
            for answer in refused:
                assert answer.status_code == 503, answer.text
                assert answer.headers["Retry-After"] == "1"
                assert "completions are waiting to be written" in answer.json()["detail"]
            assert not waiting.done()
        first = waiting.result(timeout=60)
        assert first.status_code == 202, first.text
        assert overloaded_total(base) == 3
    sessions, _ = stored(engine)
    assert set(sessions) == {"Q-1"}
    assert envelopes(rclient) == {"Q-1": 1}
    engine.dispose()


def test_a_lone_surrogate_is_a_422_for_its_own_completion_only(
    db_url: str, redis_url: str, rclient: redis.Redis
) -> None:
    """A JSON string holding an unpaired surrogate escape (`"\\ud800"`) passed the body model,
    then failed the whole group commit (every concurrent post 503, a batch 500); it is a 422 on
    its field and the completions beside it are written and published."""
    seed(db_url)
    engine = open_engine(db_url)
    bad_fb = {"overall_rating": 5, "free_text_feedback": "\ud800"}
    posts = [(f"OKS-{n}", completion(10 + n)) for n in range(5)]
    posts += [
        ("BADS-1", completion(5, feedback=bad_fb)),
        ("BADS-2", completion(5, subject="Alg\udc80")),
    ]
    barrier = threading.Barrier(len(posts))
    items = [
        {**completion(6), "session_id": "BS-1"},
        {**completion(6, subject="Alg\udc80"), "session_id": "BS-2"},
        {**completion(6), "session_id": "\ud800"},
        {**completion(6), "session_id": "BS-3"},
    ]
    with api_server(db_url, redis_url) as base:

        def post(item: tuple[str, dict[str, Any]]) -> httpx.Response:
            with httpx.Client(base_url=base, timeout=60) as http:
                barrier.wait()
                return http.post(f"/api/sessions/{item[0]}/complete", headers={
                    **AUTH, "content-type": "application/json",
                }, content=json.dumps(item[1]).encode())  # fmt: skip

        with ThreadPoolExecutor(len(posts)) as pool:
            replies = list(pool.map(post, posts))
        with httpx.Client(base_url=base, timeout=60) as http:
            batch = http.post("/api/sessions:batch", content=json.dumps(items).encode(),
                              headers={**AUTH, "content-type": "application/json"})  # fmt: skip
    assert [r.status_code for r in replies] == [202] * 5 + [422, 422], [r.text for r in replies]
    for reply, loc in zip(replies[5:], (["body", "feedback", "free_text_feedback"],
                                        ["body", "subject"]), strict=True):  # fmt: skip
        assert reply.json()["detail"][0]["loc"] == loc
        assert reply.json()["detail"][0]["msg"] == (
            "is not valid UTF-8 text (an unpaired surrogate escape)"
        )
    assert batch.status_code == 200, batch.text
    got = batch.json()["items"]
    assert [(i["session_id"], i["status"]) for i in got] == [
        ("BS-1", 202),
        ("BS-2", 422),
        (None, 422),
        ("BS-3", 202),
    ]
    assert [[e["loc"] for e in i["errors"] or []] for i in got] == [
        [],
        [["subject"]],
        [["session_id"]],
        [],
    ]
    sessions, _ = stored(engine)
    written = {f"OKS-{n}" for n in range(5)} | {"BS-1", "BS-3"}
    assert set(sessions) == written
    assert envelopes(rclient) == dict.fromkeys(written, 1)
    engine.dispose()
