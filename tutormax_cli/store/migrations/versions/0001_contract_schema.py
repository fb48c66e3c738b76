"""The docs/metrics.md §1 schema: create what is missing, complete what exists.

Revision ID: 0001
Revises:
Create Date: 2026-11-29

A TutorMax database created by the pipeline already has these tables, possibly without
`metric_date`, the count columns, the unique key or the server defaults. Such tables are
completed in place: columns are added (nullable, or with their server default), indexes created,
`metric_date` derived from `calculation_date` as docs/metrics.md §2 says, and rows that would break
the unique key are moved — not deleted — to `tutor_performance_metrics_duplicates`.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tutormax_cli.store.schema import CONTRACT_TABLES, tutor_performance_metrics, tutormax_state

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

METRICS = tutor_performance_metrics.name
DUPLICATES = f"{METRICS}_duplicates"
KEY = ("tutor_id", "window", "metric_date")


def _q(name: str) -> str:
    return f'"{name}"'


def _add_missing_columns(bind: sa.Connection, table: sa.Table, have: set[str]) -> list[str]:
    added = []
    for column in table.columns:
        if column.name in have:
            continue
        copy = column._copy()
        if column.server_default is None and not column.primary_key:
            copy.nullable = True  # existing rows have no value; the code fills new ones
        op.add_column(table.name, copy)
        added.append(column.name)
    return added


def _ensure_server_defaults(bind: sa.Connection, table: sa.Table) -> None:
    if bind.dialect.name != "postgresql":
        return  # SQLite cannot alter defaults; tables it has were created by this migration
    for column in table.columns:
        if column.server_default is not None:
            default = column.server_default.arg  # type: ignore[attr-defined]
            sql = default if isinstance(default, str) else "now()"
            op.execute(
                f"ALTER TABLE {_q(table.name)} ALTER COLUMN {_q(column.name)} "
                f"SET DEFAULT {sql if sql == 'now()' else repr(sql)}"
            )


def _ensure_indexes(bind: sa.Connection, table: sa.Table) -> None:
    inspector = sa.inspect(bind)
    existing = {tuple(ix["column_names"]) for ix in inspector.get_indexes(table.name)}
    for index in table.indexes:
        cols = tuple(c.name for c in index.columns)
        if cols not in existing:
            op.create_index(index.name, table.name, list(cols), unique=bool(index.unique))


def _backfill_metric_date(bind: sa.Connection) -> None:
    if bind.dialect.name == "postgresql":
        op.execute(
            f"UPDATE {METRICS} SET metric_date = "
            "((calculation_date - interval '1 microsecond') AT TIME ZONE 'UTC')::date "
            "WHERE metric_date IS NULL"
        )
        op.execute(f"ALTER TABLE {METRICS} ALTER COLUMN metric_date SET NOT NULL")
    else:
        op.execute(
            f"UPDATE {METRICS} SET metric_date = CASE "
            "WHEN strftime('%H:%M:%f', calculation_date) = '00:00:00.000' "
            "THEN date(calculation_date, '-1 day') ELSE date(calculation_date) END "
            "WHERE metric_date IS NULL"
        )


def _has_unique_key(bind: sa.Connection) -> bool:
    inspector = sa.inspect(bind)
    wanted = set(KEY)
    uniques = [set(u["column_names"]) for u in inspector.get_unique_constraints(METRICS)]
    uniques += [
        {str(c) for c in i["column_names"]} for i in inspector.get_indexes(METRICS) if i["unique"]
    ]
    return wanted in uniques


def _ensure_unique_key(bind: sa.Connection) -> None:
    if _has_unique_key(bind):
        return
    key = ", ".join(_q(c) for c in KEY)
    losers = (
        "SELECT metric_id FROM (SELECT metric_id, row_number() OVER ("
        f"PARTITION BY {key} ORDER BY calculation_date DESC, metric_id DESC) AS rn "
        f"FROM {METRICS}) ranked WHERE rn > 1"
    )
    if not sa.inspect(bind).has_table(DUPLICATES):
        op.execute(f"CREATE TABLE {DUPLICATES} AS SELECT * FROM {METRICS} WHERE 1 = 0")
    op.execute(f"INSERT INTO {DUPLICATES} SELECT * FROM {METRICS} WHERE metric_id IN ({losers})")
    op.execute(f"DELETE FROM {METRICS} WHERE metric_id IN (SELECT metric_id FROM {DUPLICATES})")
    op.create_index("uq_tutor_performance_metrics_key", METRICS, list(KEY), unique=True)


def upgrade() -> None:
    bind = op.get_bind()
    for table in (*CONTRACT_TABLES, tutormax_state):
        inspector = sa.inspect(bind)
        if not inspector.has_table(table.name):
            table.create(bind)
            continue
        have = {c["name"] for c in inspector.get_columns(table.name)}
        added = _add_missing_columns(bind, table, have)
        _ensure_server_defaults(bind, table)
        if table is tutor_performance_metrics:
            if "metric_date" in added:
                _backfill_metric_date(bind)
            _ensure_unique_key(bind)
        _ensure_indexes(bind, table)


def downgrade() -> None:
    raise NotImplementedError("tutormax never drops TutorMax tables; restore from a backup")
