"""`db init` on an existing TutorMax database: what is missing is added, no row is lost."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from tests.helpers import T, count_rows, own_pg_database, sample
from tutormax_cli.cli.app import app
from tutormax_cli.recompute import recompute_as_of
from tutormax_cli.store.db import SCHEMA_REVISION, open_engine
from tutormax_cli.store.migrate import status, upgrade
from tutormax_cli.store.seed import save_tables

Diff = tuple[Any, ...] | list[tuple[Any, ...]]
"""One difference alembic's compare_metadata finds: an operation tuple, or a list of column
modifications."""

LEGACY_METRICS = """
CREATE TYPE metricwindow AS ENUM ('7day', '30day', '90day');
CREATE TABLE tutor_performance_metrics (
    metric_id varchar(50) PRIMARY KEY,
    tutor_id varchar(50) NOT NULL,
    "window" metricwindow NOT NULL,
    calculation_date timestamptz NOT NULL,
    sessions_completed integer NOT NULL,
    avg_rating double precision,
    first_session_success_rate double precision,
    reschedule_rate double precision,
    no_show_count integer NOT NULL,
    engagement_score double precision,
    learning_objectives_met_pct double precision,
    performance_tier varchar(20) NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
INSERT INTO tutor_performance_metrics VALUES
 ('m1', 'T0001', '7day', '2026-03-02 14:05:00+00', 5, 4.5, NULL, 0, 0, 80, 90, 'Strong',
  now(), now()),
 ('m2', 'T0001', '7day', '2026-03-02 18:00:00+00', 6, 4.6, NULL, 0, 0, 81, 91, 'Strong',
  now(), now()),
 ('m3', 'T0001', '7day', '2026-03-03 00:00:00+00', 7, 4.7, NULL, 0, 0, 82, 92, 'Strong',
  now(), now()),
 ('m4', 'T0002', '30day', '2026-03-01 12:00:00+00', 3, 3.0, 50, 20, 4, 50, 60, 'At Risk',
  now(), now());
"""


@pytest.fixture
def legacy_pg(pg_database_url: str) -> Iterator[sa.Engine]:
    """A fresh PostgreSQL database with a pre-tutormax metrics table (enum window, no key)."""
    with own_pg_database(pg_database_url, "tutormax_legacy_test") as url:
        engine = open_engine(url)
        with engine.begin() as conn:
            conn.exec_driver_sql(LEGACY_METRICS)
        yield engine
        engine.dispose()


def test_legacy_postgres_database_is_completed_without_losing_rows(legacy_pg: sa.Engine) -> None:
    before, after = upgrade(legacy_pg)
    assert (before, after) == (None, SCHEMA_REVISION)
    revision, tables = status(legacy_pg)
    assert revision == SCHEMA_REVISION
    assert all(t.exists and not t.missing_columns for t in tables)
    with legacy_pg.connect() as conn:
        kept = conn.execute(sa.text(
            'SELECT metric_id, metric_date::text, sessions_scheduled, no_show_rate '
            "FROM tutor_performance_metrics ORDER BY metric_id"
        )).all()  # fmt: skip
        moved = conn.execute(sa.text(
            "SELECT metric_id FROM tutor_performance_metrics_duplicates"
        )).scalars().all()  # fmt: skip
    # m1, m2 and m3 share (T0001, 7day, 2026-03-02) — m3, as of 03-03T00:00Z, is the end-of-day
    # snapshot of 03-02 — so the latest computation (m3) stays and the two others are moved.
    assert [r[0] for r in kept] == ["m3", "m4"]
    assert sorted(moved) == ["m1", "m2"]
    assert {r[1] for r in kept} == {"2026-03-02", "2026-03-01"}
    assert kept[0][2] == 0 and kept[0][3] is None  # new columns: default 0 and null
    # rows inserted by other programs with plain SQL get their timestamps from the server
    with legacy_pg.begin() as conn:
        conn.execute(sa.text(
            'INSERT INTO tutor_performance_metrics (metric_id, tutor_id, "window", '
            "metric_date, calculation_date, sessions_completed, no_show_count, performance_tier) "
            "VALUES ('m9', 'T0009', '90day', '2026-03-02', now(), 0, 0, 'Developing')"
        ))  # fmt: skip
    # the worker's upsert writes into the enum-typed column through the LIKE-shaped stage
    save_tables(legacy_pg, sample(tutors=4))
    recompute_as_of(legacy_pg, T)
    recompute_as_of(legacy_pg, T)
    # m3, m4, m9, and 4 tutors x 3 windows, of which (T0001, 7day, 2026-03-02) replaced m3
    assert count_rows(legacy_pg) == 3 + 4 * 3 - 1
    with legacy_pg.connect() as conn:
        replaced = conn.execute(sa.text(
            "SELECT metric_id, sessions_scheduled FROM tutor_performance_metrics "
            "WHERE tutor_id = 'T0001' AND \"window\" = '7day'"
        )).one()  # fmt: skip
    assert replaced[0] == "m3" and replaced[1] > 0  # the id another program chose is kept
    assert upgrade(legacy_pg) == (SCHEMA_REVISION, SCHEMA_REVISION)  # idempotent


def test_db_init_and_status_cli(sqlite_url: str) -> None:
    Path(sqlite_url.removeprefix("sqlite:///")).touch()  # db status refuses a missing file
    runner = CliRunner()
    result = runner.invoke(app, ["--database-url", sqlite_url, "db", "status"])
    assert result.exit_code == 1
    assert "Run `tutormax db init`" in result.output
    result = runner.invoke(app, ["--database-url", sqlite_url, "db", "init"])
    assert result.exit_code == 0, result.output
    assert f"upgraded: none -> {SCHEMA_REVISION}" in result.output
    result = runner.invoke(app, ["--database-url", sqlite_url, "db", "init"])
    assert f"is up to date (revision {SCHEMA_REVISION})" in result.output
    result = runner.invoke(app, ["--database-url", sqlite_url, "db", "status", "--json"])
    assert result.exit_code == 0 and '"ready": true' in result.output


def test_commands_before_db_init_name_the_fix(sqlite_url: str) -> None:
    Path(sqlite_url.removeprefix("sqlite:///")).touch()  # an existing file without the schema
    result = CliRunner().invoke(app, ["--database-url", sqlite_url, "recompute"])
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: database {sqlite_url} has no tutormax schema: run `tutormax db init`"
    )


def test_unreachable_postgres_is_one_line_without_password() -> None:
    url = "postgresql://ops:s3cret@127.0.0.1:1/nowhere"
    result = CliRunner().invoke(app, ["--database-url", url, "recompute"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "s3cret" not in result.output
    assert lines[0].startswith("Error: cannot connect to postgresql://ops:***@127.0.0.1:1/nowhere")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("host=127.0.0.1 port=1 password=s3cret", "not a database URL: 'host=127.0.0.1 port=1 "
         "password=***' (expected postgresql://"),
        ("ops:s3cret@127.0.0.1/nowhere", "not a database URL: 'ops:***@127.0.0.1/nowhere'"),
        ("postgresql://ops:s3@cret@127.0.0.1:1/nowhere", "postgresql://ops:***@127.0.0.1:1/"
         "nowhere: an '@' in the password must be percent-encoded as %40"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("command", [["recompute"], ["show", "tutors"]])  # engine; reader
def test_a_mistyped_database_url_is_named_without_its_password(
    url: str, message: str, command: list[str], tmp_path: Path
) -> None:
    result = CliRunner().invoke(app, ["--database-url", url, *command])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {message}" or (
        message in result.output and len(result.output.strip().splitlines()) == 1
    )
    assert "s3cret" not in result.output and "cret@" not in result.output
    secret = tmp_path / "url"  # the credential file systemd's LoadCredential= hands over
    secret.write_text(url + "\n")
    env = {"TUTORMAX_DATABASE_URL_FILE": str(secret)}
    from_file = CliRunner().invoke(app, command, env=env)
    assert from_file.exit_code == 1 and message in from_file.output
    assert "s3cret" not in from_file.output and "cret@" not in from_file.output


@pytest.mark.parametrize("command", [["recompute"], ["show", "tutors"], ["status", "--json"]])
def test_a_password_with_a_slash_is_never_printed(command: list[str]) -> None:
    """Base64 secrets hold '/': SQLAlchemy reads such a password whole, libpq's URI parser cut
    it and printed the piece as a port, and the label kept it unmasked."""
    url = "postgresql://ops:pa/ss9@127.0.0.1:1/nowhere"
    env = {"TUTORMAX_REDIS_URL": "redis://:pa/ss9@127.0.0.1:1/0"}
    result = CliRunner().invoke(app, ["--database-url", url, *command], env=env)
    assert result.exit_code == 1
    assert "pa/" not in result.output and "ss9" not in result.output, result.output
    assert "postgresql://ops:***@127.0.0.1:1/nowhere" in result.output


def test_schema_revision_is_the_newest_migration() -> None:
    from pathlib import Path

    from alembic.config import Config
    from alembic.script import ScriptDirectory

    import tutormax_cli.store.migrate as migrate_module

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrate_module.__file__).parent / "migrations"))
    assert ScriptDirectory.from_config(cfg).get_current_head() == SCHEMA_REVISION


def test_window_indexes_exist(engine: sa.Engine) -> None:
    inspector = sa.inspect(engine)
    assert ["scheduled_start"] in [ix["column_names"] for ix in inspector.get_indexes("sessions")]
    events = [ix["column_names"] for ix in inspector.get_indexes("tutor_events")]
    assert ["event_timestamp"] in events


# --- frozen migrations: empty (or legacy) → head equals the head schema created fresh -------


def _snapshot(engine: sa.Engine) -> dict[str, object]:
    """Columns (type, nullability, default), primary key, indexes and unique constraints."""
    inspector = sa.inspect(engine)
    out: dict[str, object] = {}
    with engine.connect() as conn:
        dialect = conn.dialect
        tables = inspector.get_table_names()
        for name in sorted(t for t in tables if t != "tutormax_alembic_version"):
            columns = [
                (c["name"], c["type"].compile(dialect=dialect), c["nullable"], c.get("default"))
                for c in inspector.get_columns(name)
            ]
            indexes = sorted(
                (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                for i in inspector.get_indexes(name)
            )
            uniques = sorted(
                (u["name"], tuple(u["column_names"]))
                for u in inspector.get_unique_constraints(name)
            )
            pk = inspector.get_pk_constraint(name)["constrained_columns"]
            out[name] = (columns, pk, indexes, uniques)
    return out


def _autogenerate_diff(engine: sa.Engine) -> list[Diff]:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from tutormax_cli.store.schema import VERSION_TABLE, metadata

    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "compare_server_default": True,
                "version_table": VERSION_TABLE,
            },
        )
        return list(compare_metadata(context, metadata))


def _step_by_step(engine: sa.Engine) -> None:
    from alembic import command

    from tutormax_cli.store.migrate import _alembic_config

    for revision in ("0001", "0002", "0003", "0004", "0005"):
        with engine.begin() as conn:
            command.upgrade(_alembic_config(conn), revision)  # type: ignore[arg-type]


@pytest.fixture
def two_databases(
    db_url: str, tmp_path: Path, pg_database_url: str
) -> Iterator[tuple[sa.Engine, sa.Engine]]:
    """Two empty databases of the parametrized dialect."""
    if db_url.startswith("sqlite"):
        engines = [open_engine(f"sqlite:///{tmp_path / f'{n}.db'}") for n in ("a", "b")]
        yield engines[0], engines[1]
        for e in engines:
            e.dispose()
        return
    admin = sa.create_engine(
        sa.make_url(pg_database_url).set(drivername="postgresql+psycopg2"),
        isolation_level="AUTOCOMMIT",
    )
    names = ["tutormax_migrated_test", "tutormax_fresh_test"]
    with admin.connect() as conn:
        for name in names:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    base = sa.make_url(pg_database_url)
    engines = [
        open_engine(base.set(database=n).render_as_string(hide_password=False)) for n in names
    ]
    yield engines[0], engines[1]
    for e in engines:
        e.dispose()
    with admin.connect() as conn:
        for name in names:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_migrations_from_empty_equal_the_head_schema(
    two_databases: tuple[sa.Engine, sa.Engine],
) -> None:
    """Each revision applied in turn gives exactly the schema the contract creates fresh, and
    an autogenerate comparison with the contract's metadata finds nothing to change."""
    from tutormax_cli.store.schema import metadata

    migrated, fresh = two_databases
    _step_by_step(migrated)
    metadata.create_all(fresh)
    assert _snapshot(migrated) == _snapshot(fresh)
    assert _autogenerate_diff(migrated) == []
    assert _autogenerate_diff(fresh) == []


def test_revision_0001_is_frozen() -> None:
    """0001 must not import the live schema: what it creates may never change."""
    source = (
        Path(__file__).parent.parent
        / "tutormax_cli/store/migrations/versions/0001_contract_schema.py"
    ).read_text()
    assert "tutormax_cli" not in source.split('"""', 2)[2]


def test_legacy_database_upgraded_equals_the_head_schema(legacy_pg: sa.Engine) -> None:
    """Autogenerate finds nothing to change after `db init` but what is kept on purpose: the
    legacy enum type of `window` (other programs write it) and the table the rows breaking the
    key were moved to."""
    upgrade(legacy_pg)
    remaining = [
        d
        for d in _autogenerate_diff(legacy_pg)
        if not (isinstance(d, list) and d[0][0] == "modify_type" and d[0][3] == "window")
        and not (
            isinstance(d, tuple)
            and d[0] == "remove_table"
            and d[1].name == "tutor_performance_metrics_duplicates"
        )
    ]
    assert remaining == []
