"""Where a run's partials come from: one interface, three sources, chosen once per run.

A recomputation needs, for a set of tutors, either per (tutor, window) partials as of an instant
(a snapshot) or per (tutor, window, day) partials of the end-of-day snapshots of a range of
days (a backfill, finalized by `metrics.rolling.end_of_day_rows`). Three sources deliver the
same frames:

- `RawRows`: sessions, feedback and events loaded as rows and aggregated by polars with the
  engine's expressions (SQLite; on any database, the reference path);
- `SqlPartials`: PostgreSQL aggregates the same partials where the rows live (`store/load.py`);
- `CumulativePartials`: differences of the running totals `db partials enable` keeps
  (`store/cumulative.py`), plus the raw rows of partial days at the windows' edges; a
  backfill of up to `PROBE_DAYS` days looks each window of each day up as the difference of
  two cumulative rows, a longer one rolls differences of consecutive rows.

`recompute` only plans, chunks, asks its source and finalizes; whatever the source, the partials
feed the same `finalize`, so a metric has one definition. Each source counts the rows it
fetched from the database (`rows_read`): raw rows, partial rows or cumulative rows.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Protocol

import polars as pl
import sqlalchemy as sa

from tutormax_cli.metrics.engine import window_partials
from tutormax_cli.metrics.rolling import daily_partials, input_range, window_sums
from tutormax_cli.metrics.windows import LONGEST_DAYS, as_utc
from tutormax_cli.store import cumulative
from tutormax_cli.store.db import is_postgres
from tutormax_cli.store.load import (
    Partials,
    load_daily_partials,
    load_metric_inputs,
    load_tutor_ids,
    load_window_partials,
    utc_midnight,
)


class PartialsSource(Protocol):
    """What a recomputation asks of the database, whatever computes the partials."""

    name: str
    chunk_size: int
    """Default tutors per chunk of a snapshot (backfills size theirs from a memory budget)."""
    rows_read: int
    """Rows fetched from the database so far by this source."""
    heavy_reads: bool
    """Whether a pass's read is an aggregation of raw rows in the database (seconds of one
    core): a run then reads two passes at once; light reads are pipelined with the writes
    (or, when the run writes nothing, read two at once as well)."""

    def snapshot_tutors(self, conn: sa.Connection, t: datetime) -> list[str]:
        """The tutors a snapshot as of `t` has rows for (a session in the longest window)."""
        ...

    def window_partials(
        self, conn: sa.Connection, t: datetime, tutors: Sequence[str] | None
    ) -> pl.DataFrame:
        """`tutor_id`, `window`, the partials as of `t` (None: every tutor with rows)."""
        ...

    def daily_partials(
        self, conn: sa.Connection, first: date, last: date, tutors: Sequence[str] | None
    ) -> pl.DataFrame:
        """`tutor_id`, `day`, the partials of each UTC day `first` … `last` (schema
        `rolling.DAILY`; days without activity may be absent)."""
        ...

    def end_of_day_partials(
        self, conn: sa.Connection, first: date, last: date, tutors: Sequence[str] | None
    ) -> pl.DataFrame:
        """`tutor_id`, `window`, `metric_date`, the partials of each window of the end-of-day
        snapshots of `first` … `last` (schema `rolling.WINDOWED`), for `rolling.end_of_day_rows`.
        """
        ...


class _Counted:
    name = "?"
    chunk_size = 1000
    heavy_reads = True

    def __init__(self) -> None:
        self.rows_read = 0
        self._counting = threading.Lock()  # a run's passes may read on several threads

    def _count(self, rows: int) -> None:
        with self._counting:
            self.rows_read += rows

    def _take(self, partials: Partials) -> pl.DataFrame:
        self._count(partials.rows_read)
        return partials.frame

    def snapshot_tutors(self, conn: sa.Connection, t: datetime) -> list[str]:
        return load_tutor_ids(conn, t - timedelta(days=LONGEST_DAYS), t)

    def daily_partials(
        self, conn: sa.Connection, first: date, last: date, tutors: Sequence[str] | None
    ) -> pl.DataFrame:
        raise NotImplementedError

    def end_of_day_partials(
        self, conn: sa.Connection, first: date, last: date, tutors: Sequence[str] | None
    ) -> pl.DataFrame:
        """Trailing sums of the daily partials of the snapshot days and the 89 days before."""
        return window_sums(
            self.daily_partials(conn, *input_range(first, last), tutors), first, last
        )


class RawRows(_Counted):
    """Raw rows aggregated in polars: SQLite's path, and a reference on PostgreSQL."""

    name = "raw rows"
    chunk_size = 1000
    """A chunk holds its raw rows (~100 sessions and ~250 events per tutor in 90 days)."""

    def window_partials(
        self, conn: sa.Connection, t: datetime, tutors: Sequence[str] | None
    ) -> pl.DataFrame:
        inputs = load_metric_inputs(conn, t - timedelta(days=LONGEST_DAYS), t, tutors)
        self._count(inputs.rows)
        return window_partials(inputs.sessions, inputs.feedback, inputs.events, t, tutors).collect()

    def daily_partials(
        self, conn: sa.Connection, first: date, last: date, tutors: Sequence[str] | None
    ) -> pl.DataFrame:
        start, end = utc_midnight(first), utc_midnight(last) + timedelta(days=1)
        inputs = load_metric_inputs(conn, start, end, tutors)
        self._count(inputs.rows)
        return daily_partials(inputs.sessions, inputs.feedback, inputs.events)


class SqlPartials(_Counted):
    """PostgreSQL aggregates the partials from the raw rows, one statement per table."""

    name = "SQL partials"
    chunk_size = 5000
    """A chunk ships three rows per tutor, and every chunk is one more scan: large chunks."""

    def window_partials(
        self, conn: sa.Connection, t: datetime, tutors: Sequence[str] | None
    ) -> pl.DataFrame:
        return self._take(load_window_partials(conn, t, tutors))

    def daily_partials(
        self, conn: sa.Connection, first: date, last: date, tutors: Sequence[str] | None
    ) -> pl.DataFrame:
        return self._take(load_daily_partials(conn, first, last, tutors))


PROBE_DAYS = 14
"""Longest block of snapshot days read by lookups (four a tutor and day) rather than as daily
differences (the days and the 89 before them, then rolled). 2,000 tutors at 50,000-tutor
scale, lookups against daily rows: 7 days 0.52 s / 0.74 s, 14 days 0.77 s / 0.82 s, 21 days
1.57 s / 0.85 s."""


class CumulativePartials(SqlPartials):
    """Differences of cumulative rows. The snapshot's tutor list comes with everyone's
    partials (one refresh and one round of lookups), which the chunks then share."""

    name = "cumulative partials"
    heavy_reads = False  # index lookups of cumulative rows

    def __init__(self) -> None:
        super().__init__()
        self._everyone: tuple[datetime, pl.DataFrame] | None = None

    def snapshot_tutors(self, conn: sa.Connection, t: datetime) -> list[str]:
        frame = self._take(cumulative.window_partials(conn, t))
        self._everyone = (as_utc(t), frame)
        return frame["tutor_id"].unique().sort().to_list()

    def window_partials(
        self, conn: sa.Connection, t: datetime, tutors: Sequence[str] | None
    ) -> pl.DataFrame:
        if self._everyone is not None and self._everyone[0] == as_utc(t):
            frame = self._everyone[1]
            if tutors is None:
                return frame
            return frame.filter(pl.col("tutor_id").is_in(pl.Series(list(tutors)).implode()))
        return self._take(cumulative.window_partials(conn, t, tutors))

    def daily_partials(
        self, conn: sa.Connection, first: date, last: date, tutors: Sequence[str] | None
    ) -> pl.DataFrame:
        return self._take(cumulative.daily_partials(conn, first, last, tutors))

    def end_of_day_partials(
        self, conn: sa.Connection, first: date, last: date, tutors: Sequence[str] | None
    ) -> pl.DataFrame:
        """Short blocks: each window straight from two cumulative rows per (tutor, day) (28
        lookups a tutor for 7 days); longer ones: the daily differences, rolled."""
        if (last - first).days + 1 > PROBE_DAYS:
            return super().end_of_day_partials(conn, first, last, tutors)
        return self._take(cumulative.end_of_day_partials(conn, first, last, tutors))


def choose_source(conn: sa.Connection, *, raw: bool = False) -> PartialsSource:
    """The fastest source this database offers: cumulative partials when they are enabled
    (PostgreSQL, unless `raw`), else SQL partials on PostgreSQL, else raw rows."""
    if not is_postgres(conn):
        return RawRows()
    if not raw and cumulative.enabled(conn):
        return CumulativePartials()
    return SqlPartials()
