"""The tier-change feed: `tutormax:tiers:changed`, one entry per (tutor, window) whose current
tier a write changed — from the worker, a window sweep, the day rollover or a recompute.

Detection happens in the writer's transaction, before its upsert, with one read per batch
(`detect`): the batch's newest row per (tutor, window) is compared with the tier that tutor's
latest stored row in that window had. Only *current* rows count: a backfill of a day older
than the tutor's newest stored row changes history, which `show changes` reads from the daily
rows, not from the feed. A tutor's first row ever (or first after more than a day without one)
is not a change: there is no tier it changed from. With the worker's day rollover every tutor
with a session in its 90-day window has a row every day, so "yesterday's row" is always there
to compare with.

Entries are published after the commit (`publish`), like `tutormax:metrics:updated`: a reader
never sees a change the database does not hold. Two workers flushing the same tutor at once may
both report its change; a Redis failure between commit and publish loses the entry (the daily
rows still show it).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, cast

import polars as pl
import sqlalchemy as sa

from tutormax_cli import keys
from tutormax_cli.metrics.tiers import FLAGGED_METRICS
from tutormax_cli.metrics.windows import as_utc

if TYPE_CHECKING:
    import redis

Source = Literal["worker", "sweep", "recompute", "rollover", "history"]
"""Who wrote the row that changed the tier; `history` marks a change read back from the daily
rows (older than the stream keeps)."""

SOURCES: tuple[str, ...] = ("worker", "sweep", "recompute", "rollover")
"""The writers that publish on the feed."""

FIELDS = ("tutor_id", "window", "from", "to", "as_of", "source", "metrics")
"""The fields of one stream entry (`metrics` is JSON)."""


@dataclass(frozen=True)
class TierChange:
    """One tutor's tier in one window going from `from_tier` to `to_tier` as of `as_of`."""

    tutor_id: str
    window: str
    from_tier: str
    to_tier: str
    as_of: datetime
    source: str
    metrics: dict[str, Any] = field(default_factory=dict)
    """The flagged metrics of the new row (METRICS.md §4): the values that decided the tier."""
    id: str | None = None
    """The stream entry ID once published (None for changes read from the daily rows)."""

    def fields(self) -> dict[str, str]:
        """The stream entry."""
        return {
            "tutor_id": self.tutor_id,
            "window": self.window,
            "from": self.from_tier,
            "to": self.to_tier,
            "as_of": as_utc(self.as_of).isoformat(),
            "source": self.source,
            "metrics": json.dumps(self.metrics, sort_keys=True),
        }

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view (what `show changes --json` prints)."""
        return {
            "id": self.id,
            "tutor_id": self.tutor_id,
            "window": self.window,
            "from": self.from_tier,
            "to": self.to_tier,
            "as_of": as_utc(self.as_of).isoformat(),
            "source": self.source,
            "metrics": self.metrics,
        }

    @classmethod
    def from_entry(cls, entry_id: bytes | str, raw: dict[bytes, bytes]) -> TierChange:
        """Decode one stream entry; a field another writer left out becomes empty."""
        text = {k.decode(): v.decode("utf-8", "replace") for k, v in raw.items()}
        try:
            metrics = json.loads(text.get("metrics") or "{}")
        except ValueError:
            metrics = {}
        try:
            as_of = as_utc(datetime.fromisoformat(text.get("as_of", "")))
        except ValueError:
            as_of = datetime.fromtimestamp(id_ms(entry_id) / 1000, UTC)
        return cls(
            tutor_id=text.get("tutor_id", ""),
            window=text.get("window", ""),
            from_tier=text.get("from", ""),
            to_tier=text.get("to", ""),
            as_of=as_of,
            source=text.get("source", ""),
            metrics=metrics if isinstance(metrics, dict) else {},
            id=entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id),
        )


def id_ms(entry_id: bytes | str) -> int:
    """The millisecond part of a stream entry ID."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.split("-", 1)[0])


# -- detection, in the writer's transaction -----------------------------------------------------


def _any_tutor(pg: bool) -> str:
    if pg:
        return " AND tutor_id = ANY(:tutors)"
    return " AND tutor_id IN (SELECT value FROM json_each(:tutors))"


def _stored_tiers(conn: sa.Connection, tutors: Sequence[str] | None, since: date) -> pl.DataFrame:
    """(tutor_id, window, metric_date, performance_tier) of the stored rows of `tutors` (None:
    everyone) from `since` on: one statement, on the (tutor_id, metric_date) index."""
    pg = conn.dialect.name == "postgresql"
    sql = (
        'SELECT tutor_id, "window", metric_date, performance_tier '
        "FROM tutor_performance_metrics WHERE metric_date >= :since"
    )
    params: dict[str, Any] = {"since": since if pg else since.isoformat()}
    if tutors is not None:
        sql += _any_tutor(pg)
        params["tutors"] = list(tutors) if pg else json.dumps(list(tutors))
    rows = conn.execute(sa.text(sql), params).all()
    schema = {
        "tutor_id": pl.String,
        "window": pl.String,
        "metric_date": pl.String,
        "old_tier": pl.String,
    }
    frame = pl.DataFrame(
        [(r[0], r[1], str(r[2])[:10], r[3]) for r in rows], schema=schema, orient="row"
    )
    return frame.with_columns(pl.col("metric_date").str.to_date())


def detect(
    conn: sa.Connection,
    metrics: pl.DataFrame,
    source: str,
    tutors: Sequence[str] | None = None,
) -> list[TierChange]:
    """The tier changes writing `metrics` (engine output) would make, read before the upsert
    in the same transaction. `tutors`: the batch's tutors when the caller knows them (None: read
    the stored rows of the last days of everyone, for an unfiltered snapshot)."""
    if metrics.is_empty():
        return []
    newest = metrics.sort("metric_date").unique(["tutor_id", "window"], keep="last")
    first_day = cast(date, newest["metric_date"].min())
    ids = tutors
    if ids is None and newest.height <= 30_000:  # a list bound as one parameter beats a scan
        ids = newest["tutor_id"].unique().to_list()
    stored = _stored_tiers(conn, ids, first_day - timedelta(days=1))
    if stored.is_empty():
        return []
    joined = newest.join(stored, on=["tutor_id", "window"], how="inner", suffix="_old")
    later = joined.filter(pl.col("metric_date_old") > pl.col("metric_date"))
    previous = (
        joined.filter(
            (pl.col("metric_date_old") <= pl.col("metric_date"))
            & (pl.col("metric_date_old") >= pl.col("metric_date") - pl.duration(days=1))
        )
        .sort("metric_date_old")
        .unique(["tutor_id", "window"], keep="last")
        .join(later.select("tutor_id", "window").unique(), on=["tutor_id", "window"], how="anti")
        .filter(pl.col("old_tier") != pl.col("performance_tier"))
        .sort("tutor_id", "window")
    )
    changes = []
    for row in previous.iter_rows(named=True):
        changes.append(
            TierChange(
                tutor_id=row["tutor_id"],
                window=row["window"],
                from_tier=row["old_tier"],
                to_tier=row["performance_tier"],
                as_of=row["calculation_date"],
                source=source,
                metrics={m: row[m] for m in FLAGGED_METRICS},
            )
        )
    return changes


# -- the stream -------------------------------------------------------------------------------


def add_to(pipe: Any, changes: Iterable[TierChange], stream: str = keys.TIER_CHANGES_STREAM) -> int:
    """Queue one XADD per change on a redis-py pipeline (the caller executes it, e.g. with the
    acknowledgements of the entries that caused them). Returns how many were queued."""
    n = 0
    for change in changes:
        pipe.xadd(
            stream,
            change.fields(),
            maxlen=keys.TIER_CHANGES_MAXLEN,
            approximate=True,
        )
        n += 1
    return n


def publish(
    client: redis.Redis, changes: Sequence[TierChange], stream: str = keys.TIER_CHANGES_STREAM
) -> int:
    """Put `changes` on the feed (one round trip). Returns how many were published."""
    if not changes:
        return 0
    pipe = client.pipeline(transaction=False)
    add_to(pipe, changes, stream)
    pipe.execute()
    return len(changes)


def recent(
    client: redis.Redis,
    since_ms: int = 0,
    *,
    limit: int | None = None,
    stream: str = keys.TIER_CHANGES_STREAM,
) -> list[TierChange]:
    """Changes published at or after `since_ms` (epoch milliseconds), newest first."""
    out: list[TierChange] = []
    high = "+"
    page = 1000
    while limit is None or len(out) < limit:
        entries = cast(
            list[tuple[bytes, dict[bytes, bytes]]],
            client.xrevrange(stream, high, f"{since_ms}-0", count=page) or [],
        )
        for entry_id, raw in entries:
            out.append(TierChange.from_entry(entry_id, raw))
        if len(entries) < page:
            break
        last = entries[-1][0].decode()
        ms, seq = (int(p) for p in last.split("-"))
        high = f"{ms}-{seq - 1}" if seq else f"{ms - 1}-18446744073709551615"
    return out if limit is None else out[:limit]


def oldest_ms(client: redis.Redis, stream: str = keys.TIER_CHANGES_STREAM) -> int | None:
    """The time of the oldest entry the stream still keeps (None: the stream is empty)."""
    entries = cast(list[tuple[bytes, Any]], client.xrange(stream, "-", "+", count=1) or [])
    return id_ms(entries[0][0]) if entries else None


def follow(
    client: redis.Redis,
    last_id: str,
    block_ms: int,
    stream: str = keys.TIER_CHANGES_STREAM,
) -> tuple[list[TierChange], str]:
    """Changes published after `last_id` ($: from now on), waiting up to `block_ms`; and the ID
    to continue from."""
    if last_id == "$":
        newest = cast(list[tuple[bytes, Any]], client.xrevrange(stream, "+", "-", count=1) or [])
        last_id = newest[0][0].decode() if newest else "0-0"
    response: Any = client.xread({stream: last_id}, count=500, block=block_ms)
    if not response:
        return [], last_id
    if isinstance(response, dict):
        entries = [e for batch in response.values() for e in batch[0]]
    else:
        entries = list(response[0][1])
    changes = [TierChange.from_entry(i, f) for i, f in entries]
    return changes, changes[-1].id or last_id


# -- history from the daily rows ----------------------------------------------------------------


def from_daily_rows(
    conn: sa.Connection,
    since: datetime,
    until: datetime | None = None,
    *,
    window: str | None = None,
    to_tier: Sequence[str] | None = None,
) -> list[TierChange]:
    """Changes between consecutive stored days of a tutor in a window whose newer row was
    computed in [since, until): history the stream no longer keeps. Newest first."""
    pg = conn.dialect.name == "postgresql"
    start = as_utc(since)
    day = (start - timedelta(days=1)).date()
    cols = ", ".join(f'"{m}"' for m in FLAGGED_METRICS)
    where = "metric_date >= :day"
    params: dict[str, Any] = {"day": day if pg else day.isoformat()}
    if window is not None:
        where += ' AND "window" = :window'
        params["window"] = window
    sql = (
        f'SELECT tutor_id, "window", metric_date, calculation_date, performance_tier, {cols} '
        f"FROM tutor_performance_metrics WHERE {where}"
    )
    rows = conn.execute(sa.text(sql), params).all()
    changes = []
    last: dict[tuple[str, str], tuple[date, str]] = {}
    for row in sorted(rows, key=lambda r: (r[0], r[1], str(r[2]))):
        key = (row[0], row[1])
        metric_day = date.fromisoformat(str(row[2])[:10])
        tier = row[4]
        before = last.get(key)
        last[key] = (metric_day, tier)
        if before is None or before[1] == tier or (metric_day - before[0]).days > 1:
            continue
        as_of = _instant(row[3])
        if as_of < start or (until is not None and as_of >= as_utc(until)):
            continue
        if to_tier and tier not in to_tier:
            continue
        changes.append(
            TierChange(
                tutor_id=row[0],
                window=row[1],
                from_tier=before[1],
                to_tier=tier,
                as_of=as_of,
                source="history",
                metrics=dict(zip(FLAGGED_METRICS, row[5:], strict=True)),
            )
        )
    changes.sort(key=lambda c: (c.as_of, c.tutor_id, c.window), reverse=True)
    return changes


def _instant(value: Any) -> datetime:
    if isinstance(value, datetime):
        return as_utc(value)
    text = str(value).replace(" ", "T")
    return as_utc(datetime.fromisoformat(text.replace("Z", "+00:00")))
