"""The read routes' answers, kept for a few seconds per API process.

A tutor's metrics change when the worker writes them, and the worker announces every write on
`tutormax:metrics:updated`, which the process already follows for its WebSockets
(`live.UpdateHub`). So an answer can be reused until either its tutor is announced (or, for a
leaderboard, any tutor: one write can move any rank) or `seconds` have passed. The time bound
covers what is written without an announcement (`recompute`, backfills, a missed feed while
Redis is away): no answer is older than `seconds` plus the read that made it.

A read that started before an announcement is not stored when it ends (it may hold the rows as
they were before the write): every invalidation moves `generation` on, and `put` only stores
under the generation its read started in. Everything runs on the event loop, so there are no
locks. The size bound is in bytes of answer, oldest entries first out.

Requests that miss together share one read (`read_once`): while an answer is being read, the
requests for the same key wait for it instead of reading it again, unless an announcement came
in since it started. So a leaderboard dropped by every update of a busy worker costs one read
per update, not one per request.

Answers are keyed by the request as it came (path and query string), so `ServeCached`, an ASGI
middleware, answers a repeated request before FastAPI routes it, parses its parameters or
starts a response model: a hit costs about what `/healthz` costs. Only a route stores answers,
after it has checked the request, so nothing reaches the cache that the route would refuse.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from tutormax_cli.api.config import READ_CACHE_SECONDS

ENTRY_OVERHEAD = 200
"""Bytes an entry costs beyond its key and body (the entry, the dicts' slots), counted against
`max_bytes` so that many tiny answers cannot outgrow it."""

MAX_QUERY_BYTES = 256
"""Answers to a longer query string are not kept: the routes' parameters fit in far less, and
junk parameters (which FastAPI ignores) would otherwise each make an entry."""

DEFAULT_MAX_BYTES = 32 * 1024 * 1024
"""Answer bytes one process keeps: every tutor's metrics at 50,000 tutors is ~100 MB, so this
keeps the ~15,000 most recently asked for, plus a few leaderboards."""


@dataclass(frozen=True)
class Cached:
    """A kept answer: its JSON body, the tutor it depends on (None: every tutor, as a
    leaderboard does) and the route that made it (for the request metrics' labels)."""

    expires: float
    body: bytes
    tutor_id: str | None
    route: Any = None


def _weight(key: Hashable, body: bytes) -> int:
    """What an entry counts against `max_bytes`: its body, its key's text and the overhead."""
    parts = key if isinstance(key, tuple) else (key,)
    text = sum(len(p) for p in parts if isinstance(p, str | bytes))
    return len(body) + text + ENTRY_OVERHEAD


def _query_bytes(key: Hashable) -> int:
    """The query string's length, for a `request_key`."""
    if isinstance(key, tuple) and len(key) == 2 and isinstance(key[1], bytes):
        return len(key[1])
    return 0


def request_key(scope: Scope) -> tuple[str, bytes]:
    """What answers are kept under: the path and the raw query string."""
    return scope["path"], scope.get("query_string", b"")


class ReadCache:
    """Answer bodies by request key, dropped on announcement, on age or for room."""

    def __init__(
        self,
        seconds: float = READ_CACHE_SECONDS,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.seconds = seconds
        self.max_bytes = max_bytes
        self.clock = clock
        self.generation = 0
        self.size = 0
        self._entries: OrderedDict[Hashable, Cached] = OrderedDict()
        self._by_tutor: dict[str | None, set[Hashable]] = {}
        self._inflight: dict[Hashable, tuple[int, asyncio.Future[bytes]]] = {}

    @property
    def enabled(self) -> bool:
        """Whether answers are kept at all (`seconds` 0 turns the cache off)."""
        return self.seconds > 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> Cached | None:
        """The answer stored under `key`, unless it has expired."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self.clock() >= entry.expires:
            self._drop(key)
            return None
        return entry

    def put(
        self,
        key: Hashable,
        body: bytes,
        *,
        tutor_id: str | None,
        generation: int,
        route: Any = None,
    ) -> None:
        """Keep `body` for `key` if nothing was invalidated since `generation` (read it before
        the database read that made the body) and it fits."""
        if not self.enabled or generation != self.generation:
            return
        if _weight(key, body) > self.max_bytes // 8 or _query_bytes(key) > MAX_QUERY_BYTES:
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = Cached(self.clock() + self.seconds, body, tutor_id, route)
        self._by_tutor.setdefault(tutor_id, set()).add(key)
        self.size += _weight(key, body)
        while self.size > self.max_bytes:
            self._drop(next(iter(self._entries)))

    async def read_once(
        self,
        key: Hashable,
        make: Callable[[], Awaitable[bytes]],
        *,
        tutor_id: str | None,
        route: Any = None,
    ) -> tuple[bytes, bool]:
        """`make()`'s body for `key`, kept (`put`) when it is done; with the cache on, shared
        with the requests for `key` that miss while it runs, as long as nothing was invalidated
        since it started. True when this request shared another's read. A request that goes
        away does not cancel a read others wait for; an error reaches every one of them."""
        if not self.enabled:
            return await make(), False
        generation = self.generation
        running = self._inflight.get(key)
        if running is not None and running[0] == generation:
            return await asyncio.shield(running[1]), True

        async def read() -> bytes:
            body = await make()
            self.put(key, body, tutor_id=tutor_id, generation=generation, route=route)
            return body

        task = asyncio.ensure_future(read())
        self._inflight[key] = (generation, task)
        task.add_done_callback(lambda done: self._landed(key, done))
        return await asyncio.shield(task), False

    def _landed(self, key: Hashable, task: asyncio.Future[bytes]) -> None:
        if key in self._inflight and self._inflight[key][1] is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter that is left has been handed it

    def invalidate(self, tutor_ids: Iterable[str]) -> None:
        """Drop the answers that `tutor_ids`' new rows may change: their own and every
        leaderboard."""
        self.generation += 1
        for tutor in {*tutor_ids, None}:
            for key in self._by_tutor.pop(tutor, set()):
                self._drop(key, index=False)

    def clear(self) -> None:
        """Drop everything (and let no read in flight store its answer)."""
        self.generation += 1
        self._entries.clear()
        self._by_tutor.clear()
        self.size = 0

    def _drop(self, key: Hashable, *, index: bool = True) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self.size -= _weight(key, entry.body)
        if index:
            keys = self._by_tutor.get(entry.tutor_id)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_tutor[entry.tutor_id]


HIT_HEADERS = [(b"content-type", b"application/json"), (b"x-cache", b"HIT")]


class ServeCached:
    """Answers a GET whose answer `cache` holds, before routing; everything else passes on.
    `on_hit` counts it (the route counts its misses)."""

    def __init__(self, app: ASGIApp, cache: ReadCache, on_hit: Callable[[], None]) -> None:
        self.app = app
        self.cache = cache
        self.on_hit = on_hit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and self.cache.enabled:
            hit = self.cache.get(request_key(scope))
            if hit is not None:
                scope["route"] = hit.route  # the request metrics label it by its template
                self.on_hit()
                length = (b"content-length", str(len(hit.body)).encode())
                await send(
                    {"type": "http.response.start", "status": 200,
                     "headers": [*HIT_HEADERS, length]}
                )  # fmt: skip
                await send({"type": "http.response.body", "body": hit.body})
                return
        await self.app(scope, receive, send)
