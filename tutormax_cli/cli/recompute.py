"""`tutormax recompute`: the batch snapshot, as of an instant."""

from __future__ import annotations

from pathlib import Path

import typer

from tutormax_cli.cli import context, render


def register(app: typer.Typer) -> None:
    """Add the top-level `recompute` command to `app`."""
    app.command("recompute")(recompute)


def recompute(
    ctx: typer.Context,
    as_of: str | None = typer.Option(
        None, "--as-of", help="Compute as of this instant (ISO-8601; default: now)."
    ),
    tutor: list[str] | None = typer.Option(
        None, "--tutor", help="Only this tutor (repeatable). Default: every tutor."
    ),
    tiers_file: Path | None = typer.Option(
        None, "--tiers", help="TOML file of tier thresholds (default: METRICS.md §4)."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Compute and report; write nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Compute and upsert every tutor's 7/30/90-day metrics as of an instant.

    Example: tutormax recompute --as-of 2026-03-03T00:00Z --tutor T0001
    """
    from tutormax_cli.metrics.tiers import load_tiers
    from tutormax_cli.recompute import recompute_as_of

    rules = load_tiers(tiers_file)
    at = context.parse_instant(as_of, "--as-of")
    engine = context.database(ctx)
    with render.phase_progress(enabled=not as_json) as progress:
        result, _ = recompute_as_of(
            engine, at, tutors=tutor or None, tiers=rules, write=not dry_run, progress=progress
        )
    if as_json:
        context.print_json(result.as_dict())
        return
    render.out.print(render.recompute_summary(result))
