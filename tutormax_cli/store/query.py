"""Reads of computed metrics for the views: latest rows, leaderboards, daily history.

These are small, indexed reads; they go through SQLAlchemy and come back as polars frames
with UTC timestamps whatever the backend stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl
import sqlalchemy as sa

from tutormax_cli.metrics import frames
from tutormax_cli.store.load import parse_utc

_SCHEMA = pl.Schema({**frames.METRICS, "updated_at": frames.TS})


def _frame(rows: Sequence[Any]) -> pl.DataFrame:
    raw = {
        name: (pl.String if dtype in (frames.TS, pl.Date) else dtype)
        for name, dtype in _SCHEMA.items()
    }
    df = pl.DataFrame([tuple(r) for r in rows], schema=raw, orient="row")
    return df.with_columns(
        *[parse_utc(pl.col(c)).alias(c) for c, t in _SCHEMA.items() if t == frames.TS],
        pl.col("metric_date").str.slice(0, 10).str.to_date("%Y-%m-%d"),
    )


def _columns(conn: sa.Connection) -> str:
    """The select list; PostgreSQL renders timestamps and dates as UTC ISO text so one parser
    serves both backends."""
    pg = conn.dialect.name == "postgresql"
    out = []
    for name, dtype in _SCHEMA.items():
        if pg and dtype == frames.TS:
            out.append(f"to_char({name} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') AS {name}")
        elif pg and dtype == pl.Date:
            out.append(f"{name}::text AS {name}")
        else:
            out.append(f'"{name}"')
    return ", ".join(out)


def latest_for_tutor(conn: sa.Connection, tutor_id: str) -> pl.DataFrame:
    """The newest row of each window for one tutor (empty when the tutor has none)."""
    sql = (
        f"SELECT {_columns(conn)} FROM tutor_performance_metrics WHERE tutor_id = :t "
        "AND metric_date = (SELECT max(metric_date) FROM tutor_performance_metrics "
        "WHERE tutor_id = :t)"
    )
    return _frame(conn.execute(sa.text(sql), {"t": tutor_id}).fetchall())


def latest_rows(conn: sa.Connection, window: str | None = None) -> pl.DataFrame:
    """Every tutor's newest row per window (each tutor's latest `metric_date`)."""
    where = ' WHERE m."window" = :w' if window else ""
    sql = (
        f"SELECT {_columns(conn)} FROM tutor_performance_metrics m JOIN ("
        "SELECT tutor_id AS lt, max(metric_date) AS ld FROM tutor_performance_metrics "
        "GROUP BY tutor_id) l ON m.tutor_id = l.lt AND m.metric_date = l.ld" + where
    )
    params = {"w": window} if window else {}
    return _frame(conn.execute(sa.text(sql), params).fetchall())


def history_for_tutor(conn: sa.Connection, tutor_id: str, days: int = 30) -> pl.DataFrame:
    """One tutor's daily rows of the last `days` metric dates, oldest first."""
    sql = (
        f"SELECT {_columns(conn)} FROM tutor_performance_metrics WHERE tutor_id = :t "
        "ORDER BY metric_date DESC"
    )
    rows = conn.execute(sa.text(sql + " LIMIT :n"), {"t": tutor_id, "n": days * 3}).fetchall()
    return _frame(rows).sort("metric_date")
