"""The bodies of the report endpoints the dashboard reads (`tutormax_cli.reports` builds them).

Their fields are the CLI's `--json` documents' (`show tutor --explain`, `show tiers`,
`status`), so a script and the page see one shape. Documents whose parts another module owns
and may grow (stream reports, worker heartbeats) allow extra fields rather than drop them.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tutormax_cli.api.models import MetricRow


class TierCount(BaseModel):
    """One tier of a distribution, against 7 days earlier (None without that history)."""

    tier: str | None
    tutors: int
    share_pct: float
    earlier: int | None
    change: int | None


class TierReport(BaseModel):
    """The tier distribution of one window's latest rows (`show tiers --json`)."""

    window: str
    metric_date: date | None
    compared_with: date | None
    tutors: int
    tiers: list[TierCount]


class TierDistributions(BaseModel):
    """Each window's distribution, 7day, 30day, 90day."""

    windows: list[TierReport]


class Consumer(BaseModel):
    """A consumer of a group, as XINFO CONSUMERS reports it."""

    model_config = ConfigDict(extra="allow")

    name: str
    pending: int
    idle_s: float
    inactive_s: float | None = None


class StreamStatus(BaseModel):
    """A consumer group's backlog and how many live workers serve it."""

    model_config = ConfigDict(extra="allow")

    stream: str
    group: str
    length: int
    lag: int
    lag_s: float | None
    pending: int
    oldest_pending_age_s: float | None
    max_deliveries: int
    dead_letter: int
    consumers: list[Consumer]
    workers: int


class DeadLetters(BaseModel):
    """The dead-letter stream's length and its arrivals in the last hour."""

    model_config = ConfigDict(extra="allow")

    length: int
    last_hour: int
    newest_age_s: float | None


class Freshness(BaseModel):
    """Active tutors' latest rows of one window: how many, newest and oldest."""

    tutors: int
    newest: datetime | None
    oldest: datetime | None
    newest_age_s: float | None
    oldest_age_s: float | None


class StatusReport(BaseModel):
    """What `tutormax status --json` prints. `healthy` is False when there is a backlog that no
    live worker serves or the database cannot be read (`problems` says which)."""

    model_config = ConfigDict(extra="allow")

    healthy: bool
    problems: list[str]
    warnings: list[str]
    workers: list[dict[str, Any]] = Field(description="Live workers' heartbeats, as stored.")
    streams: list[StreamStatus]
    dead_letter: DeadLetters | None = Field(
        description="Null when Redis could not be read (`problems` says why)."
    )
    freshness: dict[str, Freshness] | None


class Flag(BaseModel):
    """A metric's flag (green, red or none) and the rule it met."""

    flag: str | None
    rule: str | None


class ValueFlag(Flag):
    """A flag with the value that earned it."""

    value: float | int | None


class Rule(BaseModel):
    """Where one flagged metric turns green and red."""

    green: str
    red: str


class WindowReport(MetricRow):
    """A tutor's latest row of one window, its age and each flagged metric's flag."""

    age_s: float
    flags: dict[str, Flag]


class Trend(BaseModel):
    """Each metric's value and the tier on each of 30 days (null where a day has no row)."""

    window: str
    dates: list[date]
    metrics: dict[str, list[float | int | None]]
    tiers: list[str | None] = []


class SessionDetail(BaseModel):
    """A session of the explained window, with its rating."""

    session_id: str
    student_id: str | None
    subject: str | None
    session_number: int | None
    scheduled_start: datetime
    no_show: bool | None
    tutor_initiated_reschedule: bool | None
    late_start_minutes: int | None
    engagement_score: float | None
    learning_objectives_met: bool | None
    overall_rating: int | None


class Explanation(BaseModel):
    """Why the row has its tier (`show tutor --explain --json`'s `explain`)."""

    window: str
    tier: str | None
    rule: str
    green: list[str]
    red: list[str]
    decisive: list[str]
    flags: dict[str, ValueFlag]
    sessions: dict[str, list[SessionDetail]]
    counts: dict[str, int]
    stored_tier_differs: bool


class TutorReport(BaseModel):
    """`show tutor --explain --json`, plus the thresholds the flags were judged by."""

    tutor_id: str
    metric_date: date
    as_of: datetime
    windows: dict[str, WindowReport]
    trend: Trend
    explain: Explanation | None = None
    thresholds: dict[str, Rule]


class ShortTrend(BaseModel):
    """A needs-action tutor's tier and red metrics over 30 days."""

    dates: list[date]
    tiers: list[str | None]
    metrics: dict[str, list[float | int | None]]


class FlaggedTutor(BaseModel):
    """An At Risk or Needs Attention tutor and the metrics that flagged it."""

    tutor_id: str
    performance_tier: str
    metric_date: date
    calculation_date: datetime
    red: list[str]
    flags: dict[str, ValueFlag]
    trend: ShortTrend


class NeedsAction(BaseModel):
    """At Risk then Needs Attention tutors, most red flags first; `count` is all of them."""

    window: str
    tiers: list[str]
    count: int
    tutors: list[FlaggedTutor]


class TierChange(BaseModel):
    """One tutor's tier moving in one window."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    tutor_id: str
    window: str
    from_tier: str | None = Field(alias="from")
    to_tier: str | None = Field(alias="to")
    as_of: datetime | None
    direction: str = Field(description="up (a better tier) or down.")


class TierChanges(BaseModel):
    """Recent tier changes, newest first, and where they were read from."""

    source: str
    days: int | None = None
    changes: list[TierChange]
