"""The first and last instants tutormax stores, reads and accepts: one definition for the
validation of every timestamp column, the options that take a time and the sample generator.

They are what Python's `datetime` holds, in UTC. polars and PostgreSQL store years 0 and 10000
happily, and one such row then breaks every later read of its table (psycopg2, SQLAlchemy,
`events replay`): `0001-01-01T00:00:00+05:00` is 0000-12-31T19:00Z.
"""

from __future__ import annotations

from datetime import UTC, datetime

EARLIEST_TIME = datetime.min.replace(tzinfo=UTC)
LATEST_TIME = datetime.max.replace(tzinfo=UTC)
EARLIEST_DAY = EARLIEST_TIME.date()
LATEST_DAY = LATEST_TIME.date()
