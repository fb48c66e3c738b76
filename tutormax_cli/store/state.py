"""tutormax's own key/value bookkeeping in the `tutormax_state` table.

State lives in the database, not in a file beside the cron job, so any machine that runs
`tutormax recompute --changed-since auto` continues from the same mark: the database is the only
thing shared between runs.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from tutormax_cli.metrics.windows import as_utc
from tutormax_cli.store.db import is_postgres
from tutormax_cli.store.schema import tutormax_state


def get_state(conn: sa.Connection, key: str) -> str | None:
    """The value stored under `key`, or None when there is none."""
    row = conn.execute(sa.select(tutormax_state.c.value).where(tutormax_state.c.key == key)).first()
    return None if row is None else str(row[0])


def set_state(conn: sa.Connection, key: str, value: str) -> None:
    """Store `value` under `key` (insert or replace); the caller commits."""
    insert = postgresql.insert if is_postgres(conn) else sqlite.insert
    stmt = insert(tutormax_state).values(key=key, value=value)
    stmt = stmt.on_conflict_do_update(
        index_elements=[tutormax_state.c.key],
        set_={"value": stmt.excluded.value, "updated_at": sa.func.now()},
    )
    conn.execute(stmt)


def database_now(conn: sa.Connection) -> datetime:
    """The database's wall clock (UTC): the clock that stamps `created_at` and `updated_at`, so
    marks compared with those columns are immune to skew between machines."""
    if is_postgres(conn):
        value = conn.execute(sa.text("SELECT clock_timestamp()")).scalar_one()
        assert isinstance(value, datetime)
        return as_utc(value)
    text = conn.execute(sa.text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")).scalar_one()
    return as_utc(datetime.fromisoformat(str(text)))


def get_instant(conn: sa.Connection, key: str) -> datetime | None:
    """A stored ISO-8601 instant as UTC, or None when the key is absent or not an instant."""
    value = get_state(conn, key)
    if value is None:
        return None
    try:
        return as_utc(datetime.fromisoformat(value))
    except ValueError:
        return None


def set_instant(conn: sa.Connection, key: str, moment: datetime) -> None:
    """Store an instant as ISO-8601 UTC text, readable by people and by `get_instant`."""
    set_state(conn, key, as_utc(moment).isoformat())
