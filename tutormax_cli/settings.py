"""One settings object, built once from options and environment by the CLI's root callback.

Connections are not opened here: commands open what they use, so `tutormax --help` stays fast
and a command that needs no Redis does not fail when Redis is down.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_DATABASE_URL = "sqlite:///tutormax.db"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
EMBEDDED_REDIS = "embedded"


_URL_PASSWORD = re.compile(r"(://[^:/@\s]*):[^@\s]*@")
_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)('[^']*'|\S+)", re.IGNORECASE)


def mask_secrets(text: str) -> str:
    """`text` (an error message, a log line) with every URL password and every libpq-style
    `password=…` replaced by `***`: drivers quote the connection string back in their errors."""
    return _KEYWORD_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1:***@", text))


def redact_url(url: str) -> str:
    """The URL with any password replaced by `***`, safe to print or log: the userinfo's
    password and any `…password=` query option. Works on multi-host URLs
    (`redis+sentinel://:pw@h1:26379,h2:26379/mymaster`), which `urlsplit` cannot parse, and on
    text that is not a URL at all (`u:pw@host/db`, `host=h password=pw`): whatever an operator
    mistyped into a URL setting may hold the password, and the error that names it is printed."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        userinfo, at, hosts = url.rpartition("@")
        if at and ":" in userinfo:
            url = f"{userinfo.split(':', 1)[0]}:***@{hosts}"
        return mask_secrets(url)
    rest, qmark, query = rest.partition("?")
    userinfo, at, after = split_userinfo(rest)
    if at and ":" in userinfo:
        rest = f"{userinfo.split(':', 1)[0]}:***@{after}"
    if qmark:
        query = "&".join(
            f"{k}=***" if "password" in k.lower() else f"{k}{eq}{v}"
            for k, eq, v in (item.partition("=") for item in query.split("&"))
        )
    return f"{scheme}://{rest}{qmark}{query}"


def split_userinfo(rest: str) -> tuple[str, str, str]:
    """(userinfo, "@", what follows) of a URL's part after `://` and before its query, or
    ("", "", rest) without one. The userinfo ends at the last '@': a password may hold a '/'
    (base64 secrets do) or, unencoded, an '@', and either way it must not be printed."""
    userinfo, at, after = rest.rpartition("@")
    return (userinfo, at, after) if at else ("", "", rest)


def unencoded_at(url: str) -> str | None:
    """What is wrong when the URL's password holds an unencoded '@' (None when it does not):
    SQLAlchemy and libpq split there, so the rest of the password becomes the host name and is
    printed in the driver's "could not translate host name" error. An '@' in the user name
    (`alice@corp.com@host`) SQLAlchemy reads right, so that one is let through."""
    userinfo, at, _ = split_userinfo(url.partition("://")[2].partition("?")[0])
    if not at or "@" not in userinfo.partition(":")[2]:
        return None
    return f"{redact_url(url)}: an '@' in the password must be percent-encoded as %40"


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
