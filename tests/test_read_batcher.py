"""Group reads: requests that arrive together share one fetch, each gets its own value, and a
failed fetch fails only its own group."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from tutormax_cli.api.read_batcher import ReadBatcher

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_reads_waiting_together_are_one_fetch() -> None:
    calls: list[list[str]] = []
    release = threading.Event()

    def fetch(keys: list[str]) -> dict[str, str]:
        calls.append(keys)
        release.wait(5)
        return {k: k.upper() for k in keys}

    reads: ReadBatcher[str, str] = ReadBatcher(fetch, readers=1)
    reads.start()
    try:
        first = asyncio.create_task(reads.get("a"))
        while not calls:  # "a" is in the database
            await asyncio.sleep(0.001)
        rest = [asyncio.create_task(reads.get(k)) for k in "bcdb"]
        await asyncio.sleep(0.01)
        release.set()
        assert await first == "A"
        assert await asyncio.gather(*rest) == ["B", "C", "D", "B"]
        assert calls == [["a"], ["b", "c", "d"]]  # one fetch for the four, "b" asked once
    finally:
        await reads.stop()


async def test_a_failed_fetch_fails_its_group_and_the_readers_go_on() -> None:
    down = True

    def fetch(keys: list[str]) -> dict[str, str]:
        time.sleep(0.01)
        if down:
            raise ConnectionError("database unavailable")
        return {k: k for k in keys if k != "lost"}  # breaks the contract for "lost"

    reads: ReadBatcher[str, str] = ReadBatcher(fetch, readers=2)
    reads.start()
    try:
        failed = await asyncio.gather(*(reads.get(k) for k in "xyz"), return_exceptions=True)
        assert all(isinstance(e, ConnectionError) for e in failed)
        down = False
        with pytest.raises(KeyError):
            await reads.get("lost")
        assert list(await asyncio.gather(reads.get("x"), reads.get("y"))) == ["x", "y"]
    finally:
        await reads.stop()


async def test_a_stopped_batcher_refuses_instead_of_hanging() -> None:
    reads: ReadBatcher[str, str] = ReadBatcher(lambda keys: {k: k for k in keys})
    reads.start()
    assert await reads.get("a") == "a"
    await reads.stop()
    with pytest.raises(RuntimeError, match="not running"):
        await reads.get("b")
