"""The single-completion route's common case, answered before FastAPI routes the request.

`POST /api/sessions/{id}/complete` is the API's busiest route, and FastAPI's routing,
dependency solving (the bearer token) and response-model round trip cost more CPU than HTTP
itself (~0.28 ms a request over `/healthz`'s ~0.24 with the ingest stubbed out: the route
topped at 37 % of the floor with no database at all). `FastCompletions` sits inside the body
limit and the request metrics and hands a request whose path, token, content type and body
are all plainly right to `handle`, the same checks the route makes, with the same body model
and the same answers; anything else (a bad token, a body the model refuses, an odd header,
the queue full) goes to FastAPI unchanged, body replayed, so every error answer stays the one
FastAPI gives.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tutormax_cli.api.guards import replay

PREFIX, SUFFIX = "/api/sessions/", "/complete"

Handle = Callable[[str, dict[str, bytes], bytes], Awaitable[Response | None]]
"""`handle(session_id, headers, body)`: the answer, or None to leave the request to FastAPI."""


class FastCompletions:
    """Answers `POST /api/sessions/{id}/complete` through `handle` when it can; `route` is
    the FastAPI route it stands for (the request metrics label the request by its template)."""

    def __init__(self, app: ASGIApp, handle: Handle, route: Callable[[], Any]) -> None:
        self.app = app
        self.handle = handle
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or not path.startswith(PREFIX)
            or not path.endswith(SUFFIX)
        ):
            await self.app(scope, receive, send)
            return
        session_id = path[len(PREFIX) : -len(SUFFIX)]
        message = await receive()  # `BodyLimit` in front has read the whole body: one message
        if (
            message["type"] != "http.request"
            or message.get("more_body", False)
            or "/" in session_id
        ):
            await self.app(scope, replay(message, receive), send)
            return
        headers = dict(reversed(scope["headers"]))  # the first of a repeated header, as Starlette
        answer = await self.handle(session_id, headers, message.get("body", b""))
        if answer is None:
            await self.app(scope, replay(message, receive), send)
            return
        scope["route"] = self.route()
        await answer(scope, receive, send)
