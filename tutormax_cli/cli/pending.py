"""`tutormax pending`: what is stuck in the metrics stream (like `kafka-consumer-groups`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from tutormax_cli import keys
from tutormax_cli.cli import context, refresh, render
from tutormax_cli.errors import UsageError

if TYPE_CHECKING:
    import redis

    from tutormax_cli.stream.groups import GroupReport, StreamNotFound
    from tutormax_cli.stream.pending import PendingEntry


def register(app: typer.Typer) -> None:
    """Add the top-level `pending` command to `app`."""
    app.command("pending", cls=refresh.WatchCommand)(pending)


def pending(
    ctx: typer.Context,
    entries: bool = typer.Option(
        False, "--entries", help="List the pending entries instead of the summary."
    ),
    consumer: str | None = typer.Option(
        None, "--consumer", help="With --entries: only this consumer's entries."
    ),
    limit: int = typer.Option(
        50, "--limit", min=1, help="With --entries: at most this many, oldest first."
    ),
    stream: str = typer.Option(keys.ENRICHMENT_STREAM, "--stream", help="The stream."),
    group: str = typer.Option(keys.METRICS_GROUP, "--group", help="The consumer group."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
    watch: float | None = refresh.watch_option(),
    count: int | None = refresh.count_option(),
) -> None:
    """Lag and pending entries of the metrics workers' consumer group, on the Redis the
    header names; a stream that does not exist there is an error (exit 1), not an empty one.

    Lag: entries not yet delivered to the group (counted from the stream on servers older than
    Redis 7); lag_s: age of the oldest of them. Pending: delivered, not yet acknowledged;
    oldest_pending_age_s: age of the oldest pending entry (by its ID). Per consumer, idle is
    the time since its last attempt to read, inactive since its last successful one (Redis
    7.2+ only, else null). Ages are seconds on the Redis server's clock. Per stream (the
    input and the dead letters): length, memory (MEMORY USAGE), the id below which workers
    trimmed it and how many entries trimming removed (`--stream-retention`).

    With --watch, the summary is redrawn every SECONDS (a line per look when the output is not
    a terminal, a JSON document per line with --json) with the entries arriving and done per
    second over the last interval and the time to drain the backlog (lag + pending).

    Example: tutormax pending --entries --consumer worker-1 --json
    """
    from tutormax_cli.stream.groups import group_report

    if not entries and (consumer is not None or limit != 50):
        raise UsageError("--consumer and --limit go with --entries: tutormax pending --entries")
    if watch is not None and entries:
        raise UsageError("--watch shows the summary: drop --entries")
    if count is not None and watch is None:
        raise UsageError("--count goes with --watch: tutormax pending --watch 5 --count 3")
    client = context.redis(ctx)
    names = context.servers(ctx, database=False)
    report = group_report(client, stream, group)
    if not report.stream_exists:
        raise stream_not_found(ctx, [stream], names)
    if entries:
        named = context.given(ctx, "group")
        _entries(client, report, consumer, limit, names, as_json, named_group=named)
        return
    if watch is not None:
        _watch(client, stream, group, names, watch, count, as_json)
        return
    if not report.exists:
        render.err.print(
            f"Group {group} does not exist on {stream} yet: a worker creates it when it starts "
            "(`tutormax worker run`); until then every entry counts as lag."
        )
    if as_json:
        context.print_json({**names, **report.as_dict()})
        return
    _summary(report, names)
    if report.pending:
        render.err.print("The pending entries: `tutormax pending --entries`.")
    if report.dead_letter:
        render.err.print("The dead letters: `tutormax dlq list`.")


def _entries(
    client: redis.Redis,
    report: GroupReport,
    consumer: str | None,
    limit: int,
    names: dict[str, str],
    as_json: bool,
    *,
    named_group: bool,
) -> None:
    """`--entries`: the pending entries of the group. The metrics group missing is the state
    before the first worker starts (nothing can be pending yet, as the summary says); a group
    named with `--group` that is missing is a name given wrong, which "nothing pending" would
    hide: an error, as `groups reset` reports it."""
    from tutormax_cli.stream.group_admin import UnknownGroup
    from tutormax_cli.stream.pending import pending_entries

    stream, group = report.stream, report.group
    if not report.exists and named_group:
        raise UnknownGroup(f"no group {group} on {stream}: `tutormax groups` lists the groups")
    found = pending_entries(client, stream, group, consumer=consumer, limit=limit)
    if as_json:
        context.print_json(
            {**names, "stream": stream, "group": group, "entries": [e.as_dict() for e in found]}
        )
    else:
        _entries_table(found, stream, group, names)
    if not found:
        render.err.print(f"Nothing pending in group {group} on {stream}.")


def stream_not_found(
    ctx: typer.Context, streams: list[str], names: dict[str, str]
) -> StreamNotFound:
    """The error (exit 1) of streams named on the command line that the Redis read does not
    have: a wrong server is the likely cause, so it names the server (and the embedded one
    when there is one for the database), not only the stream."""
    from tutormax_cli.stream.connection import embedded_hint
    from tutormax_cli.stream.groups import StreamNotFound

    which = f"stream {streams[0]}" if len(streams) == 1 else f"streams {', '.join(streams)}"
    settings = context.settings(ctx)
    return StreamNotFound(
        f"{which} not found on Redis {names['redis']}: nothing was published there "
        "and no worker has started on it (is this the Redis the workers use?)"
        + embedded_hint(settings.redis_url, settings.database_url)
    )


def _watch(
    client: redis.Redis,
    stream: str,
    group: str,
    names: dict[str, str],
    seconds: float,
    count: int | None,
    as_json: bool,
) -> None:
    from tutormax_cli.stream.groups import group_report

    context.imports_done()
    rates = refresh.GroupRates()

    def look(n: int) -> None:
        report = group_report(client, stream, group)
        rate = rates.update(client, stream, group, report.lag + report.pending)
        if as_json:
            refresh.json_line(
                {
                    "at": refresh.now_iso(),
                    **names,
                    **report.as_dict(),
                    "rate": None if rate is None else rate.as_dict(),
                }
            )
        elif render.out.is_terminal:
            render.out.clear()
            _summary(report, names)
            render.out.print(f"{refresh.rate_text(rate)}  [dim]{refresh.clock()}, Ctrl-C stops[/]")
        else:
            render.out.print(
                f"{refresh.clock()} {stream} {group}: lag {report.lag:,} pending "
                f"{report.pending:,} {refresh.rate_text(rate)}",
                soft_wrap=True,
                markup=False,
            )

    refresh.every(seconds, count, look)


def _seconds(value: float | None) -> str:
    return "—" if value is None else render.age(value)


def _summary(r: GroupReport, names: dict[str, str]) -> None:
    from rich.table import Table

    table = Table(
        title=f"{r.stream} — group {r.group}",
        caption=context.header(names),
        title_justify="left",
        caption_justify="left",
    )
    for name in ("length", "lag", "lag age", "pending", "oldest pending", "max deliv.", "DLQ"):
        table.add_column(name, justify="right")
    lag = f"{r.lag:,}" if r.lag_exact else f"≥{r.lag:,}"
    table.add_row(
        f"{r.length:,}",
        f"[yellow]{lag}[/]" if r.lag else lag,
        _seconds(r.lag_s) if r.lag else "—",
        f"[yellow]{r.pending:,}[/]" if r.pending else "0",
        _seconds(r.oldest_pending_age_s),
        f"[red]{r.max_deliveries}[/]" if r.max_deliveries > 1 else str(r.max_deliveries),
        f"[red]{r.dead_letter:,}[/]" if r.dead_letter else "0",
    )
    render.out.print(table)
    streams = Table(title="Streams", title_justify="left")
    streams.add_column("stream")
    for name in ("length", "memory", "trimmed below", "trimmed"):
        streams.add_column(name, justify="right")
    for name, length, memory, trim in (
        (r.stream, r.length, r.memory_bytes, r.trim),
        (keys.DEAD_LETTER_STREAM, r.dead_letter, r.dead_letter_memory_bytes, r.dead_letter_trim),
    ):
        streams.add_row(
            escape(name), f"{length:,}", render.size(memory), trim.below or "—", f"{trim.dropped:,}"
        )
    render.out.print(streams)
    if not r.consumers:
        return
    consumers = Table(title="Consumers", title_justify="left")
    consumers.add_column("consumer")
    for name in ("pending", "idle", "inactive"):
        consumers.add_column(name, justify="right")
    for c in r.consumers:
        consumers.add_row(
            escape(c.name), f"{c.pending:,}", _seconds(c.idle_s), _seconds(c.inactive_s)
        )
    render.out.print(consumers)


def _entries_table(
    found: list[PendingEntry], stream: str, group: str, names: dict[str, str]
) -> None:
    from rich.table import Table

    table = Table(
        title=f"Pending in {stream} — group {group}",
        caption=context.header(names),
        title_justify="left",
        caption_justify="left",
    )
    table.add_column("entry id")
    table.add_column("consumer")
    table.add_column("idle", justify="right")
    table.add_column("deliveries", justify="right")
    table.add_column("tutor")
    for e in found:
        table.add_row(
            e.id,
            escape(e.consumer),
            render.age(e.idle_s),
            f"[red]{e.deliveries}[/]" if e.deliveries > 1 else str(e.deliveries),
            escape(e.tutor_id) if e.tutor_id is not None else "—",
        )
    render.out.print(table)
