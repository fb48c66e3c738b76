"""Schema creation and upgrade through Alembic migrations shipped inside the package.

Alembic runs programmatically on our own connection, with its version table named for tutormax,
so `db init` works on an empty database, an up-to-date one (no-op), and a TutorMax database the
pipeline created with its own tooling (missing columns, indexes and keys are added in place).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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
        command.upgrade(_alembic_config(conn), "head")  # type: ignore[arg-type]
        after = current_revision(conn)
    return before, after or SCHEMA_REVISION


@dataclass(frozen=True)
class TableStatus:
    """One contract table as the database has it."""

    name: str
    exists: bool
    rows: int | None
    missing_columns: tuple[str, ...]


def status(engine: sa.Engine) -> tuple[str | None, list[TableStatus]]:
    """The schema revision and, per table, whether it exists, its row count, missing columns."""
    result = []
    with engine.connect() as conn:
        revision = current_revision(conn)
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
            result.append(TableStatus(table.name, True, int(rows), missing))
    return revision, result
