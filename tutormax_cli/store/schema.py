"""The contract's tables (`tutormax_cli.contract`) as SQLAlchemy Core, portable to PostgreSQL
and SQLite: built from the declaration, never restated."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from tutormax_cli import contract
from tutormax_cli.store import db

metadata = sa.MetaData()

NOW = sa.func.now()


def _server_default(column: contract.Column) -> sa.ColumnElement[Any] | str | None:
    if column.default == contract.NOW:
        return NOW
    return column.default


def _table(spec: contract.Table) -> sa.Table:
    columns = [
        sa.Column(
            c.name,
            c.sql,
            primary_key=c.name in spec.key,
            nullable=c.nullable,
            unique=True if c.name in spec.unique else None,
            server_default=_server_default(c),
        )
        for c in spec.columns
    ]
    extras: list[sa.Index | sa.UniqueConstraint] = []
    if spec.unique_key is not None:
        name, cols = spec.unique_key
        extras.append(sa.UniqueConstraint(*cols, name=name))
    extras.extend(sa.Index(name, *cols) for name, cols in spec.indexes)
    return sa.Table(spec.name, metadata, *columns, *extras)


tutors = _table(contract.TUTORS)
students = _table(contract.STUDENTS)
sessions = _table(contract.SESSIONS)
student_feedback = _table(contract.STUDENT_FEEDBACK)
tutor_events = _table(contract.TUTOR_EVENTS)
tutor_performance_metrics = _table(contract.METRICS_TABLE)
tutormax_state = _table(contract.STATE_TABLE)
"""tutormax's own bookkeeping (e.g. the mark of the last `recompute --changed-since auto`)."""

CONTRACT_TABLES = (
    tutors,
    students,
    sessions,
    student_feedback,
    tutor_events,
    tutor_performance_metrics,
)
VERSION_TABLE = db.VERSION_TABLE
