"""Database errors as the one line an operator reads, whichever driver raised them; imports no
driver, so the quick read commands (`store.reader`) and SQLAlchemy's paths (`store.db`) share
it."""

from __future__ import annotations

import sys

READ_ONLY_HINT = (
    "the SQLite file or its directory is read-only for this user, and writing needs both: "
    "SQLite keeps -wal and -shm files beside the file; read commands still work"
)
"""Added to SQLite's "attempt to write a readonly database", which names neither."""

OPEN_HINT = (
    "can this user read the file and write its directory? SQLite keeps its -wal and -shm "
    "files beside it"
)
"""Added to SQLite's "unable to open database file", which says neither what nor why."""


def first_line(exc: BaseException) -> str:
    """The first line of a driver error (SQLAlchemy's wrapped `orig`, if any), which is the
    part an operator can act on."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__


def describe_error(exc: BaseException) -> str:
    """`first_line`, with the fix SQLite's terse messages leave out."""
    orig = getattr(exc, "orig", None) or exc
    first = first_line(orig)
    sqlite3 = sys.modules.get("sqlite3")  # an error of it means it is imported
    if sqlite3 is not None and isinstance(orig, sqlite3.Error):
        if "readonly database" in first:
            return f"{first} ({READ_ONLY_HINT})"
        if first == "unable to open database file":
            return f"{first} ({OPEN_HINT})"
    return first


def database_errors() -> tuple[type[BaseException], ...]:
    """The base classes of the errors a database read can raise, of the drivers this process
    has imported (SQLAlchemy's, psycopg2's): what a report catches to say "database
    unavailable" without importing a driver to name its errors."""
    found: list[type[BaseException]] = []
    sa_exc = sys.modules.get("sqlalchemy.exc")
    if sa_exc is not None:
        found.append(sa_exc.SQLAlchemyError)
    psycopg2 = sys.modules.get("psycopg2")
    if psycopg2 is not None:
        found.append(psycopg2.Error)
    return tuple(found)
