"""What the database commands do with a database they cannot use as it is: one at a schema
revision this tutormax does not know (a newer tutormax migrated it), and a SQLite file that
does not exist. Each gets one line with the fix that works, and is left as it was."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from tests.helpers import own_pg_database
from tutormax_cli.cli.app import app
from tutormax_cli.store.db import SCHEMA_REVISION, open_engine
from tutormax_cli.store.revision import REVISIONS, VERSION_TABLE
from tutormax_cli.stream import connection

NEWER = "9999"


def test_revisions_are_alembics_chain() -> None:
    """`REVISIONS` tells a known revision (`db init` upgrades it) from an unknown one (only a
    newer tutormax can read it): it must list exactly the migrations shipped, in order."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    import tutormax_cli.store.migrate as migrate_module

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrate_module.__file__).parent / "migrations"))
    chain = [s.revision for s in ScriptDirectory.from_config(cfg).walk_revisions()]
    assert tuple(reversed(chain)) == REVISIONS
    assert REVISIONS[-1] == SCHEMA_REVISION


@pytest.fixture
def newer(db_url: str) -> Iterator[sa.Engine]:
    """The migrated database of `db_url` (SQLite, and the session's PostgreSQL one) recorded at
    a revision no migration has; put back afterwards, since the PostgreSQL one is shared."""
    engine = open_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = :v"), {"v": NEWER})
    try:
        yield engine
    finally:
        with engine.begin() as conn:
            conn.execute(
                sa.text(f"UPDATE {VERSION_TABLE} SET version_num = :v"), {"v": SCHEMA_REVISION}
            )
        engine.dispose()


def _schema(engine: sa.Engine) -> dict[str, list[str]]:
    inspector = sa.inspect(engine)
    return {t: [c["name"] for c in inspector.get_columns(t)] for t in inspector.get_table_names()}


def test_a_newer_schema_revision_says_upgrade_tutormax_everywhere(
    newer: sa.Engine, db_url: str
) -> None:
    """`show tutors` (PostgreSQL: through `store.reader`), `db init` and `db status` agree:
    the database is newer than this tutormax, and `db init` refuses it, changing nothing."""
    label = sa.make_url(db_url).render_as_string(hide_password=True)
    expected = (
        f"database {label} is at schema revision {NEWER}, newer than (or unknown to) this "
        f"tutormax ({SCHEMA_REVISION}): upgrade tutormax"
    )
    before = _schema(newer)
    runner = CliRunner()
    shown = runner.invoke(app, ["--database-url", db_url, "show", "tutors"])
    assert (shown.exit_code, shown.output) == (1, f"Error: {expected}\n")
    init = runner.invoke(app, ["--database-url", db_url, "db", "init"])
    assert (init.exit_code, init.output) == (1, f"Error: {expected}\n")
    status = runner.invoke(app, ["--database-url", db_url, "db", "status"])
    assert status.exit_code == 1
    assert status.stderr == f"{expected}\n"
    assert _schema(newer) == before
    with newer.connect() as conn:
        assert conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).all() == [(NEWER,)]


def test_db_status_of_a_missing_sqlite_file_creates_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'missing4.db'}"
    for args in (["db", "status"], ["db", "status", "--json"]):
        result = CliRunner().invoke(app, ["--database-url", url, *args])
        assert result.exit_code == 1, result.output
        assert result.stderr == (
            f"Error: SQLite database {tmp_path / 'missing4.db'} does not exist: check "
            "--database-url, or create it with `tutormax db init`\n"
        )
        assert list(tmp_path.iterdir()) == []


def test_status_starts_no_embedded_redis_for_a_missing_database(tmp_path: Path) -> None:
    """The embedded server is the database's: starting one for a mistyped path left a daemon
    running (and a `.tutormax/` directory) after the look."""
    url = f"sqlite:///{tmp_path / 'missing.db'}"
    server = connection.embedded_dir(url)
    try:
        result = CliRunner().invoke(
            app, ["--database-url", url, "--redis-url", "embedded", "status", "--json"]
        )
        assert result.exit_code == 1, result.output
        doc = json.loads(result.stdout)
        assert doc["problems"] == [
            f"embedded Redis not started: its database {url} does not exist",
            f"SQLite database {tmp_path / 'missing.db'} does not exist: check --database-url, "
            "or create it with `tutormax db init`",
        ]
        assert list(tmp_path.iterdir()) == []
    finally:  # a server this test started (the defect) is stopped by its own pid
        pid_file = server / "redis.pid"
        if pid_file.exists():
            os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)


def test_a_contract_column_of_another_type_is_named_and_never_migrated(
    pg_database_url: str,
) -> None:
    """An existing `tutors.tutor_id integer` (another program's table): `db status` names it and
    exits 1, `db init` refuses in one line and changes nothing — the migrations adopt existing
    tables, and every later write of a `T0001` would fail on it. (A database of its own: the
    session's PostgreSQL one is shared.)"""
    from typer.testing import CliRunner

    from tutormax_cli.cli.app import app

    with own_pg_database(pg_database_url, "tutormax_mistyped_test") as url:
        engine = open_engine(url)
        try:
            with engine.begin() as conn:
                conn.execute(
                    sa.text("CREATE TABLE tutors (tutor_id integer PRIMARY KEY, name text)")
                )
                # what other programs make of the contract, that tutormax reads and writes as is:
                # pandas' float for a nullable int, numeric, text JSON, naive timestamps, arrays
                conn.execute(
                    sa.text(
                        "CREATE TABLE students (student_id varchar(80) PRIMARY KEY, name text, "
                        "age double precision, created_at timestamp without time zone)"
                    )
                )
                conn.execute(
                    sa.text(
                        "CREATE TABLE tutor_events (event_id text PRIMARY KEY, tutor_id text, "
                        "event_type text, event_timestamp timestamp, metadata text)"
                    )
                )
                conn.execute(
                    sa.text(
                        "CREATE TABLE student_feedback (feedback_id text PRIMARY KEY, "
                        "session_id text, student_id text, tutor_id text, overall_rating numeric, "
                        "improvement_areas varchar(40)[])"
                    )
                )
            env = {"TUTORMAX_DATABASE_URL": url}
            status = CliRunner().invoke(app, ["db", "status", "--json"], env=env)
            assert status.exit_code == 1
            assert '"tutor_id (integer, expected text)"' in status.stdout
            init = CliRunner().invoke(app, ["db", "init"], env=env)
            assert init.exit_code == 1
            lines = init.output.strip().splitlines()
            assert len(lines) == 1 and lines[0].endswith(
                "columns of another type than the contract's: tutors.tutor_id (integer, expected "
                "text); nothing was changed — fix or rename those tables first"
            )
            assert sorted(sa.inspect(engine).get_table_names()) == [
                "student_feedback", "students", "tutor_events", "tutors"
            ]  # fmt: skip
            with engine.begin() as conn:
                conn.execute(sa.text("ALTER TABLE tutors ALTER COLUMN tutor_id TYPE text"))
            fixed = CliRunner().invoke(app, ["db", "init"], env=env)
            assert fixed.exit_code == 0, fixed.output  # the others are compatible as they are
        finally:
            engine.dispose()
