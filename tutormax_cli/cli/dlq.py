"""`tutormax dlq`: Inspect, count, replay and purge the dead-letter stream."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

from tutormax_cli import keys
from tutormax_cli.cli import context, render
from tutormax_cli.errors import UsageError

if TYPE_CHECKING:
    import redis

    from tutormax_cli.stream.dead_letters import DeadLetter, Selection

app = typer.Typer(
    no_args_is_help=True, help="Inspect, count, replay and purge the dead-letter stream."
)

IDS_HELP = "Dead-letter entry IDs (from `tutormax dlq list`)."
REASON_HELP = "Only dead letters whose reason contains this text (case-insensitive)."
SINCE_HELP = (
    "Only dead letters from this time on: ISO-8601 (2026-03-02T14:00Z), an age (1h) or an entry ID."
)
STREAM = keys.DEAD_LETTER_STREAM


def _client(ctx: typer.Context) -> redis.Redis:
    return context.redis(ctx)


def _selection(
    client: redis.Redis, reason: str | None, since: str | None, limit: int | None
) -> Selection:
    """The filters of the command line; an age (`1h`) is measured on the server's clock, the
    clock of the entry IDs."""
    import re

    from tutormax_cli.stream import entries
    from tutormax_cli.stream.dead_letters import Selection

    since_ms = None
    if since is not None:
        if re.fullmatch(r"\d{12,}(-\d+)?", since.strip()):  # an entry ID: its milliseconds
            since_ms = entries.id_ms(since.strip())
        elif any(c in since for c in "-:T"):
            since_ms = int(context.parse_instant(since, "--since").timestamp() * 1000)
        else:
            since_ms = entries.server_ms(client) - int(
                context.parse_duration(since, "--since") * 1000
            )
    if since_ms is not None:
        since_ms = max(since_ms, 0)
    return Selection(reason=reason or None, since_ms=since_ms, limit=limit)


def _chosen(
    client: redis.Redis,
    ids: list[str] | None,
    all_: bool,
    reason: str | None,
    since: str | None,
    limit: int | None,
) -> list[DeadLetter]:
    """The dead letters a replay or purge acts on: the named IDs, or those the filters (or
    `--all`) choose among the ones present now."""
    from tutormax_cli.stream import dead_letters

    options = {"--all": all_, "--reason": reason, "--since": since, "--limit": limit}
    given = [name for name, value in options.items() if value is not None and value is not False]
    if ids and given:
        raise UsageError(
            f"entry IDs and {'/'.join(given)} cannot be combined: name the IDs, or choose "
            "with the options"
        )
    if not ids and not given:
        raise UsageError("name the entry IDs or pass --all (or --reason/--since/--limit)")
    if ids:
        return dead_letters.select(client, ids)
    return dead_letters.select(client, None, selection=_selection(client, reason, since, limit))


def _heading(names: dict[str, str], total: int, source: str | None = None) -> str:
    origin = f" from {source}" if source else ""
    return f"{STREAM}: {total:,} dead letter(s){origin} · {context.header(names)}"


@app.command("list")
def list_(
    ctx: typer.Context,
    limit: int = typer.Option(100, "--limit", min=1, help="At most this many, oldest first."),
    reason: str | None = typer.Option(None, "--reason", help=REASON_HELP),
    since: str | None = typer.Option(None, "--since", help=SINCE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """List the dead letters with the reason each was set aside.

    Example: tutormax dlq list --reason checksum --since 1h --json | jq '.dead_letters[].id'
    """
    from rich.table import Table

    from tutormax_cli.stream import dead_letters, entries

    client = _client(ctx)
    names = context.servers(ctx, database=False)
    chosen = _selection(client, reason, since, None)
    letters = dead_letters.dead_letters(client, limit=limit, selection=chosen)
    now = entries.server_ms(client)
    total = int(client.xlen(STREAM))
    if as_json:
        context.print_json(
            {
                **names,
                "stream": STREAM,
                "length": total,
                "dead_letters": [d.as_dict(now) for d in letters],
            }
        )
    else:
        sources = {d.source_stream for d in letters}
        usual = sources <= {keys.ENRICHMENT_STREAM}
        render.out.print(
            _heading(names, total, keys.ENRICHMENT_STREAM if usual and letters else None),
            soft_wrap=True,
        )
        table = Table()
        for name in ("entry id", "age", "reason", "source id" if usual else "source", "tutor"):
            table.add_column(name, justify="right" if name == "age" else "left")
        for d in letters:
            source = d.source_id or "—"
            if not usual:
                source = f"{d.source_stream or '?'} {source}"
            table.add_row(
                d.id,
                render.age(d.as_dict(now)["age_s"]),
                escape(d.reason or "—"),
                escape(source),
                escape(d.tutor_id or "—"),
            )
        render.out.print(table)
    filtered = reason is not None or since is not None
    if len(letters) == limit and (filtered or total > limit):
        render.err.print(
            f"Showing the first {limit:,} (of {total:,} in all); raise --limit for more."
        )
    elif not filtered and total > len(letters):
        render.err.print(f"Showing {len(letters)} of {total:,}; raise --limit for more.")


@app.command("stats")
def stats(
    ctx: typer.Context,
    reason: str | None = typer.Option(None, "--reason", help=REASON_HELP),
    since: str | None = typer.Option(None, "--since", help=SINCE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Count the dead letters by reason and by source stream, most frequent first.

    Example: tutormax dlq stats --since 24h
    """
    from rich.table import Table

    from tutormax_cli.stream import dead_letters

    client = _client(ctx)
    names = context.servers(ctx, database=False)
    found = dead_letters.stats(client, selection=_selection(client, reason, since, None))
    doc: dict[str, Any] = {**names, "stream": STREAM, **found.as_dict()}
    if as_json:
        context.print_json(doc)
        return
    render.out.print(_heading(names, found.length), soft_wrap=True)
    if not found.counted:
        render.out.print("No dead letters" + (" match." if reason or since else "."))
        return
    for title, counts in (("reason", found.by_reason), ("source stream", found.by_source)):
        table = Table(title=f"By {title}", title_justify="left")
        table.add_column(title)
        table.add_column("count", justify="right")
        table.add_column("share", justify="right")
        for name, count in counts.items():
            table.add_row(escape(name), f"{count:,}", f"{count / found.counted:.0%}")
        render.out.print(table)
    render.out.print(
        f"Counted {found.counted:,}: oldest {found.oldest_id}, newest {found.newest_id}."
    )


@app.command("show")
def show(
    ctx: typer.Context,
    entry_id: str = typer.Argument(..., help="A dead-letter entry ID."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """One dead letter in full: reason, origin and the original fields.

    Example: tutormax dlq show 1767225600000-0
    """
    from rich.table import Table

    from tutormax_cli.stream import dead_letters, entries

    entry_id = entries.check_id(entry_id)
    client = _client(ctx)
    names = context.servers(ctx, database=False)
    letter = dead_letters.dead_letter(client, entry_id)
    doc = letter.as_dict(entries.server_ms(client))
    if as_json:
        context.print_json({**names, **doc})
        return
    table = Table(
        title=f"Dead letter {letter.id}",
        caption=context.header(names),
        title_justify="left",
        caption_justify="left",
        show_header=False,
    )
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    table.add_row("age", render.age(doc["age_s"]))
    for name in dead_letters.META:
        table.add_row(name, escape(str(doc[name] or "—")))
    for name, value in doc["fields"].items():
        table.add_row(f"[dim]field[/] {escape(name)}", escape(value))
    render.out.print(table)
    render.err.print(
        f"Put it back with `tutormax dlq replay {letter.id}`, "
        f"drop it with `tutormax dlq purge {letter.id}`."
    )


@app.command("replay")
def replay(
    ctx: typer.Context,
    ids: list[str] | None = typer.Argument(None, help=IDS_HELP, show_default=False),
    all_: bool = typer.Option(False, "--all", help="Every dead letter present now."),
    reason: str | None = typer.Option(None, "--reason", help=REASON_HELP),
    since: str | None = typer.Option(None, "--since", help=SINCE_HELP),
    limit: int | None = typer.Option(
        None, "--limit", min=1, help="At most this many, oldest first."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Say what would be replayed; change nothing."
    ),
) -> None:
    """Put dead letters back on their source stream (the worker reads them again) and remove
    them from the dead-letter stream, each in one transaction. All named IDs must exist; with
    --reason/--since/--limit, the matching ones present now.

    Example: tutormax dlq replay --reason "delivered" --since 2h --dry-run
    """
    from tutormax_cli.stream import dead_letters

    client = _client(ctx)
    letters = _chosen(client, ids, all_, reason, since, limit)
    if dry_run:
        dead_letters.check_replayable(letters)
        for d in letters:
            render.err.print(
                f"{d.id} -> {escape(d.source_stream or '?')} ({escape(d.reason or '—')})"
            )
        render.err.print(f"Would replay {len(letters)} dead letter(s) (dry run: nothing changed).")
        return
    done = dead_letters.replay(client, letters)
    for r in done:
        render.err.print(f"{r.dead_letter_id} -> {escape(r.source_stream)} {r.new_id}")
    render.err.print(f"Replayed {len(done)} dead letter(s).")


@app.command("purge")
def purge(
    ctx: typer.Context,
    ids: list[str] | None = typer.Argument(None, help=IDS_HELP, show_default=False),
    all_: bool = typer.Option(False, "--all", help="Every dead letter present now."),
    reason: str | None = typer.Option(None, "--reason", help=REASON_HELP),
    since: str | None = typer.Option(None, "--since", help=SINCE_HELP),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Delete dead letters for good. Asks first unless --yes. All named IDs must exist; with
    --reason/--since, the matching ones present now.

    Example: tutormax dlq purge --reason "tutor_id missing" --yes
    """
    from tutormax_cli.stream import dead_letters

    client = _client(ctx)
    letters = _chosen(client, ids, all_, reason, since, None)
    if not letters:
        render.err.print(
            "No dead letter matches; nothing to purge."
            if reason or since
            else "The dead-letter stream is empty; nothing to purge."
        )
        return
    if not yes:
        question = f"Delete {len(letters):,} dead letter(s) from {STREAM}?"
        try:
            confirmed = typer.confirm(question, err=True)
        except typer.Abort:  # end of input: no terminal (cron) and nothing piped
            typer.echo(err=True)  # end the question's line
            raise UsageError(
                f"no answer to confirm deleting {len(letters):,} dead letter(s) (no terminal?): "
                "pass --yes"
            ) from None
        if not confirmed:
            raise typer.Abort()
    deleted = dead_letters.purge(client, letters)
    render.err.print(f"Purged {deleted:,} dead letter(s).")
