"""The API's request models describe the contract's columns (`tutormax_cli.contract`), no more
and no fewer, with the same types, nullability and lengths: a column added to the contract (or
a length or type changed) must show up in the API's schema too."""

from __future__ import annotations

import types
import typing
from datetime import datetime
from typing import Any

import polars as pl
import pytest

from tutormax_cli import contract
from tutormax_cli.api.models import FeedbackIn, SessionCompletion

FROM_THE_SESSION = {"session_id", "student_id", "tutor_id"}
"""Feedback columns the API fills from the session it belongs to."""
SERVER_SET = {"created_at", "updated_at"}
DEFAULTED = {"feedback_id", "is_first_session", "submitted_at"}
"""Required feedback columns the API fills when the body leaves them out."""
PYTHON_TYPES: dict[type[pl.DataType], type] = {
    pl.String: str,
    pl.Int64: int,
    pl.Float64: float,
    pl.Boolean: bool,
    pl.Datetime: datetime,
    pl.List: list,
}


def _max_length(field: Any) -> int | None:
    return next((m.max_length for m in field.metadata if hasattr(m, "max_length")), None)


def _python_type(annotation: Any) -> type:
    """`int` for `StrictInt | None`, `str` for a Literal of strings, `list` for `list[str]`…"""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        (only,) = args
        return _python_type(only)
    if origin is typing.Literal:
        return type(args[0])
    if origin is typing.Annotated:
        return _python_type(args[0])
    return origin or annotation  # type: ignore[no-any-return]


def _columns(table: str, leave_out: set[str]) -> dict[str, contract.Column]:
    return {c.name: c for c in contract.table(table).columns if c.name not in leave_out}


def _check_types(fields: dict[str, Any], columns: dict[str, contract.Column]) -> None:
    for name, column in columns.items():
        expected = PYTHON_TYPES[type(column.dtype)]
        assert _python_type(fields[name].annotation) is expected, name
        nullable = type(None) in typing.get_args(fields[name].annotation)
        assert nullable == (column.nullable or name in DEFAULTED | {"session_id"}), name


def test_session_fields_are_the_contract_columns() -> None:
    columns = _columns("sessions", SERVER_SET)
    fields = dict(SessionCompletion.model_fields)
    assert fields.pop("feedback").annotation is not None
    assert set(fields) == set(columns)
    _check_types(fields, columns)
    for name, column in columns.items():
        if name == "session_id":  # the path's; optional in the body
            continue
        assert fields[name].is_required() == column.required, name
        if name != "session_type":  # an enum: every value fits
            assert _max_length(fields[name]) == column.max_length, name


def test_feedback_fields_are_the_contract_columns() -> None:
    columns = _columns("student_feedback", SERVER_SET | FROM_THE_SESSION)
    fields = FeedbackIn.model_fields
    assert set(fields) == set(columns)
    _check_types(dict(fields), columns)
    for name, column in columns.items():
        assert fields[name].is_required() == (column.required and name not in DEFAULTED), name
        assert _max_length(fields[name]) == column.max_length, name


@pytest.mark.parametrize("table", [t.name for t in contract.INPUT_TABLES])
def test_the_derived_definitions_agree_with_the_contract(table: str) -> None:
    """SQLAlchemy table, polars schema, keys, uniques and references all come from one place."""
    from tutormax_cli.pipeline import validate
    from tutormax_cli.sample import TABLE_SCHEMAS
    from tutormax_cli.store.schema import metadata
    from tutormax_cli.store.seed import TABLE_KEYS

    spec = contract.table(table)
    sa_table = metadata.tables[table]
    assert tuple(sa_table.c.keys()) == spec.names
    assert tuple(c.name for c in sa_table.primary_key) == spec.key == TABLE_KEYS[table]
    assert {c.name for c in sa_table.c if c.unique} == set(spec.unique)
    assert [c.nullable for c in sa_table.c] == [c.nullable for c in spec.columns]
    assert TABLE_SCHEMAS[table] == spec.schema
    assert contract.INPUT_KEYS[table] == spec.key
    assert [(s.name, s.required, s.max_length) for s in validate.specs(table)] == [
        (c.name, c.required, c.max_length) for c in spec.columns if c.name != "updated_at"
    ]
