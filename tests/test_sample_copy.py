"""`save_batches` into empty PostgreSQL tables: every index and key constraint dropped for the
COPY and put back as it was, in the same transaction; batches generated in the caller's
thread and written in a second one."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import polars as pl
import pytest
import sqlalchemy as sa

from tests.conftest import _empty_tables
from tests.helpers import T, count_rows
from tutormax_cli.sample import SampleSpec, batches
from tutormax_cli.store.seed import save_batches

pytestmark = pytest.mark.postgres

SPEC = SampleSpec(tutors=6, days=30, seed=2, end=T)


def _schema(engine: sa.Engine) -> list[tuple[str, ...]]:
    """Index definitions and key constraints (a unique index is not a unique constraint)."""
    with engine.connect() as conn:
        indexes = conn.execute(
            sa.text(
                "SELECT 'index', indexname, indexdef FROM pg_indexes "
                "WHERE schemaname = current_schema()"
            )
        ).all()
        constraints = conn.execute(
            sa.text(
                "SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid) "
                "FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
                "WHERE n.nspname = current_schema()"
            )
        ).all()
        not_null = conn.execute(
            sa.text(
                "SELECT 'not null', table_name, column_name FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND is_nullable = 'NO'"
            )
        ).all()
    return sorted(tuple(str(v) for v in row) for row in (*indexes, *constraints, *not_null))


def test_copy_puts_back_every_index_and_constraint(pg_engine: sa.Engine) -> None:
    _empty_tables(pg_engine)
    before = _schema(pg_engine)
    assert any("PRIMARY KEY (session_id)" in row[2] for row in before)
    save_batches(pg_engine, batches(SPEC, bucket_rows=100))
    assert _schema(pg_engine) == before
    with pytest.raises(sa.exc.IntegrityError), pg_engine.begin() as conn:
        conn.execute(  # the primary key is enforced again
            sa.text("INSERT INTO sessions SELECT * FROM sessions ORDER BY session_id LIMIT 1")
        )


def test_a_duplicate_key_fails_the_copy_and_leaves_nothing(pg_engine: sa.Engine) -> None:
    """Keys are not checked row by row during the COPY: adding the constraint back is what
    finds the duplicate, and the whole run is rolled back."""
    _empty_tables(pg_engine)
    before = _schema(pg_engine)

    rows = batches(SPEC)

    def twice() -> Iterator[tuple[str, pl.DataFrame]]:
        for name, df in rows:
            yield name, df
            if name == "sessions":
                yield name, df.head(1)

    with pytest.raises(sa.exc.IntegrityError, match="sessions_pkey"):
        save_batches(pg_engine, twice())
    rows.close()  # removes its spill directory now (the CLI's process exits instead)
    assert _schema(pg_engine) == before
    assert count_rows(pg_engine, "tutors") == 0


def _writers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "sample-writer"]


def test_batches_are_generated_here_written_in_another_thread_and_errors_raised_here(
    pg_engine: sa.Engine,
) -> None:
    _empty_tables(pg_engine)
    threads: set[str] = set()
    rows = batches(SPEC, bucket_rows=100)

    def failing() -> Iterator[tuple[str, pl.DataFrame]]:
        for name, df in rows:
            threads.add(threading.current_thread().name)
            yield name, df
            if name == "student_feedback":
                raise ValueError("broken generator")

    with pytest.raises(ValueError, match="broken generator"):
        save_batches(pg_engine, failing())
    assert threads == {threading.current_thread().name}  # generation stays in this thread
    assert count_rows(pg_engine, "tutors") == 0
    rows.close()
    assert not _writers()


def test_a_write_error_in_the_writer_thread_is_raised_here(pg_engine: sa.Engine) -> None:
    _empty_tables(pg_engine)
    rows = batches(SPEC, bucket_rows=100)

    def bad() -> Iterator[tuple[str, pl.DataFrame]]:
        for name, df in rows:
            yield name, (df.with_columns(pl.lit(None).alias("tutor_id")) if name == "sessions"
                         else df)  # fmt: skip

    with pytest.raises(Exception, match="not-null constraint"):  # refused by the COPY
        save_batches(pg_engine, bad())
    rows.close()
    assert count_rows(pg_engine, "tutors") == 0 and not _writers()


def test_ctrl_c_while_generating_stops_at_once(pg_engine: sa.Engine) -> None:
    """The interrupt reaches the generating thread: nothing waits for generation to end."""
    _empty_tables(pg_engine)
    rows = batches(SPEC, bucket_rows=100)
    generated_after: list[str] = []

    def interrupted() -> Iterator[tuple[str, pl.DataFrame]]:
        for name, df in rows:
            yield name, df
            if name == "students":
                raise KeyboardInterrupt
            generated_after.append(name)

    started = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        save_batches(pg_engine, interrupted())
    assert time.perf_counter() - started < 10
    assert generated_after == ["tutors"] and not _writers()
    assert count_rows(pg_engine, "tutors") == 0
    rows.close()
