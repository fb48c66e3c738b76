"""The metric rules and the additive partials every metric reduces to, each declared once.

Every stored metric is a ratio or a blend of sums and counts over a window's rows (`finalize`
in `engine.py` turns them into values). Those sums and counts — the *partials* — add up across
days and tutors, which is what lets PostgreSQL aggregate them where the rows live, the backfill
roll them day by day and the cumulative table difference them. Each partial is declared here
once, with its polars aggregation and its SQL aggregate side by side, both built from the named
rules below; every polars pass and every SQL builder (`store/load.py`, `store/cumulative.py`)
generates from `PARTIALS`, so a rule cannot drift between the paths.

The SQL reads sessions as `s` joined with their feedback as `f` (`f.overall_rating`), and events
as `e` with the response time already extracted into `e.rt` (`event_rows_sql`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

import polars as pl

# -- the rules of docs/metrics.md §3, named ----------------------------------------------------

ON_TIME_LIMIT_MINUTES = 10
"""A session that started at most this many minutes late is on time (engagement's 20 %)."""

SUCCESS_RATING = 4
"""A first session rated at least this is a success (first-session success rate)."""

FIRST_SESSION_NUMBER = 1
"""`session_number` of a tutor's first session with a student."""

LOGIN = "login"
MESSAGE_RESPONSE = "message_response"
RELEVANT_EVENT_TYPES = (LOGIN, MESSAGE_RESPONSE)
"""The only event types any metric reads (logins per session, response time)."""

RESPONSE_TIME_FIELD = "response_time_minutes"
"""The key of a message_response event's `metadata` that carries its response time."""


def completed() -> pl.Expr:
    """Completed: not a no-show and actually started (a null no_show counts as false)."""
    return ~pl.col("no_show").fill_null(False) & pl.col("actual_start").is_not_null()


def first_session() -> pl.Expr:
    return pl.col("session_number") == FIRST_SESSION_NUMBER


def on_time() -> pl.Expr:
    return pl.col("late_start_minutes") <= ON_TIME_LIMIT_MINUTES


def successful(rating: pl.Expr) -> pl.Expr:
    return rating >= SUCCESS_RATING


COMPLETED_SQL = "NOT coalesce(s.no_show, false) AND s.actual_start IS NOT NULL"
FIRST_SESSION_SQL = f"s.session_number = {FIRST_SESSION_NUMBER}"
ON_TIME_SQL = f"s.late_start_minutes <= {ON_TIME_LIMIT_MINUTES}"
SUCCESS_SQL = f"f.overall_rating >= {SUCCESS_RATING}"
RELEVANT_EVENTS_SQL = "(" + ", ".join(f"'{t}'" for t in RELEVANT_EVENT_TYPES) + ")"
"""`('login', 'message_response')`, for `event_type IN …`."""


def response_time_sql(postgres: bool, alias: str = "e") -> str:
    """`metadata.response_time_minutes` of a message_response event when it is a JSON number,
    else NULL, in the dialect's JSON functions (the polars side reads the loaded column)."""
    kind = f"{alias}.event_type = '{MESSAGE_RESPONSE}'"
    if postgres:
        value = f"{alias}.metadata::jsonb -> '{RESPONSE_TIME_FIELD}'"
        return (
            f"CASE WHEN {kind} AND jsonb_typeof({value}) = 'number' "
            f"THEN ({alias}.metadata::jsonb ->> '{RESPONSE_TIME_FIELD}')::float8 END"
        )
    path = f"'$.{RESPONSE_TIME_FIELD}'"
    return (
        f"CASE WHEN {kind} AND json_valid({alias}.metadata) AND "
        f"json_type({alias}.metadata, {path}) IN ('integer', 'real') "
        f"THEN json_extract({alias}.metadata, {path}) END"
    )


def event_rows_sql(where: str = "") -> str:
    """The relevant events as `e` with `e.rt` (PostgreSQL): what the event partials read."""
    return (
        f"(SELECT e.tutor_id, e.event_type, e.event_timestamp, {response_time_sql(True)} AS rt "
        f"FROM tutor_events e WHERE e.event_type IN {RELEVANT_EVENTS_SQL}{where}) e"
    )


# -- the partials -------------------------------------------------------------------------------


Rows = Literal["sessions", "events"]
"""What a partial aggregates: session rows (with their feedback's rating) or event rows."""


@dataclass(frozen=True)
class SqlAggregate:
    """`count(*)`, `count(argument)` or `sum(argument)` over the rows where `where` holds."""

    function: Literal["count", "sum"]
    argument: str | None = None
    where: str | None = None


@dataclass(frozen=True)
class Partial:
    """One additive partial: what it aggregates (session rows with their rating, or event
    rows), its dtype, and the same aggregate in polars and in SQL."""

    name: str
    source: Rows
    dtype: pl.DataType
    polars: pl.Expr
    sql: SqlAggregate

    @property
    def is_float(self) -> bool:
        return self.dtype == pl.Float64


def _count(cond: pl.Expr) -> pl.Expr:
    return cond.fill_null(False).cast(pl.Int64).sum()


def _nonnull(column: str) -> pl.Expr:
    return pl.col(column).count().cast(pl.Int64)


_INT, _FLOAT = pl.Int64(), pl.Float64()
_RATING = pl.col("overall_rating")
_RESPONSE = pl.col(RESPONSE_TIME_FIELD).filter(pl.col("event_type") == MESSAGE_RESPONSE)
_S: Final = "sessions"
_E: Final = "events"


def _rows(where: str | None = None) -> SqlAggregate:
    return SqlAggregate("count", None, where)


def _values(argument: str) -> SqlAggregate:
    return SqlAggregate("count", argument)


def _sum(argument: str) -> SqlAggregate:
    return SqlAggregate("sum", argument)


PARTIALS: tuple[Partial, ...] = (
    # name, rows, dtype, polars aggregation, SQL aggregate
    Partial("n_sessions", _S, _INT, pl.len().cast(pl.Int64), _rows()),
    Partial("n_completed", _S, _INT, _count(completed()), _rows(COMPLETED_SQL)),
    Partial("n_first", _S, _INT, _count(first_session()), _rows(FIRST_SESSION_SQL)),
    Partial("n_reschedule", _S, _INT, _count(pl.col("tutor_initiated_reschedule")),
            _rows("s.tutor_initiated_reschedule")),
    Partial("n_no_show", _S, _INT, _count(pl.col("no_show")), _rows("s.no_show")),
    Partial("fb_n", _S, _INT, _nonnull("overall_rating"), _values("f.overall_rating")),
    Partial("fb_sum", _S, _INT, _RATING.sum().cast(pl.Int64), _sum("f.overall_rating")),
    Partial("first_fb_n", _S, _INT, _count(first_session() & _RATING.is_not_null()),
            _rows(f"{FIRST_SESSION_SQL} AND f.overall_rating IS NOT NULL")),
    Partial("first_fb_ok", _S, _INT, _count(first_session() & successful(_RATING)),
            _rows(f"{FIRST_SESSION_SQL} AND {SUCCESS_SQL}")),
    Partial("eng_n", _S, _INT, _nonnull("engagement_score"), _values("s.engagement_score")),
    Partial("eng_sum", _S, _FLOAT, pl.col("engagement_score").sum().cast(pl.Float64),
            _sum("s.engagement_score")),
    Partial("n_on_time", _S, _INT, _count(on_time()), _rows(ON_TIME_SQL)),
    Partial("lo_n", _S, _INT, _nonnull("learning_objectives_met"),
            _values("s.learning_objectives_met")),
    Partial("lo_true", _S, _INT, _count(pl.col("learning_objectives_met")),
            _rows("s.learning_objectives_met")),
    Partial("n_logins", _E, _INT, _count(pl.col("event_type") == LOGIN),
            _rows(f"e.event_type = '{LOGIN}'")),
    Partial("resp_n", _E, _INT, _RESPONSE.count().cast(pl.Int64), _values("e.rt")),
    Partial("resp_sum", _E, _FLOAT, _RESPONSE.sum().cast(pl.Float64), _sum("e.rt")),
)  # fmt: skip
"""Every partial, session partials first: the order of every partials frame and table."""

NAMES = tuple(p.name for p in PARTIALS)
SESSION_PARTIALS = tuple(p for p in PARTIALS if p.source == _S)
EVENT_PARTIALS = tuple(p for p in PARTIALS if p.source == _E)
FLOAT_NAMES = tuple(p.name for p in PARTIALS if p.is_float)
DTYPES: dict[str, pl.DataType] = {p.name: p.dtype for p in PARTIALS}


def polars_aggs(source: Rows) -> list[pl.Expr]:
    """The polars aggregations of one source's partials, named, for a `group_by().agg()`."""
    return [p.polars.alias(p.name) for p in PARTIALS if p.source == source]


def sql_aggregate(partial: Partial, also: str | None = None, *, exact: bool = False) -> str:
    """The partial's SQL aggregate, restricted to rows where `also` holds too (a window's
    start, a day slice). Sums are never NULL (`coalesce(…, 0)`, like polars' empty sum);
    `exact` sums float arguments as `numeric`, for running totals that must not drift."""
    spec = partial.sql
    argument = spec.argument or "*"
    if exact and partial.is_float and spec.argument is not None:
        argument = f"({spec.argument})::numeric"
    where = " AND ".join(c for c in (also, spec.where) if c)
    text = f"{spec.function}({argument})"
    if where:
        text += f" FILTER (WHERE {where})"
    return f"coalesce({text}, 0)" if spec.function == "sum" else text


def zero_filled() -> list[pl.Expr]:
    """Absent partials (a tutor without events that day) as zeros of their dtype."""
    return [pl.col(p.name).fill_null(0.0 if p.is_float else 0) for p in PARTIALS]
