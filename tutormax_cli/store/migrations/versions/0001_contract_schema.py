"""The docs/metrics.md §1 schema: create what is missing, complete what exists.

Revision ID: 0001
Revises:
Create Date: 2026-11-29

The tables are written out literally below, as they were at this revision (never imported from
the live `store.schema`, which follows head): what 0001 does never changes. `tests/test_migrate.py`
holds empty → head equal to a schema created fresh from the contract.

A TutorMax database created by the pipeline already has these tables, possibly without
`metric_date`, the count columns, the unique key or the server defaults. Such tables are
completed in place: columns are added (nullable, or with their server default), indexes created,
`metric_date` derived from `calculation_date` as docs/metrics.md §2 says, and rows that would break
the unique key are moved — not deleted — to `tutor_performance_metrics_duplicates`.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# --- the schema of revision 0001, frozen: later revisions change it, this file never does ---

metadata = sa.MetaData()

ID = sa.String(50)
TS = sa.DateTime(timezone=True)
NOW = sa.func.now()
StringList = sa.JSON().with_variant(postgresql.ARRAY(sa.String()), "postgresql")
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _stamps() -> list[sa.Column[object]]:
    return [
        sa.Column("created_at", TS, nullable=False, server_default=NOW),
        sa.Column("updated_at", TS, nullable=False, server_default=NOW),
    ]


tutors = sa.Table(
    "tutors",
    metadata,
    sa.Column("tutor_id", ID, primary_key=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("email", sa.String(255), nullable=False, unique=True),
    sa.Column("onboarding_date", TS, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("subjects", StringList, nullable=False),
    sa.Column("education_level", sa.String(100)),
    sa.Column("location", sa.String(255)),
    sa.Column("baseline_sessions_per_week", sa.Float),
    sa.Column("behavioral_archetype", sa.String(50)),
    *_stamps(),
)

students = sa.Table(
    "students",
    metadata,
    sa.Column("student_id", ID, primary_key=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("age", sa.Integer),
    sa.Column("grade_level", sa.String(50)),
    *_stamps(),
)

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("session_id", ID, primary_key=True),
    sa.Column("tutor_id", ID, nullable=False),
    sa.Column("student_id", ID, nullable=False),
    sa.Column("session_number", sa.Integer, nullable=False),
    sa.Column("scheduled_start", TS, nullable=False),
    sa.Column("actual_start", TS),
    sa.Column("duration_minutes", sa.Integer, nullable=False),
    sa.Column("subject", sa.String(100), nullable=False),
    sa.Column("session_type", sa.String(20), nullable=False),
    sa.Column("tutor_initiated_reschedule", sa.Boolean, nullable=False),
    sa.Column("no_show", sa.Boolean, nullable=False),
    sa.Column("late_start_minutes", sa.Integer, nullable=False),
    sa.Column("engagement_score", sa.Float),
    sa.Column("learning_objectives_met", sa.Boolean),
    sa.Column("technical_issues", sa.Boolean, nullable=False),
    *_stamps(),
    sa.Index("ix_sessions_tutor_id_scheduled_start", "tutor_id", "scheduled_start"),
    sa.Index("ix_sessions_updated_at", "updated_at"),
)

student_feedback = sa.Table(
    "student_feedback",
    metadata,
    sa.Column("feedback_id", ID, primary_key=True),
    sa.Column("session_id", ID, nullable=False, unique=True),
    sa.Column("student_id", ID, nullable=False),
    sa.Column("tutor_id", ID, nullable=False),
    sa.Column("overall_rating", sa.Integer, nullable=False),
    sa.Column("is_first_session", sa.Boolean, nullable=False),
    sa.Column("subject_knowledge_rating", sa.Integer),
    sa.Column("communication_rating", sa.Integer),
    sa.Column("patience_rating", sa.Integer),
    sa.Column("engagement_rating", sa.Integer),
    sa.Column("helpfulness_rating", sa.Integer),
    sa.Column("would_recommend", sa.Boolean),
    sa.Column("improvement_areas", StringList),
    sa.Column("free_text_feedback", sa.Text),
    sa.Column("submitted_at", TS, nullable=False),
    sa.Column("created_at", TS, nullable=False, server_default=NOW),
    sa.Index("ix_student_feedback_tutor_id", "tutor_id"),
)

tutor_events = sa.Table(
    "tutor_events",
    metadata,
    sa.Column("event_id", ID, primary_key=True),
    sa.Column("tutor_id", ID, nullable=False),
    sa.Column("event_type", sa.String(50), nullable=False),
    sa.Column("event_timestamp", TS, nullable=False),
    sa.Column("metadata", Json),
    sa.Column("created_at", TS, nullable=False, server_default=NOW),
    sa.Index("ix_tutor_events_tutor_id_event_timestamp", "tutor_id", "event_timestamp"),
)

tutor_performance_metrics = sa.Table(
    "tutor_performance_metrics",
    metadata,
    sa.Column("metric_id", ID, primary_key=True),
    sa.Column("tutor_id", ID, nullable=False),
    sa.Column("window", sa.String(10), nullable=False),
    sa.Column("metric_date", sa.Date, nullable=False),
    sa.Column("calculation_date", TS, nullable=False),
    sa.Column("sessions_scheduled", sa.Integer, nullable=False, server_default="0"),
    sa.Column("sessions_completed", sa.Integer, nullable=False, server_default="0"),
    sa.Column("avg_rating", sa.Float),
    sa.Column("first_session_success_rate", sa.Float),
    sa.Column("first_sessions_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("reschedule_rate", sa.Float),
    sa.Column("reschedule_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("no_show_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("no_show_rate", sa.Float),
    sa.Column("engagement_score", sa.Float),
    sa.Column("learning_objectives_met_pct", sa.Float),
    sa.Column("response_time_avg_minutes", sa.Float),
    sa.Column("performance_tier", sa.String(20), nullable=False),
    *_stamps(),
    sa.UniqueConstraint(
        "tutor_id", "window", "metric_date", name="uq_tutor_performance_metrics_key"
    ),
    sa.Index("ix_tutor_performance_metrics_tutor_id_metric_date", "tutor_id", "metric_date"),
)

tutormax_state = sa.Table(
    "tutormax_state",
    metadata,
    sa.Column("key", sa.String(100), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("updated_at", TS, nullable=False, server_default=NOW),
)

CONTRACT_TABLES = (
    tutors,
    students,
    sessions,
    student_feedback,
    tutor_events,
    tutor_performance_metrics,
)

# --- the upgrade ---------------------------------------------------------------------------

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
