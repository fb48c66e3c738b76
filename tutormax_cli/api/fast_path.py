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

One answer is given here for the route too: a path id that is not UTF-8 text (`%FF`, which
the server decodes to U+FFFD, so `%FF` and `%FE` would name one session) is a 422 on
`["path", "session_id"]` whatever else the request holds, as FastAPI's `Path` cannot see the
raw path. Only a non-ASCII id pays for the check.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tutormax_cli.api.guards import replay
from tutormax_cli.text import (
    NOT_UTF8,
    NOT_UTF8_BYTES,
    NOT_UTF8_TYPE,
    is_utf8_text,
    raw_path_is_utf8,
    shown,
)

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
        if not session_id.isascii() and "/" not in session_id:
            refused = not_utf8_id(scope, session_id)
            if refused is not None:
                scope["route"] = self.route()
                await refused(scope, receive, send)
                return
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


def not_utf8_id(scope: Scope, session_id: str) -> Response | None:
    """The 422 for a path id that is not UTF-8 text, in FastAPI's shape; None for any other."""
    raw = scope.get("raw_path")
    if isinstance(raw, bytes) and not raw_path_is_utf8(raw.split(b"?", 1)[0]):
        msg, given = NOT_UTF8_BYTES, raw.split(b"?", 1)[0].decode("latin-1")  # as sent: %FF
        if given.startswith(PREFIX) and given.endswith(SUFFIX):
            given = given[len(PREFIX) : -len(SUFFIX)]
    elif not is_utf8_text(session_id):
        msg, given = NOT_UTF8, shown(session_id)
    else:
        return None
    error = {"type": NOT_UTF8_TYPE, "loc": ["path", "session_id"], "msg": msg, "input": given}
    return JSONResponse({"detail": [error]}, status_code=422)
