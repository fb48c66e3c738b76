"""SIGTERM/SIGINT for the stream consumers: the first stops reading and drains, the second exits
at once, even while the main thread is stuck in a C call.

Python runs a signal handler in the main thread between bytecodes only. A worker blocked on a
locked SQLite file sits inside `sqlite3_step`, whose busy handler sleeps for up to the busy
timeout (30 s), so a handler alone runs only when that call gives up: the second signal "took
28 s". The C-level handler still writes the signal number to the wakeup fd
(`signal.set_wakeup_fd`) the moment the signal arrives, and blocking database calls release the
GIL, so a watchdog thread reading that fd sees the second signal at once and ends the process.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Protocol

log = logging.getLogger("tutormax.worker")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stoppable(Protocol):
    """What the handlers need of a consumer: its stop flag and how much it holds."""

    stopping: bool

    def buffered(self) -> int: ...


class _Watched:
    """The one watchdog of the process and the consumer it stops (a process installs handlers
    once per consumer it runs: the CLI once, tests that run `worker run` in process many times)."""

    def __init__(self, worker: Stoppable, write_end: int) -> None:
        self.worker = worker
        self.write_end = write_end
        """The pipe end the C-level handler writes each signal's number to."""
        self.seen = 0
        self.lock = threading.Lock()


_watched: _Watched | None = None


def install(worker: Stoppable) -> None:
    """First SIGTERM/SIGINT: `worker.stopping` (stop reading, flush what is buffered, ack, exit
    0). Second: exit 1 at once; unacknowledged entries stay pending and another worker's claim
    pass takes them. Call from the main thread (signal handlers can only be set there)."""
    global _watched
    for signum in STOP_SIGNALS:
        # The watchdog acts on every signal; this handler only keeps Python from the default
        # action (KeyboardInterrupt, death) and the C-level handler writing the wakeup fd.
        signal.signal(signum, _noted)
    if _watched is not None:  # the watchdog runs already: point it at this consumer
        signal.set_wakeup_fd(_watched.write_end, warn_on_full_buffer=False)
        with _watched.lock:
            _watched.worker, _watched.seen = worker, 0
        return
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    _watched = _Watched(worker, write_end)
    threading.Thread(
        target=_watch, args=(read_end, _watched), name="tutormax-signals", daemon=True
    ).start()


def _noted(_signum: int, _frame: object) -> None:
    """The Python-level handler: nothing to do, the watchdog has the signal already."""


def _watch(read_end: int, watched: _Watched) -> None:
    """Act on each stop signal as the C-level handler reports it on the wakeup fd, whatever the
    main thread is doing: the first sets `stopping` (the main loop drains when it next looks),
    the second ends the process."""
    stop = {int(s) for s in STOP_SIGNALS}
    while True:
        try:
            data = os.read(read_end, 64)
        except OSError:
            return
        if not data:
            return
        for signum in data:
            if signum not in stop:
                continue
            with watched.lock:
                watched.seen += 1
                worker, seen = watched.worker, watched.seen
            name = signal.Signals(signum).name
            if seen == 1:
                log.info(
                    "%s received: stopping after flushing %d buffered", name, worker.buffered()
                )
                worker.stopping = True
            else:
                log.warning("second %s: exiting now; unacknowledged entries stay pending", name)
                logging.shutdown()
                os._exit(1)
