"""Waiting on a worker thread without deafening Ctrl-C.

The kernel delivers SIGINT to any thread of the process, often one blocked in libpq; Python
only runs its handler on the main thread, when that thread next executes bytecode. A main
thread blocked in `Future.result()` with no timeout sleeps on a lock until the worker is done,
so Ctrl-C took effect only after the running statement finished (a fill range: seconds, or
minutes at scale). Waking every `TICK_SECONDS` lets the interrupt through at once.
"""

from __future__ import annotations

from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TypeVar

T = TypeVar("T")

TICK_SECONDS = 0.1


def result(future: Future[T]) -> T:
    """`future.result()`, waking every `TICK_SECONDS` so a pending Ctrl-C is raised here."""
    while True:
        try:
            return future.result(timeout=TICK_SECONDS)
        except FutureTimeout:
            continue
