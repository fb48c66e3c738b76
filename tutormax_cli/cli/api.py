"""`tutormax api`: serve the HTTP API, and print its OpenAPI schema."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from tutormax_cli.api.config import MAX_PENDING_ROWS, READ_CACHE_SECONDS
from tutormax_cli.cli import context, metrics_server

app = typer.Typer(
    no_args_is_help=True,
    help="The HTTP API: session completions in, metrics out, live updates (needs the api extra).",
)


@app.command("serve")
def serve(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(
        8000,
        "--port",
        min=metrics_server.MIN_PORT,
        max=metrics_server.MAX_PORT,
        help="Port to listen on.",
    ),
    workers: int = typer.Option(1, "--workers", min=1, help="Worker processes."),
    max_body_bytes: int = typer.Option(
        65_536, "--max-body-bytes", min=1024, help="Larger request bodies get 413."
    ),
    read_cache_seconds: float = typer.Option(
        READ_CACHE_SECONDS,
        "--read-cache-seconds",
        min=0,
        envvar="TUTORMAX_API_READ_CACHE_SECONDS",
        help="Reuse read answers this long unless the worker announces a change; 0: off.",
    ),
    max_pending: int = typer.Option(
        MAX_PENDING_ROWS,
        "--max-pending",
        min=1,
        envvar="TUTORMAX_API_MAX_PENDING",
        help="Completions waiting for the writer at most; beyond: 503 with Retry-After.",
    ),
    log_level: str = typer.Option("INFO", "--log-level", help="DEBUG, INFO, WARNING or ERROR."),
) -> None:
    """Run the API on uvicorn until SIGTERM.

    The write endpoint requires `Authorization: Bearer <token>` when TUTORMAX_API_TOKEN (or a
    file named by TUTORMAX_API_TOKEN_FILE) is set. Run it behind nginx (deploy/nginx).

    Example: tutormax api serve --host 127.0.0.1 --port 8000 --workers 4
    """
    from tutormax_cli.api import require_api

    require_api()
    # uvicorn reports a busy port or an unknown host in several log lines and exits 3; with
    # --workers > 1 it binds in this process, without them inside its event loop: either way,
    # in one line and exit 2 here first
    metrics_server.check_bindable(host, port, "--host", "--port", workers=workers)
    import uvicorn

    from tutormax_cli.api.config import ApiConfig
    from tutormax_cli.settings import from_file

    context.imports_done()
    context.setup_logging(log_level)
    context.database(ctx).dispose()  # fail now, in one line, on a wrong URL or an old schema
    token = os.environ.get("TUTORMAX_API_TOKEN") or from_file("TUTORMAX_API_TOKEN")
    config = ApiConfig(
        settings=context.settings(ctx),
        token=token or None,
        max_body_bytes=max_body_bytes,
        read_cache_seconds=read_cache_seconds,
        max_pending_rows=max_pending,
    )
    os.environ.update(config.environ())  # how uvicorn's worker processes get the settings
    # a request's frames are a few rows: polars' thread pool only adds contention between the
    # requests that already run in parallel (measured: 17-22 -> 25 completions/s, 4 workers)
    os.environ.setdefault("POLARS_MAX_THREADS", "1")
    scratch = None
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:  # prometheus_client wants it empty at start: old files would add old counts
        for stale in Path(given).glob("*.db"):
            stale.unlink(missing_ok=True)
    elif workers > 1:
        import tempfile

        scratch = tempfile.mkdtemp(prefix="tutormax-api-prom-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = scratch  # /metrics sums the workers' files
    from tutormax_cli.api.server import NoDelayH11Protocol

    try:
        uvicorn.run(
            "tutormax_cli.api.app:create_app",
            factory=True,
            http=NoDelayH11Protocol,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level.lower(),
            server_header=False,
            proxy_headers=True,
            log_config=None,  # keep tutormax's one log format
        )
    finally:
        if scratch is not None:
            import shutil

            shutil.rmtree(scratch, ignore_errors=True)


@app.command("openapi")
def openapi(
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write the schema here instead of stdout."
    ),
) -> None:
    """Print the API's OpenAPI schema (JSON); docs/openapi.json is this output, committed.

    Example: tutormax api openapi --output docs/openapi.json
    """
    from tutormax_cli.api import require_api

    require_api()
    from tutormax_cli.api.app import create_app
    from tutormax_cli.api.config import ApiConfig

    text = json.dumps(create_app(ApiConfig()).openapi(), indent=2, sort_keys=True) + "\n"
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
