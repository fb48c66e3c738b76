"""`tutormax verify`: the drift audit, for cron and for an operator in doubt."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from tutormax_cli.cli import context, render
from tutormax_cli.errors import UsageError

if TYPE_CHECKING:
    from tutormax_cli.verify import VerifyResult


def register(app: typer.Typer) -> None:
    """Add the top-level `verify` command to `app`."""
    app.command("verify")(verify)


def verify(
    ctx: typer.Context,
    sample: int | None = typer.Option(
        None, "--sample", min=1, help="Audit this many random tutors [100]."
    ),
    every: bool = typer.Option(False, "--all", help="Audit every tutor with stored rows."),
    as_of: str | None = typer.Option(
        None,
        "--as-of",
        help="Audit the rows that were current at this ISO-8601 instant (default: the newest).",
    ),
    tiers_file: Path | None = typer.Option(
        None, "--tiers", help="The TOML tier thresholds the rows were computed with."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the findings as JSON."),
) -> None:
    """Recompute tutors' latest rows from the raw sessions, feedback and events (never the
    cumulative partials), each as of its own calculation_date, and compare every stored value.

    Exit status: 0 nothing differs, 1 some row differs (the metric and tutors are named), 2 usage.

    Example: tutormax verify --sample 500 || echo "metrics drifted"
    """
    from tutormax_cli.metrics.tiers import load_tiers
    from tutormax_cli.verify import verify as audit

    context.imports_done()
    if every and sample is not None:
        raise UsageError("--sample and --all cannot be combined: --all audits every tutor")
    moment = None if as_of is None else context.parse_instant(as_of, "--as-of")
    rules = load_tiers(tiers_file)
    result = audit(
        context.database(ctx), sample=None if every else (sample or 100), as_of=moment, tiers=rules
    )
    if as_json:
        context.print_json(result.as_dict())
    else:
        for line in summary(result):
            render.out.print(line, markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(0 if result.ok else 1)


def summary(result: VerifyResult) -> list[str]:
    """The findings in lines: one overall, then one per drifted metric."""
    from tutormax_cli.verify import SHOWN_TUTORS

    head = (
        f"Verified {result.rows:,} rows of {result.tutors:,} tutors against the raw rows "
        f"({result.seconds:.2f}s): "
    )
    if result.ok:
        return [head + "nothing differs."]
    lines = [head + f"{result.rows_differing:,} rows differ."]
    for name, drift in sorted(result.metrics.items()):
        tutors = sorted(drift.tutors)
        named = ", ".join(tutors[:SHOWN_TUTORS]) + (" …" if len(tutors) > SHOWN_TUTORS else "")
        by = "" if drift.max_abs_diff is None else f", by up to {drift.max_abs_diff:g}"
        lines.append(f"  {name}: {drift.rows} rows{by}; tutors {named}")
    if result.unreproducible:
        pairs = ", ".join(f"{t} {w}" for t, w in result.unreproducible[:SHOWN_TUTORS])
        lines.append(f"  rows without a session in their 90-day window: {pairs}")
    return lines
