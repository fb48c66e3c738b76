"""A Ctrl-C that the kernel hands to a worker thread still interrupts the main thread's wait."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tutormax_cli import interruptible


@pytest.fixture
def ctrl_c_raises() -> Iterator[None]:
    """Python's own SIGINT handler (an earlier test's server may have installed another)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("ctrl_c_raises")
def test_a_ctrl_c_delivered_to_a_worker_thread_interrupts_the_wait_at_once() -> None:
    started = threading.Event()
    release = threading.Event()
    worker: list[int] = []

    def work() -> int:
        worker.append(threading.get_ident())
        started.set()
        release.wait(10)  # a statement running in libpq, as far as signals go
        return 1

    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(work)
        started.wait(5)
        threading.Timer(0.2, signal.pthread_kill, (worker[0], signal.SIGINT)).start()
        begun = time.perf_counter()
        with pytest.raises(KeyboardInterrupt):
            interruptible.result(future)
        waited = time.perf_counter() - begun
        release.set()
    assert waited < 2, f"the interrupt waited {waited:.1f} s for the worker"
    assert future.result() == 1
