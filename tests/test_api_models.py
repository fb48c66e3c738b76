"""The API's request models describe the contract's columns, no more and no fewer: a column
added to the contract (or a length changed) must show up in the API's schema too."""

from __future__ import annotations

from typing import Any

from tutormax_cli.api.models import FeedbackIn, SessionCompletion
from tutormax_cli.pipeline.validate import specs

FROM_THE_SESSION = {"session_id", "student_id", "tutor_id"}
"""Feedback columns the API fills from the session it belongs to."""
SERVER_SET = {"created_at"}
DEFAULTED = {"feedback_id", "is_first_session", "submitted_at"}
"""Required feedback columns the API fills when the body leaves them out."""


def _max_length(field: Any) -> int | None:
    return next((m.max_length for m in field.metadata if hasattr(m, "max_length")), None)


def test_session_fields_are_the_contract_columns() -> None:
    contract = {s.name: s for s in specs("sessions") if s.name not in SERVER_SET}
    fields = dict(SessionCompletion.model_fields)
    assert fields.pop("feedback").annotation is not None
    assert set(fields) == set(contract)
    for name, spec in contract.items():
        if name == "session_id":  # the path's; optional in the body
            continue
        assert fields[name].is_required() == spec.required, name
        if name != "session_type":  # an enum: every value fits
            assert _max_length(fields[name]) == spec.max_length, name


def test_feedback_fields_are_the_contract_columns() -> None:
    contract = {
        s.name: s for s in specs("student_feedback") if s.name not in SERVER_SET | FROM_THE_SESSION
    }
    fields = FeedbackIn.model_fields
    assert set(fields) == set(contract)
    for name, spec in contract.items():
        assert fields[name].is_required() == (spec.required and name not in DEFAULTED), name
        assert _max_length(fields[name]) == spec.max_length, name
