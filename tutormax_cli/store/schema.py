"""The TutorMax tables of METRICS.md §1 as SQLAlchemy Core, portable to PostgreSQL and SQLite.

Names and types match production TutorMax databases; list columns are ARRAY on PostgreSQL and
JSON on SQLite, `metadata` is JSONB on PostgreSQL. Every timestamp has a server default so
other programs can insert with plain SQL.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

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
    sa.Index("ix_sessions_scheduled_start", "scheduled_start"),
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
    sa.Index("ix_tutor_events_event_timestamp", "event_timestamp"),
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
"""tutormax's own bookkeeping (e.g. the mark of the last `recompute --changed-since auto`)."""

CONTRACT_TABLES = (
    tutors,
    students,
    sessions,
    student_feedback,
    tutor_events,
    tutor_performance_metrics,
)
VERSION_TABLE = "tutormax_alembic_version"
"""Alembic's version table, named for tutormax so it never collides with the pipeline's own."""
