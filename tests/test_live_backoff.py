"""The API's live feed while Redis is down: one warning when lost, one when back, with backoff."""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import pytest
import redis

from tutormax_cli.api import live


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_lost_redis_is_logged_once_not_every_second(
    caplog: pytest.LogCaptureFixture, redis_url: str
) -> None:
    down = f"redis://127.0.0.1:{_closed_port()}/0"
    attempts: list[float] = []
    target = {"url": down}

    def connect() -> redis.Redis:
        attempts.append(time.monotonic())
        client = redis.Redis.from_url(target["url"], socket_connect_timeout=0.2)
        client.ping()
        return client

    async def run() -> None:
        hub = live.UpdateHub(connect, "tutormax:test:live", block_ms=100)
        hub.start()
        await asyncio.sleep(3.5)  # waits of 1 + 2 s: three attempts, not four
        target["url"] = redis_url
        await asyncio.sleep(4.5)  # the next wait (4 s) ends and the connection is back
        hub.stop()

    with caplog.at_level(logging.WARNING, logger="tutormax.api.live"):
        asyncio.run(run())
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "retrying with backoff up to 30 s" in lines[0]
    assert "following tutormax:test:live again after" in lines[1]
    assert 3 <= len(attempts) <= 5, attempts


def test_the_start_of_following_is_signalled_once(redis_url: str) -> None:
    """`on_start` (the read cache's clear) runs when the feed gets its position, once, not on
    every read of the feed (an empty feed included)."""
    starts: list[int] = []

    async def run() -> None:
        client = redis.Redis.from_url(redis_url)
        client.delete("tutormax:test:start")
        hub = live.UpdateHub(
            lambda: client, "tutormax:test:start", block_ms=50, on_start=lambda: starts.append(1)
        )
        hub.start()
        await asyncio.sleep(0.6)  # a dozen empty reads
        hub.stop()

    asyncio.run(run())
    assert starts == [1]
