"""`tutormax sample`: deterministic synthetic TutorMax data for demos, tests and benchmarks."""

from __future__ import annotations

from pathlib import Path

import typer

from tutormax_cli.cli import context, render
from tutormax_cli.errors import UsageError

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

    Example: tutormax sample generate --tutors 60 --days 120 --seed 7 --end 2026-03-03
    """
    import time
    from datetime import UTC, datetime

    from tutormax_cli.sample import SampleSpec, generate
    from tutormax_cli.store.seed import save_tables, write_csv_tables

    context.imports_done()

    if end is None:
        now = datetime.now(UTC)
        end_at = now.replace(hour=0, minute=0, second=0, microsecond=0)
    else:
        end_at = context.parse_instant(end, "--end")
    engine = None if out is not None else context.database(ctx)
    started = time.perf_counter()
    tables = generate(SampleSpec(tutors=tutors, days=days, seed=seed, end=end_at))
    generated = time.perf_counter() - started
    counts = {name: df.height for name, df in tables.items()}
    if out is not None:
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out {out} exists and is not a directory")
        write_csv_tables(tables, out)
        where = str(out)
    else:
        assert engine is not None
        save_tables(engine, tables)
        where = context.settings(ctx).database_label
    total = time.perf_counter() - started
    summary = ", ".join(f"{n:,} {name}" for name, n in counts.items())
    render.err.print(
        f"Wrote {summary} to {where} in {total:.2f}s (generation {generated:.2f}s; "
        f"{counts['sessions'] / max(total, 1e-9):,.0f} sessions/s)."
    )
