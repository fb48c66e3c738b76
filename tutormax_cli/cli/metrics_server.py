"""The Prometheus endpoint of long-running commands (`worker run`, `pipeline run`), and how
every listening address of the CLI is checked and its failures reported.

One definition of the `--metrics-port` / `--metrics-host` options and of starting the server,
so both commands bind the same default host and report a busy port the same way; `api serve`
checks its `--host` / `--port` here too, so a busy port reads the same there.
"""

from __future__ import annotations

import errno
import socket
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

MIN_PORT, MAX_PORT = 1, 65535
"""The ports a listening option accepts. Not 0: the OS would pick a port that no message
names, so neither Prometheus nor nginx could be pointed at it. Above 65535 `bind()` fails
with an OverflowError, below 0 with a resolver error that names neither option nor value."""


def port_option() -> Any:
    """The `--metrics-port` option (a Typer default, typed `int | None` at the parameter)."""
    return typer.Option(
        None,
        "--metrics-port",
        min=MIN_PORT,
        max=MAX_PORT,
        help="Serve Prometheus metrics on this port.",
    )


def host_option() -> Any:
    """The `--metrics-host` option (a Typer default, typed `str` at the parameter)."""
    return typer.Option(
        DEFAULT_METRICS_HOST,
        "--metrics-host",
        help="Address the metrics server binds (0.0.0.0 for every interface).",
    )


def bind_error(
    exc: OSError,
    host: str,
    port: int,
    host_flag: str = "--metrics-host",
    port_flag: str = "--metrics-port",
) -> UsageError:
    """The one-line usage error of an address that cannot be listened on, naming the option
    at fault: the port when another process holds it, the host when it does not resolve,
    both otherwise (e.g. an address of no local interface)."""
    if exc.errno == errno.EADDRINUSE:
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"  # an IPv6 address
        return UsageError(f"{port_flag} {port}: {where} is already in use by another process")
    if isinstance(exc, socket.gaierror):
        return UsageError(f"{host_flag} {host}: {exc.strerror}")
    return UsageError(f"{host_flag} {host} {port_flag} {port}: {exc.strerror}")


def check_bindable(
    host: str, port: int, host_flag: str, port_flag: str, *, workers: int = 1
) -> None:
    """Bind (and release) what the server will bind, before a server that reports its own
    failures in many log lines (uvicorn) starts: with one worker every address `host` resolves
    to, in the families this machine has (asyncio skips one it cannot open a socket of, e.g.
    IPv6 on a kernel without it); with several, the one socket uvicorn's `bind_socket` opens
    (IPv6 when `host` holds a ':', else IPv4).

    SO_REUSEADDR as uvicorn sets it: a port in TIME_WAIT passes, a listening one does not.
    """
    found: list[tuple[Any, Any, int, str, Any]]
    try:
        if workers > 1:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            found = [(family, socket.SOCK_STREAM, 0, "", (host, port))]
        else:
            found = socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP,
                flags=socket.AI_PASSIVE,
            )  # fmt: skip
        for family, kind, proto, _, address in found:
            try:
                probe = socket.socket(family, kind, proto)
            except OSError:
                if workers > 1:
                    raise
                continue  # a family this kernel lacks: asyncio skips it too
            with probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:  # as asyncio binds it: the IPv4 one is separate
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                probe.bind(address)
    except OSError as exc:
        raise bind_error(exc, host, port, host_flag, port_flag) from None


def serve(host: str, port: int | None, registry: CollectorRegistry) -> None:
    """Start the metrics server in a daemon thread; a busy port is a one-line error naming it."""
    if port is None:
        return
    from prometheus_client import start_http_server

    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise bind_error(exc, host, port) from None
    render.err.print(f"Prometheus metrics on http://{host}:{port}/metrics")
