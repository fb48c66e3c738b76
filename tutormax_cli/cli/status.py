"""`tutormax status`: one screen of health for the on-call."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import typer
from rich.markup import escape

from tutormax_cli.cli import context, render


def register(app: typer.Typer) -> None:
    """Add the top-level `status` command to `app`."""
    app.command("status")(status)


def status(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Live workers, lag, pending entries, dead letters and metric freshness, with an exit
    code for scripts and probes.

    Exit 1 (unhealthy) when a consumer group has lag or pending entries and no live worker
    (heartbeat) serves it, when Redis or the database cannot be read. Dead letters arriving in
    the last hour, and a pending entry older than 5 minutes while workers run, are warnings:
    exit 0. Freshness per window is the age of the newest and the oldest calculation_date among
    active tutors' latest rows.

    Example: tutormax status --json | jq .healthy
    """
    from tutormax_cli.reports import status_report
    from tutormax_cli.stream.connection import connect

    client = connect(context.settings(ctx).redis_url)
    doc = status_report(client, lambda: context.database(ctx).connect(), datetime.now(UTC))
    if as_json:
        context.print_json(doc)
    else:
        _print(doc)
    raise typer.Exit(0 if doc["healthy"] else 1)


def _age(value: float | None) -> str:
    return "—" if value is None else render.age(value)


def _print(doc: dict[str, Any]) -> None:
    from rich import box
    from rich.table import Table

    verdict = "[bold green]HEALTHY[/]" if doc["healthy"] else "[bold red]UNHEALTHY[/]"
    render.out.print(f"tutormax status: {verdict}")
    streams = Table(title="Streams", title_justify="left", box=box.SIMPLE_HEAD)
    streams.add_column("stream / group", no_wrap=True)
    for name in ("live", "length", "lag", "pending", "max deliv"):
        streams.add_column(name, justify="right")
    for s in doc["streams"]:
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
    if doc["workers"]:
        workers = Table(title="Live workers", title_justify="left", box=box.SIMPLE_HEAD)
        for name in ("consumer", "host / pid", "up", "last flush", "entries", "buffered"):
            workers.add_column(name, justify="left" if name[0] in "ch" else "right")
        for w in doc["workers"]:
            workers.add_row(
                escape(w["consumer"]),
                escape(f"{w.get('host', '?')}/{w.get('pid', '?')}"),
                _age(w["uptime_s"]),
                _age(w["last_flush_age_s"]),
                str(w.get("entries", "—")),
                str(w.get("buffered", "—")),
            )
        render.out.print(workers)
    dl = doc["dead_letter"]
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
    for line in doc["problems"]:
        render.out.print(f"[red]✗ {escape(line)}[/]")
    for line in doc["warnings"]:
        render.out.print(f"[yellow]! {escape(line)}[/]")
