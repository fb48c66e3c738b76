"""Batch recomputation: pick the tutors, then per chunk of tutors load, compute, write.

One code path serves `tutormax recompute --as-of`, `--since/--until` (end-of-day backfills),
`--changed-since` (catch-up) and the worker's flush (`recompute_as_of`). Each phase is timed so
an operator sees where the seconds went.

Why it is shaped this way:
- **One source of partials, chosen once per run** (`store/sources.py`): raw rows aggregated by
  polars (SQLite), partials aggregated where the rows live (PostgreSQL), or differences of the
  cumulative partials table when it is enabled. This module plans, chunks, asks the source,
  finalizes and saves; it never looks at the dialect. Every source ends in the engine's
  `finalize`, so a metric has one definition.
- **Bounded memory.** The tutor set is chosen first (one query) and processed in chunks of
  `chunk_size` tutors (by default the source's own); a backfill also goes through its days in
  blocks. Nothing held across chunks grows with history except the summary counts.
- **Idempotent, chunk by chunk.** Each chunk is upserted and committed on its own: a run that
  dies half-way is finished by simply running it again.
- **Shards.** `Shard(K, N)` keeps the tutors whose stable hash is K mod N, so N machines split a
  run with nothing but the database between them.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Literal

import polars as pl
import sqlalchemy as sa

from tutormax_cli.errors import UsageError
from tutormax_cli.metrics import frames
from tutormax_cli.metrics.engine import finalize_snapshot
from tutormax_cli.metrics.rolling import LOOKBACK_DAYS, end_of_day_rows, input_range
from tutormax_cli.metrics.tiers import DEFAULT_TIERS, TierRules
from tutormax_cli.metrics.windows import LONGEST_DAYS, as_utc, end_of_day, metric_date_of
from tutormax_cli.passes import Pass, PassRunner, save_detecting
from tutormax_cli.store.load import load_changed_tutor_ids, load_tutor_ids
from tutormax_cli.store.lock import run_lock
from tutormax_cli.store.sources import PartialsSource, choose_source
from tutormax_cli.store.state import database_now, get_instant, set_instant
from tutormax_cli.stream.tier_changes import TierChange

Progress = Callable[[str], None]
"""Called with a phase name (`load`, `compute`, `write`) as each phase starts."""

ChunkProgress = Callable[[str, int, int], None]
"""Called as `(phase, done, total)` when a phase of a chunk has finished."""

OnChanges = Callable[[list[TierChange]], None]
"""Called with the tier changes of each chunk once it is committed (to publish them)."""

GRID_BUDGET = 200_000
"""Tutor-days one pass of a backfill may hold, the 89 days of inputs before its first snapshot
day included. A backfill goes through its tutors in chunks and its days in blocks sized to
this, so its memory depends neither on the history in the database nor on the number of days
asked for (250–300 MB peak RSS on PostgreSQL, see the README's Performance section)."""

MAX_BLOCK_DAYS = 92
"""Longest block of snapshot days per pass; each block re-reads the 89 days before it."""

AUTO_OVERLAP = timedelta(minutes=5)
"""`--changed-since auto` looks this far behind the stored mark. A row is stamped when its
writer's transaction starts but becomes visible when it commits; rows of transactions shorter
than this that straddled the previous run are still caught. Recomputing a tutor twice is
harmless."""

MARK_KEY = "recompute.changed_since.mark"

Mode = Literal["as-of", "daily", "changed"]


# -- shards -----------------------------------------------------------------------------------


def shard_of(tutor_id: str, count: int) -> int:
    """The shard of a tutor among `count`: the first 56 bits of MD5(UTF-8 id) mod `count`.

    Stable across machines and Python runs (unlike `hash()`), and computable in PostgreSQL:
    `('x' || substr(md5(tutor_id), 1, 14))::bit(56)::bigint % N`.
    """
    digest = hashlib.md5(tutor_id.encode("utf-8"), usedforsecurity=False).hexdigest()
    return int(digest[:14], 16) % count


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count`: the tutors with `shard_of(tutor_id, count) == index`."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """`K/N` as an operator types it; a `UsageError` names the fix otherwise."""
        try:
            k, n = (int(part) for part in text.strip().split("/"))
        except ValueError:
            raise UsageError(f"--shard: {text!r} is not K/N (e.g. 0/4)") from None
        if n < 1 or not 0 <= k < n:
            raise UsageError(f"--shard: {text!r} needs N ≥ 1 and 0 ≤ K < N (e.g. 0/4)")
        return cls(k, n)

    def __contains__(self, tutor_id: object) -> bool:
        return isinstance(tutor_id, str) and shard_of(tutor_id, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


# -- request and result -----------------------------------------------------------------------

EARLIEST_AS_OF = datetime(2, 1, 1, tzinfo=UTC)
LATEST_AS_OF = datetime(9999, 1, 1, tzinfo=UTC)
"""The instants (and days) a recompute accepts: from the start of year 2 to before year 9999.
A run reads the 90 days before its instant, the day after it and a day or two of slack around
both, and none of that arithmetic may leave the years 1-9999 that Python's datetime holds (it
failed as an unexpected OverflowError); a round year either side of the lookback says plainly
where the line is."""


@dataclass(frozen=True)
class RecomputeRequest:
    """What to recompute. Exactly one of: `as_of` (default now), `since` (+ `until`) for daily
    end-of-day snapshots, or `changed_since`/`changed_auto` for a catch-up as of now."""

    as_of: datetime | None = None
    since: date | None = None
    until: date | None = None
    changed_since: datetime | None = None
    changed_auto: bool = False
    tutors: tuple[str, ...] | None = None
    shard: Shard | None = None
    chunk_size: int | None = None
    tiers: TierRules = DEFAULT_TIERS
    write: bool = True
    output: Path | None = None
    wait: bool = False
    raw: bool = False
    """Aggregate the raw rows even when cumulative partials are enabled (a cross-check)."""

    @property
    def mode(self) -> Mode:
        """`daily`, `changed` or `as-of`."""
        if self.since is not None:
            return "daily"
        if self.changed_since is not None or self.changed_auto:
            return "changed"
        return "as-of"

    def validate(self) -> None:
        """Raise a one-line `UsageError` for combinations that cannot be acted on."""
        changed = self.changed_since is not None or self.changed_auto
        if self.changed_since is not None and self.changed_auto:
            raise UsageError("--changed-since takes an ISO-8601 time or 'auto', not both")
        if changed and (self.as_of is not None or self.since is not None):
            raise UsageError(
                "--changed-since cannot be combined with --as-of or --since: "
                "it recomputes changed tutors as of now"
            )
        if changed and self.tutors is not None:
            raise UsageError("--changed-since cannot be combined with --tutor")
        if self.as_of is not None and self.since is not None:
            raise UsageError(
                "--as-of cannot be combined with --since: --since computes end-of-day snapshots"
            )
        if self.until is not None and self.since is None:
            raise UsageError("--until needs --since")
        if self.since is not None and self.until is not None and self.since > self.until:
            raise UsageError(f"--since {self.since} is after --until {self.until}")
        self._check_range()
        if self.chunk_size is not None and self.chunk_size < 1:
            raise UsageError("--chunk-size must be at least 1")
        if self.output is not None and self.output.suffix.lower() not in (".parquet", ".csv"):
            raise UsageError(f"--output {self.output}: the file must end in .parquet or .csv")
        if self.output is not None and self.output.is_dir():
            raise UsageError(f"--output {self.output} is a directory")
        if self.output is not None and not self.output.absolute().parent.is_dir():
            raise UsageError(
                f"--output {self.output}: directory {self.output.parent} does not exist"
            )

    def _check_range(self) -> None:
        """`--as-of`, `--changed-since`, `--since` and `--until` within `EARLIEST_AS_OF`…
        `LATEST_AS_OF` (dates written with `isoformat`: `%Y` drops a small year's zeros)."""
        first, last = EARLIEST_AS_OF.date().isoformat(), LATEST_AS_OF.date().isoformat()
        bounds = f"use a time from {first} to before {last}"
        for option, moment in (("--as-of", self.as_of), ("--changed-since", self.changed_since)):
            if moment is not None and not EARLIEST_AS_OF <= as_utc(moment) < LATEST_AS_OF:
                stamp = as_utc(moment).isoformat().replace("+00:00", "Z")
                raise UsageError(
                    f"{option} {stamp} is out of range (recompute reads the {LONGEST_DAYS} "
                    f"days before it): {bounds}"
                )
        for option, day in (("--since", self.since), ("--until", self.until)):
            if day is not None and not EARLIEST_AS_OF.date() <= day < LATEST_AS_OF.date():
                raise UsageError(
                    f"{option} {day} is out of range (recompute reads the {LONGEST_DAYS} days "
                    f"before it): {bounds}"
                )

    @property
    def lock_name(self) -> str:
        """One lock per scope: shards of one backfill run side by side, a shard never twice."""
        return (
            "recompute"
            if self.shard is None
            else f"recompute-shard-{self.shard.index}of{self.shard.count}"
        )

    @property
    def mark_key(self) -> str:
        """Where the `--changed-since auto` mark of this scope is kept (per shard)."""
        if self.shard is None:
            return MARK_KEY
        return f"{MARK_KEY}.shard-{self.shard.index}of{self.shard.count}"


@dataclass
class RecomputeResult:
    """What a recomputation did, for the summary line, `--json` and tests."""

    as_of: datetime
    metric_date: str
    tutors: int = 0
    rows: int = 0
    rows_read: int = 0
    written: bool = False
    seconds: dict[str, float] = field(default_factory=dict)
    tiers: dict[str, dict[str, int]] = field(default_factory=dict)
    """Tutors per tier of each window on `metric_date` (a daily run: its last day)."""
    tiers_by_day: dict[str, dict[str, dict[str, int]]] | None = None
    """A daily run's tutors per tier, {day: {window: {tier: tutors}}}: summing the days would
    count tutor-days, not tutors. None for a single snapshot."""
    mode: Mode = "as-of"
    first_day: str | None = None
    days: int = 1
    chunks: int = 0
    shard: str | None = None
    changed_since: str | None = None
    mark: str | None = None
    output: str | None = None
    rows_changed: int = 0
    """Rows the database inserted or changed (a rerun over unchanged data: 0)."""
    changes: list[TierChange] = field(default_factory=list)
    """Tier changes of the written rows (`stream.tier_changes`); kept only by `recompute_as_of`
    (a batch run hands them chunk by chunk to its `on_changes`)."""
    tier_changes: int = 0

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready view."""
        return {
            "mode": self.mode,
            "as_of": self.as_of.isoformat(),
            "metric_date": self.metric_date,
            "first_day": self.first_day,
            "days": self.days,
            "tutors": self.tutors,
            "rows": self.rows,
            "rows_read": self.rows_read,
            "rows_changed": self.rows_changed,
            "tier_changes": self.tier_changes,
            "written": self.written,
            "output": self.output,
            "chunks": self.chunks,
            "shard": self.shard,
            "changed_since": self.changed_since,
            "mark": self.mark,
            "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
            "tiers": self.tiers,
            "tiers_by_day": self.tiers_by_day,
        }


_TIMING = threading.Lock()


@contextmanager
def timed(seconds: dict[str, float], phase: str, progress: Progress | None) -> Iterator[None]:
    """Time one phase into `seconds[phase]` and announce it to `progress`."""
    if progress is not None:
        progress(phase)
    start = time.perf_counter()
    try:
        yield
    finally:
        with _TIMING:  # parallel passes add to the same totals
            seconds[phase] = seconds.get(phase, 0.0) + time.perf_counter() - start


def tier_counts(metrics: pl.DataFrame) -> dict[str, dict[str, int]]:
    """Tier distribution per window: {window: {tier: rows}}."""
    counts: dict[str, dict[str, int]] = {}
    grouped = metrics.group_by("window", "performance_tier").len()
    for window, tier, n in grouped.sort("window", "performance_tier").iter_rows():
        counts.setdefault(window, {})[tier] = n
    return counts


def tier_counts_by_day(metrics: pl.DataFrame) -> dict[str, dict[str, dict[str, int]]]:
    """Tier distribution per day and window of end-of-day rows: {day: {window: {tier: rows}}},
    one row per tutor, day and window, so each count is of tutors."""
    counts: dict[str, dict[str, dict[str, int]]] = {}
    grouped = metrics.group_by("metric_date", "window", "performance_tier").len()
    for day, window, tier, n in grouped.sort("metric_date", "window", "performance_tier").rows():
        counts.setdefault(str(day), {}).setdefault(window, {})[tier] = n
    return counts


def _count_tiers(result: RecomputeResult, metrics: pl.DataFrame, *, daily: bool) -> None:
    """Add one chunk's tiers to the run's: a daily chunk (tutors × a block of days) day by day."""
    if not daily:
        _add_counts(result.tiers, tier_counts(metrics))
        return
    by_day = result.tiers_by_day = result.tiers_by_day or {}
    for day, windows in tier_counts_by_day(metrics).items():
        _add_counts(by_day.setdefault(day, {}), windows)


def _add_counts(total: dict[str, dict[str, int]], more: dict[str, dict[str, int]]) -> None:
    for window, tiers in more.items():
        into = total.setdefault(window, {})
        for tier, n in tiers.items():
            into[tier] = into.get(tier, 0) + n


# -- the kernels of one chunk -----------------------------------------------------------------

Finished = Callable[[str], None]
"""Called with a phase name when that phase of a chunk is done (drives progress bars)."""


def _snapshot(
    conn: sa.Connection,
    source: PartialsSource,
    t: datetime,
    tutors: Sequence[str] | None,
    tiers: TierRules,
    seconds: dict[str, float],
    progress: Progress | None = None,
    finished: Finished | None = None,
) -> pl.DataFrame:
    """The rows as of `t` of `tutors` (None: every tutor with rows)."""
    with timed(seconds, "load", progress):
        parts = source.window_partials(conn, t, tutors)
    if finished is not None:
        finished("load")
    with timed(seconds, "compute", progress):
        metrics = finalize_snapshot(parts, t, tiers)
    if finished is not None:
        finished("compute")
    return metrics


def _daily(
    conn: sa.Connection,
    source: PartialsSource,
    first: date,
    last: date,
    tutors: Sequence[str] | None,
    tiers: TierRules,
    seconds: dict[str, float],
    finished: Finished | None = None,
) -> pl.DataFrame:
    """End-of-day rows of `first` … `last` for `tutors`."""
    with timed(seconds, "load", None):
        windowed = source.end_of_day_partials(conn, first, last, tutors)
    if finished is not None:
        finished("load")
    with timed(seconds, "compute", None):
        metrics = end_of_day_rows(windowed, tiers)
    if finished is not None:
        finished("compute")
    return metrics


def recompute_as_of(
    engine: sa.Engine,
    as_of: datetime,
    *,
    tutors: Sequence[str] | None = None,
    tiers: TierRules = DEFAULT_TIERS,
    write: bool = True,
    progress: Progress | None = None,
    source: str = "worker",
    before_commit: Callable[[sa.Connection], None] | None = None,
) -> tuple[RecomputeResult, pl.DataFrame]:
    """Compute (and unless `write` is false, upsert) the snapshot at `as_of` in one pass: the
    worker's flush, for a handful of tutors. Batch runs go through `run`, which chunks.
    `result.changes` holds the tier changes written (`source` names the writer);
    `before_commit` adds the caller's own bookkeeping to the same transaction."""
    t = as_utc(as_of)
    result = RecomputeResult(as_of=t, metric_date=metric_date_of(t).isoformat(), chunks=1)
    with engine.connect() as conn:
        partials = choose_source(conn)
        metrics = _snapshot(conn, partials, t, tutors, tiers, result.seconds, progress)
        result.rows_read = partials.rows_read
        if write:
            with timed(result.seconds, "write", progress):
                written = save_detecting(conn, metrics, tutors, source)
                result.changes = written.changes
                result.rows_changed += written.rows_changed
                result.tier_changes += len(written.changes)
                if before_commit is not None:
                    before_commit(conn)
                conn.commit()
            result.written = True
    result.rows = metrics.height
    result.tutors = metrics["tutor_id"].n_unique()
    result.tiers = tier_counts(metrics)
    return result, metrics


# -- export -------------------------------------------------------------------------------------


class _Export:
    """Rows appended chunk by chunk to a CSV or Parquet file, never all held in memory; the
    file appears (atomically renamed) only when the run succeeds."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows = 0
        self._dir = Path(tempfile.mkdtemp(prefix=".tutormax-export-", dir=path.parent or "."))
        self._parts: list[Path] = []

    def add(self, metrics: pl.DataFrame) -> None:
        part = self._dir / f"part-{len(self._parts):06d}.parquet"
        metrics.write_parquet(part)
        self._parts.append(part)
        self.rows += metrics.height

    def finish(self) -> None:
        tmp = self._dir / f"out{self.path.suffix.lower()}"
        frame = pl.scan_parquet(self._parts) if self._parts else frames.empty(frames.METRICS).lazy()
        if self.path.suffix.lower() == ".csv":
            frame.sink_csv(tmp, datetime_format="%Y-%m-%dT%H:%M:%S%.6f+00:00")
        else:
            frame.sink_parquet(tmp)
        tmp.replace(self.path)
        self.close()

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)


# -- a batch run ---------------------------------------------------------------------------------


def _chunks(tutors: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(tutors), size):
        yield tutors[i : i + size]


def backfill_split(tutors: int, days: int, chunk_size: int | None) -> tuple[int, int]:
    """(tutors per chunk, days per block) for a backfill: blocks as long as the days asked
    for (at most `MAX_BLOCK_DAYS`) and chunks to fit `GRID_BUDGET`, or with an explicit
    `chunk_size`, blocks shortened (to no less than 14 days) to fit it."""
    if chunk_size is None:
        block = min(days, MAX_BLOCK_DAYS)
        return max(1, GRID_BUDGET // (block + LOOKBACK_DAYS)), block
    fit = GRID_BUDGET // min(chunk_size, max(1, tutors)) - LOOKBACK_DAYS
    return chunk_size, max(14, min(days, MAX_BLOCK_DAYS, fit))


def _blocks(first: date, last: date, size: int) -> Iterator[tuple[date, date]]:
    start = first
    while start <= last:
        end = min(last, start + timedelta(days=size - 1))
        yield start, end
        start = end + timedelta(days=1)


Unit = tuple[list[str] | None, tuple[date, date] | None]
"""One pass: a chunk of tutors (None: all of them) and a block of days (None: a snapshot)."""


@dataclass
class _Plan:
    """The resolved run: its result shell, the tutors, the days, and the catch-up mark."""

    result: RecomputeResult
    tutors: list[str]
    unfiltered: bool
    days: tuple[date, date] | None = None
    mark: datetime | None = None

    def units(self, chunk_size: int | None, default_size: int) -> list[Unit]:
        """The passes of this run, chunk by chunk (and block by block for a backfill)."""
        if not self.tutors:
            return []
        blocks: list[tuple[date, date] | None] = [None]
        size = chunk_size or default_size
        if self.days is not None:
            first, last = self.days
            size, block = backfill_split(len(self.tutors), (last - first).days + 1, chunk_size)
            blocks = list(_blocks(first, last, block))
        # One chunk of everyone needs no tutor list in the SQL: the plain scan is faster.
        if self.unfiltered and len(self.tutors) <= size:
            return [(None, block) for block in blocks]
        chunks = -(-len(self.tutors) // size)
        even = -(-len(self.tutors) // chunks)  # balanced: no runt chunk at the end
        return [(chunk, block) for chunk in _chunks(self.tutors, even) for block in blocks]


def _changed_since(conn: sa.Connection, req: RecomputeRequest) -> datetime | None:
    """The explicit `--changed-since`, or for `auto` the stored mark minus the overlap; None
    when `auto` has no mark yet (the first run recomputes everyone)."""
    if not req.changed_auto:
        return req.changed_since
    stored = get_instant(conn, req.mark_key)
    return None if stored is None else stored - AUTO_OVERLAP


def _plan(
    conn: sa.Connection, source: PartialsSource, req: RecomputeRequest, now: datetime
) -> _Plan:
    """Resolve the request against the database: the as-of instant or days, and the tutors."""
    days: tuple[date, date] | None = None
    mark = since = None
    if req.since is not None:
        last = req.until if req.until is not None else (now - timedelta(days=1)).date()
        if req.since > last:
            raise UsageError(f"--since {req.since} is after --until {last} (default: yesterday)")
        days = (req.since, last)
        t = end_of_day(last)
        lo, _ = input_range(req.since, last)
        tutors = load_tutor_ids(conn, end_of_day(lo) - timedelta(days=1), t)
    else:
        t = as_utc(req.as_of) if req.as_of is not None else now
        if req.mode == "changed":
            mark = database_now(conn)  # read first: later changes belong to the next run
            since = _changed_since(conn, req)
        if since is not None:
            tutors = load_changed_tutor_ids(conn, since)
        else:
            tutors = source.snapshot_tutors(conn, t)
    unfiltered = req.shard is None and req.tutors is None and since is None
    if req.tutors is not None:
        wanted = set(req.tutors)
        tutors = [x for x in tutors if x in wanted]
    if req.shard is not None:
        tutors = [x for x in tutors if x in req.shard]
    result = RecomputeResult(
        as_of=t,
        metric_date=metric_date_of(t).isoformat(),
        mode=req.mode,
        first_day=None if days is None else days[0].isoformat(),
        days=1 if days is None else (days[1] - days[0]).days + 1,
        shard=None if req.shard is None else str(req.shard),
        changed_since=None if since is None else since.isoformat(),
        output=None if req.output is None else str(req.output),
    )
    return _Plan(result, tutors, unfiltered, days, mark)


def run(
    engine: sa.Engine,
    req: RecomputeRequest,
    *,
    progress: ChunkProgress | None = None,
    on_wait: Callable[[], None] | None = None,
    now: datetime | None = None,
    on_changes: OnChanges | None = None,
) -> RecomputeResult:
    """A batch recomputation under the run lock: plan, then per chunk load, compute, write
    (commit) and/or export; each chunk's tier changes go to `on_changes` after its commit.
    Raises `LockHeld` when another run of the same scope is going."""
    req.validate()
    with run_lock(engine, req.lock_name, wait=req.wait, on_wait=on_wait):
        now = as_utc(now) if now else datetime.now(UTC)
        return _run_locked(engine, req, now, progress, on_changes)


def _unit(
    conn: sa.Connection,
    source: PartialsSource,
    result: RecomputeResult,
    tiers: TierRules,
    unit: Unit,
    finished: Finished,
) -> pl.DataFrame:
    """One pass's rows: a chunk's snapshot, or its end-of-day rows over a block of days."""
    chunk, block = unit
    if block is None:
        return _snapshot(
            conn, source, result.as_of, chunk, tiers, result.seconds, finished=finished
        )
    return _daily(conn, source, *block, chunk, tiers, result.seconds, finished=finished)


def _run_locked(
    engine: sa.Engine,
    req: RecomputeRequest,
    now: datetime,
    progress: ChunkProgress | None,
    on_changes: OnChanges | None = None,
) -> RecomputeResult:
    export = _Export(req.output) if req.output is not None else None
    try:
        with engine.connect() as conn:
            started = time.perf_counter()
            source = choose_source(conn, raw=req.raw)
            plan = _plan(conn, source, req, now)
            conn.commit()
            result = plan.result
            result.seconds["plan"] = time.perf_counter() - started
            units = plan.units(req.chunk_size, source.chunk_size)
            result.chunks = len({id(chunk) for chunk, _ in units})  # blocks share their chunk
            done: dict[str, int] = {}
            counting = threading.Lock()  # passes finish phases on threads of their own

            def finished(phase: str) -> None:
                with counting:
                    done[phase] = done.get(phase, 0) + 1
                    if progress is not None:
                        progress(phase, done[phase], len(units))

            tutors: set[str] = set()

            def settled(outcome: Pass) -> None:
                metrics, written = outcome.metrics, outcome.written
                result.seconds["write"] = result.seconds.get("write", 0.0) + outcome.write_seconds
                result.rows_changed += written.rows_changed
                result.tier_changes += len(written.changes)
                if on_changes is not None and written.changes:
                    on_changes(written.changes)
                if export is not None:
                    with timed(result.seconds, "write", None):
                        export.add(metrics)
                finished("write")
                result.rows += metrics.height
                tutors.update(metrics["tutor_id"].unique().to_list())
                _count_tiers(result, metrics, daily=plan.days is not None)

            at_once = len(units) > 1
            # Light reads are pipelined with the writes, which are what binds the machine's
            # cores; with nothing to write (a dry run, an export) they run at once instead:
            # pipelined, a 7-day dry run at 50,000 tutors left one core idle (12-14 s -> 8 s).
            runner = PassRunner(
                engine, conn, "recompute", settled,
                write=req.write, parallel=at_once,
                reads_at_once=source.heavy_reads or not req.write,
            )  # fmt: skip
            with runner:
                for unit in units:
                    runner.submit(partial(_unit, source=source, result=result, tiers=req.tiers,
                                          unit=unit, finished=finished), unit[0])  # fmt: skip
                runner.finish()
            result.tutors = len(tutors)
            if result.tiers_by_day is not None:
                result.tiers = result.tiers_by_day.get(result.metric_date, {})
            result.rows_read = source.rows_read
            if export is not None:
                with timed(result.seconds, "write", None):
                    export.finish()
            result.written = req.write
            if plan.mark is not None and req.write:
                set_instant(conn, req.mark_key, plan.mark)
                conn.commit()
                result.mark = plan.mark.isoformat()
            return result
    finally:
        if export is not None:
            export.close()
