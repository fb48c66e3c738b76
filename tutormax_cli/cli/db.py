"""`tutormax db`: create or upgrade the schema, and report it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import typer

from tutormax_cli.cli import context, render

app = typer.Typer(no_args_is_help=True, help="Create, upgrade and inspect the database schema.")


@app.command("init")
def init(ctx: typer.Context) -> None:
    """Create the tables, or add what an existing TutorMax database lacks. Safe to rerun.

    Example: tutormax --database-url postgresql://root@127.0.0.1/tutormax db init
    """
    from tutormax_cli.store import migrate

    engine = context.database(ctx, require_schema=False)
    before, after = migrate.upgrade(engine)
    label = context.settings(ctx).database_label
    if before == after:
        render.err.print(f"Schema of {label} is up to date (revision {after}).")
    else:
        render.err.print(f"Schema of {label} upgraded: {before or 'none'} -> {after}.")


@app.command("status")
def status(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Show the schema revision and each table's row count and missing columns. Exit 1 when
    the schema is not ready; a SQLite file that does not exist is refused, not created.

    Example: tutormax db status --json
    """
    from rich.table import Table

    from tutormax_cli.store import migrate
    from tutormax_cli.store.db import (
        SCHEMA_REVISION,
        check_connection,
        open_engine,
        require_schema,
        sqlite_file_missing,
    )
    from tutormax_cli.store.revision import is_unknown, schema_problem

    engine = open_engine(context.settings(ctx).database_url)
    if sqlite_file_missing(engine):  # connecting would create it: only `db init` may
        require_schema(engine)  # the refusal every read command gives, before connecting
    check_connection(engine)
    revision, tables = migrate.status(engine)
    ready = revision == SCHEMA_REVISION and all(
        t.exists and not t.missing_columns and not t.mistyped_columns for t in tables
    )
    if as_json:
        context.print_json(
            {
                "database": context.settings(ctx).database_label,
                "revision": revision,
                "expected_revision": SCHEMA_REVISION,
                "ready": ready,
                "tables": [
                    {
                        "name": t.name,
                        "exists": t.exists,
                        "rows": t.rows,
                        "missing_columns": list(t.missing_columns),
                        "mistyped_columns": list(t.mistyped_columns),
                    }
                    for t in tables
                ],
            }
        )
    else:
        table = Table(
            title=f"{context.settings(ctx).database_label} — revision {revision or 'none'}"
        )
        table.add_column("table")
        table.add_column("rows", justify="right")
        table.add_column("state")
        for t in tables:
            problems = [f"lacks {', '.join(t.missing_columns)}"] if t.missing_columns else []
            problems += [f"mistyped {', '.join(t.mistyped_columns)}"] if t.mistyped_columns else []
            state = (
                "[red]missing[/]"
                if not t.exists
                else f"[yellow]{'; '.join(problems)}[/]"
                if problems
                else "[green]ok[/]"
            )
            table.add_row(t.name, render.number(t.rows), state)
        render.out.print(table)
        if is_unknown(revision):  # `db init` cannot help: say what can
            render.err.print(
                schema_problem(revision, context.settings(ctx).database_label), markup=False
            )
        elif any(t.mistyped_columns for t in tables):  # `db init` refuses these: say so
            render.err.print(
                "Columns of another type than the contract's: fix or rename those tables; "
                "`tutormax db init` will not migrate them."
            )
        elif not ready:
            render.err.print("Run `tutormax db init` to create or upgrade the schema.")
    raise typer.Exit(0 if ready else 1)


partials = typer.Typer(
    no_args_is_help=True,
    help="Cumulative daily partials (PostgreSQL, opt-in): snapshots by index lookups.",
)
app.add_typer(partials, name="partials")


@contextmanager
def _fill_bar() -> Iterator[Callable[[int, int], None] | None]:
    """A bar of tutors filled on stderr, only when a person is watching."""
    if not render.err.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress(
        "tutors", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=render.err, transient=True,
    ) as bar:  # fmt: skip
        task = bar.add_task("fill", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield advance


@partials.command("enable")
def partials_enable(ctx: typer.Context) -> None:
    """Create the cumulative partials table and the triggers that keep it exact, and fill it.

    The triggers go on sessions, student_feedback and tutor_events: every statement that
    writes them also records which (tutor, day) pairs it touched. The table is filled chunk
    by chunk of tutors (a progress bar on a terminal); an interrupted fill is finished by
    running the command again. Safe to rerun.

    Example: tutormax db partials enable
    """
    import time

    from tutormax_cli.store import cumulative

    engine = context.database(ctx)
    started = time.perf_counter()
    with _fill_bar() as progress:
        rows = cumulative.enable(engine, progress)
    label = context.settings(ctx).database_label
    if rows == 0:
        render.err.print(f"Cumulative partials of {label} are already enabled.")
    else:
        render.err.print(
            f"Cumulative partials of {label} enabled: {render.number(rows)} rows "
            f"in {time.perf_counter() - started:.1f} s."
        )


@partials.command("disable")
def partials_disable(ctx: typer.Context) -> None:
    """Drop the cumulative partials table and its triggers; snapshots read raw rows again.

    Example: tutormax db partials disable
    """
    from tutormax_cli.store import cumulative

    engine = context.database(ctx)
    done = cumulative.disable(engine)
    label = context.settings(ctx).database_label
    render.err.print(
        f"Cumulative partials of {label} {'disabled' if done else 'were not enabled'}."
    )


@partials.command("status")
def partials_status(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a line."),
) -> None:
    """Whether cumulative partials are enabled, their rows and the (tutor, day) pairs waiting
    for the next refresh. Exit 0 when enabled, 1 when not.

    Example: tutormax db partials status --json
    """
    from tutormax_cli.store import cumulative

    engine = context.database(ctx)
    with engine.connect() as conn:
        info = cumulative.state(conn)
    if as_json:
        context.print_json(info)
    elif info["enabled"]:
        render.out.print(
            f"enabled: {render.number(info['rows'])} rows up to {info['newest_day']}, "
            f"{render.number(info['dirty_pairs'])} (tutor, day) pairs waiting"
        )
    else:
        render.out.print("not enabled: snapshots aggregate the raw rows")
    raise typer.Exit(0 if info["enabled"] else 1)
