"""`tutormax status`: one screen of health for the on-call."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import typer
from rich.markup import escape

from tutormax_cli.cli import context, refresh, render
from tutormax_cli.errors import TutormaxError, UsageError


def register(app: typer.Typer) -> None:
    """Add the top-level `status` command to `app`."""
    app.command("status", cls=refresh.WatchCommand)(status)


def status(
    ctx: typer.Context,
    as_json: bool = typer.Option(
        False, "--json", help="Print one JSON document (with --watch: one per line)."
    ),
    watch: float | None = refresh.watch_option(),
    count: int | None = refresh.count_option(),
) -> None:
    """Live workers, lag, pending entries, dead letters and metric freshness, with an exit
    code for scripts and probes; the header names the Redis and database it read.

    Exit 1 (unhealthy) when a consumer group has lag or pending entries and no live worker
    (heartbeat) serves it, when a worker's heartbeat says it is not ok (e.g. retrying a database
    that is down), when the metrics stream does not exist on that Redis, or when Redis or the
    database cannot be read: the JSON document is printed all the same, `healthy` false and
    the reason in `problems`. Dead letters arriving in the last hour, and a pending entry older
    than 5 minutes while workers run, are warnings: exit 0. Freshness per window is the age of
    the newest and the oldest calculation_date among active tutors' latest rows.

    With --watch, the view is redrawn every SECONDS (a line per consumer group when the output
    is not a terminal, a JSON document per line with --json) with each group's entries arriving
    and done per second over the last interval and the time to drain its backlog at that
    pace; the exit code is the last look's.

    Example: tutormax status --json | jq .healthy
    """
    if count is not None and watch is None:
        raise UsageError("--count goes with --watch: tutormax status --watch 5 --count 3")
    if watch is not None:
        raise typer.Exit(_watch(ctx, watch, count, as_json))
    doc = collect(ctx)
    if as_json:
        context.print_json(doc)
    else:
        _print(doc)
    raise typer.Exit(0 if doc["healthy"] else 1)


def collect(ctx: typer.Context) -> dict[str, Any]:
    """The status document (`reports.status_report`, shared with the API), the servers named."""
    from tutormax_cli.reports import status_report

    return status_report(
        lambda: _redis(ctx),
        lambda: context.reader(ctx),
        datetime.now(UTC),
        names=lambda: context.servers(ctx),  # imports redis-py: while the database answers
    )


def _redis(ctx: typer.Context) -> Any:
    """The configured Redis, except the embedded server of a SQLite database that does not
    exist: connecting to it would start one (a daemon that outlives this look) for a mistyped
    path. Refused as a problem of the document; the database half says the file is missing."""
    from tutormax_cli.settings import EMBEDDED_REDIS

    s = context.settings(ctx)
    if s.redis_url == EMBEDDED_REDIS and s.database_url.startswith("sqlite"):
        from tutormax_cli.errors import RedisUnavailable
        from tutormax_cli.store.db import open_engine, sqlite_file_missing

        try:
            missing = sqlite_file_missing(open_engine(s.database_url))
        except TutormaxError:  # e.g. its directory does not exist: no database either
            missing = True
        if missing:
            raise RedisUnavailable(
                f"embedded Redis not started: its database {s.database_label} does not exist"
            )
    return context.redis(ctx)


def _watch(ctx: typer.Context, seconds: float, count: int | None, as_json: bool) -> int:
    """Look every `seconds`; returns the exit code of the last look."""
    context.imports_done()
    rates = refresh.GroupRates()
    client: Any = None
    healthy = [False]

    def look(n: int) -> None:
        nonlocal client
        doc = collect(ctx)
        healthy[0] = bool(doc["healthy"])
        if doc["streams"]:
            client = client or context.redis(ctx)
            for s in doc["streams"]:
                rate = rates.update(client, s["stream"], s["group"], s["lag"] + s["pending"])
                s["rate"] = None if rate is None else rate.as_dict()
                s["rate_text"] = refresh.rate_text(rate)
        if as_json:
            streams = [{k: v for k, v in s.items() if k != "rate_text"} for s in doc["streams"]]
            refresh.json_line({"at": refresh.now_iso(), **doc, "streams": streams})
        elif render.out.is_terminal:
            render.out.clear()
            _print(doc)
            _rates(doc)
            render.out.print(f"[dim]{refresh.clock()}: every {seconds:g}s, Ctrl-C stops[/]")
        else:
            verdict = "HEALTHY" if doc["healthy"] else "UNHEALTHY"
            render.out.print(
                f"{refresh.clock()} {verdict} " + context.header(_servers(doc)), soft_wrap=True
            )
            for s in doc["streams"]:
                render.out.print(
                    f"{refresh.clock()} {s['stream']} {s['group']}: lag {s['lag']:,} pending "
                    f"{s['pending']:,} {s['rate_text']}",
                    soft_wrap=True,
                    markup=False,
                )
            for line in doc["problems"]:
                render.out.print(f"{refresh.clock()} ✗ {line}", soft_wrap=True, markup=False)

    refresh.every(seconds, count, look)
    return 0 if healthy[0] else 1


def _rates(doc: dict[str, Any]) -> None:
    from rich import box
    from rich.table import Table

    if not doc["streams"]:
        return
    table = Table(title="Rates (last interval)", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("stream / group", no_wrap=True)
    table.add_column("rate, time to drain")
    for s in doc["streams"]:
        table.add_row(f"{escape(s['stream'])} [dim]{escape(s['group'])}[/]", s["rate_text"])
    render.out.print(table)


def _age(value: float | None) -> str:
    return "—" if value is None else render.age(value)


def _print(doc: dict[str, Any]) -> None:
    from rich import box
    from rich.table import Table

    verdict = "[bold green]HEALTHY[/]" if doc["healthy"] else "[bold red]UNHEALTHY[/]"
    render.out.print(f"tutormax status: {verdict}")
    render.out.print(f"[dim]{escape(context.header(_servers(doc)))}[/]", soft_wrap=True)
    if doc["streams"]:
        _streams(doc)
    if doc["workers"]:
        _workers(doc)
    dl = doc["dead_letter"]
    if dl is not None:
        color = "red" if dl["last_hour"] else "yellow" if dl["length"] else "green"
        render.out.print(
            f"Dead letters: [{color}]{dl['length']:,}[/] ({dl['last_hour']} in the last hour"
            + (f", newest {_age(dl['newest_age_s'])} old)" if dl["length"] else ")")
        )
    if doc["freshness"] is not None:
        fresh = Table(title="Freshness (active tutors)", title_justify="left", box=box.SIMPLE_HEAD)
        for name in ("window", "tutors", "newest", "oldest"):
            fresh.add_column(name, justify="left" if name == "window" else "right")
        for window, f in doc["freshness"].items():
            fresh.add_row(
                window, str(f["tutors"]), _age(f["newest_age_s"]), _age(f["oldest_age_s"])
            )
        render.out.print(fresh)
    _verdicts(doc)


def _streams(doc: dict[str, Any]) -> None:
    from rich import box
    from rich.table import Table

    streams = Table(title="Streams", title_justify="left", box=box.SIMPLE_HEAD)
    streams.add_column("stream / group", no_wrap=True)
    for name in ("live", "length", "lag", "pending", "max deliv"):
        streams.add_column(name, justify="right")
    for s in doc["streams"]:
        if not s["stream_exists"]:
            streams.add_row(
                f"{escape(s['stream'])}\n[dim]{escape(s['group'])}[/]",
                "[red]not found[/]", "—", "—", "—", "—",
            )  # fmt: skip
            continue
        workers = s["workers"]
        lag = f"[yellow]{s['lag']:,}[/] ({_age(s['lag_s'])})" if s["lag"] else "0"
        pending = "0"
        if s["pending"]:
            pending = f"[yellow]{s['pending']:,}[/] ({_age(s['oldest_pending_age_s'])})"
        streams.add_row(
            f"{escape(s['stream'])}\n[dim]{escape(s['group'])}[/]",
            str(workers) if workers else "[red]0[/]",
            f"{s['length']:,}",
            lag,
            pending,
            str(s["max_deliveries"]),
        )
    render.out.print(streams)


def _workers(doc: dict[str, Any]) -> None:
    from rich import box
    from rich.table import Table

    workers = Table(title="Live workers", title_justify="left", box=box.SIMPLE_HEAD)
    for name in ("consumer", "state", "host / pid", "up", "last flush", "entries", "buffered"):
        workers.add_column(name, justify="left" if name[0] in "chs" else "right")
    for w in doc["workers"]:
        state = w["state"] or "—"
        workers.add_row(
            escape(w["consumer"]),
            state if state in ("ok", "—") else f"[red]{escape(state)}[/]",
            escape(f"{w.get('host', '?')}/{w.get('pid', '?')}"),
            _age(w["uptime_s"]),
            _age(w["last_flush_age_s"]),
            str(w.get("entries", "—")),
            str(w.get("buffered", "—")),
        )
    render.out.print(workers)


def _servers(doc: dict[str, Any]) -> dict[str, str]:
    return {"redis": doc["redis"], "database": doc["database"]}


def _verdicts(doc: dict[str, Any]) -> None:
    for line in doc["problems"]:
        render.out.print(f"[red]✗ {escape(line)}[/]", soft_wrap=True)
    for line in doc["warnings"]:
        render.out.print(f"[yellow]! {escape(line)}[/]", soft_wrap=True)
