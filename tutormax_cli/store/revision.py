"""The schema revision this code needs, and what an operator is told when a database is not
at it: one definition for both ways of opening a database (`store.db` through SQLAlchemy,
`store.reader` through psycopg2 alone), which is why it imports neither."""

from __future__ import annotations

VERSION_TABLE = "tutormax_alembic_version"
"""Alembic's version table, named for tutormax so it never collides with the pipeline's own
(here, not in `store.schema`, so that checking the revision does not build the tables)."""

REVISIONS = ("0001", "0002", "0003", "0004", "0005")
"""Every migration this code ships, oldest first; a test keeps it equal to Alembic's chain.
A database at a revision not listed was migrated by a newer tutormax (or something else):
`db init` cannot bring it to this code's schema, only a newer tutormax can read it."""

SCHEMA_REVISION = REVISIONS[-1]
"""The Alembic head this code needs; a test keeps it equal to the newest migration."""


def is_unknown(revision: str | None) -> bool:
    """Whether `revision` is one no migration of this code has: `db init` must refuse it
    rather than let Alembic fail on a revision it cannot locate."""
    return revision is not None and revision not in REVISIONS


def schema_problem(revision: str | None, label: str) -> str | None:
    """Why the database at `label`, at schema `revision` (None: no schema), cannot be used by
    this code, with the fix; None when it can."""
    if revision is None:
        return f"database {label} has no tutormax schema: run `tutormax db init`"
    if is_unknown(revision):
        return (
            f"database {label} is at schema revision {revision}, newer than (or unknown to) "
            f"this tutormax ({SCHEMA_REVISION}): upgrade tutormax"
        )
    if revision != SCHEMA_REVISION:
        return (
            f"database {label} is at schema revision {revision}, this tutormax needs "
            f"{SCHEMA_REVISION}: run `tutormax db init`"
        )
    return None
