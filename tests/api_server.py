"""A real `tutormax api serve` process on a free port, for the API tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

TOKEN = "test-token-7f3a9c"

ClientFor = Callable[[str], httpx.Client]
"""The `client_for` fixture: an HTTP client for a server's base URL, closed after the test."""

STARTUP_SECONDS = 120
"""Generous: a server starts in ~2 s, but on a loaded 2-core machine imports alone can take 30 s,
and a start that is merely slow is not what these tests are about."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def api_server(
    database_url: str,
    redis_url: str,
    *,
    token: str | None = TOKEN,
    workers: int = 1,
    log: Path | None = None,
    extra: tuple[str, ...] = (),
    port: int | None = None,
) -> Iterator[str]:
    """Start the server (on `port`, or a free one), wait for `/healthz`, yield its base URL;
    SIGTERM it afterwards and check it shut down (status 0, or death by the re-raised
    SIGTERM)."""
    port = port or free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TUTORMAX_", "PROMETHEUS_"))}
    env.update(TUTORMAX_DATABASE_URL=database_url, TUTORMAX_REDIS_URL=redis_url)
    if token is not None:
        env["TUTORMAX_API_TOKEN"] = token
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "tutormax_cli", "api", "serve", "--port", str(port),
         "--workers", str(workers), "--log-level", "WARNING", *extra],
        env=env, stdout=out, stderr=subprocess.STDOUT if log else subprocess.PIPE,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise AssertionError(f"api serve exited {proc.returncode}: {err}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"api serve gave no /healthz in {STARTUP_SECONDS} s")
            time.sleep(0.1)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        if not isinstance(out, int):  # a log file, not DEVNULL
            out.close()
        if proc.stderr:
            proc.stderr.close()
        # uvicorn shuts down gracefully, then re-raises the signal: systemd counts that as clean
        assert code in (0, -signal.SIGTERM), f"api serve exited {code} on SIGTERM"
