"""The Prometheus endpoint of long-running commands (`worker run`, `pipeline run`).

One definition of the `--metrics-port` / `--metrics-host` options and of starting the server,
so both commands bind the same default host and report a busy port the same way.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any

import typer

from tutormax_cli.cli import render
from tutormax_cli.errors import UsageError

if TYPE_CHECKING:  # prometheus_client is imported only when a port is given: CLI start-up
    from prometheus_client import CollectorRegistry

DEFAULT_METRICS_HOST = "127.0.0.1"
"""Loopback by default: the metrics say which tutors are being computed and how the streams
look, so exposing them is a decision (`--metrics-host 0.0.0.0` behind a firewall), not an
accident. Prometheus on the same host, or nginx in front, reaches loopback."""


def port_option() -> Any:
    """The `--metrics-port` option (a Typer default, typed `int | None` at the parameter)."""
    return typer.Option(None, "--metrics-port", help="Serve Prometheus metrics on this port.")


def host_option() -> Any:
    """The `--metrics-host` option (a Typer default, typed `str` at the parameter)."""
    return typer.Option(
        DEFAULT_METRICS_HOST,
        "--metrics-host",
        help="Address the metrics server binds (0.0.0.0 for every interface).",
    )


def serve(host: str, port: int | None, registry: CollectorRegistry) -> None:
    """Start the metrics server in a daemon thread; a busy port is a one-line error naming it."""
    if port is None:
        return
    from prometheus_client import start_http_server

    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(
                f"--metrics-port {port}: {host}:{port} is already in use by another process"
            ) from None
        raise UsageError(f"--metrics-host {host} --metrics-port {port}: {exc.strerror}") from None
    render.err.print(f"Prometheus metrics on http://{host}:{port}/metrics")
