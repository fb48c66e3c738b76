"""`tutormax pipeline`: the streaming pipeline upstream of the metrics worker."""

from __future__ import annotations

import typer

from tutormax_cli import keys
from tutormax_cli.cli import context, metrics_server, stream_options

app = typer.Typer(
    no_args_is_help=True,
    help="Run the validation/enrichment/persistence pipeline on the raw stream.",
)


@app.command("run")
def run(
    ctx: typer.Context,
    consumer: str | None = typer.Option(None, "--consumer", help="Consumer name [hostname-pid]."),
    stream: str = typer.Option(keys.SESSIONS_STREAM, "--stream", help="Raw completions stream."),
    group: str = typer.Option(keys.VALIDATION_GROUP, "--group", help="Consumer group."),
    output: str = typer.Option(keys.ENRICHMENT_STREAM, "--output", help="Stream to publish to."),
    claim_idle: float = typer.Option(
        60.0, "--claim-idle", min=0.001, help="Reclaim entries idle this long."
    ),
    max_deliveries: int = typer.Option(
        5, "--max-deliveries", min=1, help="Dead-letter after this many deliveries."
    ),
    count: int = typer.Option(500, "--count", min=1, help="Entries per XREADGROUP."),
    burst: bool = typer.Option(
        False, "--burst", help="Exit once nothing is new, pending or claimable."
    ),
    metrics_port: int | None = metrics_server.port_option(),
    metrics_host: str = metrics_server.host_option(),
    stream_retention: float = stream_options.retention_option(),
    trim: bool = stream_options.trim_option(),
    dead_letter_maxlen: int = stream_options.dead_letter_maxlen_option(),
    log_level: str = typer.Option("INFO", "--log-level", help="DEBUG, INFO, WARNING or ERROR."),
) -> None:
    """Validate, persist and publish raw session completions; ack after commit.

    Example: tutormax pipeline run --burst
    """

    from tutormax_cli.pipeline.stream import PipelineConfig, pipeline_consumer
    from tutormax_cli.stream.consumer import default_consumer, install_signal_handlers
    from tutormax_cli.stream.observe import WorkerMetrics

    context.imports_done()
    context.setup_logging(log_level)
    config = PipelineConfig(
        stream_retention=stream_retention,
        trim=trim,
        dead_letter_maxlen=dead_letter_maxlen,
        stream=stream,
        group=group,
        output_stream=output,
        consumer=consumer or default_consumer(),
        claim_idle=claim_idle,
        max_deliveries=max_deliveries,
        read_count=count,
        max_batch_entries=5_000,
        burst=burst,
    )
    engine = context.database(ctx)
    client = context.redis(ctx)
    metrics = WorkerMetrics("tutormax_pipeline")
    metrics_server.serve(metrics_host, metrics_port, metrics.registry)
    consumer_ = pipeline_consumer(client, engine, config, metrics=metrics)
    install_signal_handlers(consumer_)
    consumer_.run()
