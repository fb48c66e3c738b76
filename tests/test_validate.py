"""The pipeline stages without services: readers, validate, enrich, envelopes.

Every rule of issue #6 has a case; hypothesis throws arbitrary rows and stream entries at the
stages and checks that nothing crashes and no row is lost.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from unittest import mock

import polars as pl
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from tutormax_cli.contract import INPUT_KEYS, input_schemas
from tutormax_cli.pipeline import publish
from tutormax_cli.pipeline.enrich import enrich
from tutormax_cli.pipeline.publish import data_json, envelope_messages, session_data
from tutormax_cli.pipeline.readers import (
    ERROR,
    LINE,
    InputError,
    _read_csv_fast,
    _read_csv_python,
    as_text,
    envelopes_frame,
    read_csv,
    read_jsonl,
    records_frame,
)
from tutormax_cli.pipeline.validate import (
    StaticReferences,
    parse_timestamps,
    specs,
    table_name,
    validate,
)
from tutormax_cli.stream import events

NOW = datetime(2026, 3, 3, tzinfo=UTC)
REFS = StaticReferences(
    {"tutors": ["T1", "T2"], "students": ["S1", "S2"], "sessions": ["SES1", "SES2"]}
)


def session(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "session_id": "SES1",
        "tutor_id": "T1",
        "student_id": "S1",
        "session_number": "1",
        "scheduled_start": "2026-03-01T10:00:00Z",
        "actual_start": "2026-03-01T10:05:00Z",
        "duration_minutes": "60",
        "subject": "Algebra",
        "session_type": "1-on-1",
        "tutor_initiated_reschedule": "false",
        "no_show": "false",
        "late_start_minutes": "5",
        "engagement_score": "0.8",
        "learning_objectives_met": "true",
        "technical_issues": "false",
    }
    row.update(changes)
    return row


def feedback(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "feedback_id": "FB1",
        "session_id": "SES1",
        "student_id": "S1",
        "tutor_id": "T1",
        "overall_rating": "5",
        "is_first_session": "true",
        "patience_rating": "4",
        "improvement_areas": '["pacing"]',
        "submitted_at": "2026-03-01T12:00:00+01:00",
    }
    row.update(changes)
    return row


def tutor(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "tutor_id": "T1",
        "name": "Ada",
        "email": "ada@example.com",
        "onboarding_date": "2025-01-01",
        "status": "active",
        "subjects": "{Algebra,Geometry}",
    }
    row.update(changes)
    return row


def run(table: str, *rows: dict[str, Any], refs: StaticReferences = REFS) -> Any:
    return validate(table, records_frame(list(rows)), refs, now=NOW)


def reasons(table: str, *rows: dict[str, Any], refs: StaticReferences = REFS) -> list[str]:
    _, rejects = run(table, *rows, refs=refs)
    return list(rejects["reason"])


def test_a_good_session_is_typed_like_the_sample_frames() -> None:
    valid, rejects = run("sessions", session())
    assert rejects.is_empty()
    schema = input_schemas()["sessions"]
    assert {c: valid.schema[c] for c in valid.columns if c in schema} == {
        c: schema[c] for c in valid.columns if c in schema
    }
    assert valid["actual_start"][0] == datetime(2026, 3, 1, 10, 5, tzinfo=UTC)
    assert valid["_line"].to_list() == [1]


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"engagement_score": "1.7"}, "engagement_score: 1.7 is not between 0 and 1"),
        ({"engagement_score": "nan"}, "engagement_score: 'nan' is not a finite number"),
        ({"late_start_minutes": "75"}, "late_start_minutes: 75 is not between 0 and 60"),
        (
            {"late_start_minutes": "50", "duration_minutes": "30"},
            "late_start_minutes: 50 is above duration_minutes (30)",
        ),
        ({"duration_minutes": "301"}, "duration_minutes: 301 is not between 0 and 300"),
        (
            {"session_type": "masterclass"},
            "session_type: 'masterclass' is not one of 1-on-1, group, workshop",
        ),
        (
            {"scheduled_start": "2026-04-10T00:00:00Z"},
            "scheduled_start: 2026-04-10T00:00:00Z is more than 30 days ahead",
        ),
        ({"no_show": "yes"}, "actual_start: must be empty on a no-show session"),
        ({"tutor_id": None}, "tutor_id: missing"),
        ({"tutor_id": "  "}, "tutor_id: missing"),
        ({"tutor_id": "T" * 51}, "tutor_id: longer than 50 characters (51)"),
        ({"tutor_id": "T\x001"}, "tutor_id: has non-printable characters"),
        ({"tutor_id": "T9"}, "tutor_id: unknown tutor 'T9'"),
        ({"student_id": "S9"}, "student_id: unknown student 'S9'"),
        ({"scheduled_start": "tomorrow"}, "scheduled_start: 'tomorrow' is not an ISO-8601 time"),
        ({"duration_minutes": "-30"}, "duration_minutes: -30 is not between 0 and 300"),
        ({"duration_minutes": "sixty"}, "duration_minutes: 'sixty' is not an integer"),
        ({"session_number": "0"}, "session_number: must be ≥ 1"),
        ({"session_number": "3000000000"}, "session_number: 3000000000 is out of range"),
        (
            {"no_show": "maybe"},
            "no_show: 'maybe' is not a boolean (true/false, 1/0, yes/no)",
        ),
    ],
)
def test_each_session_rule_rejects_with_its_reason(changes: dict[str, Any], reason: str) -> None:
    assert reasons("sessions", session(**changes)) == [reason]


def test_several_problems_are_all_named() -> None:
    (reason,) = reasons("sessions", session(engagement_score="2", subject=None))
    assert reason == "subject: missing; engagement_score: 2.0 is not between 0 and 1"


@pytest.mark.parametrize(
    "value",
    [
        "2026-03-01T10:00:00Z",
        "2026-03-01 10:00:00+00:00",
        "2026-03-01T11:30:00+01:30",
        "2026-03-01T05:00:00-0500",
        "2026-03-01T10:00:00.000000",
        "2026-03-01T10:00",
        "2026-03-01T12:00+02:00",
        " 2026-03-01t10:00:00z ",
    ],
)
def test_timestamps_with_an_offset_or_as_utc(value: str) -> None:
    parsed = parse_timestamps(pl.Series([value]))
    assert parsed.to_list() == [datetime(2026, 3, 1, 10, tzinfo=UTC)]


_GOOD_ROWS: dict[str, dict[str, Any]] = {
    "tutors": tutor(),
    "students": {"student_id": "S1", "name": "Bo", "age": "12"},
    "sessions": session(),
    "student_feedback": feedback(),
    "tutor_events": {"event_id": "E1", "tutor_id": "T1", "event_type": "login",
                     "event_timestamp": "2026-03-01T10:00:00Z"},
}  # fmt: skip
_TIME_COLUMNS = [(t, s.name) for t in INPUT_KEYS for s in specs(t) if s.kind == "ts"]
_BEFORE = "is before 0001-01-01T00:00:00Z (UTC), the earliest time tutormax can read back"
_AFTER = "is after 9999-12-31T23:59:59.999999Z (UTC), the latest time tutormax can read back"


def test_every_input_table_has_a_good_row_and_its_time_columns_are_covered() -> None:
    """The cases below cover every timestamp column: a table or column added to the contract
    is covered too, or this fails for want of a good row."""
    assert set(_GOOD_ROWS) == set(INPUT_KEYS)
    assert {t for t, _ in _TIME_COLUMNS} == set(INPUT_KEYS)
    for table, row in _GOOD_ROWS.items():
        assert reasons(table, row) == [], table


@pytest.mark.parametrize(("table", "column"), _TIME_COLUMNS)
@pytest.mark.parametrize(
    ("text", "reason"),
    [
        # year 1 in local time, year 0 in UTC: polars and PostgreSQL store it, Python cannot
        # read it back (it broke `events replay` for the whole database)
        ("0001-01-01T00:00:00+05:00", _BEFORE),
        ("-0001-06-01", _BEFORE),
        ("0000-12-31T23:00:00Z", _BEFORE),
        ("9999-12-31T23:59:59-05:00", _AFTER),
    ],
)
def test_times_outside_years_1_to_9999_in_utc_are_rejected(
    table: str, column: str, text: str, reason: str
) -> None:
    row = {**_GOOD_ROWS[table], column: text}
    assert reasons(table, row) == [f"{column}: '{text}' {reason}"]


@pytest.mark.parametrize(("table", "column"), _TIME_COLUMNS)
def test_the_first_and_last_instants_python_holds_are_accepted(table: str, column: str) -> None:
    early = {**_GOOD_ROWS[table], column: "0001-01-01T05:00:00+05:00"}
    valid, rejects = run(table, early)
    assert rejects.is_empty(), rejects["reason"].to_list()
    assert valid[column].to_list() == [datetime(1, 1, 1, tzinfo=UTC)]
    if column != "scheduled_start":  # no later than 30 days ahead, a rule of its own
        late = {**_GOOD_ROWS[table], column: "9999-12-31T23:59:59.999999Z"}
        valid, rejects = run(table, late)
        assert rejects.is_empty(), rejects["reason"].to_list()
        assert valid[column].to_list() == [datetime.max.replace(tzinfo=UTC)]


def test_a_bare_date_is_midnight_utc_and_junk_is_null() -> None:
    parsed = parse_timestamps(pl.Series(["2026-03-01", "03/01/2026", None, "2026-02-30"]))
    assert parsed.to_list() == [datetime(2026, 3, 1, tzinfo=UTC), None, None, None]


@pytest.mark.parametrize(
    ("text", "value"),
    [("true", True), ("T", True), ("1", True), ("YES", True), ("f", False), ("0", False)],
)
def test_booleans(text: str, value: bool) -> None:
    valid, _ = run("sessions", session(technical_issues=text))
    assert valid["technical_issues"].to_list() == [value]


def test_integral_floats_are_integers() -> None:
    valid, _ = run("sessions", session(duration_minutes="60.0"))
    assert valid["duration_minutes"].to_list() == [60]
    assert reasons("sessions", session(duration_minutes="60.5")) == [
        "duration_minutes: '60.5' is not an integer"
    ]


def test_feedback_rules() -> None:
    assert reasons("feedback", feedback(overall_rating="6")) == [
        "overall_rating: 6 is not between 1 and 5"
    ]
    assert reasons("feedback", feedback(patience_rating="0")) == [
        "patience_rating: 0 is not between 1 and 5"
    ]
    assert reasons("feedback", feedback(session_id="SES9")) == [
        "session_id: unknown session 'SES9'"
    ]
    valid, _ = run("feedback", feedback(patience_rating=None))
    assert valid["patience_rating"].to_list() == [None]
    assert valid["submitted_at"].to_list() == [datetime(2026, 3, 1, 11, tzinfo=UTC)]


@pytest.mark.parametrize(
    ("text", "items"),
    [
        ('["a", "b c"]', ["a", "b c"]),
        ("{a,b}", ["a", "b"]),
        ('{"a,b","c\\"d"}', ["a,b", 'c"d']),
        ("{}", []),
        ("[]", []),
    ],
)
def test_list_columns_accept_json_and_postgres_literals(text: str, items: list[str]) -> None:
    valid, rejects = run("feedback", feedback(improvement_areas=text))
    assert rejects.is_empty()
    assert valid["improvement_areas"].to_list() == [items]


@pytest.mark.parametrize("text", ["[1, 2]", "{a,NULL}", '{"a', "a,b", "[", "{{a}}"])
def test_bad_lists_are_rejected(text: str) -> None:
    (reason,) = reasons("feedback", feedback(improvement_areas=text))
    assert reason.startswith("improvement_areas: ")


def test_event_metadata_must_be_json() -> None:
    row = {
        "event_id": "E1",
        "tutor_id": "T1",
        "event_type": "login",
        "event_timestamp": "2026-03-01T10:00:00Z",
    }
    valid, _ = run("events", {**row, "metadata": {"response_time_minutes": 3}})
    assert json.loads(valid["metadata"][0]) == {"response_time_minutes": 3}
    assert reasons("events", {**row, "metadata": "{not json"}) == ["metadata: is not valid JSON"]


def test_tutor_rules_and_unique_email() -> None:
    assert reasons("tutors", tutor(status="retired")) == [
        "status: 'retired' is not one of active, inactive, churned"
    ]
    both = reasons("tutors", tutor(), tutor(tutor_id="T2"))
    assert both == ["email: 'ada@example.com' is also on line 2 (tutor_id 'T2')"]
    held = StaticReferences(unique={("tutors", "email"): {"ada@example.com": "T7"}})
    assert reasons("tutors", tutor(), refs=held) == [
        "email: 'ada@example.com' already belongs to tutor_id 'T7'"
    ]


def test_duplicate_keys_keep_the_last_row() -> None:
    valid, rejects = run(
        "sessions", session(subject="A"), session(), session(session_id="SES2"), session()
    )
    assert rejects["reason"].to_list() == [
        "session_id: 'SES1' again on line 4 with different values (the later row is kept)"
    ]
    assert valid["_line"].to_list() == [2, 3, 4]  # the identical repeat is harmless


def test_typed_frames_go_through_the_same_checks() -> None:
    frame = pl.DataFrame(
        {
            **{k: [v] for k, v in session().items()},
            "scheduled_start": [datetime(2026, 3, 1, 10, tzinfo=UTC)],
            "duration_minutes": [60],
            "no_show": [False],
            "engagement_score": [0.8],
        }
    )
    valid, rejects = validate("sessions", frame, REFS, now=NOW)
    assert rejects.is_empty() and valid.height == 1


def test_enrich_derives_analyst_fields() -> None:
    valid, _ = run(
        "sessions",
        session(scheduled_start="2026-02-28T20:00:00Z", late_start_minutes="11"),
        session(session_id="SES2", scheduled_start="2026-03-02T07:00:00Z"),
    )
    out = enrich("sessions", valid)
    assert out.select("is_weekend", "time_of_day", "is_late_start").rows() == [
        (True, "evening", True),
        (False, "morning", False),
    ]
    fb, _ = run(
        "feedback", feedback(), feedback(feedback_id="FB2", session_id="SES2", overall_rating="2")
    )
    assert enrich("feedback", fb).select("is_positive", "is_poor").rows() == [
        (True, False),
        (False, True),
    ]


def test_published_envelopes_decode_and_carry_json_native_data() -> None:
    valid, _ = run("sessions", session())
    (data,) = session_data(enrich("sessions", valid))
    assert data["scheduled_start"] == "2026-03-01T10:00:00+00:00"
    assert data["is_late_start"] is False and "updated_at" not in data
    (body,) = data_json(enrich("sessions", valid))
    assert body == json.dumps(data, sort_keys=True)
    (message,) = envelope_messages([body], channel="tutormax:sessions:enrichment")
    decoded = events.decode({"message": message})
    assert decoded == events.SessionEvent("T1", "SES1", "envelope")
    doc = json.loads(message)
    assert doc["checksum"] == events.checksum(data) and doc["data"] == data


def test_csv_reader_keeps_lines_and_rejects_ragged_rows() -> None:
    data = b'a,b\n1,"x\ny"\n\n2\n3,4,5\n6,7\n'
    df = read_csv(data)
    assert df[LINE].to_list() == [2, 5, 6, 7]
    assert df[ERROR].to_list() == [
        None,
        "row: has 1 fields, the header has 2",
        "row: has 3 fields, the header has 2",
        None,
    ]
    fast = read_csv(b"a,b\n1,2\n3\n")
    assert fast[ERROR].to_list() == [None, "row: has 1 fields, the header has 2"]


_CSV_CELL = st.text(alphabet=st.sampled_from(list('ab ,"\r\n\té')), max_size=6)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.lists(_CSV_CELL, min_size=1, max_size=4), min_size=1, max_size=5),
    st.sampled_from(["\n", "\r\n"]),
)
def test_the_fast_csv_path_reads_what_python_reads(rows: list[list[str]], newline: str) -> None:
    text = newline.join(",".join(r) for r in rows) + newline
    try:
        fast = _read_csv_fast(text.encode(), text, "x")
    except InputError:
        return  # the header is refused either way
    if fast is not None:
        assert_frame_equal(fast, _read_csv_python(text, "x"))


def test_jsonl_reader_rejects_bad_lines() -> None:
    df = read_jsonl(b'{"a": 1}\n\nnot json\n[1]\n{"a": [1, 2], "b": true}\n')
    assert df[LINE].to_list() == [1, 3, 4, 5]
    assert df["a"].to_list() == ["1", None, None, "[1, 2]"]
    assert df["b"].to_list() == [None, None, None, "true"]
    assert df[ERROR][1].startswith("row: not valid JSON")
    assert df[ERROR][2] == "row: not a JSON object (list)"


# -- properties --------------------------------------------------------------------------------

_TEXT = st.one_of(
    st.none(),
    st.text(max_size=60),
    st.sampled_from(["", " ", "0", "-1", "61", "1e309", "nan", "true", "2026-03-01T10:00:00Z"]),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)


def _rows(table: str) -> st.SearchStrategy[list[dict[str, Any]]]:
    names = [s.name for s in specs(table_name(table))]
    base = {"sessions": session, "feedback": feedback, "tutors": tutor}[table]()
    row = st.fixed_dictionaries(
        {},
        optional={
            name: st.one_of(st.just(base.get(name)), _TEXT, _JSON) for name in [*names, "extra"]
        },
    ).map(lambda changes: {**base, **changes})
    return st.lists(st.one_of(row, _JSON), max_size=12)


def _check_partition(df: pl.DataFrame, valid: pl.DataFrame, rejects: pl.DataFrame) -> None:
    lines = sorted(valid[LINE].to_list() + rejects[LINE].to_list())
    assert lines == sorted(df[LINE].to_list())  # every row in exactly one of the two
    assert rejects["reason"].null_count() == 0
    assert all(r.strip() for r in rejects["reason"].to_list())


@pytest.mark.parametrize("table", ["sessions", "feedback", "tutors"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_arbitrary_rows_never_crash_and_are_never_lost(table: str, data: st.DataObject) -> None:
    rows = data.draw(_rows(table))
    df = records_frame(rows)
    valid, rejects = validate(table, df, REFS, now=NOW)
    _check_partition(df, valid, rejects)
    enriched = enrich(table, valid)
    if table == "sessions" and valid.height:
        assert valid["engagement_score"].drop_nulls().is_between(0, 1).all()
        assert (valid["late_start_minutes"] <= valid["duration_minutes"]).all()
        assert not (valid["no_show"] & valid["actual_start"].is_not_null()).any()
        objects = session_data(enriched)
        for data_obj in objects:
            json.dumps(data_obj, allow_nan=False)  # JSON-native, finite
        dumped = [json.dumps(d, sort_keys=True) for d in objects]
        assert data_json(enriched) == dumped
        with mock.patch.object(publish, "SMALL_FRAME", 0):  # the column-by-column build too
            assert data_json(enriched) == dumped


_FIELD = st.one_of(st.binary(max_size=30), st.text(max_size=30))


def _entry_fields() -> st.SearchStrategy[dict[Any, Any]]:
    good = st.builds(
        lambda changes: {
            "message": events.envelope(
                {k: v for k, v in {**session(), **changes}.items() if v is not None},
                channel="tutormax:sessions",
            )["message"]
        },
        st.dictionaries(st.sampled_from(list(session())), _TEXT, max_size=3),
    )
    tampered = good.map(lambda f: {"message": f["message"].replace('"T1"', '"T2"', 1)})
    junk = st.dictionaries(st.sampled_from(["message", b"message", "tutor_id"]), _FIELD)
    text = st.builds(
        lambda doc: {"message": json.dumps(doc)},
        st.dictionaries(st.sampled_from(["data", "checksum", "id"]), _JSON),
    )
    return st.one_of(good, tampered, junk, text)


@settings(max_examples=50, deadline=None)
@given(st.lists(_entry_fields(), max_size=10))
def test_arbitrary_envelopes_never_crash_and_are_never_lost(fields: list[dict[Any, Any]]) -> None:
    entries: list[tuple[bytes | str, dict[Any, Any]]] = [
        (f"{i}-0".encode() if i % 2 else f"{i}-0", f) for i, f in enumerate(fields)
    ]
    df = envelopes_frame(entries)
    assert df.height == len(entries)
    valid, rejects = validate("sessions", df, REFS, now=NOW)
    _check_partition(df, valid, rejects)
    assert sorted(valid["_entry"].to_list() + rejects["_entry"].to_list()) == sorted(
        f"{i}-0" for i in range(len(entries))
    )
    for (_, entry), error in zip(entries, df[ERROR].to_list(), strict=True):
        message = entry.get("message", entry.get(b"message"))
        if isinstance(message, str):  # the worker's decoder judges the same envelope alike
            judged = events.envelope_data(message)
            expected = f"row: {judged.reason}" if isinstance(judged, events.Malformed) else None
            assert error == expected


def test_stream_reader_rejects_envelopes_with_the_worker_s_reasons() -> None:
    """The pipeline's stream reader and the metrics worker decode envelopes with one function:
    each bad envelope is rejected with the reason the worker dead-letters it for."""
    data = {"tutor_id": "T1", "session_id": "S1"}
    bad = {
        "{nope": "message is not JSON (Expecting property name enclosed in double quotes at 1)",
        json.dumps([1]): "envelope has no data object",
        json.dumps({"data": data}): "envelope has no checksum",
        json.dumps({"data": data, "checksum": "00"}): "checksum mismatch",
    }
    good = events.envelope(data, channel="c")["message"]
    entries: list[tuple[bytes | str, dict[Any, Any]]] = [
        (f"{i}-0", {"message": m}) for i, m in enumerate([*bad, good])
    ]
    entries.append(("9-0", {b"message": b"\xff"}))
    entries.append(("10-0", {"tutor_id": "T1"}))
    df = envelopes_frame(entries)
    assert df[ERROR].to_list() == [
        *(f"row: {reason}" for reason in bad.values()),
        None,
        "row: message is not valid UTF-8",
        "row: entry has no message field",
    ]
    for message, reason in bad.items():
        assert events.decode({"message": message}) == events.Malformed(reason)


def test_as_text_round_trips_typed_frames() -> None:
    df = pl.DataFrame(
        {
            "t": [datetime(2026, 3, 1, 10, tzinfo=UTC)],
            "l": [["a", 'b"c']],
            "b": [True],
            "s": [{"k": 1}],
        }
    )
    out = as_text(df).row(0)
    assert out[0] == "2026-03-01T10:00:00+00:00"
    assert json.loads(out[1]) == ["a", 'b"c']
    assert out[2] == "true" and json.loads(out[3]) == {"k": 1}


def test_database_references_cache_a_transactions_lookups(sqlite_url: str) -> None:
    """A value looked up once (found or not) is not asked again through the same cache, and
    primary keys arriving with the batch are not asked at all; the answers do not change."""
    from tutormax_cli.pipeline.validate import DatabaseReferences
    from tutormax_cli.store.db import open_engine
    from tutormax_cli.store.migrate import upgrade

    engine = open_engine(sqlite_url)
    upgrade(engine)
    queries: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *a: queries.append(a[2]))
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO students (student_id, name) VALUES ('T1', 'One')"))
        queries.clear()
        plain = DatabaseReferences(conn).owners("students", "student_id", ["T1", "T9", "T1"])
        cache: dict[tuple[str, str], dict[str, str | None]] = {}
        first = DatabaseReferences(conn, cache=cache).owners("students", "student_id", ["T1", "T9"])
        again = DatabaseReferences(conn, cache=cache).owners("students", "student_id", ["T9", "T1"])
        arriving = DatabaseReferences(conn, {"students": ["T7"]}, cache=cache)
        assert arriving.owners("students", "student_id", ["T7", "T1"]) == {"T7": "T7", "T1": "T1"}
    assert plain == first == again == {"T1": "T1"}
    assert len(queries) == 2  # the uncached lookup and the first cached one
    engine.dispose()
