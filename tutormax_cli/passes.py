"""Running a batch run's passes: each pass's rows computed, upserted with its tier changes and
committed, on PostgreSQL two passes at once.

A pass (a chunk of tutors, and for a backfill a block of days) is a read of partials, a
finalize in polars and one `INSERT … ON CONFLICT` into a table with six indexes. PostgreSQL
runs a statement on one core, and a backfill's passes are each a statement of reads and one of
writes, one after the other: at 50,000 tutors a 7-day backfill from cumulative partials spent
~35 s reading (now ~13 s, lookups of two cumulative rows per window) and ~20 s writing, and a
snapshot ~3 s writing, on one core of two. Passes commit independently
anyway (an interrupted run keeps the passes it committed, and a rerun is an upsert), so on
PostgreSQL `STATEMENTS_AT_ONCE` passes run at once, each on a connection of its own. SQLite has
one writer: there every pass runs on the run's connection, one after the other.

Whatever runs where, the caller sees each pass's outcome on its own thread and in submission
order (`settled`), after the pass has committed: tier changes are announced only for committed
rows, exports are appended in order.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import polars as pl
import sqlalchemy as sa

from tutormax_cli import interruptible
from tutormax_cli.store.db import STATEMENTS_AT_ONCE, is_postgres
from tutormax_cli.store.save import save_metrics
from tutormax_cli.stream import tier_changes
from tutormax_cli.stream.tier_changes import TierChange

Compute = Callable[[sa.Connection], pl.DataFrame]
"""One pass's rows, read through the connection it is given."""


@dataclass(frozen=True)
class Written:
    """What one pass's write did: the tier changes it made and the rows it changed."""

    changes: list[TierChange]
    rows_changed: int


NOTHING_WRITTEN = Written([], 0)


@dataclass(frozen=True)
class Pass:
    """One pass's outcome: its rows, what writing them did and how long the write took."""

    metrics: pl.DataFrame
    written: Written
    write_seconds: float = 0.0


def save_detecting(
    conn: sa.Connection, metrics: pl.DataFrame, tutors: Sequence[str] | None, source: str
) -> Written:
    """Upsert `metrics` and return the tier changes the upsert makes, read in the same
    transaction just before it (the caller commits, then publishes)."""
    changes = tier_changes.detect(conn, metrics, source, tutors)
    return Written(changes, save_metrics(conn, metrics))


class PassRunner:
    """`submit` each pass, then `finish`; `settled(outcome)` is called on the caller's thread,
    in submission order, once each pass has committed."""

    def __init__(
        self,
        engine: sa.Engine,
        conn: sa.Connection,
        source: str,
        settled: Callable[[Pass], None],
        *,
        write: bool,
        parallel: bool,
        reads_at_once: bool = True,
    ) -> None:
        self.engine, self.conn, self.source, self.settled = engine, conn, source, settled
        self.write = write
        self.reads_at_once = reads_at_once
        """False: passes are computed on the run's connection, one after the other, and only
        their writes run at once (light reads: the next pass is read while others write)."""
        self._pool = (
            ThreadPoolExecutor(STATEMENTS_AT_ONCE, thread_name_prefix="tutormax-pass")
            if parallel and is_postgres(engine)
            else None
        )
        self._pending: deque[Future[Pass]] = deque()

    def _run(self, conn: sa.Connection, compute: Compute, tutors: Sequence[str] | None) -> Pass:
        metrics = compute(conn)
        if not self.write:
            conn.commit()  # ends the read transaction; nothing written
            return Pass(metrics, NOTHING_WRITTEN)
        started = time.perf_counter()
        written = save_detecting(conn, metrics, tutors, self.source)
        conn.commit()
        return Pass(metrics, written, time.perf_counter() - started)

    def _on_its_own(self, compute: Compute, tutors: Sequence[str] | None) -> Pass:
        with self.engine.connect() as conn:
            try:
                return self._run(conn, compute, tutors)
            except BaseException:
                # COPY runs on the raw psycopg2 connection, past SQLAlchemy's disconnect
                # handling: a connection the server dropped is discarded here, not rolled back
                # on return to the pool (which logs a traceback on every pass still running)
                if getattr(conn.connection.dbapi_connection, "closed", 0):
                    conn.invalidate()
                raise

    def _write_on_its_own(self, metrics: pl.DataFrame, tutors: Sequence[str] | None) -> Pass:
        return self._on_its_own(lambda _: metrics, tutors)

    def submit(self, compute: Compute, tutors: Sequence[str] | None) -> None:
        """Run (and commit) one pass; with parallel passes, returns once it is under way and
        fewer than `STATEMENTS_AT_ONCE` are (with light reads: once it is read and computed,
        and fewer than `STATEMENTS_AT_ONCE` writes are under way)."""
        if self._pool is None:
            self.settled(self._run(self.conn, compute, tutors))
            return
        if not self.reads_at_once:
            metrics = compute(self.conn)
            self.conn.commit()  # no read transaction held open while others write
        while len(self._pending) >= STATEMENTS_AT_ONCE:
            self.settled(interruptible.result(self._pending.popleft()))
        if self.reads_at_once:
            self._pending.append(self._pool.submit(self._on_its_own, compute, tutors))
        else:
            self._pending.append(self._pool.submit(self._write_on_its_own, metrics, tutors))

    def finish(self) -> None:
        """Wait for every pass still running; a failed pass raises here."""
        while self._pending:
            self.settled(interruptible.result(self._pending.popleft()))

    def close(self) -> None:
        """Stop: passes not yet started are dropped, those running finish (a commit is never
        cut in two); their failures are moot once the run has failed."""
        for future in self._pending:
            future.cancel()
        for future in self._pending:
            with contextlib.suppress(BaseException):
                future.result()
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> PassRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
