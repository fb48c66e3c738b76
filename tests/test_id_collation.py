"""IDs compare as bytes on PostgreSQL (migration 0005), whatever the database's own collation:
`ORDER BY tutor_id` is the order SQLite and polars give, and the partials tables an earlier
`db partials enable` created follow the columns they are joined on."""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
import sqlalchemy as sa
from polars.testing import assert_frame_equal

from tests.conftest import IN_CI, _pg_admin
from tests.helpers import T, sample
from tutormax_cli.store import cumulative
from tutormax_cli.store.db import open_engine
from tutormax_cli.store.load import load_window_partials
from tutormax_cli.store.migrate import _alembic_config, upgrade
from tutormax_cli.store.seed import save_tables

pytestmark = pytest.mark.postgres

_byte_order_ids = importlib.import_module(
    "tutormax_cli.store.migrations.versions.0005_byte_order_ids"
)

IDS = ["b", "B", "a", "A-2", "A1", "_z", "é", "Z", "a b"]
"""IDs a linguistic collation orders differently from their bytes (case, punctuation, space)."""


def _to(engine: sa.Engine, revision: str, *, down: bool = False) -> None:
    from alembic import command

    with engine.begin() as conn:
        step = command.downgrade if down else command.upgrade
        step(_alembic_config(conn), revision)  # type: ignore[arg-type]


@pytest.fixture
def database() -> Iterator[sa.Engine]:
    """A database of its own whose default collation is ICU's en-US (linguistic: 'a' < 'B')."""
    admin = _pg_admin()
    assert admin is not None
    name = f"tutormax_test_{uuid.uuid4().hex[:10]}_icu"
    with admin.connect() as conn:
        try:
            conn.execute(
                sa.text(
                    f'CREATE DATABASE "{name}" TEMPLATE template0 LOCALE_PROVIDER icu '
                    "ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
                )
            )
        except sa.exc.DBAPIError as error:  # PostgreSQL < 15, or built without ICU
            if IN_CI:
                raise
            pytest.skip(f"no ICU database on this server: {error.orig}")
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    engine = open_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _insert_tutors(engine: sa.Engine, pg: bool) -> None:
    subjects = "ARRAY['math']" if pg else "'[\"math\"]'"
    with engine.begin() as conn:
        for i, tutor in enumerate(IDS):
            conn.execute(
                sa.text(
                    "INSERT INTO tutors (tutor_id, name, email, onboarding_date, status, "
                    f"subjects) VALUES (:t, 'n', :e, '2026-01-01T00:00:00Z', 'active', {subjects})"
                ),
                {"t": tutor, "e": f"t{i}@example.com"},
            )


def _ordered(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return list(
            conn.execute(sa.text("SELECT tutor_id FROM tutors ORDER BY tutor_id")).scalars()
        )


def test_ids_sort_as_their_bytes_after_the_migration(database: sa.Engine, tmp_path: Path) -> None:
    with database.connect() as conn:
        assert conn.execute(sa.text("SELECT 'a' < 'B'")).scalar_one() is True  # linguistic
    _to(database, "0004")
    _insert_tutors(database, pg=True)
    before = _ordered(database)
    upgrade(database)
    after = _ordered(database)

    sqlite = open_engine(f"sqlite:///{tmp_path / 'ids.db'}")
    upgrade(sqlite)
    _insert_tutors(sqlite, pg=False)
    by_bytes = sorted(IDS, key=str.encode)
    assert before != by_bytes  # what PostgreSQL gave under the database's collation
    assert after == _ordered(sqlite) == by_bytes
    assert pl.Series(IDS).sort().to_list() == by_bytes
    sqlite.dispose()


def _collations(engine: sa.Engine) -> dict[tuple[str, str], str]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT c.relname, a.attname, a.attcollation::regcollation::text "
                "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
                "WHERE c.relname = ANY(:tables) AND a.attnum > 0 AND NOT a.attisdropped"
            ),
            {"tables": list(_byte_order_ids.ID_COLUMNS)},
        ).all()
    return {(t, c): collation for t, c, collation in rows}


def test_partials_enabled_before_the_migration_follow_it(database: sa.Engine) -> None:
    """Tables `db partials enable` created at 0004 (the default collation) get the IDs' one, and
    the cumulative snapshot still equals the raw rows' (its joins use their keys)."""
    _to(database, "0004")
    save_tables(database, sample(tutors=6, days=40, seed=4, end=T))
    cumulative.enable(database)
    with database.begin() as conn:  # as an enable before 0005 created them
        for table, columns in _byte_order_ids.ID_COLUMNS.items():
            for column in columns:
                conn.execute(
                    sa.text(f'ALTER TABLE "{table}" ALTER COLUMN "{column}" TYPE varchar(50)')
                )
        # a pipeline's database may hold text IDs: the migration keeps the type
        conn.execute(sa.text("ALTER TABLE sessions ALTER COLUMN session_id TYPE text"))
    wanted = {(t, c) for t, columns in _byte_order_ids.ID_COLUMNS.items() for c in columns}
    assert {k for k, v in _collations(database).items() if v == '"C"'} == set()

    upgrade(database)
    ids = {k for k, v in _collations(database).items() if v == '"C"'}
    assert ids == wanted
    with database.connect() as conn:
        kinds = conn.execute(
            sa.text(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = "
                "'sessions'::regclass AND attname IN ('session_id', 'tutor_id') ORDER BY attnum"
            )
        ).scalars()
        assert list(kinds) == ["text", "character varying(50)"]
        analyzed = conn.execute(
            sa.text("SELECT tablename, attname FROM pg_stats WHERE schemaname = current_schema()")
        ).all()
    empty = ("tutor_performance_metrics", "tutormax_partials_dirty")  # no rows, no statistics
    # a type change drops a column's statistics: the migration analyzes
    assert {(t, c) for t, c in wanted if t not in empty} <= set(analyzed)
    for t in (T, T - timedelta(days=9, hours=3)):
        with database.connect() as conn:
            raw = load_window_partials(conn, t).frame.sort("tutor_id", "window")
            cum = cumulative.window_partials(conn, t).frame.sort("tutor_id", "window")
        assert raw.height > 0
        assert_frame_equal(raw, cum, check_exact=False, rel_tol=1e-12, abs_tol=1e-9)

    _to(database, "0004", down=True)
    assert {k for k, v in _collations(database).items() if v == '"C"'} == set()
