"""`tutormax worker`: run the metrics worker, and check that one is alive."""

from __future__ import annotations

from pathlib import Path

import typer

from tutormax_cli import keys
from tutormax_cli.cli import context, metrics_server, render, stream_options
from tutormax_cli.errors import UsageError

app = typer.Typer(no_args_is_help=True, help="Run the metrics worker and check its health.")


@app.command("run")
def run(
    ctx: typer.Context,
    consumer: str | None = typer.Option(None, "--consumer", help="Consumer name [hostname-pid]."),
    stream: str = typer.Option(keys.ENRICHMENT_STREAM, "--stream", help="Stream to consume."),
    group: str = typer.Option(keys.METRICS_GROUP, "--group", help="Consumer group."),
    debounce: float = typer.Option(
        30.0, "--debounce", min=0, help="Seconds after a tutor's last entry (0: next flush)."
    ),
    max_wait: float = typer.Option(
        45.0, "--max-wait", min=0, help="Longest a tutor waits after its first entry."
    ),
    claim_idle: float | None = typer.Option(
        None,
        "--claim-idle",
        min=0.001,
        help="Reclaim other consumers' entries idle this long; must exceed --max-wait "
        "[max-wait + 75 s].",
    ),
    max_deliveries: int = typer.Option(
        5, "--max-deliveries", min=1, help="Dead-letter an entry delivered more often."
    ),
    count: int = typer.Option(500, "--count", min=1, help="Entries per XREADGROUP."),
    burst: bool = typer.Option(
        False, "--burst", help="Exit once nothing is new, pending, claimable or buffered."
    ),
    metrics_port: int | None = metrics_server.port_option(),
    metrics_host: str = metrics_server.host_option(),
    tiers_file: Path | None = typer.Option(None, "--tiers", help=context.TIERS_HELP),
    sweep: float = typer.Option(
        60.0,
        "--sweep",
        min=0,
        help="Every this many seconds, recompute the tutors whose window edge the clock "
        "crossed (0: off).",
    ),
    verify_every: float = typer.Option(
        600.0,
        "--verify-every",
        min=0,
        help="Seconds between drift audits of a random sample of tutors (0: off).",
    ),
    verify_sample: int = typer.Option(
        20, "--verify-sample", min=0, help="Tutors per drift audit (0: off)."
    ),
    rollover: bool = typer.Option(
        True,
        "--rollover/--no-rollover",
        help="After each UTC midnight, write the end-of-day snapshot of the day that ended.",
    ),
    stream_retention: float = stream_options.retention_option(),
    trim: bool = stream_options.trim_option(),
    dead_letter_maxlen: int = stream_options.dead_letter_maxlen_option(),
    log_level: str = typer.Option("INFO", "--log-level", help="DEBUG, INFO, WARNING or ERROR."),
) -> None:
    """Consume session events, recompute the tutors they name, ack after commit.

    Example: tutormax worker run --debounce 5 --metrics-port 9108
    """
    import logging

    from tutormax_cli.metrics.tiers import load_tiers
    from tutormax_cli.stream.consumer import default_consumer, install_signal_handlers
    from tutormax_cli.stream.observe import WorkerMetrics
    from tutormax_cli.stream.worker import WorkerConfig, metrics_worker

    context.imports_done()
    context.setup_logging(log_level)
    if max_wait < debounce:  # a tutor's entries wait at least the debounce
        if context.given(ctx, "max_wait"):
            raise UsageError(
                f"--max-wait ({max_wait:g} s) is shorter than --debounce ({debounce:g} s): a "
                "tutor's entries always wait the debounce; pass a --max-wait of at least that"
            )
        max_wait = debounce  # the default 45 s under a longer --debounce: raised to it
    config = WorkerConfig(
        stream_retention=stream_retention,
        trim=trim,
        dead_letter_maxlen=dead_letter_maxlen,
        stream=stream,
        group=group,
        consumer=consumer or default_consumer(),
        debounce=debounce,
        max_wait=max_wait,
        claim_idle=claim_idle if claim_idle is not None else max_wait + 75.0,
        max_deliveries=max_deliveries,
        read_count=count,
        burst=burst,
        tiers=load_tiers(tiers_file),
        sweep=sweep,
        rollover=rollover,
        verify_every=verify_every,
        verify_sample=verify_sample,
    )
    config.check()
    engine = context.database(ctx)
    client = context.redis(ctx)
    metrics = WorkerMetrics()
    metrics_server.serve(metrics_host, metrics_port, metrics.registry)
    worker = metrics_worker(client, engine, config, metrics=metrics)
    install_signal_handlers(worker)
    logging.getLogger("tutormax.worker").info(
        "worker %s on %s (group %s), database %s, debounce %.3gs, max-wait %.3gs, "
        "sweep %s, rollover %s",
        config.consumer, stream, group, context.settings(ctx).database_label,
        config.debounce, config.max_wait, f"{sweep:g}s" if sweep else "off",
        "on" if rollover else "off",
    )  # fmt: skip
    worker.run()


@app.command("health")
def health(
    ctx: typer.Context,
    stream: str = typer.Option(keys.ENRICHMENT_STREAM, "--stream", help="Stream of the group."),
    group: str = typer.Option(keys.METRICS_GROUP, "--group", help="Consumer group."),
    accept_retrying: bool = typer.Option(
        False, "--accept-retrying", help="Also exit 0 when a live worker is retrying a failure."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the live workers as JSON."),
) -> None:
    """Exit 0 when a live worker's heartbeat says `ok`, 1 otherwise (for systemd and probes).

    Each live worker is printed with its state: ok, retrying (since when, and why) or draining.
    A worker in a long flush keeps beating, so it is not reported dead.

    Example: tutormax worker health || systemctl restart tutormax-worker@9108
    """
    from tutormax_cli.stream import heartbeat

    client = context.redis(ctx)
    live = heartbeat.live_workers(client, stream, group)
    good = {heartbeat.OK, heartbeat.RETRYING} if accept_retrying else {heartbeat.OK}
    healthy = any(w.state in good for w in live)
    if as_json:
        now_ms = int(client.time()[0]) * 1000
        context.print_json(
            {
                "stream": stream,
                "group": group,
                "healthy": healthy,
                "live": [w.as_dict(now_ms) for w in live],
            }
        )
    elif live:
        for w in live:
            i = w.info
            render.out.print(
                f"{w.consumer} {w.describe()}: {i.get('entries', 0)} entries, "
                f"{i.get('tutors', 0)} tutors, {i.get('buffered', 0)} buffered, "
                f"last flush {i.get('last_flush_at') or 'never'}",
                markup=False,
                soft_wrap=True,  # one line per worker, whatever the width (journald, files)
            )
        if not healthy:
            render.err.print(f"No worker on {stream} (group {group}) is ok.")
    else:
        render.err.print(f"No live worker on {stream} (group {group}).")
    raise typer.Exit(0 if healthy else 1)
