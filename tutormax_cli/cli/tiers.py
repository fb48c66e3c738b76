"""`tutormax tiers`: Explore tier thresholds (what-if simulations)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from tutormax_cli.cli import context, render
from tutormax_cli.cli.show import DEFAULT_WINDOW, WindowName

app = typer.Typer(no_args_is_help=True, help="Explore tier thresholds (what-if simulations).")


@app.command("simulate")
def simulate(
    ctx: typer.Context,
    file: Path = typer.Argument(
        ..., help="TOML thresholds file (see `tutormax tiers show` for the format).", dir_okay=False
    ),
    window: WindowName = typer.Option(DEFAULT_WINDOW, "--window", help="The window."),
    limit: int = typer.Option(20, "--limit", min=1, help="List at most this many moves."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document (every move)."),
) -> None:
    """What the tier distribution would be under other thresholds, and which tutors would
    move. Tiers are recomputed from each tutor's latest stored (rounded) metrics; nothing is
    written — `tutormax recompute --tiers FILE` applies a file for real.

    Example: tutormax tiers simulate strict.toml --window 7day
    """
    from rich.table import Table

    from tutormax_cli import views
    from tutormax_cli.metrics.tiers import load_tiers
    from tutormax_cli.store.query import latest_in_window

    rules = load_tiers(file)
    with context.database(ctx).connect() as conn:
        latest = latest_in_window(conn, window)
    sim = views.simulate(latest, rules, window)
    if as_json:
        context.print_json({"rules_file": str(file), **sim.as_dict()})
        return
    render.out.print(
        f"Tiers under {escape(str(file))} — {window} window, {latest.height} tutors "
        "(nothing written)"
    )
    table = Table()
    table.add_column("tier")
    for name in ("now", "simulated", "change"):
        table.add_column(name, justify="right")
    for r in sim.distribution.iter_rows(named=True):
        change = r["change"]
        shown = f"[bold]{change:+d}[/]" if change else "0"
        table.add_row(render.tier(r["tier"]), str(r["current"]), str(r["simulated"]), shown)
    render.out.print(table)
    moves = sim.moves
    if moves.is_empty():
        render.err.print("No tutor would change tier.")
        return
    listed = Table(title=f"{moves.height} tutor(s) would move", title_justify="left")
    listed.add_column("tutor")
    listed.add_column("now")
    listed.add_column("")
    listed.add_column("simulated")
    for r in moves.head(limit).iter_rows(named=True):
        arrow = "[green]↑[/]" if r["direction"] == "up" else "[red]↓[/]"
        listed.add_row(
            escape(r["tutor_id"]), render.tier(r["current"]), arrow, render.tier(r["simulated"])
        )
    render.out.print(listed)
    if moves.height > limit:
        render.err.print(f"Showing {limit} of {moves.height} moves; --limit or --json for all.")


@app.command("show")
def show(
    tiers_file: Path | None = typer.Argument(
        None,
        help="A TOML thresholds file (default: the built-in rules of docs/metrics.md).",
        dir_okay=False,
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
    toml: bool = typer.Option(False, "--toml", help="Print the built-in file, to copy and edit."),
) -> None:
    """The thresholds and rules tiers are decided by.

    Example: tutormax tiers show --toml > strict.toml
    """
    from dataclasses import asdict, fields
    from importlib import resources

    from rich.table import Table

    from tutormax_cli.metrics.tiers import load_tiers

    if toml:
        files = resources.files("tutormax_cli.metrics")
        typer.echo(files.joinpath("default_tiers.toml").read_text(encoding="utf-8"), nl=False)
        return
    rules = load_tiers(tiers_file)
    counts = {f.name: getattr(rules, f.name) for f in fields(rules) if f.name != "thresholds"}
    if as_json:
        context.print_json({"thresholds": [asdict(t) for t in rules.thresholds], "rules": counts})
        return
    table = Table(title=f"Tier thresholds — {escape(str(tiers_file or 'built-in'))}")
    for name in ("metric", "green", "red"):
        table.add_column(name)
    for t in rules.thresholds:
        table.add_row(t.metric, f"[green]{t.describe('green')}[/]", f"[red]{t.describe('red')}[/]")
    render.out.print(table)
    render.out.print(
        f"Exemplary: ≥ {rules.exemplary_min_green} green and no red; At Risk: ≥ "
        f"{rules.at_risk_min_red} red; Needs Attention: ≥ {rules.needs_attention_min_red} red; "
        f"Strong: ≥ {rules.strong_min_green} green; otherwise Developing. First match wins."
    )
