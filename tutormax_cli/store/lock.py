"""A run lock so two batch recomputations of the same scope never overlap (cron-safe).

PostgreSQL: a session-level advisory lock (`pg_try_advisory_lock`) held on a connection of its
own for the whole run. The database releases it when that session ends, so a killed run never
leaves a stale lock behind, and runs on different machines exclude each other.
SQLite: `fcntl.flock` on a lock file next to the database file. The kernel releases it when the
process exits, for the same reason. The lock file is never deleted: deleting it would let a
third run lock a fresh file while the second still holds the old one.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from tutormax_cli.errors import DatabaseError, LockHeld
from tutormax_cli.store.db import READ_ONLY_HINT, is_postgres

POLL_SECONDS = 0.2
"""How often a waiting run retries: polling keeps Ctrl-C and SIGTERM responsive."""


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for `name` (the same on every machine)."""
    digest = hashlib.blake2b(f"tutormax:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def lock_file(database: str, name: str) -> Path:
    """The lock file of `name` beside the SQLite database file `database`."""
    path = Path(database)
    return path.with_name(f"{path.name}.{name.replace('/', '-')}.lock")


def _held_message(name: str, where: str, holder: str | None) -> str:
    by = f" by pid {holder}" if holder else ""
    return (
        f"another tutormax {name} is running (lock held{by} on {where}): skipped; "
        "pass --wait to wait for it"
    )


@contextmanager
def _pg_lock(
    engine: sa.Engine, name: str, wait: bool, on_wait: Callable[[], None] | None
) -> Iterator[None]:
    key = lock_key(name)
    conn = engine.connect()  # dedicated: holds the session that holds the lock
    try:
        waited = False
        while not conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
            if not wait:
                holder = conn.execute(
                    sa.text(
                        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                        "AND classid = :hi AND objid = :lo LIMIT 1"
                    ),
                    {"hi": (key >> 32) & 0xFFFFFFFF, "lo": key & 0xFFFFFFFF},
                ).scalar()
                label = engine.url.render_as_string(hide_password=True)
                raise LockHeld(_held_message(name, label, None if holder is None else str(holder)))
            if not waited and on_wait is not None:
                on_wait()
            waited = True
            conn.commit()
            time.sleep(POLL_SECONDS)
        conn.commit()  # the lock is session-level: end the transaction, keep the session
        try:
            yield
        finally:
            try:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
            except sa.exc.SQLAlchemyError:
                conn.invalidate()  # never hand a session that may hold the lock back to the pool
    finally:
        conn.close()


@contextmanager
def _file_lock(
    path: Path, name: str, wait: bool, on_wait: Callable[[], None] | None
) -> Iterator[None]:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:  # a read-only directory or mount: this run could not write anyway
        raise DatabaseError(
            f"cannot open the {name} lock file {path}: {exc.strerror} ({READ_ONLY_HINT})"
        ) from None
    try:
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or None
                    raise LockHeld(_held_message(name, str(path), holder)) from None
                if not waited and on_wait is not None:
                    on_wait()
                waited = True
                time.sleep(POLL_SECONDS)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextmanager
def run_lock(
    engine: sa.Engine,
    name: str,
    *,
    wait: bool = False,
    on_wait: Callable[[], None] | None = None,
) -> Iterator[None]:
    """Hold the lock `name` for the block; raise `LockHeld` if another run holds it, or with
    `wait`, call `on_wait` once and wait until it is free. In-memory SQLite needs no lock."""
    if is_postgres(engine):
        with _pg_lock(engine, name, wait, on_wait):
            yield
        return
    database = engine.url.database
    if not database or database == ":memory:":
        yield
        return
    with _file_lock(lock_file(database, name), name, wait, on_wait):
        yield
