"""What every command shares: the settings on `ctx.obj`, lazily opened connections, and the
conversion of library errors into one line on stderr with the right exit code."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperGroup

from tutormax_cli.errors import TutormaxError, UsageError
from tutormax_cli.settings import Settings

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    import redis as redis_
    import sqlalchemy as sa

    from tutormax_cli.store.reader import Conn


TIERS_HELP = (
    "TOML file of tier thresholds (default: the built-in rules of docs/metrics.md; "
    "`tutormax tiers show --toml` prints them to copy and edit)."
)
"""The `--tiers` help of every command that judges tiers: one text, so they cannot drift."""


def settings(ctx: typer.Context) -> Settings:
    """The settings the root callback built."""
    root = ctx.find_root()
    obj = root.obj
    if not isinstance(obj, Settings):  # a sub-app invoked on its own, as tests may do
        obj = Settings()
        root.obj = obj
    return obj


def given(ctx: typer.Context, name: str) -> bool:
    """Whether parameter `name` came from the command line or the environment rather than its
    default: an explicit value is the operator's to keep (or to be refused), a default may be
    adjusted to fit the others."""
    source = ctx.get_parameter_source(name)
    return source is not None and not source.name.startswith("DEFAULT")


def database(ctx: typer.Context, *, require_schema: bool = True) -> sa.Engine:
    """An engine for the configured database, checked for the schema this code needs."""
    from tutormax_cli.store.db import check_connection, open_engine
    from tutormax_cli.store.db import require_schema as check_schema

    engine = open_engine(settings(ctx).database_url)
    if require_schema:
        check_schema(engine)
    else:
        check_connection(engine)
    return engine


def reader(ctx: typer.Context) -> AbstractContextManager[Conn]:
    """A connection for the quick read commands (`show`, `status`), the schema checked: on
    PostgreSQL a `store.reader.PgReader`, psycopg2 alone (importing SQLAlchemy was a third to
    a half of such a process), elsewhere the engine's."""
    from tutormax_cli.store.reader import is_postgres_url, open_reader

    url = settings(ctx).database_url
    if is_postgres_url(url):
        return open_reader(url)
    return database(ctx).connect()


def redis(ctx: typer.Context, *, check: bool = True) -> redis_.Redis:
    """A client for the configured Redis; `embedded` is the embedded server of the configured
    database, and an unreachable default Redis names the embedded one when it exists."""
    from tutormax_cli.stream.connection import connect

    s = settings(ctx)
    return connect(s.redis_url, check=check, database_url=s.database_url)


def redis_label(ctx: typer.Context) -> str:
    """The Redis a command reads, as its views name it (password masked; the socket of the
    embedded server)."""
    from tutormax_cli.stream.connection import describe

    s = settings(ctx)
    return describe(s.redis_url, s.database_url)


def servers(ctx: typer.Context, *, database: bool = True) -> dict[str, str]:
    """The `redis` (and `database`) a view read, for its header and its JSON document."""
    names = {"redis": redis_label(ctx)}
    if database:
        names["database"] = settings(ctx).database_label
    return names


def header(names: dict[str, str]) -> str:
    """The line under a view's title that says which servers it read."""
    return " · ".join(f"{kind} {label}" for kind, label in names.items())


def error(message: str) -> None:
    """One line on stderr, uncoloured so scripts can grep it."""
    sys.stderr.write(f"Error: {message}\n")
    sys.stderr.flush()


def print_json(payload: Any) -> None:
    """JSON to stdout, one document, keys in a stable order."""
    sys.stdout.write(json.dumps(payload, indent=2, default=_json_default, ensure_ascii=False))
    sys.stdout.write("\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def imports_done() -> None:
    """Turn the garbage collector back on (`cli.entry` pauses it for start-up): called by the
    commands that go on to run for long or to allocate a lot, once their imports are done."""
    import gc

    if not gc.isenabled():
        gc.enable()


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def setup_logging(level: str) -> None:
    """One log format for every long-running command (workers), on stderr."""
    import logging

    name = level.upper()
    if name not in LOG_LEVELS:
        raise UsageError(f"--log-level: {level!r} is not one of {', '.join(LOG_LEVELS)}")
    logging.basicConfig(level=name, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


class NotAnInstant(UsageError):
    """An option's text that does not parse as ISO-8601 at all (not one out of range): what
    lets `show changes --since` try it as a duration instead."""


def parse_instant(text: str | None, option: str) -> datetime:
    """An ISO-8601 instant from an option (no offset = UTC), or now when `text` is None.

    A local time of year 1 or 9999 whose offset carries it past the years 1-9999 in UTC
    (`0001-01-01T00:00:00+05:00`) is a usage error: Python's datetime cannot hold it."""
    if text is None:
        return datetime.now(UTC)
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise NotAnInstant(
            f"{option}: {text!r} is not an ISO-8601 time (e.g. 2026-03-02T14:05:00Z)"
        ) from None
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        from tutormax_cli.instants import EARLIEST_DAY, LATEST_DAY

        raise UsageError(
            f"{option}: {text!r} is outside {EARLIEST_DAY} … {LATEST_DAY} in UTC"
        ) from None


def describe(exc: BaseException) -> str:
    """The one line an operator sees for an error no command turned into a `TutormaxError`."""
    name = type(exc).__name__
    text = str(exc).strip().splitlines()
    detail = text[0] if text else ""
    module = type(exc).__module__.split(".")[0]
    if module in ("sqlalchemy", "psycopg2", "sqlite3"):
        from tutormax_cli.store.driver_errors import describe_error

        return f"database error: {describe_error(exc)}"
    if module == "redis":
        return f"Redis error: {name}: {detail}"
    return f"unexpected {name}: {detail} (set TUTORMAX_DEBUG=1 to see the traceback)"


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str, option: str) -> float:
    """Seconds from a duration option: `90s`, `15m`, `1h`, `2d`, `500ms`, or a bare number of
    seconds; one clear error otherwise."""
    import re

    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*", text)
    if match is None:
        raise UsageError(f"{option}: {text!r} is not a duration (e.g. 90s, 15m, 1h, 2d)") from None
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def _unexpected(exc: BaseException) -> int:
    if os.environ.get("TUTORMAX_DEBUG"):
        raise exc
    error(describe(exc))
    return 1


def wants_json(args: list[str]) -> bool:
    """Whether the command line asks for JSON output (`--json` before any `--`)."""
    words = args[: args.index("--")] if "--" in args else args
    return "--json" in words


def json_error(ctx: Any, message: str, exit_code: int) -> None:
    """The JSON document a `--json` command prints instead of nothing when it fails: the error,
    its exit code and the servers it was pointed at, so `cmd --json | jq .error` always has
    something to read and a script never mistakes silence for success."""
    obj = ctx.obj if isinstance(ctx.obj, Settings) else Settings()
    from tutormax_cli.stream.connection import describe as describe_redis

    print_json(
        {
            "error": message,
            "exit_code": exit_code,
            "redis": describe_redis(obj.redis_url, obj.database_url),
            "database": obj.database_label,
        }
    )


def quiet_broken_pipe() -> None:
    """The reader of our stdout went away (`| head`): stop writing, say nothing, exit 0."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


class ErrorHandlingGroup(TyperGroup):
    """The root group: every error below it becomes one line on stderr and an exit code."""

    def invoke(self, ctx: Any) -> Any:
        as_json = wants_json([*getattr(ctx, "_protected_args", []), *ctx.args])
        try:
            return super().invoke(ctx)
        except TutormaxError as exc:
            if exc.exit_code == 0:  # e.g. another run holds the lock: a note, not a failure
                sys.stderr.write(f"{exc}\n")
            else:
                error(str(exc))
                if as_json:
                    json_error(ctx, str(exc), exc.exit_code)
            raise typer.Exit(exc.exit_code) from None
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise  # usage errors and exits: Typer prints and exits as usual
        except BrokenPipeError:
            quiet_broken_pipe()
            raise typer.Exit(0) from None
        except Exception as exc:  # the last line of defence: no tracebacks
            code = _unexpected(exc)
            if as_json:
                json_error(ctx, describe(exc), code)
            raise typer.Exit(code) from None
