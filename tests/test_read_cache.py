"""The read routes' cache: its rules on a fake clock, then a real `tutormax api serve` with the
real worker announcing its writes, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect as ws_connect

from tests.api_server import ClientFor, api_server
from tests.test_api import AUTH, completion, run_worker, seed
from tutormax_cli.api.read_cache import ENTRY_OVERHEAD, MAX_QUERY_BYTES, ReadCache
from tutormax_cli.store.db import open_engine
from tutormax_cli.store.query import latest_for_tutor


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def body(cache: ReadCache, key: object) -> bytes | None:
    hit = cache.get(key)
    return None if hit is None else hit.body


def test_an_answer_lives_until_it_expires() -> None:
    clock = Clock()
    cache = ReadCache(2.0, clock=clock)
    cache.put("a", b"one", tutor_id="T1", generation=cache.generation)
    clock.now += 1.99
    assert body(cache, "a") == b"one"
    clock.now += 0.01
    assert cache.get("a") is None
    assert len(cache) == 0 and cache.size == 0


def test_an_announcement_drops_its_tutor_and_every_leaderboard_only() -> None:
    cache = ReadCache(60.0, clock=Clock())
    g = cache.generation
    cache.put(("metrics", "T1", None), b"t1", tutor_id="T1", generation=g)
    cache.put(("history", "T1", "7day", 30), b"t1h", tutor_id="T1", generation=g)
    cache.put(("metrics", "T2", None), b"t2", tutor_id="T2", generation=g)
    cache.put(("board", "30day", None, 50), b"board", tutor_id=None, generation=g)
    cache.invalidate(["T1"])
    assert cache.get(("metrics", "T1", None)) is None
    assert cache.get(("history", "T1", "7day", 30)) is None
    assert cache.get(("board", "30day", None, 50)) is None
    assert body(cache, ("metrics", "T2", None)) == b"t2"
    assert cache.size == len(b"t2") + len("metrics") + len("T2") + ENTRY_OVERHEAD
    assert len(cache) == 1


def test_a_read_that_started_before_an_announcement_is_not_kept() -> None:
    cache = ReadCache(60.0, clock=Clock())
    started = cache.generation
    cache.invalidate(["T9"])  # a write lands while the read is in flight
    cache.put("a", b"maybe old", tutor_id="T1", generation=started)
    assert cache.get("a") is None
    cache.put("a", b"new", tutor_id="T1", generation=cache.generation)
    assert body(cache, "a") == b"new"


def test_the_byte_bound_drops_the_oldest_and_refuses_giants() -> None:
    entry = ENTRY_OVERHEAD + 10  # an int key has no text
    cache = ReadCache(60.0, max_bytes=8 * entry, clock=Clock())
    for i in range(9):
        cache.put(i, b"x" * 10, tutor_id=f"T{i}", generation=cache.generation)
    assert cache.size == 8 * entry and cache.get(0) is None and body(cache, 1) == b"x" * 10
    cache.put("big", b"y" * 11, tutor_id="T1", generation=cache.generation)  # > max_bytes / 8
    assert cache.get("big") is None
    cache.put(5, b"z" * 5, tutor_id="T5", generation=cache.generation)  # replaces, not adds
    assert cache.size == 8 * entry - 5 and body(cache, 5) == b"z" * 5
    cache.invalidate(["T5"])
    assert cache.size == 7 * entry and len(cache) == 7


def test_keys_and_overhead_count_and_long_queries_are_not_kept() -> None:
    """Many tiny answers under junk query strings (which the routes ignore) cannot outgrow the
    bound: the key's text and a fixed overhead count, and a long query string is not kept."""
    cache = ReadCache(60.0, max_bytes=100_000, clock=Clock())
    for i in range(5_000):
        key = ("/api/tutors/T1/metrics", f"junk{i}=1".encode())
        cache.put(key, b"{}", tutor_id="T1", generation=cache.generation)
    assert cache.size <= 100_000 and len(cache) < 500
    long_query = ("/api/tutors/T1/metrics", b"x=" + b"y" * MAX_QUERY_BYTES)
    cache.put(long_query, b"{}", tutor_id="T1", generation=cache.generation)
    assert cache.get(long_query) is None


def test_zero_seconds_keeps_nothing() -> None:
    cache = ReadCache(0.0)
    cache.put("a", b"one", tutor_id=None, generation=cache.generation)
    assert not cache.enabled and cache.get("a") is None


def _rows(reply: httpx.Response) -> list[dict[str, Any]]:
    return list(reply.json()["metrics"])


def _stored(engine: sa.Engine, tutor: str) -> list[tuple[str, float | None]]:
    with engine.connect() as conn:
        latest = latest_for_tutor(conn, tutor)
    return sorted(zip(latest["window"], latest["avg_rating"], strict=True))


def _answered(reply: httpx.Response) -> list[tuple[str, float | None]]:
    return sorted((m["window"], m["avg_rating"]) for m in _rows(reply))


def _wait_for_updates(ws: Any, tutors: set[str]) -> None:
    """Until the server has delivered (so also invalidated for) an update of each tutor."""
    seen: set[str] = set()
    while not tutors <= seen:
        message = json.loads(ws.recv(timeout=30))
        if message["type"] == "metrics.updated":
            seen.add(message["tutor_id"])


def _hits(http: httpx.Client) -> float:
    for family in text_string_to_metric_families(http.get("/metrics").text):
        for s in family.samples:
            if s.name == "tutormax_api_read_cache_lookups_total" and s.labels["result"] == "hit":
                return s.value
    return 0.0


def _requests(http: httpx.Client, route: str) -> dict[str, int]:
    counts = {}
    for family in text_string_to_metric_families(http.get("/metrics").text):
        for s in family.samples:
            if s.name == "tutormax_api_requests_total" and s.labels["route"] == route:
                counts[s.labels["status"]] = int(s.value)
    return counts


def test_answers_are_reused_until_the_worker_announces_its_write(
    db_url: str, redis_url: str, client_for: ClientFor
) -> None:
    seed(db_url)
    engine = open_engine(db_url)
    with api_server(db_url, redis_url, extra=("--read-cache-seconds", "600")) as base:
        http = client_for(base)
        with ws_connect(base.replace("http://", "ws://") + "/ws/tutors") as ws:
            ws.recv(timeout=30)  # subscribed
            for session_id, body in (
                ("RC-1", completion(30, feedback={"overall_rating": 4})),
                ("RC-2", completion(20, tutor="T0002", session_number=1)),
            ):
                assert http.post(f"/api/sessions/{session_id}/complete", json=body,
                                 headers=AUTH).status_code == 202  # fmt: skip
            run_worker(db_url, redis_url)
            _wait_for_updates(ws, {"T0001", "T0002"})

            first = http.get("/api/tutors/T0001/metrics")
            assert first.headers["x-cache"] == "MISS" and _answered(first) == _stored(
                engine, "T0001"
            )
            again = http.get("/api/tutors/T0001/metrics")
            assert again.headers["x-cache"] == "HIT" and again.content == first.content
            other = http.get("/api/tutors/T0002/metrics")
            board = http.get("/api/tutors", params={"window": "7day"})
            assert (other.headers["x-cache"], board.headers["x-cache"]) == ("MISS", "MISS")
            assert http.get("/api/tutors", params={"window": "7day"}).headers["x-cache"] == "HIT"
            assert _hits(http) == 2

            with engine.begin() as conn:  # a write nobody announces (as a recompute's)
                conn.execute(sa.text("UPDATE tutor_performance_metrics SET avg_rating = 1.5 "
                                     "WHERE tutor_id = 'T0001'"))  # fmt: skip
            stale = http.get("/api/tutors/T0001/metrics")
            assert stale.headers["x-cache"] == "HIT" and stale.content == first.content

            body = completion(10, feedback={"overall_rating": 2}, session_number=3)
            assert http.post("/api/sessions/RC-3/complete", json=body,
                             headers=AUTH).status_code == 202  # fmt: skip
            run_worker(db_url, redis_url)  # recomputes T0001 only, and announces it
            _wait_for_updates(ws, {"T0001"})

        fresh = http.get("/api/tutors/T0001/metrics")
        assert fresh.headers["x-cache"] == "MISS"
        assert _answered(fresh) == _stored(engine, "T0001") != _answered(first)
        assert http.get("/api/tutors", params={"window": "7day"}).headers["x-cache"] == "MISS"
        kept = http.get("/api/tutors/T0002/metrics")  # not announced: still the kept answer
        assert kept.headers["x-cache"] == "HIT" and kept.content == other.content
        missing = http.get("/api/tutors/NOBODY/metrics")  # errors are never kept
        assert missing.status_code == 404
        assert http.get("/api/tutors/NOBODY/metrics").status_code == 404
        # answers served before routing are still counted under their route's template
        assert _requests(http, "/api/tutors/{tutor_id}/metrics") == {"200": 6, "404": 2}
        assert _requests(http, "/api/tutors") == {"200": 3}
    engine.dispose()


def test_unannounced_writes_show_after_the_cache_seconds_and_at_once_with_zero(
    sqlite_url: str, redis_url: str, client_for: ClientFor
) -> None:
    seed(sqlite_url)
    engine = open_engine(sqlite_url)
    with api_server(sqlite_url, redis_url) as base:
        body = completion(30, feedback={"overall_rating": 4})
        client_for(base).post("/api/sessions/RC-1/complete", json=body, headers=AUTH)
    run_worker(sqlite_url, redis_url)

    def rate(value: float) -> None:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE tutor_performance_metrics SET avg_rating = :v"),
                         {"v": value})  # fmt: skip

    for seconds in ("0.5", "0"):
        with api_server(sqlite_url, redis_url, extra=("--read-cache-seconds", seconds)) as base:
            http = client_for(base)
            rate(3.0)
            assert {r["avg_rating"] for r in _rows(http.get("/api/tutors/T0001/metrics"))} == {3.0}
            rate(2.0)
            reply = http.get("/api/tutors/T0001/metrics")
            if seconds == "0":
                assert reply.headers["x-cache"] == "MISS"
                assert {r["avg_rating"] for r in _rows(reply)} == {2.0}
                continue
            assert reply.headers["x-cache"] == "HIT"
            assert {r["avg_rating"] for r in _rows(reply)} == {3.0}
            time.sleep(0.6)
            reply = http.get("/api/tutors/T0001/metrics")
            assert reply.headers["x-cache"] == "MISS"
            assert {r["avg_rating"] for r in _rows(reply)} == {2.0}
    engine.dispose()


@pytest.mark.anyio
async def test_requests_that_miss_together_share_one_read() -> None:
    cache = ReadCache(60.0, clock=Clock())
    reads: list[str] = []
    gate = asyncio.Event()

    async def make() -> bytes:
        reads.append("read")
        await gate.wait()
        return b"board"

    first = asyncio.create_task(cache.read_once("k", make, tutor_id=None))
    await asyncio.sleep(0)
    second = asyncio.create_task(cache.read_once("k", make, tutor_id=None))
    await asyncio.sleep(0)
    gate.set()
    assert await first == (b"board", False) and await second == (b"board", True)
    assert reads == ["read"] and body(cache, "k") == b"board"  # one read, kept


@pytest.mark.anyio
async def test_an_announcement_during_a_read_makes_the_next_miss_read_again() -> None:
    cache = ReadCache(60.0, clock=Clock())
    gate = asyncio.Event()
    values = iter([b"old", b"new"])

    async def make() -> bytes:
        value = next(values)
        if value == b"old":
            await gate.wait()
        return value

    first = asyncio.create_task(cache.read_once("k", make, tutor_id="T1"))
    await asyncio.sleep(0)
    cache.invalidate(["T1"])  # a write lands while "old" is being read
    assert await cache.read_once("k", make, tutor_id="T1") == (b"new", False)
    gate.set()
    assert await first == (b"old", False)
    assert body(cache, "k") == b"new"  # "old" started before the announcement: not kept


@pytest.mark.anyio
async def test_a_shared_read_shares_its_error_and_survives_a_waiter_leaving() -> None:
    cache = ReadCache(60.0, clock=Clock())
    gate = asyncio.Event()

    async def make() -> bytes:
        await gate.wait()
        raise ConnectionError("database unavailable")

    leaving = asyncio.create_task(cache.read_once("k", make, tutor_id=None))
    await asyncio.sleep(0)
    staying = asyncio.create_task(cache.read_once("k", make, tutor_id=None))
    await asyncio.sleep(0)
    leaving.cancel()  # its client went away: the read goes on for the other
    gate.set()
    with pytest.raises(ConnectionError):
        await staying
    assert cache.get("k") is None


@pytest.mark.anyio
async def test_with_the_cache_off_every_request_reads() -> None:
    cache = ReadCache(0.0)
    reads: list[int] = []

    async def make() -> bytes:
        reads.append(1)
        await asyncio.sleep(0.01)
        return b"x"

    results = await asyncio.gather(*(cache.read_once("k", make, tutor_id=None) for _ in range(3)))
    assert results == [(b"x", False)] * 3 and len(reads) == 3
