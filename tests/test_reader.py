"""`store.reader`: the quick views' PostgreSQL connection without SQLAlchemy reads what the
SQLAlchemy connection reads, checks the schema as `require_schema` does, and fails in one line
without a password."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from tests.conftest import _empty_tables
from tests.test_cli_startup import load_tutors_with_metrics
from tutormax_cli import reports
from tutormax_cli.errors import DatabaseError, SchemaNotReady
from tutormax_cli.metrics.tiers import load_tiers
from tutormax_cli.store import known, query
from tutormax_cli.store.reader import PgReader, open_reader, pyformat, rows, scalar
from tutormax_cli.store.revision import SCHEMA_REVISION, VERSION_TABLE


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("SELECT 1 WHERE a = :a AND b IN :bs", "SELECT 1 WHERE a = %(a)s AND b IN %(bs)s"),
        (
            "SELECT d::text, x::date FROM t WHERE d = :d",
            "SELECT d::text, x::date FROM t WHERE d = %(d)s",
        ),
        (
            "SELECT to_char(c, 'YYYY-MM-DD HH24:MI:SS.US') WHERE n > :n",
            "SELECT to_char(c, 'YYYY-MM-DD HH24:MI:SS.US') WHERE n > %(n)s",
        ),
        ("SELECT 'a%b' WHERE x LIKE :p", "SELECT 'a%%b' WHERE x LIKE %(p)s"),
        ("SELECT CAST(:ids AS varchar[])", "SELECT CAST(%(ids)s AS varchar[])"),
    ],
)
def test_parameters_are_translated_as_sqlalchemy_finds_them(text: str, want: str) -> None:
    assert pyformat(text) == want
    found = sorted(sa.text(text).compile().params)  # SQLAlchemy's own reading of the text
    assert found == sorted(p.split(")")[0] for p in want.split("%(")[1:])


@pytest.fixture
def pg_url(pg_engine: sa.Engine, pg_database_url: str) -> str:
    """The test run's PostgreSQL database, migrated and empty (the reader is PostgreSQL's)."""
    _empty_tables(pg_engine)
    return pg_database_url


@pytest.fixture
def pg_loaded(pg_engine: sa.Engine, pg_url: str) -> tuple[sa.Engine, str]:
    """`test_cli_startup.loaded`'s tutors and metric rows, on PostgreSQL."""
    return pg_engine, load_tutors_with_metrics(pg_engine)


@pytest.fixture
def reader(pg_url: str) -> Iterator[PgReader]:
    with open_reader(pg_url) as conn:
        yield conn


def _doc(value: Any) -> str:
    return json.dumps(value, default=lambda v: v.isoformat(), sort_keys=True)


def test_reader_reads_what_sqlalchemy_reads(pg_loaded: tuple[sa.Engine, str], pg_url: str) -> None:
    """Every read of the quick views, on both connections: the same values, types and zones."""
    engine, tutor = pg_loaded
    rules = load_tiers(None)
    now = datetime.now(UTC)

    def reads(conn: Any) -> list[Any]:
        return [
            query.latest_for_tutor_dicts(conn, tutor),
            query.latest_for_tutors_dicts(conn, [tutor, "NOPE"]),
            query.history_for_tutor_dicts(conn, tutor, 30),
            query.leaderboard_dicts(conn, "30day", limit=7),
            query.leaderboard_dicts(conn, "7day", tiers=["Strong", "Unheard Of"], limit=50),
            query.tier_counts(conn, "30day"),
            query.newest_metric_date(conn, "30day"),
            query.active_freshness_dicts(conn),
            sorted(query.known_tutors(conn, [tutor, "NOPE"])),
            known.unknown_tutors(conn, [tutor, "NOPE"]),
            known.suggestions(conn, [tutor.lower()]),
            reports.tutor_report(conn, tutor, rules, now, explain=True),
            reports.tier_report(conn, "30day"),
            query.latest_in_window(conn, "30day").to_dicts(),
        ]

    with engine.connect() as conn:
        want = reads(conn)
    with open_reader(pg_url) as pg:
        got = reads(pg)
    assert want[0], "the fixture has metric rows"
    for g, w in zip(got, want, strict=True):
        assert g == w
        assert _doc(g) == _doc(w)
    assert got[10] == {tutor.lower(): tutor}


def test_reader_is_read_only(reader: PgReader) -> None:
    import psycopg2

    with pytest.raises(psycopg2.errors.ReadOnlySqlTransaction):
        rows(reader, "DELETE FROM tutors")


def test_empty_list_is_refused_not_sent(reader: PgReader) -> None:
    with pytest.raises(ValueError, match="empty list for IN :ids"):
        rows(reader, "SELECT 1 WHERE 'a' IN :ids", {"ids": []}, expanding=("ids",))
    assert scalar(reader, "SELECT 1 WHERE false") is None


def test_unreachable_server_is_one_line_without_password() -> None:
    with pytest.raises(DatabaseError) as raised:
        open_reader("postgresql+psycopg2://ops:s3cret@127.0.0.1:1/nowhere")
    text = str(raised.value)
    assert text.startswith("cannot connect to postgresql://ops:***@127.0.0.1:1/nowhere: ")
    assert "s3cret" not in text and "\n" not in text


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://ops:s3cret@[::1/nowhere",  # libpq quotes the URI it cannot parse
        "postgresql://ops:s3cret@127.0.0.1:1/nowhere?nope=1",
        "postgresql://ops:s3cret@127.0.0.1:port/nowhere",
    ],
)
def test_a_uri_libpq_refuses_is_one_line_without_password(url: str) -> None:
    with pytest.raises(DatabaseError) as raised:
        open_reader(url)
    text = str(raised.value)
    assert text.startswith("cannot connect to postgresql://ops:***@")
    assert "s3cret" not in text and "\n" not in text


def test_schema_is_checked_as_require_schema_checks_it(pg_url: str) -> None:
    """No schema, another revision: the messages `store.db.require_schema` gives."""
    base = sa.make_url(pg_url)
    admin = sa.create_engine(
        base.set(drivername="postgresql+psycopg2"), isolation_level="AUTOCOMMIT"
    )
    name = f"{base.database}_bare"
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    bare = base.set(database=name).render_as_string(hide_password=False)
    try:
        with pytest.raises(
            SchemaNotReady, match=r"has no tutormax schema: run `tutormax db init`$"
        ):
            open_reader(bare)
        other = sa.create_engine(sa.make_url(bare).set(drivername="postgresql+psycopg2"))
        with other.begin() as conn:
            conn.execute(sa.text(f"CREATE TABLE {VERSION_TABLE} (version_num varchar(32))"))
            conn.execute(sa.text(f"INSERT INTO {VERSION_TABLE} VALUES ('0001')"))
        with pytest.raises(SchemaNotReady) as raised:
            open_reader(bare)
        assert str(raised.value).endswith(
            f"is at schema revision 0001, this tutormax needs {SCHEMA_REVISION}: "
            "run `tutormax db init`"
        )
        # at the revision but without its tables: the status document says the database
        # cannot be read (a psycopg2 error, caught without SQLAlchemy's classes)
        with other.begin() as conn:
            conn.execute(
                sa.text(f"UPDATE {VERSION_TABLE} SET version_num = :r"), {"r": SCHEMA_REVISION}
            )
        other.dispose()
        doc = reports.status_report(
            lambda: redis.Redis(host="127.0.0.1", port=1),
            lambda: open_reader(bare),
            datetime.now(UTC),
        )
        assert not doc["healthy"] and doc["freshness"] is None
        assert doc["problems"][-1].startswith("database unavailable: relation ")
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
