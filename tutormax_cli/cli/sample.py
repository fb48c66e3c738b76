"""`tutormax sample`: deterministic synthetic TutorMax data for demos, tests and benchmarks."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from tutormax_cli.cli import context, render
from tutormax_cli.errors import DatabaseError, UsageError

if TYPE_CHECKING:
    from rich.progress import Progress, ProgressColumn, Task, TaskID
    from rich.text import Text

app = typer.Typer(no_args_is_help=True, help="Generate synthetic TutorMax data.")


@app.command("generate")
def generate(
    ctx: typer.Context,
    tutors: int = typer.Option(50, "--tutors", min=1, help="Number of tutors."),
    days: int = typer.Option(120, "--days", min=1, help="Days of history before --end."),
    seed: int = typer.Option(7, "--seed", help="Same seed, same rows, on any database."),
    end: str | None = typer.Option(
        None, "--end", help="End of the history (ISO-8601, default: today's midnight UTC)."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Write CSV files into this directory instead of the database."
    ),
) -> None:
    """Insert (upsert) synthetic tutors, students, sessions, feedback and events.

    Tutors are generated a chunk at a time, so memory stays flat whatever --tutors is; on
    PostgreSQL a table that was empty is filled by COPY. All rows are written in one
    transaction: an interrupted run (Ctrl-C) leaves the database as it was, and says so.

    Example: tutormax sample generate --tutors 60 --days 120 --seed 7 --end 2026-03-03
    """
    import time
    from datetime import UTC, datetime

    from tutormax_cli.sample import SampleSpec, batches, check_span
    from tutormax_cli.store.seed import save_batches, write_csv_batches

    context.imports_done()

    if end is None:
        now = datetime.now(UTC)
        end_at = now.replace(hour=0, minute=0, second=0, microsecond=0)
    else:
        end_at = context.parse_instant(end, "--end")
    check_span(days, end_at)
    if out is not None and out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    engine = None if out is not None else context.database(ctx)
    started = time.perf_counter()
    spec = SampleSpec(tutors=tutors, days=days, seed=seed, end=end_at)
    where = str(out) if out is not None else context.settings(ctx).database_label
    bar = _Bar()
    rows = batches(spec, progress=bar)
    changed: dict[str, int] | None = None if out is not None else {}
    try:
        with bar:
            if out is not None:
                write_csv_batches(rows, out)
                counts = _counted(out)
            else:
                assert engine is not None
                counts = save_batches(engine, rows, changed=changed)
    except Exception as exc:
        rows.close()  # the spill directory goes now, whatever failed
        if _is_integrity_error(exc):
            raise DatabaseError(_collision(where, exc)) from None
        raise
    except KeyboardInterrupt:
        rows.close()  # removes the spill directory now, not whenever the generator is collected
        render.err.print(
            _interrupted(bar, where, out), markup=False, highlight=False, soft_wrap=True
        )
        raise typer.Exit(130) from None
    total = time.perf_counter() - started
    summary = ", ".join(f"{n:,} {name}" for name, n in counts.items())
    timing = (
        f"in {total:.2f}s (generation {bar.generated:.2f}s; "
        f"{counts.get('sessions', 0) / max(total, 1e-9):,.0f} sessions/s)"
    )
    render.err.print(_written(summary, where, timing, counts, changed), soft_wrap=True)


def _is_integrity_error(exc: BaseException) -> bool:
    """A unique or foreign-key violation, from SQLAlchemy or from a driver itself (the bulk
    writes run on the raw DBAPI connection), without importing a driver the run did not load."""
    import sys

    modules = ("sqlalchemy.exc", "psycopg2", "sqlite3")
    found = [getattr(sys.modules.get(module), "IntegrityError", None) for module in modules]
    return any(kind is not None and isinstance(exc, kind) for kind in found)


def _collision(where: str, exc: BaseException) -> str:
    """Why a sample did not fit the database: its IDs are the same for every seed (T0001…), so
    rows of another sample (another --seed, --tutors, --days or --end) or of real data collide
    with it on a unique key; the write is one transaction, so nothing of it was kept."""
    from tutormax_cli.store.driver_errors import describe_error

    return (
        f"{where} already holds rows this sample collides with ({describe_error(exc)}); nothing "
        "was written: a sample is upserted only over one made with the same --seed, --tutors, "
        "--days and --end — generate into an empty database"
    )


def _written(
    summary: str, where: str, timing: str, sent: dict[str, int], changed: dict[str, int] | None
) -> str:
    """The closing line. Into a database the rows are upserted, so "Wrote" counts only what the
    database inserted or changed: a rerun with the same seed writes nothing and says so."""
    if changed is None:  # CSV files: every row is written
        return f"Wrote {summary} to {where} {timing}."
    new, total = sum(changed.values()), sum(sent.values())
    if total and not new:
        return f"Nothing changed: {summary} generated, every row as stored in {where} {timing}."
    if new < total:
        summary += f" ({new:,} rows new or changed, {total - new:,} as stored)"
    return f"Wrote {summary} to {where} {timing}."


def _interrupted(bar: _Bar, where: str, out: Path | None) -> str:
    """What a Ctrl-C left behind and what to do next. Writing to a database is one transaction,
    rolled back on the way out (before this is printed): nothing was committed. CSV files are
    written as rows come, so they are left incomplete."""
    done, total = bar.progress.get("writing", (0, 0))
    if not done:
        tutors, planned = bar.progress.get("generating", (0, 0))
        return (
            f"Interrupted while generating ({tutors:,} of {planned:,} tutors): nothing was "
            f"written to {where}. Run the same command again to generate the data."
        )
    sent = f"{done:,} of {total:,} rows"
    if out is None:
        return (
            f"Interrupted while writing ({sent} sent): nothing was committed. The rows are "
            f"written in one transaction, rolled back, so {where} is as it was. Run the same "
            "command again to write them."
        )
    return (
        f"Interrupted while writing ({sent} written): the CSV files in {out} are incomplete. "
        f"Run the same command again to rewrite them, or delete {out}."
    )


def _counted(out: Path) -> dict[str, int]:
    """Data rows of each CSV file written (the header excluded)."""
    import polars as pl

    return {
        path.stem: pl.scan_csv(path, infer_schema=False).select(pl.len()).collect().item()
        for path in sorted(out.glob("*.csv"), key=_table_order)
    }


def _table_order(path: Path) -> int:
    from tutormax_cli.store.seed import TABLE_KEYS

    names = list(TABLE_KEYS)
    return names.index(path.stem) if path.stem in names else len(names)


class _Bar:
    """Two progress bars on stderr when it is a terminal: tutors generated, then rows written,
    each with its rate and the time left. Also notes when generation ended."""

    def __init__(self) -> None:
        import time

        self._clock = time.perf_counter
        self._start = self._clock()
        self.generated = 0.0
        self.progress: dict[str, tuple[int, int]] = {}
        """(done, total) of each phase seen: "generating" (tutors), "writing" (rows)."""
        self._bar: Progress | None = None
        self._tasks: dict[str, TaskID] = {}

    def __call__(self, phase: str, done: int, total: int) -> None:
        self.progress[phase] = (done, total)
        if phase == "generating" and done == total:
            self.generated = self._clock() - self._start
        if not render.err.is_terminal:
            return
        if self._bar is None:
            self._bar = _progress()
            self._bar.start()
        if phase not in self._tasks:
            unit = "tutors" if phase == "generating" else "rows"
            self._tasks[phase] = self._bar.add_task(phase, total=total, unit=unit)
        self._bar.update(self._tasks[phase], completed=done, total=total)

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


def _progress() -> Progress:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        _rate_column(),
        TimeRemainingColumn(),
        console=render.err,
        transient=True,
    )


def _rate_column() -> ProgressColumn:
    from rich.progress import ProgressColumn
    from rich.text import Text

    class Rate(ProgressColumn):
        """Units per second, e.g. `412,300 rows/s`."""

        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            unit = task.fields.get("unit", "")
            return Text("" if speed is None else f"{speed:,.0f} {unit}/s")

    return Rate()
