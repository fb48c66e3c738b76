"""Schema creation and upgrade through Alembic migrations shipped inside the package.

Alembic runs programmatically on our own connection, with its version table named for tutormax,
so `db init` works on an empty database, an up-to-date one (no-op), and a TutorMax database the
pipeline created with its own tooling (missing columns, indexes and keys are added in place).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tutormax_cli.errors import DatabaseError
from tutormax_cli.store.db import (
    SCHEMA_REVISION,
    current_revision,
    is_postgres,
    url_label,
)
from tutormax_cli.store.revision import is_unknown, schema_problem
from tutormax_cli.store.schema import CONTRACT_TABLES, tutormax_state


def _alembic_config(conn: sa.Connection) -> object:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.attributes["connection"] = conn
    return cfg


def upgrade(engine: sa.Engine) -> tuple[str | None, str]:
    """Bring the schema to head in one transaction; returns (revision before, revision after).

    A database at a revision none of our migrations has (a newer tutormax migrated it) is
    refused before Alembic runs: Alembic would fail on it with "Can't locate revision", and
    nothing this code can do brings it to a schema it knows, so the fix is a newer tutormax."""
    from alembic import command

    with engine.begin() as conn:
        before = current_revision(conn)
        if is_unknown(before):
            raise DatabaseError(str(schema_problem(before, url_label(engine))))
        at_head = before == SCHEMA_REVISION  # nothing to migrate: `db status` reports the rest
        wrong = [] if at_head else [f"{t}.{c}" for t, cs in mistyped(conn).items() for c in cs]
        if wrong:  # the migrations adopt existing tables: never one whose columns we misread
            raise DatabaseError(
                f"{url_label(engine)}: columns of another type than the contract's: "
                f"{', '.join(wrong)}; nothing was changed — fix or rename those tables first"
            )
        command.upgrade(_alembic_config(conn), "head")  # type: ignore[arg-type]
        after = current_revision(conn)
    return before, after or SCHEMA_REVISION


_FAMILIES: tuple[tuple[type[sa.types.TypeEngine[Any]], str], ...] = (
    (sa.Boolean, "boolean"),
    (sa.Integer, "integer"),
    (sa.Float, "number"),
    (sa.Numeric, "number"),
    (sa.DateTime, "timestamp"),
    (sa.Date, "date"),
    (sa.ARRAY, "array"),
    (sa.JSON, "json"),
    (sa.String, "text"),
)
"""Kinds of column type, coarse on purpose: a `text` where the contract has `varchar(50)`, a
`bigint` for an `integer` or `json` for `jsonb` reads the same; an `integer` ID, a `text`
timestamp or a `boolean` count does not, and every later write or read would fail on it."""

_ACCEPTS = {("number", "integer"), ("text", "json")}
"""(stored kind, contract kind) pairs that hold the contract's values as they are: a `double
precision` or `numeric` column holds every integer (pandas' `to_sql` makes one of a nullable
int), and a `text` column the JSON documents the readers cast with `::jsonb`. The other way
round loses values (an `integer` column rounds a rating) and stays flagged."""


def _family(column_type: sa.types.TypeEngine[Any]) -> str | None:
    for kind, family in _FAMILIES:
        if isinstance(column_type, kind):
            return family
    return None  # a type this check does not know (a domain, an enum): not judged


def mistyped(conn: sa.Connection) -> dict[str, list[str]]:
    """Per existing contract table, its columns whose stored type is of another kind than the
    contract's, as `column (stored type, expected kind)`. PostgreSQL only: SQLite's declared
    types are affinities that accept anything, and tutormax reads them as the contract says."""
    if not is_postgres(conn):
        return {}
    inspector = sa.inspect(conn)
    found: dict[str, list[str]] = {}
    for table in CONTRACT_TABLES:
        if not inspector.has_table(table.name):
            continue
        stored = {col["name"]: col["type"] for col in inspector.get_columns(table.name)}
        for column in table.columns:
            have = stored.get(column.name)
            want = _family(column.type.dialect_impl(conn.dialect))  # lists: ARRAY here
            got = None if have is None else _family(have)
            if want is not None and got is not None and got != want and (got, want) not in _ACCEPTS:
                found.setdefault(table.name, []).append(
                    f"{column.name} ({str(have).lower()}, expected {want})"
                )
    return found


@dataclass(frozen=True)
class TableStatus:
    """One contract table as the database has it."""

    name: str
    exists: bool
    rows: int | None
    missing_columns: tuple[str, ...]
    mistyped_columns: tuple[str, ...] = ()


def status(engine: sa.Engine) -> tuple[str | None, list[TableStatus]]:
    """The schema revision and, per table, whether it exists, its row count, missing columns
    and columns of another type than the contract's (`mistyped`)."""
    result = []
    with engine.connect() as conn:
        revision = current_revision(conn)
        wrong = mistyped(conn)
        inspector = sa.inspect(conn)
        for table in (*CONTRACT_TABLES, tutormax_state):
            if not inspector.has_table(table.name):
                result.append(TableStatus(table.name, False, None, ()))
                continue
            have = {col["name"] for col in inspector.get_columns(table.name)}
            missing = tuple(c.name for c in table.columns if c.name not in have)
            count_sql = (
                f"SELECT reltuples::bigint FROM pg_class WHERE oid = '{table.name}'::regclass"
                if is_postgres(conn) and table.name != tutormax_state.name
                else f'SELECT count(*) FROM "{table.name}"'
            )
            rows = conn.execute(sa.text(count_sql)).scalar_one()
            if rows is not None and rows < 0:  # never analyzed: count exactly
                rows = conn.execute(sa.text(f'SELECT count(*) FROM "{table.name}"')).scalar_one()
            result.append(
                TableStatus(table.name, True, int(rows), missing, tuple(wrong.get(table.name, ())))
            )
    return revision, result
