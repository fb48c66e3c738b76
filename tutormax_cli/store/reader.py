"""SQL text on either connection the views read through: SQLAlchemy's, or psycopg2 alone.

The operator's everyday commands (`show tutor`, `show tutors`, `show tiers`, `status`) read a
handful of rows from PostgreSQL, and importing SQLAlchemy (0.11-0.17 s here) was a third to a
half of each process. On PostgreSQL they read through a `PgReader`: one psycopg2 connection,
opened from the same URL, with the schema checked in the same statement's round trip as
`store.db.require_schema` checks it. Everything else (writes, SQLite, the API) keeps its
SQLAlchemy connection.

`store.query` and `store.known` write each statement once, as SQL text with `:name`
parameters, and run it with `rows`, which takes either connection: the text is SQLAlchemy's
`text()` on one and psycopg2's `%(name)s` form on the other, translated by the same rule
SQLAlchemy applies (a colon after a word character or another colon is not a parameter, so
`'HH24:MI'` and `::date` stay as written).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from types import TracebackType
from typing import TYPE_CHECKING, Any

from tutormax_cli.errors import DatabaseError, SchemaNotReady
from tutormax_cli.settings import redact_url, split_userinfo, unencoded_at
from tutormax_cli.store.driver_errors import first_line
from tutormax_cli.store.revision import VERSION_TABLE, schema_problem

if TYPE_CHECKING:
    from typing import TypeAlias

    import sqlalchemy as sa

    Conn: TypeAlias = "sa.Connection | PgReader"
    """What the reads of `store.query` take."""

_BIND = re.compile(r"(?<![:\w\\]):(\w+)(?!:)")
"""A `:name` parameter, as SQLAlchemy's `TextClause` finds them."""

_DRIVER = re.compile(r"^postgres(?:ql)?(?:\+\w+)?://")

CONNECT_TIMEOUT_SECONDS = 5
"""As `store.db.open_engine` gives psycopg2: an unreachable server fails in seconds."""
APPLICATION_NAME = "tutormax"
"""`pg_stat_activity.application_name` of every tutormax connection."""
SESSION_TIME_ZONE = "SET TIME ZONE 'UTC'"
"""Run on every PostgreSQL connection tutormax opens: timestamps then reach the driver in UTC
whatever the server's or the database's `TimeZone`. Outside UTC the instants validation lets
through at either end of what datetime holds (0001-01-01Z, 9999-12-31T23:59:59.999999Z) come
back as a year psycopg2 cannot read (`… BC`, year 10000), and every day computed from a
timestamp by a cast would be the server's day, not the UTC day the contract means."""


def set_session_time_zone(dbapi_connection: Any, _record: Any = None) -> None:
    """`SESSION_TIME_ZONE` on a new psycopg2 connection, committed (a session setting)."""
    with dbapi_connection.cursor() as cursor:
        cursor.execute(SESSION_TIME_ZONE)
    dbapi_connection.commit()


@lru_cache(maxsize=512)
def pyformat(sql: str) -> str:
    """`sql` with `:name` as `%(name)s` and literal `%` doubled, for psycopg2."""
    return _BIND.sub(r"%(\1)s", sql.replace("%", "%%"))


@dataclass(frozen=True)
class _Dialect:
    name: str


class PgReader:
    """A PostgreSQL connection for reads through psycopg2 alone, in one read-only transaction
    (every statement of a view sees the same snapshot, as on a SQLAlchemy connection).

    `dialect.name` is `"postgresql"`, so code that asks a connection which backend it is on
    asks this one the same way."""

    dialect = _Dialect("postgresql")

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    def rows(
        self, sql: str, params: Mapping[str, Any], expanding: Sequence[str] = ()
    ) -> list[tuple[Any, ...]]:
        """The rows of `sql`; the parameters named in `expanding` are lists for `IN :name`."""
        if expanding:
            params = dict(params)
            for name in expanding:
                values = tuple(params[name])
                if not values:
                    raise ValueError(f"empty list for IN :{name}")
                params[name] = values
        with self.connection.cursor() as cursor:
            cursor.execute(pyformat(sql), params)
            return list(cursor.fetchall())

    def close(self) -> None:
        """End the read-only transaction and the connection."""
        self.connection.close()

    def __enter__(self) -> PgReader:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def is_postgres_url(url: str) -> bool:
    """Whether `url` names PostgreSQL (any driver suffix)."""
    return _DRIVER.match(url) is not None


def _libpq_uri(uri: str) -> str:
    """`uri` with a '/', '?' or '#' in its password percent-encoded: SQLAlchemy reads such a
    password whole, libpq's URI parser cuts it there and prints the piece as a port ("invalid
    integer value \"s3cr\" for connection option \"port\"")."""
    scheme, _, rest = uri.partition("://")
    rest, qmark, query = rest.partition("?")
    userinfo, at, after = split_userinfo(rest)
    user, colon, password = userinfo.partition(":")
    if not (at and colon):
        return uri
    for char, code in (("/", "%2F"), ("?", "%3F"), ("#", "%23")):
        password = password.replace(char, code)
    return f"{scheme}://{user}:{password}@{after}{qmark}{query}"


def open_reader(url: str) -> PgReader:
    """A `PgReader` on the PostgreSQL database at `url`, its schema checked: one-line errors
    as `store.db.open_engine` and `require_schema` give (`DatabaseError`, `SchemaNotReady`),
    never a password."""
    import psycopg2
    import psycopg2.errors

    uri = _libpq_uri(_DRIVER.sub("postgresql://", url))
    if (problem := unencoded_at(uri)) is not None:
        raise DatabaseError(problem)
    label = redact_url(uri)
    try:
        connection = psycopg2.connect(
            uri, connect_timeout=CONNECT_TIMEOUT_SECONDS, application_name=APPLICATION_NAME
        )
    except psycopg2.Error as exc:  # unreachable, refused, or libpq refused the URI itself
        detail = _scrubbed(first_line(exc), uri, label)
        raise DatabaseError(f"cannot connect to {label}: {detail}") from None
    set_session_time_zone(connection)
    connection.set_session(readonly=True)
    reader = PgReader(connection)
    try:
        found = reader.rows(f"SELECT version_num FROM {VERSION_TABLE}", {})
        revision = str(found[0][0]) if found else None
    except psycopg2.errors.UndefinedTable:
        revision = None
    except psycopg2.Error as exc:
        reader.close()
        raise DatabaseError(f"cannot read {label}: {first_line(exc)}") from None
    problem = schema_problem(revision, label)
    if problem is not None:
        reader.close()
        raise SchemaNotReady(problem)
    connection.rollback()  # the next statement starts the view's own snapshot
    return reader


_PASSWORD = re.compile(r"^[^:/]+://[^@/]*?:([^@/]*)@")


def _scrubbed(text: str, uri: str, label: str) -> str:
    """`text` (libpq's message) without the password: libpq quotes a URI it cannot parse whole
    (`invalid dsn: … in URI: "postgresql://u:pw@[::1/x"`), so the URI becomes its `label` and
    any password left is masked."""
    text = text.replace(uri, label)
    found = _PASSWORD.match(uri)
    if found and found.group(1):
        text = text.replace(found.group(1), "***")
    return text


def rows(
    conn: Conn, sql: str, params: Mapping[str, Any] | None = None, *, expanding: Sequence[str] = ()
) -> Sequence[Any]:
    """The rows of the SQL text `sql` (`:name` parameters) on either kind of connection; the
    parameters named in `expanding` are lists, for `IN :name`."""
    if isinstance(conn, PgReader):
        return conn.rows(sql, params or {}, expanding)
    import sqlalchemy as sa

    clause = sa.text(sql)
    if expanding:
        clause = clause.bindparams(*(sa.bindparam(n, expanding=True) for n in expanding))
    return conn.execute(clause, dict(params or {})).fetchall()


def scalar(conn: Conn, sql: str, params: Mapping[str, Any] | None = None) -> Any:
    """The first column of the first row of `sql`, or None when there is no row."""
    found = rows(conn, sql, params)
    return found[0][0] if found else None
