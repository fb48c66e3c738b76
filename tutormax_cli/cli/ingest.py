"""`tutormax ingest`: Validate and load TutorMax files (CSV, JSONL, Parquet) into the database."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from tutormax_cli.cli import context, render
from tutormax_cli.errors import UsageError
from tutormax_cli.pipeline import DEFAULT_BATCH_SIZE, TABLE_ALIASES, Format

SHOWN_REJECTS = 20
PROGRESS_MIN_ROWS = 20_000

EPILOG = (
    "Every invalid row is reported as FILE:LINE: column: reason (the first 20 on stderr, all "
    "with --rejects). LINE is the CSV line (the header is line 1), the JSONL line, or the "
    "Parquet row index + 1. Exit status: 0 when every row was persisted, 1 when any row was "
    "rejected. Rerunning a file changes no row."
)

app = typer.Typer(
    no_args_is_help=True,
    help="Validate and load TutorMax files (CSV, JSONL, Parquet) into the database.",
    epilog=EPILOG,
)


def _ingest(
    ctx: typer.Context,
    table: str,
    files: list[Path],
    fmt: Format | None,
    dry_run: bool,
    rejects_path: Path | None,
    no_publish: bool,
    batch_size: int,
    as_json: bool,
) -> None:
    from tutormax_cli.pipeline import ingest_files
    from tutormax_cli.pipeline.readers import FILE, LINE, REASON, write_rejects

    context.imports_done()

    if rejects_path is not None and not rejects_path.parent.is_dir():
        raise UsageError(
            f"--rejects {rejects_path}: directory {rejects_path.parent} does not exist"
        )
    engine = context.database(ctx)
    publisher = None
    if table == "sessions" and not (dry_run or no_publish):
        publisher = context.redis(ctx)
    with _Progress() as progress:
        result = ingest_files(
            engine, table, files, fmt=fmt, publisher=publisher, dry_run=dry_run,
            batch_size=batch_size, warn=_warn, progress=progress,
        )  # fmt: skip
    if rejects_path is not None:
        write_rejects(result.rejects, rejects_path, with_file=len(files) > 1)
    shown = result.rejects.head(SHOWN_REJECTS).select(FILE, LINE, REASON)
    for file, line, reason in shown.iter_rows():
        sys.stderr.write(f"{file}:{line}: {reason}\n")
    if result.rejected > SHOWN_REJECTS:
        where = f"all in {rejects_path}" if rejects_path else "use --rejects FILE to get all"
        sys.stderr.write(
            f"… and {result.rejected - SHOWN_REJECTS:,} more rejected rows ({where})\n"
        )
    rate = result.rows / max(result.seconds, 1e-9)
    if result.dry_run:
        done = (
            f"{result.valid:,} would persist, {result.rejected:,} rejected; dry run: nothing "
            "written or published"
        )
    else:
        done = (
            f"{result.persisted:,} persisted, {result.rejected:,} rejected, "
            f"{result.published:,} published"
        )
    sys.stderr.write(
        f"{result.table}: {result.rows:,} rows read, {done} "
        f"in {result.seconds:.2f}s ({rate:,.0f} rows/s).\n"
    )
    if as_json:
        context.print_json(result.summary())
    if result.rejected:
        raise typer.Exit(1)


def _warn(message: str) -> None:
    sys.stderr.write(f"Warning: {message}\n")


class _Progress:
    """A progress bar on stderr for the writing phase of large inputs, when it is a terminal."""

    def __init__(self) -> None:
        from rich.progress import Progress

        self.bar = Progress(console=render.err, transient=True)
        self.task: object = None

    def __call__(self, phase: str, done: int, total: int) -> None:
        if phase != "writing" or total < PROGRESS_MIN_ROWS or not render.err.is_terminal:
            return
        if self.task is None:
            self.bar.start()
            self.task = self.bar.add_task("writing", total=total)
        self.bar.update(self.task, completed=done)  # type: ignore[arg-type]

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.task is not None:
            self.bar.stop()


def _register(name: str, table: str) -> None:
    def command(
        ctx: typer.Context,
        files: list[Path] = typer.Argument(
            ...,
            exists=True,
            dir_okay=False,
            readable=True,
            metavar="FILE",
            help="Input files, read in order.",
        ),
        fmt: Format | None = typer.Option(
            None, "--format", help="Input format (default: from each file's extension)."
        ),
        dry_run: bool = typer.Option(
            False, "--dry-run", help="Validate only: write and publish nothing."
        ),
        rejects: Path | None = typer.Option(
            None, "--rejects", help="Write every rejected row here: its columns, line, reason."
        ),
        no_publish: bool = typer.Option(
            False, "--no-publish", help="Persist without publishing to the stream (bulk loads)."
        ),
        batch_size: int = typer.Option(
            DEFAULT_BATCH_SIZE, "--batch-size", min=1, help="Rows per upsert and per transaction."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    ) -> None:
        _ingest(ctx, table, files, fmt, dry_run, rejects, no_publish, batch_size, as_json)

    published = ", then publish each persisted session" if table == "sessions" else ""
    command.__doc__ = (
        f"Validate FILE... and upsert its rows into {table}{published}.\n\n"
        f"Example: tutormax ingest {name} {name}.csv --rejects rejected.csv"
    )
    app.command(name, epilog=EPILOG)(command)


for _name, _table in TABLE_ALIASES.items():
    _register(_name, _table)
