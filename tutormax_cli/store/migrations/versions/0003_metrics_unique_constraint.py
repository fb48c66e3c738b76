"""The metrics key as a UNIQUE constraint where 0001 made it a unique index.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

0001 completes a legacy TutorMax metrics table with a unique *index* named
`uq_tutor_performance_metrics_key`, while a fresh database gets a UNIQUE *constraint* of that
name. Both serve `ON CONFLICT`, but the schemas differed (found by the migration equivalence
test). PostgreSQL promotes the index in place (`ADD CONSTRAINT … UNIQUE USING INDEX`, no
rebuild); SQLite databases are always created by 0001 and already have the constraint.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

NAME = "uq_tutor_performance_metrics_key"
TABLE = "tutor_performance_metrics"


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    inspector = sa.inspect(bind)
    if any(u["name"] == NAME for u in inspector.get_unique_constraints(TABLE)):
        return
    if any(i["name"] == NAME for i in inspector.get_indexes(TABLE)):
        op.execute(f'ALTER TABLE "{TABLE}" ADD CONSTRAINT "{NAME}" UNIQUE USING INDEX "{NAME}"')


def downgrade() -> None:
    pass  # a constraint serves everything the index did
