"""`tutormax ingest` against real services: SQLite and PostgreSQL, and Redis for publication.

The issue's acceptance run (1,000 sessions with 8 broken rows, a feedback file with 2, then the
worker), the three formats, reruns, dry runs, file-level errors, and hypothesis rows through the
whole chain down to the database.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import redis
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from tests.helpers import count_rows, own_pg_database
from tests.streams import as_fields, read
from tutormax_cli import keys
from tutormax_cli.cli.app import app
from tutormax_cli.pipeline import ingest_files
from tutormax_cli.pipeline.persist import persist_batches
from tutormax_cli.sample import SampleSpec, generate
from tutormax_cli.store.db import open_engine
from tutormax_cli.store.migrate import upgrade
from tutormax_cli.store.seed import write_csv_tables
from tutormax_cli.stream import events

TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def cli(db_url: str, redis_url: str, *args: str) -> Result:
    return CliRunner().invoke(
        app, ["--database-url", db_url, "--redis-url", redis_url, *args], catch_exceptions=False
    )


@pytest.fixture(scope="module")
def tables() -> dict[str, pl.DataFrame]:
    """Recent data, so the worker (which computes as of now) finds the sessions in its windows."""
    return generate(SampleSpec(tutors=16, days=60, seed=3, end=TODAY))


@pytest.fixture
def files(tables: dict[str, pl.DataFrame], tmp_path: Path) -> Path:
    out = tmp_path / "csv"
    write_csv_tables(tables, out)
    return out


def snapshot(engine: sa.Engine, table: str) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(f'SELECT * FROM "{table}" ORDER BY 1'))]


def break_sessions(path: Path, out: Path) -> list[int]:
    """The first 1,000 sessions with the issue's 8 broken rows; returns their CSV lines."""
    rows = pl.read_csv(path, infer_schema=False).head(1000).rows(named=True)
    no_show = next(i for i in range(600, 1000) if rows[i]["no_show"] == "false")
    broken: dict[int, dict[str, str | None]] = {
        10: {"engagement_score": "1.4"},
        100: {"late_start_minutes": "61"},
        200: {"session_type": "seminar"},
        300: {"tutor_id": None},
        400: {"tutor_id": "T" * 51},
        500: {"scheduled_start": "31/02/2026 10:00"},
        no_show: {"no_show": "true"},
        800: {"duration_minutes": "-45"},
    }
    for i, changes in broken.items():
        rows[i].update(changes)
    pl.DataFrame(rows, schema=dict.fromkeys(rows[0], pl.String)).write_csv(out)
    return sorted(i + 2 for i in broken)


def test_the_acceptance_run(
    engine: sa.Engine,
    db_url: str,
    redis_url: str,
    rclient: redis.Redis,
    files: Path,
    tmp_path: Path,
) -> None:
    for name, table in (("tutors", "tutors"), ("students", "students")):
        result = cli(db_url, redis_url, "ingest", name, str(files / f"{table}.csv"))
        assert result.exit_code == 0, result.output
    sessions = tmp_path / "sessions.csv"
    lines = break_sessions(files / "sessions.csv", sessions)
    rejects = tmp_path / "rejects.csv"
    args = ("ingest", "sessions", str(sessions), "--rejects", str(rejects))
    result = cli(db_url, redis_url, *args)
    assert result.exit_code == 1
    shown = [line for line in result.stderr.splitlines() if line.startswith(f"{sessions}:")]
    assert [int(line.split(":")[1]) for line in shown] == lines
    assert f"{sessions}:{lines[0]}: engagement_score: 1.4 is not between 0 and 1" in shown
    assert "992 persisted, 8 rejected, 992 published" in result.stderr
    written = pl.read_csv(rejects, infer_schema=False)
    header = pl.read_csv(sessions, n_rows=0).columns
    assert written.columns == [*header, "line", "reason"]
    assert written["line"].cast(int).to_list() == lines
    assert count_rows(engine, "sessions") == 992
    assert rclient.xlen(keys.ENRICHMENT_STREAM) == 992
    (_, fields), *_ = read(rclient, keys.ENRICHMENT_STREAM)
    assert isinstance(events.decode(as_fields(fields)), events.SessionEvent)

    before = snapshot(engine, "sessions")
    assert cli(db_url, redis_url, *args).exit_code == 1
    assert snapshot(engine, "sessions") == before  # not even updated_at moves

    feedback = tmp_path / "feedback.csv"
    persisted = {row[0] for row in before}
    fb = pl.read_csv(files / "student_feedback.csv", infer_schema=False)
    fb = fb.filter(pl.col("session_id").is_in(list(persisted))).head(40)
    fb = fb.with_columns(
        overall_rating=pl.when(pl.int_range(pl.len()) == 3)
        .then(pl.lit("6"))
        .otherwise(pl.col("overall_rating")),
        session_id=pl.when(pl.int_range(pl.len()) == 7)
        .then(pl.lit("SES-NOPE"))
        .otherwise(pl.col("session_id")),
    )
    fb.write_csv(feedback)
    result = cli(db_url, redis_url, "ingest", "feedback", str(feedback))
    assert result.exit_code == 1
    assert f"{feedback}:5: overall_rating: 6 is not between 1 and 5" in result.stderr
    assert f"{feedback}:9: session_id: unknown session 'SES-NOPE'" in result.stderr
    assert "38 persisted, 2 rejected" in result.stderr
    assert count_rows(engine, "student_feedback") == 38

    result = cli(db_url, redis_url, "worker", "run", "--burst", "--debounce", "0")
    assert result.exit_code == 0, result.output
    with engine.connect() as conn:
        computed = {
            r[0] for r in conn.execute(sa.text("SELECT tutor_id FROM tutor_performance_metrics"))
        }
    expected = {row[1] for row in before}
    assert computed == expected


def test_csv_jsonl_and_parquet_load_the_same_rows(
    engine: sa.Engine, db_url: str, redis_url: str, tables: dict[str, pl.DataFrame], tmp_path: Path
) -> None:
    write_csv_tables({k: tables[k] for k in ("tutors", "students")}, tmp_path)
    for name in ("tutors", "students"):
        assert cli(db_url, redis_url, "ingest", name, str(tmp_path / f"{name}.csv")).exit_code == 0
    sessions = tables["sessions"].head(300).drop("created_at", "updated_at")
    csv_path, jsonl_path, parquet_path = (tmp_path / f"s.{x}" for x in ("csv", "jsonl", "parquet"))
    write_csv_tables({"s": sessions}, tmp_path)
    records = sessions.with_columns(
        pl.col(pl.Datetime).dt.strftime("%Y-%m-%dT%H:%M:%S%.f%:z")
    ).to_dicts()
    jsonl_path.write_text("".join(json.dumps(r) + "\n" for r in records))
    sessions.write_parquet(parquet_path)
    snapshots = []
    for path in (csv_path, jsonl_path, parquet_path):
        result = cli(db_url, redis_url, "ingest", "sessions", str(path), "--no-publish", "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["persisted"] == 300
        snapshots.append(snapshot(engine, "sessions"))
    assert snapshots[0] == snapshots[1] == snapshots[2]  # same values: no row rewritten


def test_dry_run_writes_and_publishes_nothing(
    engine: sa.Engine, db_url: str, redis_url: str, rclient: redis.Redis, files: Path
) -> None:
    args = ("ingest", "tutors", str(files / "tutors.csv"), "--dry-run")
    result = cli(db_url, redis_url, *args)
    assert result.exit_code == 0
    assert re.search(
        r"^tutors: 16 rows read, 16 would persist, 0 rejected; dry run: nothing written or "
        r"published in [\d.]+s \([\d,]+ rows/s\)\.$",
        result.stderr,
        re.M,
    ), result.stderr
    counts = json.loads(cli(db_url, redis_url, *args, "--json").stdout)
    assert (counts["rows"], counts["valid"], counts["persisted"], counts["published"]) == (
        16, 16, 0, 0
    )  # fmt: skip
    assert counts["dry_run"] is True
    assert count_rows(engine, "tutors") == 0
    result = cli(db_url, redis_url, "ingest", "sessions", str(files / "sessions.csv"), "--dry-run")
    assert result.exit_code == 1  # tutors are not there yet
    assert "unknown tutor" in result.stderr and count_rows(engine, "sessions") == 0
    assert rclient.xlen(keys.ENRICHMENT_STREAM) == 0


def test_file_level_problems_are_one_line_errors(
    sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    upgrade(open_engine(sqlite_url))
    bad = tmp_path / "t.csv"
    bad.write_text("tutor_id,name\nT1,Ada\n")
    result = cli(sqlite_url, redis_url, "ingest", "tutors", str(bad))
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {bad}: no column email, onboarding_date, status, subjects (required in tutors)\n"
    )
    odd = tmp_path / "t.txt"
    odd.write_text("x")
    result = cli(sqlite_url, redis_url, "ingest", "tutors", str(odd))
    assert result.exit_code == 1
    assert "pass --format csv|jsonl|parquet" in result.stderr
    extra = tmp_path / "s.csv"
    extra.write_text("student_id,name,favourite_colour,updated_at\nS1,Bo,blue,2026-01-01\n")
    result = cli(sqlite_url, redis_url, "ingest", "students", str(extra))
    assert result.exit_code == 0, result.output
    assert "Warning: " + str(extra) + ": ignoring unknown column favourite_colour" in result.stderr


def test_jsonl_lines_are_named(sqlite_url: str, redis_url: str, tmp_path: Path) -> None:
    upgrade(open_engine(sqlite_url))
    path = tmp_path / "students.jsonl"
    path.write_text(
        '{"student_id": "S1", "name": "Bo", "age": 12}\n\n'
        "{broken\n"
        '{"student_id": "S2", "name": "Cy", "age": 200}\n'
    )
    other = tmp_path / "more.csv"
    other.write_text("student_id,name,age\nS3,Di,\nS4,,9\n")
    rejects = tmp_path / "rejects.jsonl"
    result = cli(
        sqlite_url, redis_url, "ingest", "students", str(path), str(other), "--rejects",
        str(rejects),
    )  # fmt: skip
    assert result.exit_code == 1
    assert f"{path}:3: row: not valid JSON" in result.stderr
    assert f"{path}:4: age: 200 is not between 0 and 150" in result.stderr
    assert f"{other}:3: name: missing" in result.stderr
    assert "2 persisted, 3 rejected" in result.stderr
    written = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [(r["file"], r["line"]) for r in written] == [
        (str(path), 3),
        (str(path), 4),
        (str(other), 3),
    ]
    assert list(written[2]) == ["file", "student_id", "name", "age", "line", "reason"]


def test_times_outside_years_1_to_9999_in_utc_are_rejected_and_replay_still_reads(
    engine: sa.Engine, db_url: str, redis_url: str, files: Path, tmp_path: Path
) -> None:
    """Year 1 at +05:00 is year 0 in UTC: both databases stored it, and the next replay of the
    table failed on it (`year 0 is out of range`). It is now a per-row rejection naming the
    field; the first and last instants Python holds are stored and read back."""
    for name, table in (("tutors", "tutors"), ("students", "students")):
        assert cli(db_url, redis_url, "ingest", name, str(files / f"{table}.csv")).exit_code == 0
    rows = pl.read_csv(files / "sessions.csv", infer_schema=False).head(3)
    rows = rows.with_columns(
        scheduled_start=pl.Series(
            ["0001-01-01T00:00:00+05:00", "0001-01-01T00:00:00Z", rows["scheduled_start"][2]]
        ),
        actual_start=pl.Series([None, None, "9999-12-31T23:59:59-05:00"], dtype=pl.String),
        no_show=pl.lit("false"),
    )
    sessions = tmp_path / "sessions.csv"
    rows.write_csv(sessions)
    result = cli(db_url, redis_url, "ingest", "sessions", str(sessions))
    assert result.exit_code == 1
    assert (
        f"{sessions}:2: scheduled_start: '0001-01-01T00:00:00+05:00' is before "
        "0001-01-01T00:00:00Z (UTC), the earliest time tutormax can read back"
    ) in result.stderr.splitlines()
    assert (
        f"{sessions}:4: actual_start: '9999-12-31T23:59:59-05:00' is after "
        "9999-12-31T23:59:59.999999Z (UTC), the latest time tutormax can read back"
    ) in result.stderr.splitlines()
    assert "1 persisted, 2 rejected" in result.stderr
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT scheduled_start FROM sessions")).scalars().all()
    assert [str(t)[:19] for t in stored] == ["0001-01-01 00:00:00"]
    events_file = tmp_path / "events.csv"
    events_file.write_text(
        "event_id,tutor_id,event_type,event_timestamp\n"
        f"E1,{rows['tutor_id'][0]},login,0000-12-31T00:00:00Z\n"
        f"E2,{rows['tutor_id'][0]},login,9999-12-31T23:59:59.999999Z\n"
    )
    result = cli(db_url, redis_url, "ingest", "events", str(events_file))
    assert result.exit_code == 1
    assert f"{events_file}:2: event_timestamp: '0000-12-31T00:00:00Z' is before " in (result.stderr)
    assert count_rows(engine, "tutor_events") == 1
    replay = cli(db_url, redis_url, "events", "replay", "--since", "2025-01-01")
    assert replay.exit_code == 0, replay.output
    assert "Replayed 1 session onto" in replay.stderr


@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Kolkata"])
def test_the_first_and_last_instants_read_back_on_a_server_outside_utc(
    pg_database_url: str, redis_url: str, files: Path, tmp_path: Path, zone: str
) -> None:
    """The bounds validation lets through are UTC's; on a database whose `TimeZone` is another
    zone, year 1 came back as `0001-12-31 19:03:58-04:56:02 BC` and 9999-12-31T23:59:59Z as year
    10000, which psycopg2 cannot read (replay: `year -1 is out of range`). Every connection
    tutormax opens now sets UTC for its session."""
    with own_pg_database(pg_database_url, "tutormax_zone_test", f"timezone TO '{zone}'") as url:
        assert cli(url, redis_url, "db", "init").exit_code == 0
        for table in ("tutors", "students"):
            assert cli(url, redis_url, "ingest", table, str(files / f"{table}.csv")).exit_code == 0
        rows = pl.read_csv(files / "sessions.csv", infer_schema=False).head(2)
        rows = rows.with_columns(
            scheduled_start=pl.Series(["0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"]),
            actual_start=pl.Series([None, None], dtype=pl.String),
            no_show=pl.lit("true"),
        )
        sessions = tmp_path / "edges.csv"
        rows.write_csv(sessions)
        result = cli(url, redis_url, "ingest", "sessions", str(sessions))
        assert "1 persisted, 1 rejected" in result.stderr  # the second is > 30 days ahead
        replay = cli(url, redis_url, "events", "replay", "--since", "0001-01-01T00:00:00Z")
        assert replay.exit_code == 0, replay.output
        assert "Replayed 1 session onto" in replay.stderr
        engine = open_engine(url)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SHOW TimeZone")).scalar_one() == "UTC"
            first = conn.execute(sa.text("SELECT min(scheduled_start) FROM sessions")).scalar()
        engine.dispose()
        assert first == datetime(1, 1, 1, tzinfo=UTC)
        from tutormax_cli.store.reader import open_reader

        with open_reader(url) as reader:  # the show commands' read-only connection too
            assert reader.rows("SHOW TimeZone", {}) == [("UTC",)]
            assert reader.rows("SELECT min(scheduled_start) FROM sessions", {})[0][0] == first


def test_a_row_the_database_refuses_is_rejected_alone(engine: sa.Engine) -> None:
    good = generate(SampleSpec(tutors=3, days=5, seed=1, end=TODAY))["students"]
    df = good.with_columns(
        pl.int_range(2, pl.len() + 2).alias("_line"),
        pl.lit("f.csv").alias("_file"),
        name=pl.when(pl.int_range(pl.len()) == 4).then(None).otherwise(pl.col("name")),
    )
    result = persist_batches(engine, "students", df, batch_size=5)
    assert result.rows == df.height - 1
    assert result.refused["_line"].to_list() == [6]
    assert result.refused["reason"][0].startswith("row: refused by the database: ")
    assert count_rows(engine, "students") == df.height - 1


_CELL = st.one_of(
    st.none(),
    st.text(max_size=12),
    st.sampled_from(["-1", "61", "1.5", "x", "true", "2026-01-01", "T1", "S1", "group"]),
)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["SES1", "SES2", "SES3", "SES4"]),
            st.dictionaries(
                st.sampled_from(
                    [
                        "tutor_id",
                        "duration_minutes",
                        "late_start_minutes",
                        "engagement_score",
                        "scheduled_start",
                        "no_show",
                        "session_type",
                    ]
                ),
                _CELL,
                max_size=3,
            ),
        ),
        max_size=8,
    )
)
def test_every_row_ends_persisted_or_rejected(
    sqlite_url: str, tmp_path: Path, rows: list[tuple[str, dict[str, Any]]]
) -> None:
    engine = open_engine(sqlite_url)
    upgrade(engine)
    with engine.begin() as conn:
        for table in ("sessions", "tutors", "students"):
            conn.execute(sa.text(f"DELETE FROM {table}"))
        conn.execute(
            sa.text(
                "INSERT INTO tutors (tutor_id, name, email, onboarding_date, status, subjects) "
                "VALUES ('T1', 'A', 'a@x', '2025-01-01', 'active', '[]')"
            )
        )
        conn.execute(sa.text("INSERT INTO students (student_id, name) VALUES ('S1', 'B')"))
    base = {
        "tutor_id": "T1", "student_id": "S1", "session_number": 1,
        "scheduled_start": "2026-01-01T10:00:00Z", "actual_start": None, "duration_minutes": 60,
        "subject": "Maths", "session_type": "1-on-1", "tutor_initiated_reschedule": False,
        "no_show": False, "late_start_minutes": 0, "technical_issues": False,
    }  # fmt: skip
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({**base, "session_id": k, **c}) + "\n" for k, c in rows))
    result = ingest_files(engine, "sessions", [path], now=TODAY)
    persisted_lines = set(range(1, len(rows) + 1)) - set(result.rejects["_line"].to_list())
    assert result.rows == len(rows) and result.persisted == len(persisted_lines)
    assert result.rejects["reason"].null_count() == 0
    expected = {rows[line - 1][0] for line in persisted_lines}
    with engine.connect() as conn:
        stored = {r[0] for r in conn.execute(sa.text("SELECT session_id FROM sessions"))}
    assert stored == expected
    engine.dispose()
