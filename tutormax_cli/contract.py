"""The data contract (docs/metrics.md §1), declared once: every table's columns with their SQL
type and polars dtype, nullability and server defaults, primary key, unique columns,
references and indexes.

Everything else derives from here: the SQLAlchemy tables (`store.schema`), the polars schemas
of the input tables (what the sample generator produces and ingest types rows to), the keys
the upserts merge on (`store.seed.TABLE_KEYS`), the unique columns and references `validate`
checks, and the API's request models (held to it by `tests/test_api_models.py`). A column
added or changed here changes all of them. The migrations do not derive from it: each revision
is frozen DDL, and a test holds the migrated schema equal to the one built from here.

Names and types match production TutorMax databases: list columns are ARRAY on PostgreSQL and
JSON on SQLite, `metadata` is JSONB on PostgreSQL, and every timestamp has a server default so
other programs can insert with plain SQL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import polars as pl
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from tutormax_cli.metrics.frames import TS

__all__ = [
    "INPUT_KEYS",
    "INPUT_TABLES",
    "METRICS_TABLE",
    "STATE_TABLE",
    "TABLES",
    "Column",
    "Reference",
    "Table",
    "input_schemas",
    "table",
]

SqlType = sa.types.TypeEngine[Any]

ID_COLLATION = "C"
"""IDs compare as bytes on PostgreSQL, as SQLite and polars compare them: they are opaque keys,
and under a linguistic collation every sort and index build on them pays `strcoll` per
comparison (migration 0005; `sample generate` at 50,000 tutors: index builds 59 -> 33 s)."""
ID = sa.String(50).with_variant(sa.String(50, collation=ID_COLLATION), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)
STRING_LIST = sa.JSON().with_variant(postgresql.ARRAY(sa.String()), "postgresql")
JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
NOW = "now()"
"""The server default of every stamp (`CURRENT_TIMESTAMP` on SQLite)."""

_STR = pl.String()
_INT = pl.Int64()
_FLOAT = pl.Float64()
_BOOL = pl.Boolean()
_STRS = pl.List(pl.String)


@dataclass(frozen=True)
class Column:
    """One column: its SQL type, the polars dtype of its values, and whether it may be null."""

    name: str
    sql: SqlType
    dtype: pl.DataType
    nullable: bool = True
    default: str | None = None  # a server default: `NOW`, or a literal such as "0"

    @property
    def required(self) -> bool:
        """A value must be given: not null and no server default to fall back on."""
        return not self.nullable and self.default is None

    @property
    def max_length(self) -> int | None:
        return getattr(self.sql, "length", None)


@dataclass(frozen=True)
class Reference:
    """`column` holds the primary key of a row of `table` (checked by ingest, not the DB)."""

    column: str
    table: str
    noun: str  # how a reason names it: "unknown tutor T9"


@dataclass(frozen=True)
class Table:
    """One table: columns in contract order, keys, and what ingest checks about them."""

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    unique: tuple[str, ...] = ()
    references: tuple[Reference, ...] = ()
    indexes: tuple[tuple[str, tuple[str, ...]], ...] = ()
    unique_key: tuple[str, tuple[str, ...]] | None = None  # a named multi-column UNIQUE
    _by_name: dict[str, Column] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {c.name: c for c in self.columns})
        for name in (*self.key, *self.unique, *(r.column for r in self.references)):
            assert name in self._by_name, f"{self.name}.{name} is not a column"

    def column(self, name: str) -> Column:
        return self._by_name[name]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def schema(self) -> pl.Schema:
        """The polars dtypes of the table's columns, in contract order."""
        return pl.Schema({c.name: c.dtype for c in self.columns})


def _c(name: str, sql: SqlType, dtype: pl.DataType) -> Column:
    return Column(name, sql, dtype)


def _required(name: str, sql: SqlType, dtype: pl.DataType) -> Column:
    return Column(name, sql, dtype, nullable=False)


def _stamp(name: str) -> Column:
    return Column(name, TIMESTAMP, TS, nullable=False, default=NOW)


def _count(name: str) -> Column:
    return Column(name, sa.Integer(), _INT, nullable=False, default="0")


TUTORS = Table(
    "tutors",
    (
        _required("tutor_id", ID, _STR),
        _required("name", sa.String(255), _STR),
        _required("email", sa.String(255), _STR),
        _required("onboarding_date", TIMESTAMP, TS),
        _required("status", sa.String(20), _STR),
        _required("subjects", STRING_LIST, _STRS),
        _c("education_level", sa.String(100), _STR),
        _c("location", sa.String(255), _STR),
        _c("baseline_sessions_per_week", sa.Float(), _FLOAT),
        _c("behavioral_archetype", sa.String(50), _STR),
        _stamp("created_at"),
        _stamp("updated_at"),
    ),
    key=("tutor_id",),
    unique=("email",),
)

STUDENTS = Table(
    "students",
    (
        _required("student_id", ID, _STR),
        _required("name", sa.String(255), _STR),
        _c("age", sa.Integer(), _INT),
        _c("grade_level", sa.String(50), _STR),
        _stamp("created_at"),
        _stamp("updated_at"),
    ),
    key=("student_id",),
)

SESSIONS = Table(
    "sessions",
    (
        _required("session_id", ID, _STR),
        _required("tutor_id", ID, _STR),
        _required("student_id", ID, _STR),
        _required("session_number", sa.Integer(), _INT),
        _required("scheduled_start", TIMESTAMP, TS),
        _c("actual_start", TIMESTAMP, TS),
        _required("duration_minutes", sa.Integer(), _INT),
        _required("subject", sa.String(100), _STR),
        _required("session_type", sa.String(20), _STR),
        _required("tutor_initiated_reschedule", sa.Boolean(), _BOOL),
        _required("no_show", sa.Boolean(), _BOOL),
        _required("late_start_minutes", sa.Integer(), _INT),
        _c("engagement_score", sa.Float(), _FLOAT),
        _c("learning_objectives_met", sa.Boolean(), _BOOL),
        _required("technical_issues", sa.Boolean(), _BOOL),
        _stamp("created_at"),
        _stamp("updated_at"),
    ),
    key=("session_id",),
    references=(
        Reference("tutor_id", "tutors", "tutor"),
        Reference("student_id", "students", "student"),
    ),
    indexes=(
        ("ix_sessions_tutor_id_scheduled_start", ("tutor_id", "scheduled_start")),
        ("ix_sessions_scheduled_start", ("scheduled_start",)),
        ("ix_sessions_updated_at", ("updated_at",)),
    ),
)

STUDENT_FEEDBACK = Table(
    "student_feedback",
    (
        _required("feedback_id", ID, _STR),
        _required("session_id", ID, _STR),
        _required("student_id", ID, _STR),
        _required("tutor_id", ID, _STR),
        _required("overall_rating", sa.Integer(), _INT),
        _required("is_first_session", sa.Boolean(), _BOOL),
        _c("subject_knowledge_rating", sa.Integer(), _INT),
        _c("communication_rating", sa.Integer(), _INT),
        _c("patience_rating", sa.Integer(), _INT),
        _c("engagement_rating", sa.Integer(), _INT),
        _c("helpfulness_rating", sa.Integer(), _INT),
        _c("would_recommend", sa.Boolean(), _BOOL),
        _c("improvement_areas", STRING_LIST, _STRS),
        _c("free_text_feedback", sa.Text(), _STR),
        _required("submitted_at", TIMESTAMP, TS),
        _stamp("created_at"),
    ),
    key=("feedback_id",),
    unique=("session_id",),
    references=(Reference("session_id", "sessions", "session"),),
    indexes=(("ix_student_feedback_tutor_id", ("tutor_id",)),),
)

TUTOR_EVENTS = Table(
    "tutor_events",
    (
        _required("event_id", ID, _STR),
        _required("tutor_id", ID, _STR),
        _required("event_type", sa.String(50), _STR),
        _required("event_timestamp", TIMESTAMP, TS),
        _c("metadata", JSON_DOCUMENT, _STR),  # JSON text in frames, parsed by the database
        _stamp("created_at"),
    ),
    key=("event_id",),
    indexes=(
        ("ix_tutor_events_tutor_id_event_timestamp", ("tutor_id", "event_timestamp")),
        ("ix_tutor_events_event_timestamp", ("event_timestamp",)),
    ),
)

METRICS_TABLE = Table(
    "tutor_performance_metrics",
    (
        _required("metric_id", ID, _STR),
        _required("tutor_id", ID, _STR),
        _required("window", sa.String(10), _STR),
        _required("metric_date", sa.Date(), pl.Date()),
        _required("calculation_date", TIMESTAMP, TS),
        _count("sessions_scheduled"),
        _count("sessions_completed"),
        _c("avg_rating", sa.Float(), _FLOAT),
        _c("first_session_success_rate", sa.Float(), _FLOAT),
        _count("first_sessions_count"),
        _c("reschedule_rate", sa.Float(), _FLOAT),
        _count("reschedule_count"),
        _count("no_show_count"),
        _c("no_show_rate", sa.Float(), _FLOAT),
        _c("engagement_score", sa.Float(), _FLOAT),
        _c("learning_objectives_met_pct", sa.Float(), _FLOAT),
        _c("response_time_avg_minutes", sa.Float(), _FLOAT),
        _required("performance_tier", sa.String(20), _STR),
        _stamp("created_at"),
        _stamp("updated_at"),
    ),
    key=("metric_id",),
    unique_key=("uq_tutor_performance_metrics_key", ("tutor_id", "window", "metric_date")),
    indexes=(
        ("ix_tutor_performance_metrics_tutor_id_metric_date", ("tutor_id", "metric_date")),
        # the reads of store.query (migration 0004): the leaderboard walks the ranking index
        # one tier at a time; tier counts and freshness read the covering one backwards
        # (index-only, no sort); a window's newest metric date is the end of the last one
        (
            "ix_tutor_performance_metrics_ranking",
            ("window", "performance_tier", "avg_rating", "sessions_completed", "tutor_id"),
        ),
        (
            "ix_tutor_performance_metrics_window_latest",
            ("window", "tutor_id", "metric_date", "performance_tier", "calculation_date"),
        ),
        ("ix_tutor_performance_metrics_window_metric_date", ("window", "metric_date")),
    ),
)
"""What tutormax computes (docs/metrics.md §2); one row per (tutor, window, metric_date)."""

STATE_TABLE = Table(
    "tutormax_state",
    (
        _required("key", sa.String(100), _STR),
        _required("value", sa.Text(), _STR),
        _stamp("updated_at"),
    ),
    key=("key",),
)
"""tutormax's own bookkeeping (e.g. the mark of the last `recompute --changed-since auto`)."""

INPUT_TABLES: tuple[Table, ...] = (TUTORS, STUDENTS, SESSIONS, STUDENT_FEEDBACK, TUTOR_EVENTS)
"""The tables TutorMax's pipeline fills, in the order they are written (referenced first)."""

TABLES: tuple[Table, ...] = (*INPUT_TABLES, METRICS_TABLE, STATE_TABLE)

INPUT_KEYS: dict[str, tuple[str, ...]] = {t.name: t.key for t in INPUT_TABLES}
"""Primary key of each input table, in write order: what every upsert of them merges on."""

_BY_NAME = {t.name: t for t in TABLES}


def table(name: str) -> Table:
    """The contract of table `name` (KeyError for any other name)."""
    return _BY_NAME[name]


def input_schemas() -> dict[str, pl.Schema]:
    """The polars schema of each input table, in write order."""
    return {t.name: t.schema for t in INPUT_TABLES}
