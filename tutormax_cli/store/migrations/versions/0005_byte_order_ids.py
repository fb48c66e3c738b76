"""ID columns compare as bytes on PostgreSQL (`COLLATE "C"`), as they do on SQLite and in polars.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07

Why: every index of the contract's tables but three leads with an ID column, and PostgreSQL
compares text under a linguistic collation with `strcoll` for every comparison, without
abbreviated keys; under "C" a comparison is `memcmp` and sorts use abbreviated keys. Building
the indexes is most of `sample generate`'s server time at 50,000 tutors. It also makes
`ORDER BY tutor_id` the same on both backends (SQLite's BINARY collation) and in polars.
IDs are opaque keys: nothing sorts them for a reader.

Altering a column's collation rebuilds the indexes that contain it (the table itself is not
rewritten: each column keeps its type) and drops the column's planner statistics, so each
altered table is analyzed again. The cumulative partials tables (`db partials enable`), when
present, follow, so their keys keep matching the columns they are joined on. A view or rule
another program defined on one of these columns makes the ALTER fail (PostgreSQL refuses to
change a column a view uses); the migration's transaction then rolls back as a whole.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

ID_COLUMNS = {
    "tutors": ("tutor_id",),
    "students": ("student_id",),
    "sessions": ("session_id", "tutor_id", "student_id"),
    "student_feedback": ("feedback_id", "session_id", "student_id", "tutor_id"),
    "tutor_events": ("event_id", "tutor_id"),
    "tutor_performance_metrics": ("metric_id", "tutor_id"),
    "tutormax_cumulative_partials": ("tutor_id",),
    "tutormax_partials_dirty": ("tutor_id",),
    "tutormax_cumulative_tutors": ("tutor_id",),
}  # frozen: the tables and columns as they are at this revision


def _alter(collation: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return  # SQLite compares text as bytes already
    for table, names in ID_COLUMNS.items():
        # each column keeps its type (a database the pipeline created may hold `text` IDs);
        # a type without collations (`uuid`) is left as it is
        columns = bind.execute(
            sa.text(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = to_regclass(:t) AND attname = ANY(:c) AND attcollation <> 0 "
                "AND NOT attisdropped ORDER BY attnum"
            ),
            {"t": f'"{table}"', "c": list(names)},
        ).all()
        if not columns:
            continue  # the partials tables exist only once enabled
        clauses = ", ".join(
            f'ALTER COLUMN "{c}" TYPE {typ} COLLATE {collation}' for c, typ in columns
        )
        op.execute(f'ALTER TABLE "{table}" {clauses}')
        op.execute(f'ANALYZE "{table}"')  # a column's type change drops its statistics


def upgrade() -> None:
    _alter('"C"')


def downgrade() -> None:
    _alter('"default"')
