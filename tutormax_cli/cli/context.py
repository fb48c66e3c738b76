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
    import sqlalchemy as sa


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


def parse_instant(text: str | None, option: str) -> datetime:
    """An ISO-8601 instant from an option (no offset = UTC), or now when `text` is None."""
    if text is None:
        return datetime.now(UTC)
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"{option}: {text!r} is not an ISO-8601 time (e.g. 2026-03-02T14:05:00Z)"
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _unexpected(exc: BaseException) -> int:
    if os.environ.get("TUTORMAX_DEBUG"):
        raise exc
    name = type(exc).__name__
    text = str(exc).strip().splitlines()
    detail = text[0] if text else ""
    module = type(exc).__module__.split(".")[0]
    if module in ("sqlalchemy", "psycopg2", "sqlite3"):
        from tutormax_cli.store.db import describe_error

        error(f"database error: {describe_error(exc)}")
    elif module == "redis":
        error(f"Redis error: {name}: {detail}")
    else:
        error(f"unexpected {name}: {detail} (set TUTORMAX_DEBUG=1 to see the traceback)")
    return 1


def quiet_broken_pipe() -> None:
    """The reader of our stdout went away (`| head`): stop writing, say nothing, exit 0."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


class ErrorHandlingGroup(TyperGroup):
    """The root group: every error below it becomes one line on stderr and an exit code."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except TutormaxError as exc:
            if exc.exit_code == 0:  # e.g. another run holds the lock: a note, not a failure
                sys.stderr.write(f"{exc}\n")
            else:
                error(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise  # usage errors and exits: Typer prints and exits as usual
        except BrokenPipeError:
            quiet_broken_pipe()
            raise typer.Exit(0) from None
        except Exception as exc:  # the last line of defence: no tracebacks
            raise typer.Exit(_unexpected(exc)) from None
