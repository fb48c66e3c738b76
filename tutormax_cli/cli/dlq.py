"""`tutormax dlq`: Inspect, replay and purge the dead-letter stream."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from tutormax_cli import keys
from tutormax_cli.cli import context, render
from tutormax_cli.errors import UsageError

if TYPE_CHECKING:
    import redis

app = typer.Typer(no_args_is_help=True, help="Inspect, replay and purge the dead-letter stream.")

IDS_HELP = "Dead-letter entry IDs (from `tutormax dlq list`)."
STREAM = keys.DEAD_LETTER_STREAM


def _client(ctx: typer.Context) -> redis.Redis:
    from tutormax_cli.stream.connection import connect

    return connect(context.settings(ctx).redis_url)


def _ids(ids: list[str] | None, all_: bool) -> list[str] | None:
    if bool(ids) == all_:
        raise UsageError("name the entry IDs or pass --all, not both nor neither")
    return None if all_ else list(ids or [])


@app.command("list")
def list_(
    ctx: typer.Context,
    limit: int = typer.Option(100, "--limit", min=1, help="At most this many, oldest first."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list."),
) -> None:
    """List the dead letters with the reason each was set aside.

    Example: tutormax dlq list --json | jq '.[] | select(.reason == "checksum mismatch") | .id'
    """
    from rich.table import Table

    from tutormax_cli.stream import inspect

    client = _client(ctx)
    letters = inspect.dead_letters(client, limit=limit)
    now = inspect.server_ms(client)
    total = int(client.xlen(STREAM))
    if as_json:
        context.print_json([d.as_dict(now) for d in letters])
    else:
        sources = {d.source_stream for d in letters}
        usual = sources <= {keys.ENRICHMENT_STREAM}
        heading = f"{STREAM}: {total:,} dead letter(s)"
        render.out.print(heading + (f" from {keys.ENRICHMENT_STREAM}" if usual else ""))
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
                escape(inspect.tutor_of(d.fields) or "—"),
            )
        render.out.print(table)
    if total > len(letters):
        render.err.print(f"Showing {len(letters)} of {total:,}; raise --limit for more.")


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

    from tutormax_cli.stream import inspect

    client = _client(ctx)
    letter = inspect.dead_letter(client, entry_id)
    doc = letter.as_dict(inspect.server_ms(client))
    if as_json:
        context.print_json(doc)
        return
    table = Table(title=f"Dead letter {letter.id}", title_justify="left", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    table.add_row("age", render.age(doc["age_s"]))
    for name in inspect.DEAD_LETTER_META:
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
) -> None:
    """Put dead letters back on their source stream (the worker reads them again) and remove
    them from the dead-letter stream, each in one transaction. All named IDs must exist.

    Example: tutormax dlq replay 1767225600000-0 1767225600001-0
    """
    from tutormax_cli.stream import inspect

    done = inspect.replay(_client(ctx), _ids(ids, all_))
    for r in done:
        render.err.print(f"{r.dead_letter_id} -> {escape(r.source_stream)} {r.new_id}")
    render.err.print(f"Replayed {len(done)} dead letter(s).")


@app.command("purge")
def purge(
    ctx: typer.Context,
    ids: list[str] | None = typer.Argument(None, help=IDS_HELP, show_default=False),
    all_: bool = typer.Option(False, "--all", help="Every dead letter present now."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Delete dead letters for good. Asks first unless --yes. All named IDs must exist.

    Example: tutormax dlq purge --all --yes
    """
    from tutormax_cli.stream import inspect

    client = _client(ctx)
    chosen = _ids(ids, all_)
    count = len(chosen) if chosen is not None else int(client.xlen(STREAM))
    if count == 0:
        render.err.print("The dead-letter stream is empty; nothing to purge.")
        return
    if not yes:
        question = f"Delete {count:,} dead letter(s) from {STREAM}?"
        try:
            confirmed = typer.confirm(question, err=True)
        except typer.Abort:  # end of input: no terminal (cron) and nothing piped
            typer.echo(err=True)  # end the question's line
            raise UsageError(
                f"no answer to confirm deleting {count:,} dead letter(s) (no terminal?): "
                "pass --yes"
            ) from None
        if not confirmed:
            raise typer.Abort()
    deleted = inspect.purge(client, chosen)
    render.err.print(f"Purged {deleted:,} dead letter(s).")
