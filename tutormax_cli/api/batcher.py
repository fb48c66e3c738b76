"""Group commit: one writer task per process turns concurrent completions into batches.

A request hands its completions to `Batcher.submit` and awaits their outcomes. The writer task
takes the first waiting job, gathers whatever else arrives within `window` seconds (or until
`max_rows` completions), and runs `completion.ingest_completions` once for all of them on a
thread of its own: one validate, one upsert per table, one commit, one pipelined XADD for the
batch, so the cost of a completion falls with the load instead of queueing behind it. While a
batch is written the next one gathers, so under load batches grow by themselves and an idle
server answers a lone request after at most `window`.

One writer means one database connection for all writes of a process, whatever the number of
requests in flight: the read routes keep the thread pool's connections. The queue is bounded
(`max_pending` completions, `api serve --max-pending`); past it `submit` raises `Overloaded`
at once and the route answers 503 with `Retry-After`, instead of letting requests time out in
a queue nobody drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from tutormax_cli.api.completion import UNAVAILABLE, Outcome
from tutormax_cli.api.config import MAX_PENDING_ROWS
from tutormax_cli.api.models import SessionCompletion
from tutormax_cli.errors import TutormaxError

log = logging.getLogger("tutormax.api")

WINDOW_SECONDS = 0.002
"""How long the writer waits for more completions after the first of a batch: 2 ms adds at
most that to a lone request, and under load the batch has usually filled before it ends."""
MAX_BATCH_ROWS = 1_000
"""Completions per batch at most (one `POST /api/sessions:batch` is never split)."""
RETRY_AFTER_SECONDS = 1

Ingest = Callable[[Sequence[tuple[str, SessionCompletion]]], list[Outcome]]
"""`ingest_completions` with the engine, Redis client and stream bound."""


class Overloaded(TutormaxError):
    """The batch queue is full: retry after `RETRY_AFTER_SECONDS`."""

    def __init__(self, message: str, rows: int) -> None:
        super().__init__(message)
        self.rows = rows


@dataclass
class _Job:
    completions: Sequence[tuple[str, SessionCompletion]]
    future: asyncio.Future[list[Outcome]]
    queued: float = field(default_factory=time.perf_counter)


class Batcher:
    """The per-process writer: `start()` in the app's lifespan, `submit()` from routes."""

    def __init__(
        self,
        ingest: Ingest,
        *,
        window: float = WINDOW_SECONDS,
        max_rows: int = MAX_BATCH_ROWS,
        max_pending: int = MAX_PENDING_ROWS,
        observe: Callable[[int, list[float]], None] | None = None,
    ) -> None:
        self.ingest = ingest
        self.window = window
        self.max_rows = max_rows
        self.max_pending = max_pending
        self.observe = observe or (lambda rows, waits: None)
        """`observe(rows, waits)`: a batch's size and how long each of its jobs waited."""
        self.pending = 0
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tutormax-writer")

    def start(self) -> None:
        """Start the writer task on the running event loop."""
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="tutormax-writer")

    async def stop(self) -> None:
        """Finish the batches already queued, then stop the writer."""
        if self._task is not None and self._queue is not None:
            while self.pending and not self._task.done():
                await asyncio.sleep(0.01)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._thread.shutdown(wait=True)

    async def submit(self, completions: Sequence[tuple[str, SessionCompletion]]) -> list[Outcome]:
        """The outcome of each completion once its batch is committed and published."""
        if self._queue is None:
            raise RuntimeError("the batcher is not started")
        n = len(completions)
        if self.pending and self.pending + n > self.max_pending:
            raise Overloaded(
                f"{self.pending} completions are waiting to be written; retry in "
                f"{RETRY_AFTER_SECONDS} s",
                n,
            )
        self.pending += n
        job = _Job(completions, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(job)
        return await asyncio.shield(job.future)  # a client that goes away cancels nothing

    async def _gather(self, queue: asyncio.Queue[_Job]) -> list[_Job]:
        jobs = [await queue.get()]
        rows = len(jobs[0].completions)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.window
        while rows < self.max_rows:
            if queue.empty():
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    job = await asyncio.wait_for(queue.get(), left)
                except TimeoutError:
                    break
            else:
                job = queue.get_nowait()
            jobs.append(job)
            rows += len(job.completions)
        return jobs

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._gather(self._queue)
            started = time.perf_counter()
            batch = [c for job in jobs for c in job.completions]
            self.observe(len(batch), [started - job.queued for job in jobs])
            try:
                outcomes = await loop.run_in_executor(self._thread, self.ingest, batch)
            except Exception as exc:  # a bug, not an outage: answer, log, keep writing
                log.error("a batch of %d completions failed", len(batch), exc_info=exc)
                failed = Outcome(UNAVAILABLE, detail="internal error; the server log has details")
                outcomes = [failed] * len(batch)
            start = 0
            for job in jobs:
                n = len(job.completions)
                if not job.future.done():
                    job.future.set_result(outcomes[start : start + n])
                start += n
                self.pending -= n
