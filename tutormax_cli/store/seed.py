"""Writing whole contract tables from frames: the sample generator's sink, to a database (one
idempotent upsert per table, one transaction) or to CSV files with the contract's columns."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import sqlalchemy as sa

from tutormax_cli.store.save import pg_array_literal, upsert_frame

TABLE_KEYS: dict[str, tuple[str, ...]] = {
    "tutors": ("tutor_id",),
    "students": ("student_id",),
    "sessions": ("session_id",),
    "student_feedback": ("feedback_id",),
    "tutor_events": ("event_id",),
}
"""Primary key of each input table, in the order they are written."""


def save_tables(engine: sa.Engine, tables: dict[str, pl.DataFrame]) -> dict[str, int]:
    """Upsert every given table in one transaction; returns rows sent per table."""
    written = {}
    with engine.begin() as conn:
        for name, key in TABLE_KEYS.items():
            if name in tables:
                written[name] = upsert_frame(conn, name, tables[name], key)
    return written


def write_csv_tables(tables: dict[str, pl.DataFrame], out: Path) -> list[Path]:
    """One `<table>.csv` per table: ISO-8601 UTC timestamps, lists as PostgreSQL array literals,
    so `COPY table FROM 'file' WITH (FORMAT csv, HEADER true)` loads them as they are."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, df in tables.items():
        converted = df.with_columns(
            [
                pg_array_literal(pl.col(c)).alias(c)
                for c, t in df.schema.items()
                if isinstance(t, pl.List)
            ]
            + [
                pl.col(c).dt.strftime("%Y-%m-%dT%H:%M:%S%.6f+00:00").alias(c)
                for c, t in df.schema.items()
                if isinstance(t, pl.Datetime)
            ]
        )
        path = out / f"{name}.csv"
        converted.write_csv(path)
        paths.append(path)
    return paths
