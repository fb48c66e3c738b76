"""Opening the database: one engine per process, SQLite tuned for a single-file embedded store,
and connection failures turned into one-line errors that never show a password."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa

from tutormax_cli.errors import DatabaseError, SchemaNotReady
from tutormax_cli.settings import redact_url, unencoded_at
from tutormax_cli.store.driver_errors import OPEN_HINT as OPEN_HINT
from tutormax_cli.store.driver_errors import READ_ONLY_HINT as READ_ONLY_HINT
from tutormax_cli.store.driver_errors import describe_error as describe_error
from tutormax_cli.store.reader import (
    APPLICATION_NAME,
    CONNECT_TIMEOUT_SECONDS,
    set_session_time_zone,
)
from tutormax_cli.store.revision import SCHEMA_REVISION as SCHEMA_REVISION
from tutormax_cli.store.revision import VERSION_TABLE as VERSION_TABLE
from tutormax_cli.store.revision import schema_problem

STATEMENTS_AT_ONCE = 2
"""Statements a batch job runs at once on PostgreSQL, each on a connection of its own: the
server runs one statement on one core (and plans no parallel workers for a write), so this is
the machine's cores. The cumulative fill's ranges, its snapshot lookups and a recompute's
passes all split by it; more would queue on the cores."""


def is_postgres(engine: sa.Engine | sa.Connection) -> bool:
    """True on PostgreSQL; everything else tutormax supports is SQLite."""
    return engine.dialect.name == "postgresql"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def sqlite_read_only(path: str) -> bool:
    """Whether this process cannot write the SQLite file at `path` or the directory it lives in
    (a read-only mount, permissions, a snapshot): then it is opened read-only.

    Opening it as usual would fail for reads too ("unable to open database file"): a WAL
    database is read through its -shm file, which SQLite creates in the directory, and the
    `journal_mode` pragma is a write."""
    if not path or path == ":memory:" or path.startswith("file:"):
        return False
    file = Path(path)
    directory = file.resolve().parent
    if not os.access(directory, os.W_OK):
        return True
    return file.exists() and not os.access(file, os.W_OK)


def _read_only_engine(parsed: sa.URL, path: str) -> sa.Engine:
    """An engine that opens `path` with SQLite's `mode=ro`. When it has no -wal file beside it,
    also `immutable=1`: nobody can be writing it (a writer would have to create the -wal file in
    a directory it cannot write, or hold it open), and SQLite then needs no -shm file, which it
    could not create. With a -wal file, SQLite reads through it and its -shm as they are."""
    resolved = Path(path).resolve()
    wal = resolved.with_name(resolved.name + "-wal")
    uri = f"file:{quote(str(resolved))}?mode=ro" + ("" if wal.exists() else "&immutable=1")

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(uri, uri=True, timeout=30, check_same_thread=False)

    return sa.create_engine(parsed, creator=connect)


def open_engine(url: str, *, pool_size: int = 5) -> sa.Engine:
    """An engine for `url`; fails with a one-line `DatabaseError` when it is not usable.

    `pool_size`: PostgreSQL connections kept open (the API matches it to its thread pool, so
    a busy server does not open and close a connection per request)."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        raise DatabaseError(
            f"not a database URL: {redact_url(url)!r} (expected postgresql://user@host/db "
            "or sqlite:///path)"
        ) from None
    if (problem := unencoded_at(url)) is not None:
        raise DatabaseError(problem)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        path = parsed.database
        if path and path != ":memory:" and not Path(path).resolve().parent.is_dir():
            raise DatabaseError(f"directory of SQLite database {path} does not exist")
        if path and sqlite_read_only(path):
            return _read_only_engine(parsed, path)
        engine = sa.create_engine(parsed, connect_args={"timeout": 30})
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if backend == "postgresql":
        engine = sa.create_engine(
            parsed.set(drivername="postgresql+psycopg2"),
            pool_pre_ping=True,
            pool_size=pool_size,
            max_overflow=max(10, pool_size // 2),
            connect_args={
                "connect_timeout": CONNECT_TIMEOUT_SECONDS,
                "application_name": APPLICATION_NAME,
            },
        )
        sa.event.listen(engine, "connect", set_session_time_zone)
        return engine
    raise DatabaseError(
        f"unsupported database {backend!r} in {redact_url(url)}: use postgresql:// or sqlite:///"
    )


def url_label(engine: sa.Engine) -> str:
    """The engine's URL as the operator wrote it (no driver suffix), password hidden."""
    url = engine.url.set(drivername=engine.url.get_backend_name())
    return url.render_as_string(hide_password=True)


def check_connection(engine: sa.Engine) -> None:
    """Raise a one-line `DatabaseError` when the database cannot be reached."""
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError as exc:
        detail = describe_error(exc)
        raise DatabaseError(f"cannot connect to {url_label(engine)}: {detail}") from None


def current_revision(conn: sa.Connection) -> str | None:
    """The tutormax schema revision recorded in the database, or None before `db init`."""
    if not sa.inspect(conn).has_table(VERSION_TABLE):
        return None
    row = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).first()
    return None if row is None else str(row[0])


def sqlite_file_missing(engine: sa.Engine) -> bool:
    """Whether `engine` is a SQLite database whose file does not exist. Connecting would create
    it, so every command that only reads (`require_schema`'s callers, `db status`, `status`)
    checks this first and leaves no empty file (nor an embedded Redis) behind a mistyped path."""
    path = engine.url.database if engine.dialect.name == "sqlite" else None
    return (
        bool(path)
        and path != ":memory:"
        and not str(path).startswith("file:")
        and not (Path(str(path)).exists())
    )


def require_schema(engine: sa.Engine) -> None:
    """Fail with the fix (`tutormax db init`) unless the schema is at this code's revision.

    A SQLite file that does not exist is refused before connecting: connecting would create
    it, and a read command on a mistyped path would leave an empty database behind."""
    path = engine.url.database
    if sqlite_file_missing(engine):
        raise SchemaNotReady(
            f"SQLite database {path} does not exist: check --database-url, or create it with "
            "`tutormax db init`"
        )
    check_connection(engine)
    with engine.connect() as conn:
        revision = current_revision(conn)
    problem = schema_problem(revision, url_label(engine))
    if problem is not None:
        raise SchemaNotReady(problem)
