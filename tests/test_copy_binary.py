"""`store.copy_binary`: frames COPYed in PostgreSQL's binary format arrive as the same rows as
the CSV COPY of the same frames (the path it replaces), for hand-picked edge cases, random
frames and the sample generator's tables; pairs it does not encode are refused, not guessed."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import polars as pl
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import T
from tutormax_cli.sample import SampleSpec, generate
from tutormax_cli.store import copy_binary
from tutormax_cli.store.copy_binary import HEADER, TRAILER, column_types, encode
from tutormax_cli.store.save import _prepare
from tutormax_cli.store.seed import _copy, _copy_data

pytestmark = pytest.mark.postgres

COLUMNS = (
    "a int2, b int4, c int8, d float8, e float4, f bool, g timestamptz, h timestamp, i date, "
    "j varchar, k text, l jsonb, m json, n varchar[], o text[]"
)
UTC = dt.UTC


@pytest.fixture
def conn(pg_engine: sa.Engine) -> Iterator[sa.Connection]:
    with pg_engine.connect() as connection:
        connection.execute(sa.text(f"CREATE TEMP TABLE bin_t ({COLUMNS})"))
        connection.execute(sa.text(f"CREATE TEMP TABLE csv_t ({COLUMNS})"))
        yield connection
        connection.rollback()


def _csv(df: pl.DataFrame, table: sa.Table) -> bytes:
    """The CSV the COPY paths send without this module: `store.save._prepare` of the frame."""
    return _prepare(df, table, pg=True).write_csv(include_header=False).encode()


def _both(conn: sa.Connection, df: pl.DataFrame) -> None:
    """COPY `df` into `bin_t` in binary and into `csv_t` as CSV."""
    data = encode(df, column_types(conn, "bin_t"))
    assert data is not None
    conn.execute(sa.text("TRUNCATE bin_t, csv_t"))
    _copy(conn, "bin_t", df.columns, ("binary", data))
    _copy(conn, "csv_t", df.columns, ("csv", _csv(df, sa.Table("csv_t", sa.MetaData()))))


def _differences(conn: sa.Connection, a: str, b: str, columns: str = "*") -> int:
    """Rows of either table the other lacks (a multiset difference, both ways)."""
    return int(
        conn.execute(
            sa.text(
                f"SELECT count(*) FROM ((SELECT {columns} FROM {a} EXCEPT ALL SELECT {columns} "
                f"FROM {b}) UNION ALL (SELECT {columns} FROM {b} EXCEPT ALL "
                f"SELECT {columns} FROM {a})) d"
            )
        ).scalar_one()
    )


COMPARABLE = "a, b, c, d, e, f, g, h, i, j, k, l, m::text, n, o"
"""Every column of the test tables; json has no equality operator, so its text is compared."""


EDGES = pl.DataFrame(
    {
        "a": [0, -(2**15), 2**15 - 1, None],
        "b": [0, -(2**31), 2**31 - 1, None],
        "c": [0, -(2**63), 2**63 - 1, None],
        "d": [0.0, -1.5e300, 5e-324, None],
        "e": [0.25, -3.5, 1e30, None],
        "f": [True, False, None, True],
        "g": [
            dt.datetime(2000, 1, 1, tzinfo=UTC),
            dt.datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
            dt.datetime(2026, 9, 1, 12, 30, 0, 1, tzinfo=UTC),
            None,
        ],
        "h": [dt.datetime(1999, 12, 31, 23, 59, 59), dt.datetime(2100, 2, 28), None, None],
        "i": [dt.date(2000, 1, 1), dt.date(1970, 1, 1), dt.date(1999, 12, 31), None],
        "j": ["", "é ñ 漢字 🎓", 'quote " comma , backslash \\ newline \n tab \t', None],
        "k": ["x" * 100_000, "", None, "NULL"],
        "l": ['{"a": [1, 2, {"b": null}]}', "[]", None, '"text é"'],
        "m": ['{"b": 1,  "a": 2}', "1", None, "null"],
        "n": [["a", "b b", 'c"d', "e\\f", "{g}", "h,i"], [], None, ["é"]],
        "o": [["only"], None, [], ["", "NULL", "x y"]],
    },
    schema_overrides={
        "a": pl.Int16,
        "b": pl.Int32,
        "c": pl.Int64,
        "e": pl.Float32,
        "g": pl.Datetime("us", "UTC"),
        "h": pl.Datetime("us"),
    },
)


def test_edge_values_arrive_as_csv_copies_them(conn: sa.Connection) -> None:
    _both(conn, EDGES)
    assert _differences(conn, "bin_t", "csv_t", COMPARABLE) == 0
    got = conn.execute(sa.text("SELECT a, c, g, h, i, j, k, l, m::text, n, o FROM bin_t")).all()
    assert got[0] == (
        0, 0, dt.datetime(2000, 1, 1, tzinfo=UTC), dt.datetime(1999, 12, 31, 23, 59, 59),
        dt.date(2000, 1, 1), "", "x" * 100_000, {"a": [1, 2, {"b": None}]}, '{"b": 1,  "a": 2}',
        ["a", "b b", 'c"d', "e\\f", "{g}", "h,i"], ["only"],
    )  # fmt: skip
    assert got[1][:3] == (-(2**15), -(2**63), dt.datetime(1969, 12, 31, 23, 59, 59, 999_999, UTC))
    assert got[1][9:] == ([], None)
    assert got[2][5:7] == ('quote " comma , backslash \\ newline \n tab \t', None)
    assert got[2][9:] == (None, [])
    assert got[3] == (None,) * 6 + ("NULL", "text é", "null", ["é"], ["", "NULL", "x y"])


def test_chunks_join_into_the_same_bytes(
    conn: sa.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    types = column_types(conn, "bin_t")
    whole = encode(EDGES, types)
    monkeypatch.setattr(copy_binary, "CHUNK_ROWS", 3)
    assert encode(EDGES, types) == whole
    monkeypatch.setattr(copy_binary, "CHUNK_ROWS", 1)
    assert encode(EDGES, types) == whole


def test_an_empty_frame_is_header_and_trailer(conn: sa.Connection) -> None:
    assert encode(EDGES.clear(), column_types(conn, "bin_t")) == HEADER + TRAILER


@pytest.mark.parametrize(
    ("column", "values", "dtype"),
    [
        ("b", ["1"], pl.String),  # text into an integer: PostgreSQL parses it (CSV)
        ("a", [2**15], pl.Int64),  # out of int2's range: CSV lets PostgreSQL name the value
        ("b", [-(2**31) - 1], pl.Int64),
        ("g", [dt.date(2026, 1, 1)], pl.Date),  # a date into timestamptz: midnight where?
        ("i", [dt.datetime(2026, 1, 1)], pl.Datetime("us")),
        ("l", [{"x": 1}], pl.Struct({"x": pl.Int64})),
        ("n", [[1]], pl.List(pl.Int64)),
        ("f", [1], pl.Int64),
        ("e", [1e300], pl.Float64),  # wider than float4: CSV lets PostgreSQL refuse it
        ("d", [0.1], pl.Float32),  # CSV stores 0.1, a widened float32 0.10000000149011612
        ("n", [["a", None, "b"]], pl.List(pl.String)),  # the CSV literal drops NULL elements
        ("o", [[None]], pl.List(pl.Null)),
    ],
)
def test_pairs_it_does_not_encode_are_refused(
    conn: sa.Connection, column: str, values: list[Any], dtype: Any
) -> None:
    df = pl.DataFrame({column: values}, schema={column: dtype})
    assert encode(df, column_types(conn, "bin_t")) is None


def test_a_column_the_table_lacks_is_refused(conn: sa.Connection) -> None:
    assert encode(pl.DataFrame({"zz": [1]}), column_types(conn, "bin_t")) is None


_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"))
_stamp = st.datetimes(dt.datetime(1900, 1, 1), dt.datetime(2200, 1, 1))


@st.composite
def _frames(draw: st.DrawFn) -> pl.DataFrame:
    rows = draw(st.integers(0, 12))

    def col(values: st.SearchStrategy[Any]) -> list[Any]:
        return draw(st.lists(st.one_of(st.none(), values), min_size=rows, max_size=rows))

    return pl.DataFrame(
        {
            "a": col(st.integers(-(2**15), 2**15 - 1)),
            "b": col(st.integers(-(2**31), 2**31 - 1)),
            "c": col(st.integers(-(2**63), 2**63 - 1)),
            "d": col(st.floats(allow_nan=False)),
            "e": col(st.floats(allow_nan=False, width=32)),
            "f": col(st.booleans()),
            "g": col(_stamp.map(lambda v: v.replace(tzinfo=UTC))),
            "h": col(_stamp),
            "i": col(st.dates(dt.date(1900, 1, 1), dt.date(2200, 1, 1))),
            "j": col(_text),
            "l": col(st.one_of(st.integers(), _text).map(lambda v: json.dumps({"v": v}))),
            "n": col(st.lists(_text, max_size=4)),
            "o": col(st.lists(_text, max_size=3)),
        },
        schema={
            "a": pl.Int16,
            "b": pl.Int32,
            "c": pl.Int64,
            "d": pl.Float64,
            "e": pl.Float32,
            "f": pl.Boolean,
            "g": pl.Datetime("us", "UTC"),
            "h": pl.Datetime("us"),
            "i": pl.Date,
            "j": pl.String,
            "l": pl.String,
            "n": pl.List(pl.String),
            "o": pl.List(pl.String),
        },
    )


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(df=_frames())
def test_random_frames_arrive_as_csv_copies_them(conn: sa.Connection, df: pl.DataFrame) -> None:
    _both(conn, df)
    assert _differences(conn, "bin_t", "csv_t", COMPARABLE) == 0
    assert conn.execute(sa.text("SELECT count(*) FROM bin_t")).scalar_one() == df.height


def test_the_sample_tables_encode_and_arrive_as_csv_copies_them(pg_engine: sa.Engine) -> None:
    """Every sample table goes in binary (none falls back to CSV), with the same rows."""
    tables = generate(SampleSpec(tutors=8, days=30, seed=3, end=T))
    with pg_engine.connect() as conn:
        for name, df in tables.items():
            conn.execute(sa.text(f'CREATE TEMP TABLE "bin_{name}" (LIKE "{name}")'))
            conn.execute(sa.text(f'CREATE TEMP TABLE "csv_{name}" (LIKE "{name}")'))
            binary = _copy_data(name, df, column_types(conn, name))
            assert binary[0] == "binary", name
            _copy(conn, f"bin_{name}", df.columns, binary)
            csv = _copy_data(name, df, {})  # no column types: the CSV `sample generate` sent
            assert csv[0] == "csv", name
            _copy(conn, f"csv_{name}", df.columns, csv)
            columns = ", ".join(f'"{c}"' for c in df.columns)
            assert _differences(conn, f'"bin_{name}"', f'"csv_{name}"', columns) == 0, name
            count = f'SELECT count(*) FROM "bin_{name}"'
            assert conn.execute(sa.text(count)).scalar_one() == df.height > 0
        conn.rollback()
