"""The sample generator: deterministic, contract-shaped, internally consistent, and with tutor
archetypes that actually behave differently (demos, benchmarks and metric tests rely on it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from tutormax_cli.metrics import frames
from tutormax_cli.sample import TABLE_SCHEMAS, SampleSpec, batches, generate

END = datetime(2026, 3, 2, 14, 5, tzinfo=UTC)
TS = pl.Datetime("us", "UTC")
TABLES = ("tutors", "students", "sessions", "student_feedback", "tutor_events")

# docs/metrics.md §1, written out again here so that a change to the generator's schema table
# cannot silently change the contract the tests check.
EXPECTED_COLUMNS = {
    "tutors": [
        "tutor_id", "name", "email", "onboarding_date", "status", "subjects", "education_level",
        "location", "baseline_sessions_per_week", "behavioral_archetype", "created_at",
        "updated_at",
    ],
    "students": ["student_id", "name", "age", "grade_level", "created_at", "updated_at"],
    "sessions": [
        "session_id", "tutor_id", "student_id", "session_number", "scheduled_start",
        "actual_start", "duration_minutes", "subject", "session_type",
        "tutor_initiated_reschedule", "no_show", "late_start_minutes", "engagement_score",
        "learning_objectives_met", "technical_issues", "created_at", "updated_at",
    ],
    "student_feedback": [
        "feedback_id", "session_id", "student_id", "tutor_id", "overall_rating",
        "is_first_session", "subject_knowledge_rating", "communication_rating",
        "patience_rating", "engagement_rating", "helpfulness_rating", "would_recommend",
        "improvement_areas", "free_text_feedback", "submitted_at", "created_at",
    ],
    "tutor_events": [
        "event_id", "tutor_id", "event_type", "event_timestamp", "metadata", "created_at",
    ],
}  # fmt: skip
INTS = {"age", "session_number", "duration_minutes", "late_start_minutes", "overall_rating"}
FLOATS = {"baseline_sessions_per_week", "engagement_score"}
BOOLS = {
    "tutor_initiated_reschedule", "no_show", "learning_objectives_met", "technical_issues",
    "is_first_session", "would_recommend",
}  # fmt: skip
LISTS = {"subjects", "improvement_areas"}
TIMESTAMPS = {
    "onboarding_date", "scheduled_start", "actual_start", "submitted_at", "event_timestamp",
    "created_at", "updated_at",
}  # fmt: skip


def expected_dtype(column: str) -> pl.DataType:
    if column in INTS or column.endswith("_rating"):
        return pl.Int64()
    if column in FLOATS:
        return pl.Float64()
    if column in BOOLS:
        return pl.Boolean()
    if column in LISTS:
        return pl.List(pl.String)
    if column in TIMESTAMPS:
        return TS
    return pl.String()


@pytest.fixture(scope="module")
def data() -> dict[str, pl.DataFrame]:
    return generate(SampleSpec(tutors=200, days=90, seed=7, end=END))


@pytest.fixture(scope="module")
def small() -> dict[str, pl.DataFrame]:
    return generate(SampleSpec(tutors=30, days=30, seed=1, end=END))


def with_archetype(df: pl.DataFrame, data: dict[str, pl.DataFrame]) -> pl.DataFrame:
    return df.join(data["tutors"].select("tutor_id", "behavioral_archetype"), on="tutor_id")


# --- determinism -------------------------------------------------------------------------------


def test_same_spec_gives_identical_frames(small: dict[str, pl.DataFrame]) -> None:
    again = generate(SampleSpec(tutors=30, days=30, seed=1, end=END))
    assert list(again) == list(TABLES)
    for table in TABLES:
        assert_frame_equal(small[table], again[table])


def test_different_seed_gives_different_data(small: dict[str, pl.DataFrame]) -> None:
    other = generate(SampleSpec(tutors=30, days=30, seed=2, end=END))
    assert not small["sessions"].equals(other["sessions"])
    assert not small["tutors"].equals(other["tutors"])
    negative = generate(SampleSpec(tutors=30, days=30, seed=-1, end=END))
    positive = generate(SampleSpec(tutors=30, days=30, seed=1, end=END))
    assert not negative["sessions"].equals(positive["sessions"])


def test_another_process_gives_identical_frames(
    small: dict[str, pl.DataFrame], tmp_path: Path
) -> None:
    """Other hash seed and one polars thread: nothing may depend on either."""
    script = (
        "import sys\n"
        "from datetime import datetime, UTC\n"
        "from tutormax_cli.sample import SampleSpec, generate\n"
        "end = datetime(2026, 3, 2, 14, 5, tzinfo=UTC)\n"
        "for name, df in generate(SampleSpec(tutors=30, days=30, seed=1, end=end)).items():\n"
        "    df.write_ipc(f'{sys.argv[1]}/{name}.arrow')\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "POLARS_MAX_THREADS": "1"}
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, env=env)
    for table in TABLES:
        assert_frame_equal(small[table], pl.read_ipc(tmp_path / f"{table}.arrow"))


def test_end_in_another_time_zone_is_the_same_instant(small: dict[str, pl.DataFrame]) -> None:
    shifted = END.astimezone(timezone(timedelta(hours=2)))
    again = generate(SampleSpec(tutors=30, days=30, seed=1, end=shifted))
    assert_frame_equal(small["sessions"], again["sessions"])


# --- shape -------------------------------------------------------------------------------------


@pytest.mark.parametrize("table", TABLES)
def test_columns_and_dtypes_follow_the_contract(data: dict[str, pl.DataFrame], table: str) -> None:
    df = data[table]
    assert df.columns == EXPECTED_COLUMNS[table]
    assert df.schema == TABLE_SCHEMAS[table]
    for column, dtype in df.schema.items():
        assert dtype == expected_dtype(column), column
    assert df.height > 0


def test_zero_tutors_gives_empty_frames_with_the_schema() -> None:
    out = generate(SampleSpec(tutors=0, days=10, seed=3, end=END))
    for table in TABLES:
        assert out[table].height == 0
        assert out[table].schema == TABLE_SCHEMAS[table]


@pytest.mark.parametrize(
    ("tutors", "days", "end"),
    [(-1, 10, END), (5, 0, END), (5, 10, datetime(2026, 3, 2))],
)
def test_invalid_specs_are_rejected(tutors: int, days: int, end: datetime) -> None:
    with pytest.raises(ValueError):
        SampleSpec(tutors=tutors, days=days, seed=0, end=end)


def test_one_day_and_one_tutor_still_work() -> None:
    out = generate(SampleSpec(tutors=1, days=1, seed=5, end=END))
    assert out["tutors"].height == 1
    assert out["sessions"]["scheduled_start"].is_between(END - timedelta(days=1), END).all()


def test_engine_frames_conform(data: dict[str, pl.DataFrame]) -> None:
    """The metric engine's input schemas are a projection of the generated tables."""
    frames.conform(data["sessions"], frames.SESSIONS)
    frames.conform(data["student_feedback"], frames.FEEDBACK)


# --- invariants --------------------------------------------------------------------------------


def test_ids_are_unique_and_formatted(data: dict[str, pl.DataFrame]) -> None:
    patterns = {
        ("tutors", "tutor_id"): r"^T\d{4,}$",
        ("students", "student_id"): r"^S\d{5,}$",
        ("sessions", "session_id"): r"^SES\d{6,}$",
        ("student_feedback", "feedback_id"): r"^FB\d{6,}$",
        ("tutor_events", "event_id"): r"^EV\d{7,}$",
    }
    for (table, column), pattern in patterns.items():
        ids = data[table][column]
        assert ids.is_unique().all(), column
        assert ids.str.contains(pattern).all(), column
    assert data["tutors"]["email"].is_unique().all()


def test_ids_follow_time(data: dict[str, pl.DataFrame]) -> None:
    for table, ts in [
        ("sessions", "scheduled_start"),
        ("student_feedback", "submitted_at"),
        ("tutor_events", "event_timestamp"),
    ]:
        assert data[table][ts].is_sorted(), table


def test_references_exist(data: dict[str, pl.DataFrame]) -> None:
    s = data["sessions"]
    assert s["tutor_id"].is_in(data["tutors"]["tutor_id"].implode()).all()
    assert s["student_id"].is_in(data["students"]["student_id"].implode()).all()
    assert data["tutor_events"]["tutor_id"].is_in(data["tutors"]["tutor_id"].implode()).all()


def test_sessions_are_in_the_period(data: dict[str, pl.DataFrame]) -> None:
    s = data["sessions"]
    start = END - timedelta(days=90)
    assert s["scheduled_start"].min() >= start  # type: ignore[operator]
    assert s["scheduled_start"].max() < END  # type: ignore[operator]
    assert s.select(pl.struct("tutor_id", "scheduled_start").is_unique().all()).item()
    onboarded = s.join(data["tutors"].select("tutor_id", "onboarding_date"), on="tutor_id")
    assert (onboarded["scheduled_start"] >= onboarded["onboarding_date"]).all()


def test_no_show_and_lateness(data: dict[str, pl.DataFrame]) -> None:
    s = data["sessions"]
    no_show = s.filter(pl.col("no_show"))
    shown = s.filter(~pl.col("no_show"))
    assert no_show.height > 0
    assert no_show["actual_start"].is_null().all()
    assert shown["actual_start"].is_not_null().all()
    late = pl.duration(minutes=pl.col("late_start_minutes"))
    assert shown.select((pl.col("actual_start") == pl.col("scheduled_start") + late).all()).item()
    assert s["late_start_minutes"].min() == 0
    assert s["late_start_minutes"].max() <= 60  # type: ignore[operator]
    assert (s["late_start_minutes"] <= s["duration_minutes"]).all()
    assert (s["late_start_minutes"] > 10).any()


def test_categorical_columns(data: dict[str, pl.DataFrame]) -> None:
    s = data["sessions"]
    assert set(s["duration_minutes"].unique()) == {30, 45, 60, 90}
    assert set(s["session_type"].unique()) == {"1-on-1", "group", "workshop"}
    assert set(data["tutors"]["status"].unique()) <= {"active", "inactive", "churned"}
    assert s["technical_issues"].any()
    assert s["tutor_initiated_reschedule"].any()
    assert s["subject"].null_count() == 0


def test_engagement_and_objectives(data: dict[str, pl.DataFrame]) -> None:
    shown = data["sessions"].filter(~pl.col("no_show"))
    eng = shown["engagement_score"]
    assert eng.drop_nulls().is_between(0.0, 1.0).all()
    assert 0.02 < eng.null_count() / shown.height < 0.10
    objectives = shown["learning_objectives_met"]
    assert 0.05 < objectives.null_count() / shown.height < 0.16
    assert objectives.any()
    assert not objectives.drop_nulls().all()


def test_session_numbers_count_each_pair_in_order(data: dict[str, pl.DataFrame]) -> None:
    pairs = (
        data["sessions"]
        .sort("scheduled_start", "session_id")
        .group_by("tutor_id", "student_id")
        .agg(pl.col("session_number"))
    )
    steps = pairs.select(pl.col("session_number").list.diff(null_behavior="drop")).explode(
        "session_number"
    )
    assert steps["session_number"].drop_nulls().eq(1).all()
    firsts = pairs.select(pl.col("session_number").list.first())["session_number"]
    assert firsts.min() == 1
    # a new tutor (onboarded in the period) meets every student for the first time
    new = with_archetype(data["sessions"], data).filter(pl.col("behavioral_archetype") == "new")
    first_seen = new.sort("scheduled_start").group_by("tutor_id", "student_id").first()
    assert first_seen["session_number"].eq(1).all()


def test_feedback_belongs_to_its_session(data: dict[str, pl.DataFrame]) -> None:
    fb = data["student_feedback"]
    s = data["sessions"]
    assert fb["session_id"].is_unique().all()
    joined = fb.join(s, on="session_id", how="left", suffix="_s")
    assert joined["scheduled_start"].is_not_null().all()
    assert (joined["tutor_id"] == joined["tutor_id_s"]).all()
    assert (joined["student_id"] == joined["student_id_s"]).all()
    assert (joined["is_first_session"] == (joined["session_number"] == 1)).all()
    assert (joined["submitted_at"] > joined["scheduled_start"]).all()
    assert (joined["submitted_at"] < END).all()
    assert (fb["created_at"] == fb["submitted_at"]).all()
    # feedback on no-shows is rare; most attended sessions get some
    assert joined["no_show"].mean() < 0.02  # type: ignore[operator]
    shown = s.filter(~pl.col("no_show")).height
    assert 0.6 < fb.height / shown < 0.85


def test_ratings_are_on_the_scale(data: dict[str, pl.DataFrame]) -> None:
    fb = data["student_feedback"]
    assert fb["overall_rating"].null_count() == 0
    assert set(fb["overall_rating"].unique()) == {1, 2, 3, 4, 5}
    for column in [c for c in fb.columns if c.endswith("_rating") and c != "overall_rating"]:
        values = fb[column]
        assert values.drop_nulls().is_between(1, 5).all(), column
        assert 0 < values.null_count() < fb.height * 0.2, column
    assert fb["would_recommend"].null_count() > 0
    assert fb["improvement_areas"].null_count() > 0
    assert (fb["improvement_areas"].list.len() > 0).any()
    assert fb["free_text_feedback"].null_count() > 0
    assert fb["free_text_feedback"].is_not_null().any()


def test_events(data: dict[str, pl.DataFrame]) -> None:
    ev = data["tutor_events"]
    assert ev["event_timestamp"].is_between(END - timedelta(days=90), END, closed="left").all()
    assert (ev["created_at"] == ev["event_timestamp"]).all()
    types = set(ev["event_type"].unique())
    assert {"login", "message_response"} < types
    responses = ev.filter(pl.col("event_type") == "message_response")["metadata"]
    parsed = [json.loads(m) for m in responses.drop_nulls()]
    numeric = [p for p in parsed if isinstance(p.get("response_time_minutes"), int | float)]
    assert 0.85 < len(numeric) / responses.len() < 0.99  # mostly numbers, some junk
    assert all(p["response_time_minutes"] >= 0 for p in numeric)
    assert responses.null_count() > 0
    for meta in ev["metadata"].drop_nulls():
        json.loads(meta)


def test_archetype_shares(data: dict[str, pl.DataFrame]) -> None:
    counts = dict(data["tutors"]["behavioral_archetype"].value_counts().iter_rows())
    assert counts == {"high_performer": 40, "steady": 70, "new": 30, "at_risk": 40, "churner": 20}


def test_archetypes_behave_differently(data: dict[str, pl.DataFrame]) -> None:
    by = (
        with_archetype(data["sessions"], data)
        .group_by("behavioral_archetype")
        .agg(
            no_show=pl.col("no_show").mean(),
            reschedule=pl.col("tutor_initiated_reschedule").mean(),
            late=(pl.col("late_start_minutes") > 10).mean(),
            engagement=pl.col("engagement_score").mean(),
            objectives=pl.col("learning_objectives_met").mean(),
            first=(pl.col("session_number") == 1).mean(),
            per_tutor=pl.len() / pl.col("tutor_id").n_unique(),
        )
    )
    rating = (
        with_archetype(data["student_feedback"], data)
        .group_by("behavioral_archetype")
        .agg(pl.col("overall_rating").mean())
    )
    rows = by.join(rating, on="behavioral_archetype").iter_rows(named=True)
    stats = {row["behavioral_archetype"]: row for row in rows}
    hp, risk, new = stats["high_performer"], stats["at_risk"], stats["new"]
    assert risk["no_show"] > 4 * hp["no_show"]
    assert risk["reschedule"] > 3 * hp["reschedule"]
    assert risk["late"] > 3 * hp["late"]
    assert risk["engagement"] < hp["engagement"] - 0.2
    assert risk["objectives"] < hp["objectives"] - 0.15
    assert risk["overall_rating"] < hp["overall_rating"] - 1.0
    assert new["first"] > 2 * stats["steady"]["first"]
    assert new["per_tutor"] < stats["steady"]["per_tutor"] / 2


def test_churners_fade_out(data: dict[str, pl.DataFrame]) -> None:
    midpoint = END - timedelta(days=45)
    churn = with_archetype(data["sessions"], data).filter(
        pl.col("behavioral_archetype") == "churner"
    )
    early = churn.filter(pl.col("scheduled_start") < midpoint).height
    late = churn.filter(pl.col("scheduled_start") >= midpoint).height
    assert late < early / 2
    statuses = data["tutors"].filter(pl.col("behavioral_archetype") == "churner")["status"]
    assert set(statuses.unique()) <= {"churned", "inactive"}


def test_logins_track_sessions(data: dict[str, pl.DataFrame]) -> None:
    logins = (
        with_archetype(data["tutor_events"], data)
        .filter(pl.col("event_type") == "login")
        .group_by("behavioral_archetype")
        .len("logins")
    )
    sessions = with_archetype(data["sessions"], data).group_by("behavioral_archetype").len()
    ratio = dict(
        logins.join(sessions, on="behavioral_archetype")
        .select("behavioral_archetype", pl.col("logins") / pl.col("len"))
        .iter_rows()
    )
    assert ratio["high_performer"] > 1.0
    assert ratio["at_risk"] < 1.0


# --- chunks, batches and sinks -----------------------------------------------------------------

# MD5 of each table's CSV (`write_csv_tables`) for SampleSpec(37, 30, 1, END), made with the
# generator before it worked in chunks: the same seed must keep giving the same rows.
PINNED_CSV_MD5 = {
    "tutors": "8c724fe6cba4ffbd2b55801696bcb12e",
    "students": "47d331892f3043bf0cffe1248e9f76f8",
    "sessions": "4a51cf503e2560f2bef28be57f03e7f8",
    "student_feedback": "b8bcafe49f6d9ab37d5fd13e0b4938b2",
    "tutor_events": "0d5ae050057c60297740fe8dbd0c917e",
}


def _csv_md5(tables: dict[str, pl.DataFrame], tmp_path: Path) -> dict[str, str]:
    import hashlib

    from tutormax_cli.store.seed import write_csv_tables

    return {
        path.stem: hashlib.md5(path.read_bytes()).hexdigest()
        for path in write_csv_tables(tables, tmp_path)
    }


def test_rows_are_those_of_the_unchunked_generator(tmp_path: Path) -> None:
    out = generate(SampleSpec(tutors=37, days=30, seed=1, end=END))
    assert _csv_md5(out, tmp_path) == PINNED_CSV_MD5


@pytest.mark.parametrize(("chunk", "bucket"), [(1, 50), (7, 400), (36, 10_000), (500, 97)])
def test_chunks_and_batches_do_not_change_the_rows(chunk: int, bucket: int) -> None:
    """Tutors generated a few at a time and numbered a time range at a time: same frames."""
    whole = generate(SampleSpec(tutors=37, days=30, seed=1, end=END), chunk_tutors=10_000)
    parts: dict[str, list[pl.DataFrame]] = {table: [] for table in TABLES}
    spec = SampleSpec(tutors=37, days=30, seed=1, end=END)
    for table, df in batches(spec, chunk_tutors=chunk, bucket_rows=bucket):
        assert df.schema == TABLE_SCHEMAS[table]
        parts[table].append(df)
    assert list(parts) == list(TABLES)
    if bucket < 100:
        assert len(parts["sessions"]) > 3  # several time ranges were numbered
    for table in TABLES:
        assert_frame_equal(pl.concat(parts[table]), whole[table])


def test_progress_counts_tutors_then_rows() -> None:
    seen: list[tuple[str, int, int]] = []
    spec = SampleSpec(tutors=9, days=20, seed=2, end=END)
    handed = sum(df.height for _, df in batches(spec, chunk_tutors=4, progress=_record(seen)))
    generating = [s for s in seen if s[0] == "generating"]
    writing = [s for s in seen if s[0] == "writing"]
    assert generating == [("generating", n, 9) for n in (0, 4, 8, 9)]
    assert writing[-1] == ("writing", handed, handed)
    assert [done for _, done, _ in writing] == sorted(done for _, done, _ in writing)


def _record(seen: list[tuple[str, int, int]]) -> Callable[[str, int, int], None]:
    return lambda phase, done, total: seen.append((phase, done, total))


def test_csv_output_in_batches_equals_the_whole_tables(tmp_path: Path) -> None:
    from tutormax_cli.store.seed import write_csv_batches, write_csv_tables

    spec = SampleSpec(tutors=12, days=30, seed=3, end=END)
    write_csv_batches(batches(spec, chunk_tutors=5, bucket_rows=100), tmp_path / "batched")
    write_csv_tables(generate(spec), tmp_path / "whole")
    for table in TABLES:
        batched = (tmp_path / "batched" / f"{table}.csv").read_bytes()
        assert batched == (tmp_path / "whole" / f"{table}.csv").read_bytes(), table


def test_generate_again_with_the_same_seed_says_nothing_changed(tmp_path: Path) -> None:
    """Into a database the rows are upserted: a rerun sends them all and the database changes
    none, so the summary must not say it wrote them; more tutors write only what is new."""
    from typer.testing import CliRunner

    from tutormax_cli.cli.app import app

    url = f"sqlite:///{tmp_path / 't.db'}"
    env = {"TUTORMAX_DATABASE_URL": url}
    args = ["sample", "generate", "--tutors", "4", "--days", "30", "--seed", "3", "--end",
            "2026-03-01T00:00:00Z"]  # fmt: skip
    assert CliRunner().invoke(app, ["db", "init"], env=env).exit_code == 0
    first = CliRunner().invoke(app, args, env=env)
    assert first.exit_code == 0, first.output
    assert first.stderr.startswith("Wrote 4 tutors, 16 students, ")
    assert "as stored" not in first.stderr
    again = CliRunner().invoke(app, args, env=env)
    assert again.exit_code == 0, again.output
    summary = first.stderr.removeprefix("Wrote ").split(f" to {url} ")[0]
    assert again.stderr.startswith(
        f"Nothing changed: {summary} generated, every row as stored in {url} in "
    ), again.stderr


_BEFORE_YEAR_1 = (
    "--end 0001-01-01T00:00:00Z with --days 1 would date rows before year 1 (tutors are "
    "onboarded up to 1,460 days before the history starts): use --end 0005-01-02 or later"
)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--days", "1", "--end", "0001-01-01"], _BEFORE_YEAR_1),
        # ran for a very long time before failing
        (["--days", "1000000", "--end", "0002-01-01"],
         "--days 1,000,000 is more than 3,650 days (ten years) of history"),
        (["--days", "1", "--end", "9999-12-31T00:00:01Z"],
         "--end 9999-12-31T00:00:01Z is after 9999-12-31, the latest end"),
        (["--days", "1", "--end", "0001-01-01T00:00:00+05:00"],
         "--end: '0001-01-01T00:00:00+05:00' is outside 0001-01-01 … 9999-12-31 in UTC"),
    ],
)  # fmt: skip
def test_generate_refuses_rows_outside_years_1_to_9999_and_absurd_spans(
    tmp_path: Path, args: list[str], message: str
) -> None:
    """Refused before the database is opened: such rows were written, as year 0, and broke
    every later reader of the database (`events replay`: `year 0 is out of range`)."""
    from typer.testing import CliRunner

    from tutormax_cli.cli.app import app

    db = tmp_path / "t.db"
    cmd = ["--database-url", f"sqlite:///{db}", "sample", "generate", "--tutors", "1", *args]
    result = CliRunner().invoke(app, cmd)
    assert (result.exit_code, result.stderr) == (2, f"Error: {message}\n")
    assert not db.exists()


@pytest.mark.parametrize("end", [datetime(5, 1, 2, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC)])
def test_the_earliest_and_latest_end_accepted_keep_every_row_in_range(end: datetime) -> None:
    from tutormax_cli.instants import EARLIEST_TIME, LATEST_TIME
    from tutormax_cli.sample import check_span

    check_span(1, end)  # the bound the message above names is accepted
    for name, frame in generate(SampleSpec(tutors=40, days=1, seed=2, end=end)).items():
        for column, dtype in frame.schema.items():
            if dtype == frames.TS and frame[column].drop_nulls().len():
                low, high = frame[column].min(), frame[column].max()
                assert low >= EARLIEST_TIME and high <= LATEST_TIME, (name, column)  # type: ignore[operator]
