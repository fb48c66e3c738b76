"""One settings object, built once from options and environment by the CLI's root callback.

Connections are not opened here: commands open what they use, so `tutormax --help` stays fast
and a command that needs no Redis does not fail when Redis is down.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

DEFAULT_DATABASE_URL = "sqlite:///tutormax.db"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
EMBEDDED_REDIS = "embedded"


def redact_url(url: str) -> str:
    """The URL with any password replaced by `***`, safe to print or log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))


def from_file(variable: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The secret named by `$<variable>_FILE`: the first line of that file, or None when the
    variable is unset. This is how credentials reach a service without appearing on a command
    line or in a unit file (systemd's `LoadCredential=` puts them in such files)."""
    from tutormax_cli.errors import UsageError

    env = os.environ if environ is None else environ
    path = env.get(f"{variable}_FILE")
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            value = handle.readline().strip()
    except OSError as exc:
        raise UsageError(f"{variable}_FILE: cannot read {path}: {exc.strerror}") from None
    if not value:
        raise UsageError(f"{variable}_FILE: {path} is empty")
    return value


@dataclass(frozen=True)
class Settings:
    """Where tutormax reads and writes: the database and the Redis server."""

    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str = DEFAULT_REDIS_URL

    @property
    def database_label(self) -> str:
        """The database URL without its password, for messages."""
        return redact_url(self.database_url)

    @property
    def redis_label(self) -> str:
        """The Redis URL without its password, for messages."""
        return redact_url(self.redis_url)
