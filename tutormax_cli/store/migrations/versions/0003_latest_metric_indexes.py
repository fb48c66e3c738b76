"""Indexes that serve the latest metric rows: the leaderboard in ranking order, and each
tutor's newest row per window with its tier and calculation date.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

Measured on 50,000 tutors (1,050,000 metric rows, `bench/scale_db.py`): the leaderboard's top
50 read every tutor's latest row through a GROUP BY join (~1 s); walking the ranking index and
probing the unique key for a newer row reads ~1,300 rows. The tier counts of `show tiers` and
the freshness of `status` and `/metrics` become one index-only ordered pass (DISTINCT ON) over
the window's entries, with no table access.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tutormax_cli.store.query import METRICS_TABLE, tier_rank_sql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

LATEST = "ix_tutor_performance_metrics_latest"
LEADERBOARD = "ix_tutor_performance_metrics_leaderboard"


def upgrade() -> None:
    bind = op.get_bind()
    have = {ix["name"] for ix in sa.inspect(bind).get_indexes(METRICS_TABLE)}
    pg = bind.dialect.name == "postgresql"
    if LATEST not in have:
        include = " INCLUDE (performance_tier, calculation_date)" if pg else ""
        op.execute(
            f'CREATE INDEX {LATEST} ON {METRICS_TABLE} ("window", tutor_id, metric_date DESC)'
            + include
        )
    if LEADERBOARD not in have:
        nulls = " NULLS LAST" if pg else ""  # SQLite puts NULLs first in an index, always
        op.execute(
            f'CREATE INDEX {LEADERBOARD} ON {METRICS_TABLE} ("window", {tier_rank_sql()}, '
            f"avg_rating DESC{nulls}, sessions_completed DESC, tutor_id)"
        )


def downgrade() -> None:
    op.drop_index(LEADERBOARD, table_name=METRICS_TABLE)
    op.drop_index(LATEST, table_name=METRICS_TABLE)
