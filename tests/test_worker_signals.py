"""A second SIGTERM/SIGINT ends a worker at once, even while it waits on a locked SQLite file
(#17 item 5: it took 28 s, the busy timeout, because Python runs signal handlers in the main
thread only between bytecodes). A real worker process, a real lock held by another process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from tests.helpers import count_rows, recent_sample
from tests.test_worker import STREAM, _start_worker, _wait_for, pending_count
from tutormax_cli.store.db import open_engine
from tutormax_cli.store.migrate import upgrade
from tutormax_cli.store.seed import save_tables
from tutormax_cli.stream import events, signals
from tutormax_cli.stream.producer import publish

pytestmark = pytest.mark.slow

LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
conn.execute("UPDATE tutors SET tutor_id = tutor_id")
print("locked", flush=True)
time.sleep(120)
"""
"""Another process holding an EXCLUSIVE lock on the database (with a write in it) until killed."""


def _locked(path: Path) -> subprocess.Popen[str]:
    locker = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert locker.stdout is not None and locker.stdout.readline() == "locked\n"
    return locker


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_second_signal_exits_at_once_while_blocked_on_a_locked_sqlite_file(
    tmp_path: Path, redis_url: str, rclient: redis.Redis, signum: signal.Signals
) -> None:
    path = tmp_path / "locked.db"
    url = f"sqlite:///{path}"
    engine = open_engine(url)
    upgrade(engine)
    save_tables(engine, recent_sample(tutors=3))
    engine.dispose()
    locker = _locked(path)
    proc = _start_worker(url, redis_url, "--consumer", "w", "--debounce", "0", "--max-wait", "0")
    try:
        publish(rclient, STREAM, [events.flat("T0001"), events.flat("T0002")])
        _wait_for(lambda: pending_count(rclient) == 2)  # read: its flush now waits on the lock
        time.sleep(1.0)
        assert proc.poll() is None
        proc.send_signal(signum)  # first: drain, which cannot finish while the file is locked
        time.sleep(0.5)
        assert proc.poll() is None, "the first signal must drain, not exit"
        started = time.monotonic()
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=40)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        locker.kill()
        locker.communicate()
    assert proc.returncode == 1, err
    assert took < 1.0, f"exited {took:.1f} s after the second signal"
    name = signum.name
    assert f"{name} received: stopping after flushing" in err
    assert f"second {name}: exiting now; unacknowledged entries stay pending" in err
    assert pending_count(rclient) == 2  # nothing acknowledged: another worker claims them
    engine = open_engine(url)
    try:
        assert count_rows(engine) == 0  # nothing was written
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM tutors")).scalar_one() == 3
    finally:
        engine.dispose()


class _Consumer:
    """The little `stream.signals` needs of a consumer."""

    def __init__(self) -> None:
        self.stopping = False

    def buffered(self) -> int:
        return 0


def test_installed_twice_one_watchdog_stops_the_latest_consumer() -> None:
    """`worker run` invoked again in one process (the CLI tests do) reuses the watchdog."""
    saved = {s: signal.getsignal(s) for s in signals.STOP_SIGNALS}
    first, second = _Consumer(), _Consumer()
    try:
        signals.install(first)
        signals.install(second)
        watchdogs = [t for t in threading.enumerate() if t.name == "tutormax-signals"]
        assert len(watchdogs) == 1
        os.kill(os.getpid(), signal.SIGTERM)  # one: stops, never exits
        deadline = time.monotonic() + 5
        while not second.stopping and time.monotonic() < deadline:
            time.sleep(0.01)
        assert second.stopping and not first.stopping
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(-1)
