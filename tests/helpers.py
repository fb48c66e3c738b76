"""Shared test helpers: sample data, reading metric rows back, comparing frames."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import polars as pl
import sqlalchemy as sa

from tutormax_cli.metrics import frames
from tutormax_cli.metrics.engine import compute_metrics
from tutormax_cli.sample import SampleSpec, generate
from tutormax_cli.store.load import parse_utc

T = datetime(2026, 3, 3, tzinfo=UTC)


def sample(
    tutors: int = 20, days: int = 120, seed: int = 7, end: datetime = T
) -> dict[str, pl.DataFrame]:
    return generate(SampleSpec(tutors=tutors, days=days, seed=seed, end=end))


def recent_sample(tutors: int = 5) -> dict[str, pl.DataFrame]:
    """Sample data ending now, for tests of processes that compute as of the real clock."""
    return sample(tutors=tutors, end=datetime.now(UTC).replace(microsecond=0))


def expected_metrics(tables: dict[str, pl.DataFrame], as_of: datetime) -> pl.DataFrame:
    """The engine run directly on generated frames, bypassing every database path."""
    sessions = frames.conform(tables["sessions"], frames.SESSIONS)
    feedback = frames.conform(tables["student_feedback"], frames.FEEDBACK)
    events = tables["tutor_events"].with_columns(
        response_time_minutes=pl.when(pl.col("event_type") == "message_response").then(
            pl.col("metadata").str.json_path_match("$.response_time_minutes")
        )
    )
    # json_path_match returns text; only JSON numbers count
    events = events.with_columns(
        pl.col("response_time_minutes").cast(pl.Float64, strict=False)
    ).with_columns(
        response_time_minutes=pl.when(
            pl.col("metadata").str.contains(r'"response_time_minutes"\s*:\s*"')
        )
        .then(None)
        .otherwise(pl.col("response_time_minutes"))
    )
    return compute_metrics(sessions, feedback, frames.conform(events, frames.EVENTS), as_of)


def stored_metrics(engine: sa.Engine) -> pl.DataFrame:
    """Every row of tutor_performance_metrics as a frame of `frames.METRICS`, sorted."""
    cols = list(frames.METRICS.names())
    with engine.connect() as conn:
        pg = conn.dialect.name == "postgresql"
        select = ", ".join(
            f"to_char(calculation_date AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') AS {c}"
            if pg and c == "calculation_date"
            else f"{c}::text AS {c}"
            if pg and c == "metric_date"
            else f'"{c}"'
            for c in cols
        )
        rows = conn.execute(sa.text(f"SELECT {select} FROM tutor_performance_metrics")).all()
    raw = {
        c: (pl.String if c in ("calculation_date", "metric_date") else t)
        for c, t in frames.METRICS.items()
    }
    df = pl.DataFrame([tuple(r) for r in rows], schema=raw, orient="row")
    df = df.with_columns(
        parse_utc(pl.col("calculation_date")).alias("calculation_date"),
        pl.col("metric_date").str.to_date(),
    )
    return sort_metrics(df)


def sort_metrics(df: pl.DataFrame) -> pl.DataFrame:
    return df.sort("tutor_id", "window", "metric_date")


def count_rows(engine: sa.Engine, table: str = "tutor_performance_metrics") -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(f'SELECT count(*) FROM "{table}"')).scalar_one())


@contextmanager
def own_pg_database(pg_database_url: str, name: str, *settings: str) -> Iterator[str]:
    """The URL of a PostgreSQL database `name` of the test's own, created empty on the server of
    `pg_database_url` (after `ALTER DATABASE … SET` each of `settings`) and dropped afterwards:
    for a schema or server setting the session's shared database must not get."""
    admin = sa.create_engine(
        sa.make_url(pg_database_url).set(drivername="postgresql+psycopg2"),
        isolation_level="AUTOCOMMIT",
    )
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        for setting in settings:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" SET {setting}'))
    try:
        yield sa.make_url(pg_database_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
