"""The `tutormax` command: the root callback builds the settings, sub-apps do the rest."""

from __future__ import annotations

import typer

from tutormax_cli.cli import (
    api,
    changes,
    coercion,
    consumers,
    context,
    db,
    dlq,
    events,
    groups,
    help_types,
    ingest,
    pending,
    pipeline,
    recompute,
    sample,
    show,
    status,
    tiers,
    verify,
    watch,
    worker,
)
from tutormax_cli.cli.context import ErrorHandlingGroup
from tutormax_cli.settings import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL, Settings, from_file

help_types.install()
coercion.install()

app = typer.Typer(
    name="tutormax",
    cls=ErrorHandlingGroup,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Real-time and batch tutor performance metrics for TutorMax.",
    epilog="Example: tutormax recompute --as-of 2026-03-03T00:00Z && tutormax show tutor T0001",
)


@app.callback()
def root(
    ctx: typer.Context,
    database_url: str = typer.Option(
        DEFAULT_DATABASE_URL,
        "--database-url",
        envvar="TUTORMAX_DATABASE_URL",
        help="SQLAlchemy URL: postgresql://user@host/db or sqlite:///file.db "
        "(or a file named by TUTORMAX_DATABASE_URL_FILE).",
        show_default=True,
    ),
    redis_url: str = typer.Option(
        DEFAULT_REDIS_URL,
        "--redis-url",
        envvar="TUTORMAX_REDIS_URL",
        help="redis://host:port/db, or 'embedded' for a private server of the database "
        "(beside a SQLite file, in .tutormax/) (or a file named by TUTORMAX_REDIS_URL_FILE).",
        show_default=True,
    ),
    version: bool = typer.Option(
        False,
        "--version",
        is_eager=True,
        callback=lambda value: _print_version() if value else None,
        help="Print the installed tutormax version and exit.",
    ),
) -> None:
    """Real-time and batch tutor performance metrics for TutorMax."""
    # an option or the variable itself wins; `TUTORMAX_*_URL_FILE` only replaces the default
    if not context.given(ctx, "database_url"):
        database_url = from_file("TUTORMAX_DATABASE_URL") or database_url
    if not context.given(ctx, "redis_url"):
        redis_url = from_file("TUTORMAX_REDIS_URL") or redis_url
    ctx.obj = Settings(database_url=database_url, redis_url=redis_url)


def _print_version() -> None:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        text = installed("tutormax-cli")
    except PackageNotFoundError:  # run from a source tree that was never installed
        text = "unknown (not installed)"
    typer.echo(f"tutormax {text}")
    raise typer.Exit(0)


app.add_typer(db.app, name="db")
app.add_typer(sample.app, name="sample")
app.add_typer(worker.app, name="worker")
app.add_typer(events.app, name="events")
app.add_typer(show.app, name="show")
changes.register(show.app)
app.add_typer(dlq.app, name="dlq")
app.add_typer(groups.app, name="groups")
app.add_typer(consumers.app, name="consumers")
app.add_typer(ingest.app, name="ingest")
app.add_typer(pipeline.app, name="pipeline")
app.add_typer(tiers.app, name="tiers")
app.add_typer(api.app, name="api")
recompute.register(app)
pending.register(app)
status.register(app)
watch.register(app)
verify.register(app)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except BrokenPipeError:  # while printing help or a usage error into a closed pipe
        context.quiet_broken_pipe()
