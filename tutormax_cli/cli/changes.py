"""`tutormax show changes`: the tier changes of a period, newest first, and the shared rendering
of one change (also used by `tutormax watch --changes`).

Recent changes come from the feed `tutormax:tiers:changed` (who wrote them, the metrics that
decided them); what the stream no longer keeps is read back from the daily rows (a tier that
differs from the same tutor's previous day in that window, source `history`).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

from tutormax_cli.cli import context, render
from tutormax_cli.cli.show import WindowName, complete_tier
from tutormax_cli.errors import UsageError

if TYPE_CHECKING:
    from tutormax_cli.stream.tier_changes import TierChange

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, option: str, now: datetime) -> datetime:
    """`--since`: an ISO-8601 instant, or a duration back from now (`90s`, `30m`, `6h`, `7d`)."""
    match = _DURATION.match(text)
    if match:
        seconds = float(match.group(1)) * _UNITS[match.group(2).lower()]
        try:
            return now - timedelta(seconds=seconds)
        except OverflowError:  # further back than year 1 (or not a finite number)
            from tutormax_cli.instants import EARLIEST_DAY

            raise UsageError(
                f"{option}: {text!r} reaches back before {EARLIEST_DAY}: use a shorter "
                "duration or an ISO-8601 time"
            ) from None
    try:
        return context.parse_instant(text, option)
    except context.NotAnInstant:
        raise UsageError(
            f"{option}: {text!r} is neither an ISO-8601 time (2026-03-02T14:05:00Z) "
            "nor a duration (30m, 6h, 7d)"
        ) from None


def register(app: typer.Typer) -> None:
    """Add `changes` to the `show` group."""
    app.command("changes")(changes)


def changes(
    ctx: typer.Context,
    since: str = typer.Option(
        "24h", "--since", help="From this ISO-8601 time, or this long ago (30m, 6h, 7d)."
    ),
    to: list[str] | None = typer.Option(
        None, "--to", help="Only changes into this tier (repeatable).", autocompletion=complete_tier
    ),
    window: WindowName | None = typer.Option(None, "--window", help="Only this window."),
    limit: int = typer.Option(200, "--limit", min=1, help="At most this many changes."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list."),
) -> None:
    """Tutors whose tier changed, newest first: from the tier-change feed (worker, sweep,
    rollover, recompute), and from the daily rows for what the feed no longer keeps.

    Example: tutormax show changes --since 7d --to "At Risk" --window 7day
    """
    from tutormax_cli import views
    from tutormax_cli.errors import RedisUnavailable
    from tutormax_cli.stream import tier_changes
    from tutormax_cli.stream.connection import connect

    now = datetime.now(UTC)
    start = parse_since(since, "--since", now)
    chosen = views.tier_names(to) or []
    found: list[TierChange] = []
    covered_from: datetime | None = None  # the feed is complete from here on
    try:
        client = connect(context.settings(ctx).redis_url)
    except RedisUnavailable as exc:
        render.err.print(
            f"The tier-change feed is unavailable ({exc}): changes from the daily rows only.",
            markup=False, highlight=False, soft_wrap=True,
        )  # fmt: skip
    else:
        since_ms = max(0, int(start.timestamp() * 1000))  # a stream id is never negative
        for change in tier_changes.recent(client, since_ms):
            if window is not None and change.window != window:
                continue
            if chosen and change.to_tier not in chosen:
                continue
            found.append(change)
        oldest = tier_changes.oldest_ms(client)
        if oldest is not None:
            covered_from = datetime.fromtimestamp(oldest / 1000, UTC)
    if covered_from is None or covered_from > start:
        seen = {_day_key(c) for c in found}  # a change the feed has is not repeated
        with context.database(ctx).connect() as conn:
            history = tier_changes.from_daily_rows(
                conn, start, covered_from, window=window, to_tier=chosen or None
            )
        found.extend(c for c in history if _day_key(c) not in seen)
    found.sort(key=lambda c: c.as_of, reverse=True)
    found = found[:limit]
    if as_json:
        context.print_json([c.as_dict() for c in found])
        return
    for change in found:
        render.out.print(line(change), soft_wrap=True)
    render.err.print(f"{len(found)} tier change(s) since {start:%Y-%m-%dT%H:%M:%S}Z.")


def _day_key(change: TierChange) -> tuple[str, str, str, str, object]:
    return (change.tutor_id, change.window, change.from_tier, change.to_tier, change.as_of.date())


def line(change: TierChange) -> str:
    """One change as a line: time, tutor, window, from → to, source, the deciding metrics."""
    decided = ", ".join(f"{k} {_value(v)}" for k, v in change.metrics.items() if v is not None)
    return (
        f"{change.as_of:%Y-%m-%dT%H:%M:%S}Z  {escape(change.tutor_id)}  {change.window}  "
        f"{render.tier(change.from_tier)} → {render.tier(change.to_tier)}  "
        f"[dim]({change.source}{'; ' + escape(decided) if decided else ''})[/]"
    )


def _value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
