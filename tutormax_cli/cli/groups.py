"""`tutormax groups`: every consumer group of every tutormax stream (like
`kafka-consumer-groups --describe`), and resetting or deleting one."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from tutormax_cli import keys
from tutormax_cli.cli import context, render
from tutormax_cli.errors import UsageError

if TYPE_CHECKING:
    import redis

    from tutormax_cli.stream.groups import StreamGroups

app = typer.Typer(
    invoke_without_command=True,
    help="Every consumer group of every tutormax stream; reset or delete one.",
)

STREAM_HELP = "The stream of the group."


@app.callback()
def groups(
    ctx: typer.Context,
    stream: list[str] | None = typer.Option(
        None, "--stream", help="Only this stream (repeatable); default every tutormax stream."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Each stream's length, first and last entry and memory, and each of its groups'
    consumers, pending entries, lag, last-delivered ID and entries read (Redis 7+; null
    before). Lag is counted from the stream where the server does not report it.

    Example: tutormax groups --stream tutormax:sessions:enrichment --json
    """
    if ctx.invoked_subcommand is not None:
        return
    from tutormax_cli.stream.groups import all_groups

    client = context.redis(ctx)
    names = context.servers(ctx, database=False)
    found = all_groups(client, list(stream) if stream else None)
    missing = [s.stream for s in found if not s.exists]  # only named streams can be missing
    if missing:
        from tutormax_cli.cli.pending import stream_not_found

        raise stream_not_found(ctx, missing, names)
    if as_json:
        context.print_json({**names, "streams": [s.as_dict() for s in found]})
        return
    render.out.print(f"Consumer groups · {context.header(names)}", soft_wrap=True)
    for s in found:
        _stream_table(s)


def _size(value: int | None) -> str:
    return "—" if value is None else render.size(value)


def _stream_table(s: StreamGroups) -> None:
    from rich.table import Table

    title = (
        f"{escape(s.stream)}: {s.length:,} entries, {_size(s.memory_bytes)}, "
        f"first {s.first_id or '—'}, last {s.last_id or '—'}"
    )
    if not s.groups:
        render.out.print(f"{title}; no consumer group", soft_wrap=True)
        return
    render.out.print(title, soft_wrap=True)
    table = Table()
    table.add_column("group")
    for name in ("consumers", "pending", "lag", "last delivered", "entries read"):
        table.add_column(name, justify="right")
    for g in s.groups:
        lag = f"{g.lag:,}" if g.lag_exact else f"≥{g.lag:,}"
        table.add_row(
            escape(g.group),
            str(len(g.consumers)),
            f"{g.pending:,}",
            lag,
            g.last_delivered_id,
            "—" if g.entries_read is None else f"{g.entries_read:,}",
        )
    render.out.print(table)
    for g in s.groups:
        if g.consumers:
            render.out.print(
                f"  {escape(g.group)}: "
                + ", ".join(
                    f"{escape(c.name)} ({c.pending:,} pending, idle {render.age(c.idle_s)})"
                    for c in g.consumers
                ),
                soft_wrap=True,
            )


def _target(
    client: redis.Redis, to_id: str | None, to_datetime: str | None, by_duration: str | None
) -> str:
    """The last-delivered ID the options name; exactly one of them."""
    from tutormax_cli.stream import entries
    from tutormax_cli.stream.group_admin import before_ms

    given = [o for o in (to_id, to_datetime, by_duration) if o is not None]
    if len(given) != 1:
        raise UsageError("give exactly one of --to-id, --to-datetime, --by-duration")
    if to_id is not None:
        return "$" if to_id.strip() == "$" else entries.check_id(to_id)
    if to_datetime is not None:
        moment = context.parse_instant(to_datetime, "--to-datetime")
        return before_ms(int(moment.timestamp() * 1000))
    assert by_duration is not None
    back = context.parse_duration(by_duration, "--by-duration")
    return before_ms(entries.server_ms(client) - int(back * 1000))


@app.command("reset")
def reset(
    ctx: typer.Context,
    group: str = typer.Argument(..., help="The consumer group."),
    stream: str = typer.Option(keys.ENRICHMENT_STREAM, "--stream", help=STREAM_HELP),
    to_id: str | None = typer.Option(
        None, "--to-id", help="Deliver the entries after this ID next ($: skip to the end, 0: all)."
    ),
    to_datetime: str | None = typer.Option(
        None, "--to-datetime", help="Deliver the entries from this ISO-8601 time on next."
    ),
    by_duration: str | None = typer.Option(
        None, "--by-duration", help="Deliver the entries of the last DURATION (e.g. 1h) next."
    ),
    execute: bool = typer.Option(False, "--execute", help="Apply; without it, a dry run."),
    force: bool = typer.Option(False, "--force", help="Apply even with live consumers."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
) -> None:
    """Move a group's last-delivered ID (XGROUP SETID): re-deliver history, or skip a backlog.
    A dry run unless --execute; refused while the group has live consumers (a heartbeat, or
    seen by Redis within 60 s) unless --force. Pending entries stay pending.

    Example: tutormax groups reset metrics-workers --by-duration 1h --execute
    """
    from tutormax_cli.stream import group_admin

    client = context.redis(ctx)
    plan = group_admin.plan_reset(
        client, stream, group, _target(client, to_id, to_datetime, by_duration)
    )
    if execute:
        group_admin.apply_reset(client, plan, force=force)
    if as_json:
        context.print_json(
            {**context.servers(ctx, database=False), **plan.as_dict(), "executed": execute}
        )
    verb = "Reset" if execute else "Would reset"
    render.err.print(
        f"{verb} group {escape(group)} on {escape(stream)}: last-delivered {plan.current_id} -> "
        f"{plan.target_id}; lag {plan.lag_before:,} -> {plan.lag_after:,}"
        + (f" ({plan.pending:,} pending entries stay pending)." if plan.pending else "."),
        soft_wrap=True,
    )
    if not execute:
        live = f" (live consumers: {', '.join(plan.live)}; add --force)" if plan.live else ""
        render.err.print(f"Dry run: nothing changed; add --execute to apply{live}.", soft_wrap=True)


@app.command("delete")
def delete(
    ctx: typer.Context,
    group: str = typer.Argument(..., help="The consumer group."),
    stream: str = typer.Option(keys.ENRICHMENT_STREAM, "--stream", help=STREAM_HELP),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    force: bool = typer.Option(False, "--force", help="Delete even with live consumers."),
) -> None:
    """Delete a consumer group (XGROUP DESTROY) with its consumers and pending entries. Asks
    first unless --yes; refused while the group has live consumers unless --force.

    Example: tutormax groups delete old-workers --yes
    """
    from tutormax_cli.stream import group_admin

    client = context.redis(ctx)
    plan = group_admin.plan_delete(client, stream, group)
    if not yes:
        typer.confirm(
            f"Delete group {group} on {stream} ({plan.consumers} consumer(s), "
            f"{plan.pending:,} pending entries)?",
            abort=True,
            err=True,
        )
    group_admin.apply_delete(client, plan, force=force)
    render.err.print(f"Deleted group {escape(group)} on {escape(stream)}.", soft_wrap=True)
