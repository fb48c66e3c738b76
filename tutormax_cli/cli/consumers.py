"""`tutormax consumers`: remove the consumers of workers that are gone, without losing what
they held."""

from __future__ import annotations

import typer
from rich.markup import escape

from tutormax_cli import keys
from tutormax_cli.cli import context, render

app = typer.Typer(no_args_is_help=True, help="Remove dead consumers from a consumer group.")


@app.command("prune")
def prune(
    ctx: typer.Context,
    idle: str = typer.Option("1h", "--idle", help="Dead: idle at least this long (e.g. 30m, 1h)."),
    stream: str = typer.Option(keys.ENRICHMENT_STREAM, "--stream", help="The stream."),
    group: str = typer.Option(keys.METRICS_GROUP, "--group", help="The consumer group."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would go; change nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
) -> None:
    """Delete the consumers idle at least --idle that no live heartbeat names. Their pending
    entries are first claimed (delivery count and idle time kept) for `tutormax-orphans`,
    where the next claim pass of any live worker takes them; then XGROUP DELCONSUMER.

    Example: tutormax consumers prune --idle 2h --dry-run
    """
    from tutormax_cli.stream import group_admin

    client = context.redis(ctx)
    plan = group_admin.plan_prune(client, stream, group, context.parse_duration(idle, "--idle"))
    moved = 0 if dry_run else group_admin.apply_prune(client, plan)
    if as_json:
        context.print_json(
            {**context.servers(ctx, database=False), **plan.as_dict(), "executed": not dry_run}
        )
    verb = "would remove" if dry_run else "removed"
    for c in plan.dead:
        held = f", {c.pending:,} pending -> {group_admin.ORPHANS}" if c.pending else ""
        render.err.print(
            f"{verb} {escape(c.name)} (idle {render.age(c.idle_s)}{held})", soft_wrap=True
        )
    count = len(plan.dead)
    if dry_run:
        render.err.print(
            f"Dry run: {count} dead consumer(s) of {escape(group)}, {plan.moved:,} pending "
            f"entries to move; {len(plan.kept)} kept. Nothing changed.",
            soft_wrap=True,
        )
    else:
        render.err.print(
            f"Removed {count} dead consumer(s) of {escape(group)} on {escape(stream)}, moved "
            f"{moved:,} pending entries to {group_admin.ORPHANS}; {len(plan.kept)} kept.",
            soft_wrap=True,
        )
