"""`tutormax show`: one tutor's metrics, trends and reasons; the leaderboard; the tier chart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import typer

if TYPE_CHECKING:
    from tutormax_cli.store.reader import Conn

from tutormax_cli.cli import context, metrics_view, render
from tutormax_cli.errors import UnknownTutor, UsageError

app = typer.Typer(no_args_is_help=True, help="Look at computed metrics.")

WindowName = Literal["7day", "30day", "90day"]
"""A window as a command-line choice: validated and completed by Typer (a test keeps it equal to
`metrics.windows.WINDOWS`; spelled out so `tutormax --help` does not import polars)."""

DEFAULT_WINDOW: WindowName = "30day"
"""The window a view shows when not told: a month smooths a bad week without hiding a trend."""

WINDOW_HELP = "The window (7day, 30day or 90day)."


def complete_tier(incomplete: str) -> list[str]:
    """Tier names for shell completion, matched case-insensitively."""
    from tutormax_cli.metrics.tiers import TIER_NAMES

    return [t for t in TIER_NAMES if t.lower().startswith(incomplete.lower())]


def _complete_metric(incomplete: str) -> list[str]:
    from tutormax_cli.views import METRICS

    return [m for m in METRICS if m.startswith(incomplete)]


def _no_metrics(conn: Conn, tutor_id: str) -> UnknownTutor:
    """Tell an unknown tutor (with the stored spelling, if only the case differs) from a known
    tutor who has no metric rows yet: the fixes differ (the id vs `tutormax recompute`)."""
    from tutormax_cli.store.known import suggestions, unknown_tutors

    if not unknown_tutors(conn, [tutor_id]):
        return UnknownTutor(
            f"tutor {tutor_id} has no metrics yet: run `tutormax recompute --tutor {tutor_id}`"
        )
    hint = suggestions(conn, [tutor_id]).get(tutor_id)
    fix = f"did you mean {hint}?" if hint else "check the id (`tutormax show tutors`)"
    return UnknownTutor(f"unknown tutor {tutor_id!r}: {fix}")


@app.command("tutor")
def tutor(
    ctx: typer.Context,
    tutor_id: str = typer.Argument(..., help="The tutor's id."),
    tiers_file: Path | None = typer.Option(None, "--tiers", help=context.TIERS_HELP),
    window: WindowName = typer.Option(
        DEFAULT_WINDOW, "--window", help="The window of the trend and of --explain."
    ),
    explain: bool = typer.Option(
        False, "--explain", help="Say which flags decided the tier, and the sessions behind it."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """The latest 7/30/90-day metrics of one tutor, each flag with the threshold behind it, and
    a trend per metric over the last 30 daily snapshots.

    Example: tutormax show tutor T0001 --explain --window 7day
    """
    from tutormax_cli.metrics.tiers import load_tiers
    from tutormax_cli.reports import tutor_report

    rules = load_tiers(tiers_file)
    with context.reader(ctx) as conn:
        doc = tutor_report(conn, tutor_id, rules, datetime.now(UTC), window=window, explain=explain)
        if doc is None:
            raise _no_metrics(conn, tutor_id)
    if as_json:
        context.print_json(doc)
        return
    metrics_view.print_tutor(doc)


BOARD_LIMIT = 50
"""Rows `show tutors` prints by default: a screenful an operator reads, not 2,000 lines."""


@app.command("tutors")
def tutors(
    ctx: typer.Context,
    window: WindowName = typer.Option(DEFAULT_WINDOW, "--window", help=WINDOW_HELP),
    tier: list[str] | None = typer.Option(
        None, "--tier", help="Only this tier (repeatable).", autocompletion=complete_tier
    ),
    sort: str | None = typer.Option(
        None,
        "--sort",
        help="Order by this metric (default: tier, then rating).",
        autocompletion=_complete_metric,
    ),
    desc: bool = typer.Option(False, "--desc", help="Reverse the order (highest first)."),
    limit: int | None = typer.Option(
        None, "--limit", min=1, help=f"At most this many [table: {BOARD_LIMIT}; --json: all]."
    ),
    show_all: bool = typer.Option(False, "--all", help="Every tutor, however many."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list."),
) -> None:
    """A leaderboard of every tutor's latest row in one window (the table shows the first
    50 and says how many more there are; --json lists all unless --limit).

    Example: tutormax show tutors --tier "At Risk" --window 30day --sort no_show_count --desc
    """
    from tutormax_cli import views
    from tutormax_cli.store import query

    if show_all and limit is not None:
        raise UsageError("--all and --limit cannot be combined")
    chosen = views.tier_names(tier)
    views.check_sort(sort)
    shown = None if show_all else limit if limit is not None or as_json else BOARD_LIMIT
    with context.reader(ctx) as conn:
        if shown is not None and sort is None and not desc:
            # the default order's first rows, read from the ranking index, and how many
            # there are in all (counted in the database): never every tutor's row, nor polars
            board = views.numbered(query.leaderboard_dicts(conn, window, tiers=chosen, limit=shown))
            counts = query.tier_counts(conn, window)
            total = sum(n for t, n in counts.items() if chosen is None or t in chosen)
        else:
            latest = query.latest_in_window(conn, window)
            frame = views.leaderboard(latest, tiers=chosen, sort=sort, descending=desc)
            total = frame.height
            counts = views.tier_counts(latest)
            board = (frame if shown is None else frame.head(shown)).to_dicts()
    more = 0 if shown is None else max(total - shown, 0)
    if as_json:
        context.print_json(views.leaderboard_records(board))
        return
    metrics_view.print_leaderboard(board, window, sort)
    if more:
        render.err.print(f"… {render.count(more, 'more tutor')} (--limit N or --all to see them)")
    if not counts:
        render.err.print("No metrics yet: run `tutormax recompute`.")


@app.command("tiers")
def tiers(
    ctx: typer.Context,
    window: WindowName = typer.Option(DEFAULT_WINDOW, "--window", help=WINDOW_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of the chart."),
) -> None:
    """The tier distribution of every tutor's latest row, against 7 days earlier (the latest
    rows as they stood on the newest metric date minus 7, from the daily history).

    Example: tutormax show tiers --window 7day
    """
    from tutormax_cli.reports import COMPARE_DAYS, tier_report

    with context.reader(ctx) as conn:
        doc = tier_report(conn, window)
    newest, week = doc["metric_date"], doc["compared_with"]
    if as_json:
        context.print_json(doc)
        return
    metrics_view.print_distribution(doc)
    if week is None and newest is not None:
        render.err.print(
            f"No rows on or before {newest - timedelta(days=COMPARE_DAYS)}: backfill daily "
            "snapshots with "
            "`tutormax recompute --as-of DAY` to see the change.",
            soft_wrap=True,
        )
    if newest is None:
        render.err.print("No metrics yet: run `tutormax recompute`.")


# -- rendering ---------------------------------------------------------------------------------
