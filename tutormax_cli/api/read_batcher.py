"""Group reads: the metric reads that arrive together become one query.

The group commit's idea (`api.batcher`) on the read side. A request hands its key (a tutor id)
to `ReadBatcher.get` and awaits the value; a reader task takes every key waiting at that moment
(no timer: while one read is in the database the next group gathers, so an idle server adds no
delay) and runs `fetch` once for all of them on the thread pool: one pool checkout, one thread
hop, one round trip for the group, where each request used to pay all three. A few readers run
at once (`readers`), so one slow query does not hold up every read, and the connections they
use stay bounded. A failed `fetch` (the database is down) fails every request of its group with
the same exception, which the routes answer 503 as before.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import anyio.to_thread

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

READERS = 2
"""Reader tasks (and database connections) per process: one group in the database while the
next gathers."""
MAX_KEYS = 64
"""Keys in one query at most (64 tutors read in ~4 ms here, 256 in ~40: smaller groups, more of
them, answer sooner)."""


class ReadBatcher(Generic[K, V]):
    """`start()` in the app's lifespan, `get()` from routes; `fetch(keys)` must return a value
    for every key it is given."""

    def __init__(
        self,
        fetch: Callable[[list[K]], dict[K, V]],
        *,
        readers: int = READERS,
        max_keys: int = MAX_KEYS,
        observe: Callable[[int], None] | None = None,
    ) -> None:
        self.fetch = fetch
        self.readers = readers
        self.max_keys = max_keys
        self.observe = observe or (lambda keys: None)
        """`observe(keys)`: the size of each group read."""
        self._queue: asyncio.Queue[tuple[K, asyncio.Future[V]]] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start the readers on the running event loop."""
        self._queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._run(), name=f"tutormax-reader-{n}") for n in range(self.readers)
        ]

    async def stop(self) -> None:
        """Stop the readers (a request still waiting gets no answer: the server is stopping)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def get(self, key: K) -> V:
        """`fetch`'s value for `key`, read together with the keys asked for meanwhile."""
        if self._queue is None or all(task.done() for task in self._tasks):
            raise RuntimeError("the read batcher is not running")
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((key, future))
        return await asyncio.shield(future)

    async def _run(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            jobs = [await queue.get()]
            while len(jobs) < self.max_keys and not queue.empty():
                jobs.append(queue.get_nowait())
            try:
                keys = list(dict.fromkeys(key for key, _ in jobs))
                self.observe(len(keys))
                values = await anyio.to_thread.run_sync(self.fetch, keys)
                answers = [values[key] for key, _ in jobs]
            except Exception as exc:  # every request of the group answers it (a 503)
                for _, future in jobs:
                    if not future.done():
                        future.set_exception(exc)
                continue
            except BaseException:  # stopped mid-read: its requests get no answer, not a hang
                for _, future in jobs:
                    future.cancel()
                raise
            for (_, future), answer in zip(jobs, answers, strict=True):
                if not future.done():
                    future.set_result(answer)
