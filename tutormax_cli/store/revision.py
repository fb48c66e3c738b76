"""The schema revision this code needs, and what an operator is told when a database is not
at it: one definition for both ways of opening a database (`store.db` through SQLAlchemy,
`store.reader` through psycopg2 alone), which is why it imports neither."""

from __future__ import annotations

VERSION_TABLE = "tutormax_alembic_version"
"""Alembic's version table, named for tutormax so it never collides with the pipeline's own
(here, not in `store.schema`, so that checking the revision does not build the tables)."""

SCHEMA_REVISION = "0005"
"""The Alembic head this code needs; a test keeps it equal to the newest migration."""


def schema_problem(revision: str | None, label: str) -> str | None:
    """Why the database at `label`, at schema `revision` (None: no schema), cannot be used by
    this code, with the fix; None when it can."""
    if revision is None:
        return f"database {label} has no tutormax schema: run `tutormax db init`"
    if revision != SCHEMA_REVISION:
        return (
            f"database {label} is at schema revision {revision}, this tutormax needs "
            f"{SCHEMA_REVISION}: run `tutormax db init`"
        )
    return None
