"""The API's request and response bodies.

The request models describe the contract columns (docs/metrics.md §1) so the OpenAPI schema tells a
client what to send and a wrong type is refused before any work; the authoritative checks are
still the ingest stage's (`pipeline.validate`), which run next and answer in the same 422
shape. `tests/test_api_models.py` keeps these fields equal to the contract's.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictStr,
    field_validator,
)
from pydantic import StrictInt as Int
from pydantic_core import PydanticCustomError

from tutormax_cli.pipeline.validate import (
    MAX_DURATION_MINUTES,
    MAX_LATE_START_MINUTES,
    SESSION_TYPES,
)
from tutormax_cli.text import NOT_UTF8, NOT_UTF8_TYPE, is_utf8_text, shown

_ID = 50
Rating = Field(None, ge=1, le=5)


def _iso_text(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError("must be an ISO-8601 date-time string")
    return value


class _NotUtf8(str):
    """A string that is not UTF-8 text, `shown` escaped: what `_refuse_not_utf8` refuses."""


def _mark_not_utf8(value: Any) -> Any:
    if isinstance(value, str) and not is_utf8_text(value):
        return _NotUtf8(shown(value))
    return value


def _refuse_not_utf8(value: Any) -> Any:
    if isinstance(value, _NotUtf8):
        raise PydanticCustomError(NOT_UTF8_TYPE, NOT_UTF8)
    return value


Str = Annotated[StrictStr, BeforeValidator(_refuse_not_utf8), BeforeValidator(_mark_not_utf8)]
"""A JSON string that is UTF-8 text (`text.is_utf8_text`): a lone surrogate escape is a 422 on
its field, not a failed write of the whole group commit. Two steps, so that the error's
`input` is the escaped string (`_mark_not_utf8` runs first): FastAPI renders a 422's input
as UTF-8, and the raw one would make it a 500."""

Timestamp = Annotated[datetime, BeforeValidator(_iso_text)]
"""A date-time given as JSON text (lax parsing would also take a number as Unix seconds)."""
Bool = StrictBool
"""Only JSON true/false: the schema says boolean, so 0 and "yes" are refused here."""
Float = StrictFloat


class FeedbackIn(BaseModel):
    """The student's feedback on the session. Its ids come from the session: `feedback_id`
    defaults to the session's existing feedback row, or a stable id derived from the session
    id, so posting the same completion twice writes one row."""

    model_config = ConfigDict(extra="forbid")

    feedback_id: Str | None = Field(None, min_length=1, max_length=_ID)
    overall_rating: Int = Field(ge=1, le=5)
    is_first_session: Bool | None = Field(
        None, description="Defaults to the session's `session_number == 1`."
    )
    subject_knowledge_rating: Int | None = Rating
    communication_rating: Int | None = Rating
    patience_rating: Int | None = Rating
    engagement_rating: Int | None = Rating
    helpfulness_rating: Int | None = Rating
    would_recommend: Bool | None = None
    improvement_areas: list[Str] | None = None
    free_text_feedback: Str | None = None
    submitted_at: Timestamp | None = Field(None, description="Defaults to the time of the request.")


class SessionCompletion(BaseModel):
    """A completed session in the contract's fields (`session_id` is the path's)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "tutor_id": "T0001",
                    "student_id": "S00001",
                    "session_number": 1,
                    "scheduled_start": "2026-11-29T15:00:00Z",
                    "actual_start": "2026-11-29T15:03:00Z",
                    "duration_minutes": 60,
                    "subject": "Algebra",
                    "session_type": "1-on-1",
                    "tutor_initiated_reschedule": False,
                    "no_show": False,
                    "late_start_minutes": 3,
                    "engagement_score": 0.82,
                    "learning_objectives_met": True,
                    "technical_issues": False,
                    "feedback": {"overall_rating": 5, "would_recommend": True},
                }
            ]
        },
    )

    session_id: Str | None = Field(
        None, min_length=1, max_length=_ID, description="If given, must equal the path's."
    )
    tutor_id: Str = Field(min_length=1, max_length=_ID)
    student_id: Str = Field(min_length=1, max_length=_ID)
    session_number: Int = Field(ge=1, le=2**31 - 1)
    scheduled_start: Timestamp
    actual_start: Timestamp | None = None
    duration_minutes: Int = Field(ge=0, le=MAX_DURATION_MINUTES)
    subject: Str = Field(min_length=1, max_length=100)
    session_type: Literal[SESSION_TYPES]  # type: ignore[valid-type]
    tutor_initiated_reschedule: Bool
    no_show: Bool
    late_start_minutes: Int = Field(ge=0, le=MAX_LATE_START_MINUTES)
    engagement_score: Float | None = Field(None, ge=0, le=1)
    learning_objectives_met: Bool | None = None
    technical_issues: Bool
    feedback: FeedbackIn | None = None


class BatchCompletion(SessionCompletion):
    """One item of `POST /api/sessions:batch`: a completion that names its own session."""

    model_config = ConfigDict(extra="forbid")

    session_id: Str = Field(min_length=1, max_length=_ID)


class ItemError(BaseModel):
    """A failed rule of one batch item, located inside it (`["feedback", "overall_rating"]`)."""

    loc: list[str | int]
    msg: str
    type: str


class ItemResult(BaseModel):
    """What became of one batch item: `status` is what a single post would have answered (202,
    422 with `errors`, 409 or 503 with `detail`)."""

    index: int
    session_id: str | None = Field(description="The item's `session_id`, if it is UTF-8 text.")
    status: int
    feedback_id: str | None = None
    errors: list[ItemError] | None = None
    detail: str | None = None

    @field_validator("session_id")
    @classmethod
    def _answerable(cls, value: str | None) -> str | None:
        """An id that is not UTF-8 text (its item is a 422) cannot be answered as sent."""
        return value if value is None or is_utf8_text(value) else None


class BatchResult(BaseModel):
    """Per-item outcomes of a batch, in the order sent; retry the items that were not 202."""

    count: int
    accepted: int
    stream: str
    items: list[ItemResult]


class Accepted(BaseModel):
    """The completion is committed and published for the metrics worker."""

    session_id: str
    status: Literal["accepted"] = "accepted"
    feedback_id: str | None = None
    stream: str


class Problem(BaseModel):
    """An error other than a validation error: what was wrong, in one line."""

    detail: str


class MetricRow(BaseModel):
    """One `tutor_performance_metrics` row (docs/metrics.md §1)."""

    tutor_id: str
    window: str
    metric_date: date
    calculation_date: datetime
    sessions_scheduled: int
    sessions_completed: int
    avg_rating: float | None
    first_session_success_rate: float | None
    first_sessions_count: int
    reschedule_rate: float | None
    reschedule_count: int
    no_show_count: int
    no_show_rate: float | None
    engagement_score: float | None
    learning_objectives_met_pct: float | None
    response_time_avg_minutes: float | None
    performance_tier: str | None
    updated_at: datetime | None = None


class TutorMetrics(BaseModel):
    """A tutor's newest row of each window (the design's "latest three")."""

    tutor_id: str
    metric_date: date | None
    metrics: list[MetricRow]


class MetricHistory(BaseModel):
    """One window's daily rows for a tutor, oldest first."""

    tutor_id: str
    window: str
    days: int
    rows: list[MetricRow]


class RankedRow(MetricRow):
    """A leaderboard row."""

    rank: int


class Leaderboard(BaseModel):
    """Tutors of one window ranked best tier first, then higher rating, more sessions."""

    window: str
    tiers: list[str] | None
    count: int
    tutors: list[RankedRow]


class Health(BaseModel):
    """The process answers."""

    status: Literal["ok"] = "ok"


class Check(BaseModel):
    """One dependency's state."""

    ok: bool
    error: str | None = None


class Readiness(BaseModel):
    """Whether the database (at this code's schema) and Redis answer."""

    status: Literal["ready", "not ready"]
    checks: dict[str, Check]
