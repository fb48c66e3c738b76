"""Passes on connections of their own, when the server drops one of them (PostgreSQL)."""

from __future__ import annotations

import logging
from typing import Any

import polars as pl
import psycopg2
import pytest
import sqlalchemy as sa

from tutormax_cli.passes import Pass, PassRunner


def _dropped_by_the_server(conn: sa.Connection) -> pl.DataFrame:
    """A pass whose raw connection the server terminates mid-read, as in an outage."""
    raw: Any = conn.connection.dbapi_connection
    with raw.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")
    raise AssertionError("the server should have dropped the connection")


def test_a_connection_the_server_dropped_fails_its_pass_quietly(
    pg_engine: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """The pass fails with the driver's error, and the dead connection is discarded instead of
    rolled back on return to the pool, which logged a traceback for every pass under way."""
    settled: list[Pass] = []
    with caplog.at_level(logging.ERROR, logger="sqlalchemy.pool"), pg_engine.connect() as conn:
        runner = PassRunner(pg_engine, conn, "test", settled.append, write=False,
                            parallel=True)  # fmt: skip
        with runner, pytest.raises(psycopg2.OperationalError):
            runner.submit(_dropped_by_the_server, None)
            runner.finish()
    assert settled == [] and not caplog.records, [r.getMessage() for r in caplog.records]
    with pg_engine.connect() as conn:  # the pool hands out live connections afterwards
        assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
