"""The database paths on SQLite and PostgreSQL: bulk load, engine, upsert, and plain-SQL rows."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import sqlalchemy as sa
from polars.testing import assert_frame_equal

from tests.helpers import T, count_rows, expected_metrics, sample, sort_metrics, stored_metrics
from tutormax_cli.recompute import recompute_as_of
from tutormax_cli.store.db import open_engine
from tutormax_cli.store.load import load_metric_inputs
from tutormax_cli.store.migrate import upgrade
from tutormax_cli.store.seed import save_tables, write_csv_tables


def test_recompute_matches_engine_on_generated_frames(engine: sa.Engine) -> None:
    tables = sample(tutors=25)
    save_tables(engine, tables)
    result, _ = recompute_as_of(engine, T)
    expected = sort_metrics(expected_metrics(tables, T))
    assert result.rows == expected.height > 0
    assert_frame_equal(stored_metrics(engine), expected)


def test_rerun_upserts_same_rows_and_keeps_updated_at(engine: sa.Engine) -> None:
    save_tables(engine, sample(tutors=10))
    recompute_as_of(engine, T)
    with engine.connect() as conn:
        first = conn.execute(
            sa.text("SELECT metric_id, updated_at FROM tutor_performance_metrics ORDER BY 1")
        ).all()
    recompute_as_of(engine, T)
    with engine.connect() as conn:
        second = conn.execute(
            sa.text("SELECT metric_id, updated_at FROM tutor_performance_metrics ORDER BY 1")
        ).all()
    assert first == second  # same keys, and unchanged rows are not rewritten
    recompute_as_of(engine, T - timedelta(hours=5))  # same metric_date, new calculation
    assert count_rows(engine) == len(first)
    assert stored_metrics(engine)["calculation_date"].unique().to_list() == [T - timedelta(hours=5)]


def test_sample_upsert_is_idempotent(engine: sa.Engine) -> None:
    tables = sample(tutors=5)
    save_tables(engine, tables)
    save_tables(engine, tables)
    assert count_rows(engine, "sessions") == tables["sessions"].height


def test_tutor_filter_and_metric_date(engine: sa.Engine) -> None:
    save_tables(engine, sample(tutors=6))
    at = T - timedelta(hours=9, minutes=55)  # 14:05 on 2026-03-02
    result, metrics = recompute_as_of(engine, at, tutors=["T0002", "T0004", "nobody"])
    assert sorted(metrics["tutor_id"].unique()) == ["T0002", "T0004"]
    assert result.metric_date == "2026-03-02"
    assert set(stored_metrics(engine)["tutor_id"]) == {"T0002", "T0004"}


def test_dry_run_writes_nothing(engine: sa.Engine) -> None:
    save_tables(engine, sample(tutors=3))
    result, metrics = recompute_as_of(engine, T, write=False)
    assert metrics.height == 9 and not result.written
    assert count_rows(engine) == 0


def test_sqlite_and_postgres_give_identical_rows(sqlite_url: str, pg_engine: sa.Engine) -> None:
    tables = sample(tutors=60, days=120, seed=7)
    sqlite = open_engine(sqlite_url)
    upgrade(sqlite)
    from tests.conftest import _empty_tables

    _empty_tables(pg_engine)
    for eng in (sqlite, pg_engine):
        save_tables(eng, tables)
        recompute_as_of(eng, T)
    assert_frame_equal(stored_metrics(sqlite), stored_metrics(pg_engine))


def test_sqlite_reads_iso_text_written_by_other_programs(sqlite_url: str) -> None:
    """Plain-SQL rows with `T`, offsets and no fraction are read as the same UTC instants."""
    eng = open_engine(sqlite_url)
    upgrade(eng)
    with eng.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO sessions (session_id, tutor_id, student_id, session_number, "
                "scheduled_start, actual_start, duration_minutes, subject, session_type, "
                "tutor_initiated_reschedule, no_show, late_start_minutes, engagement_score, "
                "learning_objectives_met, technical_issues) VALUES "
                "('a', 'T1', 'S1', 1, '2026-03-02T10:00:00+05:30', '2026-03-02T04:31:00Z', 60, "
                "'Math', '1-on-1', 0, 0, 1, 0.5, 1, 0), "
                "('b', 'T1', 'S1', 2, '2026-02-23 23:59:59.999999', NULL, 60, "
                "'Math', '1-on-1', 0, 1, 0, NULL, NULL, 0), "
                "('c', 'T1', 'S1', 3, '2026-02-24T01:00:00+02:00', NULL, 60, "
                "'Math', '1-on-1', 0, 1, 0, NULL, NULL, 0)"
            )
        )
    inputs = load_metric_inputs(eng.connect(), T - timedelta(days=7), T)
    got = dict(zip(inputs.sessions["session_id"], inputs.sessions["scheduled_start"], strict=True))
    assert set(got) == {"a"}  # b is 1 µs before the window; c is 2026-02-23T23:00Z
    assert got["a"].isoformat() == "2026-03-02T04:30:00+00:00"


@pytest.mark.postgres
def test_postgres_copy_from_csv_then_recompute(tmp_path: Path, pg_engine: sa.Engine) -> None:
    """Rows inserted by another program with COPY are read exactly."""
    from tests.conftest import _empty_tables

    _empty_tables(pg_engine)
    tables = sample(tutors=15, seed=11)
    paths = write_csv_tables(tables, tmp_path)
    raw = pg_engine.raw_connection()
    try:
        cursor: Any = raw.cursor()  # psycopg2's: copy_expert is not in the DB-API protocol
        for path in paths:
            columns = ", ".join(f'"{c}"' for c in pl.read_csv(path, n_rows=0).columns)
            with path.open("rb") as fh:
                cursor.copy_expert(
                    f"COPY {path.stem} ({columns}) FROM STDIN WITH (FORMAT csv, HEADER true)", fh
                )
        cursor.close()
        raw.commit()
    finally:
        raw.close()
    recompute_as_of(pg_engine, T)
    assert_frame_equal(stored_metrics(pg_engine), sort_metrics(expected_metrics(tables, T)))


def _indexes(engine: sa.Engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [
            (str(name), str(definition))
            for name, definition in conn.execute(
                sa.text(
                    "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = "
                    "current_schema() ORDER BY 1"
                )
            )
        ]


def _dump(engine: sa.Engine, table: str, key: str) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(f'SELECT * FROM "{table}" ORDER BY {key}'))]


def test_sample_into_empty_postgres_tables_is_copied_then_upserted(pg_engine: sa.Engine) -> None:
    """Empty tables are filled by COPY with their plain indexes rebuilt after; the rows are
    the ones the upsert stores, and a second run upserts and changes nothing."""
    from tests.conftest import _empty_tables
    from tutormax_cli.sample import SampleSpec, batches
    from tutormax_cli.store.seed import TABLE_KEYS, save_batches, save_tables

    _empty_tables(pg_engine)
    before = _indexes(pg_engine)
    spec = SampleSpec(tutors=9, days=40, seed=4, end=T)
    tables = sample(tutors=9, days=40, seed=4)
    written = save_batches(pg_engine, batches(spec, chunk_tutors=4, bucket_rows=200))
    assert written == {name: df.height for name, df in tables.items()}
    assert _indexes(pg_engine) == before
    copied = {name: _dump(pg_engine, name, key[0]) for name, key in TABLE_KEYS.items()}
    save_batches(pg_engine, batches(spec, chunk_tutors=5))  # upserts: nothing changes
    for name, key in TABLE_KEYS.items():
        assert _dump(pg_engine, name, key[0]) == copied[name], name
    _empty_tables(pg_engine)
    save_tables(pg_engine, {name: df.head(1) for name, df in tables.items()})
    save_tables(pg_engine, tables)  # no table is empty: all upserted
    for name, key in TABLE_KEYS.items():
        assert _dump(pg_engine, name, key[0]) == copied[name], name


def test_a_failed_sample_write_leaves_no_row_and_keeps_indexes(pg_engine: sa.Engine) -> None:
    from tests.conftest import _empty_tables
    from tutormax_cli.sample import SampleSpec, batches
    from tutormax_cli.store.seed import save_batches

    _empty_tables(pg_engine)
    before = _indexes(pg_engine)

    def broken() -> Iterator[tuple[str, pl.DataFrame]]:
        for name, df in batches(SampleSpec(tutors=3, days=20, seed=1, end=T)):
            yield name, df
            if name == "sessions":
                raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        save_batches(pg_engine, broken())
    assert _indexes(pg_engine) == before
    assert count_rows(pg_engine, "tutors") == 0


def test_fresh_rows_are_copied_and_a_clash_the_check_misses_falls_back_to_the_upsert(
    pg_engine: sa.Engine,
) -> None:
    """Rows of days the table does not hold yet are COPYed straight in; when another writer's
    rows appear between the check and the COPY (simulated: the check is pointed at other
    days), the COPY's unique violation is rolled back to its savepoint and the rows upserted,
    in the same transaction."""
    from tests.conftest import _empty_tables
    from tutormax_cli.metrics import frames
    from tutormax_cli.store.save import METRIC_KEY, Fresh, metric_ids, save_metrics, upsert_changed

    _empty_tables(pg_engine)
    tables = sample(tutors=10)
    save_tables(pg_engine, tables)
    metrics = sort_metrics(expected_metrics(tables, T))
    with pg_engine.begin() as conn:
        assert save_metrics(conn, metrics) == metrics.height > 0  # copied: nothing stored yet
    assert_frame_equal(stored_metrics(pg_engine), metrics)
    changed = metrics.with_columns(sessions_completed=pl.col("sessions_completed") + 1)
    df = frames.conform(changed, frames.METRICS)
    df = df.with_columns(metric_ids(df)).select("metric_id", *frames.METRICS.names())
    elsewhere = Fresh(
        df["tutor_id"].to_list(),
        "metric_date",
        T.date() + timedelta(days=9),
        T.date() + timedelta(days=9),
    )
    with pg_engine.begin() as conn:
        sent, written = upsert_changed(
            conn, "tutor_performance_metrics", df, METRIC_KEY, immutable=("metric_id",),
            fresh=elsewhere,
        )  # fmt: skip
        assert (sent, written) == (df.height, df.height)
        assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1  # the transaction lives on
    assert_frame_equal(stored_metrics(pg_engine), changed)
    with pg_engine.begin() as conn:  # rows there, the check sees them: the upsert, no change
        assert save_metrics(conn, changed) == 0
    assert count_rows(pg_engine) == metrics.height
