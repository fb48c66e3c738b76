"""Domain errors. Each says in one line what was wrong and where; the CLI prints it as is."""

from __future__ import annotations


class TutormaxError(Exception):
    """Base of every error an operator may see; its message is the whole story."""

    exit_code = 1


class UsageError(TutormaxError):
    """An option or argument that cannot be acted on."""

    exit_code = 2


class TiersFileError(TutormaxError):
    """A tier thresholds file that cannot be read or is inconsistent."""


class DatabaseError(TutormaxError):
    """The database is unreachable, or its schema is not what tutormax needs."""


class SchemaNotReady(DatabaseError):
    """The tables are missing or out of date: `tutormax db init` fixes it."""


class RedisUnavailable(TutormaxError):
    """Redis is unreachable or refused a command."""


class UnknownTutor(TutormaxError):
    """A tutor id that has no metric rows."""


class LockHeld(TutormaxError):
    """Another run holds the recompute lock."""

    exit_code = 0
