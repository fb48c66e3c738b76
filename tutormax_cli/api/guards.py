"""ASGI middleware in front of every route: a request-size limit, request metrics and the
`Retry-After` of every 503.

Both are plain ASGI so they see the raw byte stream and the final status, whatever the route
raised. The size limit buffers at most `limit` bytes and answers 413 past it, before the route
parses anything, so an oversized or endless body costs nothing but the bytes read.
"""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tutormax_cli.api.config import OUTAGE_RETRY_AFTER_SECONDS
from tutormax_cli.api.observe import ApiMetrics

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
RETRY_AFTER = (b"retry-after", str(OUTAGE_RETRY_AFTER_SECONDS).encode())


async def _answer(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """413 for a request body over `limit` bytes, declared or streamed (`overrides`: another
    limit for some paths, e.g. the batch endpoint's)."""

    def __init__(self, app: ASGIApp, limit: int, overrides: dict[str, int] | None = None) -> None:
        self.app = app
        self.limit = limit
        self.overrides = overrides or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        limit = self.overrides.get(scope["path"], self.limit)
        too_big = f"request body over {limit} bytes"
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > limit):
                await _answer(send, 413, too_big)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _answer(send, 413, too_big)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        whole: Message = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, replay(whole, receive), send)


def replay(first: Message, receive: Receive) -> Receive:
    """`receive` that gives `first` back once, then waits on `receive` (for the disconnect):
    for an app behind a middleware that has read the request's first message already."""
    replayed = False

    async def again() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return first

    return again


class RequestMetrics:
    """Counts and times every HTTP request by method, route template and status, and gives
    each 503 that has none a `Retry-After` (`OUTAGE_RETRY_AFTER_SECONDS`): every 503 the API
    gives is an outage or a full queue that a retry can outlive, whichever handler, route or
    the fast path answered it (one place, so no new 503 can forget it)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                if status == 503:
                    message = _retry_after(message)
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            route = _route(scope)
            method = scope["method"]
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.duration.labels(method, route).observe(time.perf_counter() - started)


def _retry_after(start: Message) -> Message:
    """`start` with `RETRY_AFTER` unless it says when to retry already (the full queue does)."""
    headers = list(start.get("headers", []))
    if any(name.lower() == b"retry-after" for name, _ in headers):
        return start
    return {**start, "headers": [*headers, RETRY_AFTER]}


def _route(scope: Scope) -> str:
    """The matched route's template; `unmatched` for a path no route has (never the path)."""
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"
