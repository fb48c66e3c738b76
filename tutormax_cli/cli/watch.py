"""`tutormax watch`: a live table of metric updates."""

from __future__ import annotations

import time
from contextlib import nullcontext
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

from tutormax_cli import keys
from tutormax_cli.cli import context, refresh, render
from tutormax_cli.cli.show import DEFAULT_WINDOW, WindowName, complete_tier
from tutormax_cli.metrics.windows import WINDOWS

if TYPE_CHECKING:
    from rich.table import Table

    from tutormax_cli.stream.board import Board, BoardRow


def register(app: typer.Typer) -> None:
    """Add the top-level `watch` command to `app`."""
    app.command("watch")(watch)


def watch(
    ctx: typer.Context,
    tier: list[str] | None = typer.Option(
        None,
        "--tier",
        help="Only tutors entering or leaving this tier (repeatable).",
        autocompletion=complete_tier,
    ),
    window: WindowName = typer.Option(DEFAULT_WINDOW, "--window", help="The window --tier uses."),
    count: int | None = typer.Option(None, "--count", min=1, help="Stop after N updates."),
    timeout: float | None = typer.Option(None, "--timeout", min=0, help="Stop after S seconds."),
    start: str = typer.Option(
        "$", "--from", help="Start after this entry ID (0: replay the kept history); $: new only."
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per update (a line)."),
    changes: bool = typer.Option(
        False,
        "--changes",
        help="Follow the tier-change feed (tutormax:tiers:changed) instead: one line per change; "
        "--window then filters only when given.",
    ),
) -> None:
    """Follow tutors' tiers as the worker updates them (tutormax:metrics:updated), tier
    changes highlighted. A table that redraws on a terminal, one line per update otherwise.
    Ctrl-C stops.

    Example: tutormax watch --tier "At Risk" --window 7day
    """
    from tutormax_cli import views
    from tutormax_cli.stream import entries, updates
    from tutormax_cli.stream.board import Board

    context.imports_done()

    chosen = set(views.tier_names(tier) or [])
    client = context.redis(ctx)
    if changes:
        given = context.given(ctx, "window")
        _follow_changes(client, chosen, window if given else None, count, timeout, start, as_json)
        return
    board = Board()
    history, last = updates.recent_updates(client)
    if start != "$":
        last = entries.check_id(start)
        history = [u for u in history if entries.id_key(u.id) <= entries.id_key(last)]
    board.prime(history)
    deadline = None if timeout is None else time.monotonic() + timeout
    live = _live(board, chosen, window) if not as_json and render.out.is_terminal else None
    shown, tutors = 0, set()
    try:
        with live or nullcontext():
            while count is None or shown < count:
                wait = refresh.block_ms(deadline)
                if wait is None:
                    break
                news, last = updates.read_updates(client, last, block_ms=wait)
                for update in news:
                    row = board.apply(update)
                    if chosen and not _matches(row, chosen, window):
                        continue
                    shown += 1
                    tutors.add(row.tutor_id)
                    if as_json:
                        _json_line(update.as_dict())
                    elif live is None:
                        render.out.print(_line(row), soft_wrap=True)
                    if count is not None and shown >= count:
                        break
                if live is not None:
                    live.update(_table(board, chosen, window, shown), refresh=True)
    except KeyboardInterrupt:
        pass
    render.err.print(f"Stopped after {shown} update(s) of {len(tutors)} tutor(s).")


def _follow_changes(
    client: Any,
    chosen: set[str],
    window: str | None,
    count: int | None,
    timeout: float | None,
    start: str,
    as_json: bool,
) -> None:
    """`watch --changes`: print tier changes as they are published, one line each."""
    from tutormax_cli.cli.changes import line
    from tutormax_cli.stream import entries, tier_changes

    last = start if start == "$" else entries.check_id(start)
    deadline = None if timeout is None else time.monotonic() + timeout
    shown = 0
    try:
        while count is None or shown < count:
            wait = refresh.block_ms(deadline)
            if wait is None:
                break
            found, last = tier_changes.follow(client, last, block_ms=wait)
            for change in found:
                if window is not None and change.window != window:
                    continue
                if chosen and not {change.from_tier, change.to_tier} & chosen:
                    continue
                shown += 1
                if as_json:
                    _json_line(change.as_dict())
                else:
                    render.out.print(line(change), soft_wrap=True)
                if count is not None and shown >= count:
                    break
    except KeyboardInterrupt:
        pass
    render.err.print(f"Stopped after {shown} tier change(s).")


def _matches(row: BoardRow, chosen: set[str], window: str) -> bool:
    return row.tiers.get(window) in chosen or row.previous.get(window) in chosen


def _json_line(doc: dict[str, Any]) -> None:
    import json
    import sys

    sys.stdout.write(json.dumps(doc, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _cell(row: BoardRow, window: str) -> str:
    new = row.tiers.get(window)
    if window in row.changed:
        return f"[bold]{render.tier(row.previous.get(window))} → {render.tier(new)}[/]"
    return render.tier(new)


def _clock(ms: int) -> str:
    return f"{datetime.fromtimestamp(ms / 1000, UTC):%H:%M:%S}"


def _line(row: BoardRow) -> str:
    cells = "  ".join(f"{w} {_cell(row, w)}" for w in WINDOWS)
    return f"{_clock(row.updated_ms)}Z  {escape(row.tutor_id)}  {cells}"


def _table(board: Board, chosen: set[str], window: str, shown: int = 0) -> Table:
    from rich.table import Table

    rows = [r for r in board.latest(10_000) if not chosen or _matches(r, chosen, window)]
    height = max(render.out.height - 8, 3)
    table = Table(
        title=f"{keys.METRICS_UPDATED_STREAM}: {shown} update(s), {len(rows)} tutor(s)"
        + (f", {window} tier in {', '.join(sorted(chosen))}" if chosen else ""),
        caption="Times UTC; tier changes in bold. Ctrl-C stops.",
        title_justify="left",
        min_width=min(render.out.width, 90),
    )
    table.add_column("time")
    table.add_column("tutor")
    for name in WINDOWS:
        table.add_column(name)
    table.add_column("n", justify="right")
    for r in rows[:height]:
        table.add_row(
            _clock(r.updated_ms),
            escape(r.tutor_id),
            *[_cell(r, w) for w in WINDOWS],
            str(r.updates),
            style="on grey15" if r.changed else None,
        )
    return table


def _live(board: Board, chosen: set[str], window: str) -> Any:
    from rich.live import Live

    return Live(
        _table(board, chosen, window),
        console=render.out,
        auto_refresh=False,
        transient=False,
    )
