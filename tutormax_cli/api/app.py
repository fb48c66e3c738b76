"""The FastAPI application: routes, error answers, start-up and shutdown.

The synchronous SQLAlchemy engine and Redis client run on the thread pool. The read routes are
`async def`s that hand only their database work to it (`_blocking`): as plain `def`s FastAPI
would validate and serialize their answer in a second trip through the pool, and a request
would queue twice for the same 16 threads. `/healthz` never leaves the event loop, so it
answers while every thread is busy. Every error answers JSON with a one-line `detail`
(422: FastAPI's list of `{loc, msg, type}`, the same for the ingest rules as for types), and a
database or Redis outage is a 503 naming which, never a traceback.

No `from __future__ import annotations` here: FastAPI reads the routes' annotations at
definition time, and some name closures (`Depends(authorized)`).
"""

import asyncio
import hmac
import logging
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any, TypeVar

import anyio.to_thread
import redis
import sqlalchemy as sa
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, WebSocket
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.websockets import WebSocketDisconnect

from tutormax_cli.api import models
from tutormax_cli.api.batch import (
    BATCH_PATH,
    NESTED_TOO_DEEPLY,
    TooManyItems,
    batch_request_body,
    loads,
    read_batch,
    results,
    validation_errors,
)
from tutormax_cli.api.batcher import RETRY_AFTER_SECONDS, Batcher, Overloaded
from tutormax_cli.api.completion import (
    ACCEPTED,
    Failed,
    InvalidCompletion,
    Outcome,
    ingest_completions,
)
from tutormax_cli.api.config import OUTAGE_RETRY_AFTER_SECONDS as OUTAGE_RETRY_AFTER
from tutormax_cli.api.config import SQLITE_BUSY_SECONDS, ApiConfig
from tutormax_cli.api.dashboard import dashboard_router
from tutormax_cli.api.fast_path import FastCompletions
from tutormax_cli.api.guards import BodyLimit, RequestMetrics
from tutormax_cli.api.live import Subscription, UpdateHub
from tutormax_cli.api.observe import ApiMetrics, TableStats, exposition, multiprocess_dir
from tutormax_cli.api.read_batcher import ReadBatcher
from tutormax_cli.api.read_cache import ReadCache, ServeCached, request_key
from tutormax_cli.errors import RedisUnavailable, TutormaxError, UsageError
from tutormax_cli.metrics.windows import WINDOWS
from tutormax_cli.store.driver_errors import describe_error

log = logging.getLogger("tutormax.api")

ORDER = {name: i for i, name in enumerate(WINDOWS)}
"""A window's place in answers that list windows: the contract's order."""

THREADS = 16
"""Requests handled at once per process (FastAPI runs the handlers on a thread pool), and as
many database connections kept open: with anyio's default of 40 threads and SQLAlchemy's pool
of 5, a busy process opened and closed a PostgreSQL connection for most requests."""

ID_LENGTH = 50
"""The contract's id columns are VARCHAR(50); a longer id cannot name anything."""

TutorId = Annotated[str, Path(min_length=1, max_length=ID_LENGTH, description="A tutor id.")]
SessionId = Annotated[str, Path(min_length=1, max_length=ID_LENGTH, description="A session id.")]
WindowQuery = Query(None, description="7day, 30day or 90day (400 otherwise).")

PROBLEMS: dict[int | str, dict[str, Any]] = {
    400: {"model": models.Problem, "description": "A bad query parameter."},
    404: {"model": models.Problem, "description": "No such tutor."},
    503: {
        "model": models.Problem,
        "description": f"The database or Redis is down (`Retry-After: {OUTAGE_RETRY_AFTER}`).",
    },
}


OUTAGE = (
    f"The database or Redis is unavailable (`Retry-After: {OUTAGE_RETRY_AFTER}`), or the batch "
    f"queue is full (`Retry-After: {RETRY_AFTER_SECONDS}`). After a Redis failure the session "
    "is saved but not published: retry."
)


T = TypeVar("T")


async def _blocking(work: Callable[[], T]) -> T:
    """`work` (database reads) on the thread pool, the event loop free meanwhile."""
    return await anyio.to_thread.run_sync(work)


def _version() -> str:
    try:
        return version("tutormax-cli")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"


class Services:
    """The connections one API process holds: opened lazily, so the API starts (and `/healthz`
    answers) while PostgreSQL or Redis is still coming up; `/readyz` says when they are."""

    def __init__(self, config: ApiConfig) -> None:
        from tutormax_cli.store.db import open_engine

        self.config = config
        self.engine = open_engine(config.settings.database_url, pool_size=THREADS)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_busy_timeout)
        self.reads = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        """The engine for the read routes: each is one or two SELECTs that need no transaction
        around them, and autocommit spares the BEGIN and ROLLBACK round trips."""
        self._redis: redis.Redis | None = None
        self._lock = threading.Lock()

    def redis_client(self) -> redis.Redis:
        """The shared Redis client (thread-safe: redis-py pools its connections)."""
        from tutormax_cli.stream.connection import connect

        with self._lock:
            if self._redis is None:
                self._redis = connect(
                    self.config.settings.redis_url,
                    check=False,
                    database_url=self.config.settings.database_url,
                )
            return self._redis

    def redis_probe(self) -> redis.Redis:
        """`redis_client` for `/readyz` and `/api/status`: an embedded server whose socket is
        gone fails at once, not after redis-py's ~4 s of retries (a socket file that does not
        exist cannot start answering within them; a TCP port keeps its retries, since a
        restart or failover behind it can). Before the first client, `redis_client` starts
        the embedded server, as it always has."""
        from tutormax_cli.settings import EMBEDDED_REDIS
        from tutormax_cli.stream.connection import embedded_socket

        settings = self.config.settings
        if self._redis is not None and settings.redis_url == EMBEDDED_REDIS:  # else: start it
            sock = embedded_socket(settings.database_url)
            if not sock.exists():
                raise RedisUnavailable(f"embedded Redis cannot be reached: no socket {sock}")
        return self.redis_client()

    def new_redis(self) -> redis.Redis:
        """A client of its own, for the live-update thread's blocking reads."""
        from tutormax_cli.stream.connection import connect

        return connect(
            self.config.settings.redis_url,
            check=True,
            database_url=self.config.settings.database_url,
        )

    def close(self) -> None:
        """Release the pools at shutdown."""
        self.engine.dispose()
        if self._redis is not None:
            self._redis.close()


def _window(window: str | None) -> str | None:
    if window is not None and window not in WINDOWS:
        raise UsageError(f"window {window!r} is not one of {', '.join(WINDOWS)}")
    return window


def create_app(config: ApiConfig | None = None) -> FastAPI:  # noqa: C901 - one closure per route
    """The application for one process (uvicorn calls this once per worker)."""
    config = config or ApiConfig.from_env()
    services = Services(config)
    metrics = ApiMetrics()
    stats = TableStats(services.engine, config.stats_ttl)
    if multiprocess_dir() is None:
        metrics.registry.register(stats)
    cache = ReadCache(config.read_cache_seconds)

    def latest_of(tutor_ids: list[str]) -> dict[str, list[dict[str, Any]] | None]:
        """Each tutor's newest rows (None for an id `tutors` does not have), in one read."""
        from tutormax_cli.store import query

        with services.reads.connect() as conn:
            found = query.latest_for_tutors_dicts(conn, tutor_ids)
            missing = [t for t in tutor_ids if t not in found]
            known = query.known_tutors(conn, missing)
        return {t: found.get(t, [] if t in known else None) for t in tutor_ids}

    latest_reads = ReadBatcher(latest_of)
    hub = UpdateHub(
        services.new_redis,
        config.updates_stream,
        on_delivered=metrics.pushed.inc,
        on_updates=lambda updates: cache.invalidate(u.tutor_id for u in updates),
        on_start=cache.clear,
    )

    def ingest(batch: Sequence[tuple[str, models.SessionCompletion]]) -> list[Outcome]:
        return ingest_completions(
            services.engine, services.redis_client(), batch, stream=config.publish_stream
        )

    batcher = Batcher(
        ingest,
        max_pending=config.max_pending_rows,
        observe=metrics.observe_batch,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        from tutormax_cli.store.db import url_label

        log.info("API on database %s, Redis %s", url_label(services.engine),
                 config.settings.redis_label)  # fmt: skip
        if config.token is None:
            log.warning("no TUTORMAX_API_TOKEN: anyone who reaches the API can post sessions")
        anyio.to_thread.current_default_thread_limiter().total_tokens = THREADS
        hub.start()
        batcher.start()
        latest_reads.start()
        try:
            yield
        finally:
            await latest_reads.stop()
            await batcher.stop()
            await asyncio.to_thread(hub.stop)
            services.close()
            if multiprocess_dir() is not None:  # this worker's live gauges stop counting
                from prometheus_client import multiprocess

                multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

    app = FastAPI(
        title="TutorMax metrics API",
        version=_version(),
        description=(
            "Session completions in, tutor performance metrics out (docs/metrics.md), live updates "
            "over WebSockets at `/ws/tutors/{tutor_id}` and `/ws/tutors`."
        ),
        lifespan=lifespan,
    )
    app.add_middleware(
        FastCompletions, handle=lambda *a: fast_complete(*a), route=lambda: complete_route
    )
    app.add_middleware(ServeCached, cache=cache, on_hit=metrics.read_cache.labels("hit").inc)
    app.add_middleware(
        BodyLimit, limit=config.max_body_bytes, overrides={BATCH_PATH: config.max_batch_bytes}
    )
    app.add_middleware(RequestMetrics, metrics=metrics)
    bearer = HTTPBearer(auto_error=False, description="Set TUTORMAX_API_TOKEN to require it.")

    def token_ok(given: str | None) -> bool:
        """The bearer token rule, for the route's dependency and the fast path alike."""
        if config.token is None:
            return True
        return hmac.compare_digest((given or "").encode(), config.token.encode())

    async def authorized(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        if not token_ok(credentials.credentials if credentials else None):
            raise HTTPException(401, "missing or wrong bearer token",
                                headers={"WWW-Authenticate": "Bearer"})  # fmt: skip

    async def cached(
        request: Request,
        tutor_id: str | None,
        model: type[BaseModel],
        produce: Callable[[], Awaitable[dict[str, Any]]],
    ) -> Response:
        """The answer to a read route that `ServeCached` did not find kept: `produce`d from the
        database (one read for the requests that miss together), checked and rendered as
        FastAPI renders a `response_model`, and kept under the request as it came. Errors are
        never kept."""

        async def make() -> bytes:
            content = model.model_validate(await produce())
            return bytes(JSONResponse(content.model_dump(mode="json", by_alias=True)).body)

        body, shared = await cache.read_once(
            request_key(request.scope), make, tutor_id=tutor_id, route=request.scope.get("route")
        )
        state = "shared" if shared else "miss"
        metrics.read_cache.labels(state).inc()
        return Response(body, media_type="application/json",
                        headers={"X-Cache": state.upper()})  # fmt: skip

    def invalid_answer(exc: InvalidCompletion) -> JSONResponse:
        return JSONResponse({"detail": [e.as_dict() for e in exc.errors]}, status_code=422)

    def failed_answer(exc: Failed) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def unprocessable(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own answer, but one that never fails to encode (NaN, a deep `input`)
        return JSONResponse({"detail": validation_errors(exc.errors())}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if isinstance(exc.__cause__, RecursionError):  # FastAPI's "error parsing the body"
            return JSONResponse({"detail": NESTED_TOO_DEEPLY}, status_code=400)
        return await http_exception_handler(request, exc)

    @app.exception_handler(InvalidCompletion)
    async def invalid(_request: Request, exc: InvalidCompletion) -> JSONResponse:
        return invalid_answer(exc)

    @app.exception_handler(UsageError)
    async def bad_request(_request: Request, exc: UsageError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(TooManyItems)
    async def too_many(_request: Request, exc: TooManyItems) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=413)

    @app.exception_handler(Failed)
    async def failed(_request: Request, exc: Failed) -> JSONResponse:
        return failed_answer(exc)

    def overloaded_answer(exc: Overloaded) -> JSONResponse:
        metrics.overloaded.inc(exc.rows)
        return JSONResponse({"detail": str(exc)}, status_code=503,
                            headers={"Retry-After": str(RETRY_AFTER_SECONDS)})  # fmt: skip

    @app.exception_handler(Overloaded)
    async def overloaded(_request: Request, exc: Overloaded) -> JSONResponse:
        return overloaded_answer(exc)

    @app.exception_handler(RedisUnavailable)
    async def redis_down(_request: Request, exc: TutormaxError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.exception_handler(redis.RedisError)
    async def redis_error(_request: Request, exc: redis.RedisError) -> JSONResponse:
        return JSONResponse({"detail": f"Redis unavailable: {exc}"}, status_code=503)

    @app.exception_handler(sa.exc.IntegrityError)
    @app.exception_handler(sa.exc.DataError)
    async def refused(_request: Request, exc: sa.exc.SQLAlchemyError) -> JSONResponse:
        # not an outage: retrying the same body would be refused again (e.g. a concurrent
        # post of the same session with another feedback_id); nothing was written
        return JSONResponse({"detail": f"the database refused the row: {describe_error(exc)}"},
                            status_code=409)  # fmt: skip

    @app.exception_handler(sa.exc.SQLAlchemyError)
    async def database_down(_request: Request, exc: sa.exc.SQLAlchemyError) -> JSONResponse:
        log.warning("database error: %s", describe_error(exc))
        return JSONResponse({"detail": f"database unavailable: {describe_error(exc)}"},
                            status_code=503)  # fmt: skip

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": "internal error; the server log has the details"},
                            status_code=500)  # fmt: skip

    @app.post(
        "/api/sessions/{session_id}/complete",
        status_code=202,
        response_model=models.Accepted,
        responses={
            400: {"model": models.Problem, "description": "A body that is not UTF-8 text."},
            401: {"model": models.Problem, "description": "Missing or wrong bearer token."},
            409: {"model": models.Problem, "description": "The database refused the row."},
            413: {"model": models.Problem, "description": "Body over the size limit."},
            503: {"model": models.Problem, "description": OUTAGE},
        },
        summary="Record a completed session (and its feedback) for the metrics worker",
    )
    async def complete(
        session_id: SessionId,
        body: models.SessionCompletion,
        _auth: Annotated[None, Depends(authorized)],
    ) -> JSONResponse:
        """Validated with the ingest rules (422 names each bad field), upserted, committed,
        then published to the enrichment stream, in a group commit with the completions that
        arrive at the same time. Idempotent on `session_id`: posting again rewrites nothing and
        publishes again, so a 503 is safe to retry."""
        (outcome,) = await batcher.submit([(session_id, body)])
        return completion_answer(session_id, outcome)  # the common case: `fast_complete`

    def completion_answer(session_id: str, outcome: Outcome) -> JSONResponse:
        """A completion's answer, for the route and the fast path alike: 202 with `Accepted`
        (by alias, as FastAPI renders a response model), else the exception handlers' own."""
        if outcome.status == ACCEPTED:
            metrics.accepted.inc()
            accepted = models.Accepted(
                session_id=session_id, feedback_id=outcome.feedback_id,
                stream=config.publish_stream,
            )  # fmt: skip
            return JSONResponse(accepted.model_dump(mode="json", by_alias=True), status_code=202)
        try:
            outcome.raise_for_status()
        except InvalidCompletion as exc:
            return invalid_answer(exc)
        except Failed as exc:
            return failed_answer(exc)
        raise AssertionError(f"unhandled outcome {outcome}")  # pragma: no cover

    async def fast_complete(
        session_id: str, headers: dict[bytes, bytes], body: bytes
    ) -> Response | None:
        """`complete` for a request whose id, token, content type and body `complete` would
        take as they are (the same checks, the same body model): None leaves any other
        request to FastAPI, which answers it as it always has."""
        if not 1 <= len(session_id) <= ID_LENGTH:
            return None
        if config.token is not None:
            # the header as HTTPBearer reads it; anything it would refuse goes to the route
            header = headers.get(b"authorization", b"").decode("latin-1")
            scheme, given = get_authorization_scheme_param(header)
            if scheme.lower() != "bearer" or not token_ok(given):
                return None
        media = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
        if media != b"application/json" or not body:
            return None
        try:
            completion = models.SessionCompletion.model_validate(loads(body))
        except (ValueError, UsageError):  # not JSON (or too deep), or refused by the model
            return None
        try:
            (outcome,) = await batcher.submit([(session_id, completion)])
        except Overloaded as exc:  # answered here: the route would parse and submit again
            return overloaded_answer(exc)
        return completion_answer(session_id, outcome)

    complete_route: Any = next(
        r for r in app.routes if getattr(r, "path", None) == "/api/sessions/{session_id}/complete"
    )

    @app.post(
        BATCH_PATH,
        response_model=models.BatchResult,
        openapi_extra=batch_request_body(),
        responses={
            400: {"model": models.Problem, "description": "Not a JSON array, nor NDJSON."},
            401: {"model": models.Problem, "description": "Missing or wrong bearer token."},
            413: {"model": models.Problem, "description": "Over the size or item limit."},
            503: {"model": models.Problem, "description": OUTAGE},
        },
        summary="Record up to 1,000 completed sessions, answered item by item",
    )
    async def complete_batch(
        request: Request, _auth: Annotated[None, Depends(authorized)]
    ) -> models.BatchResult:
        """A JSON array, or NDJSON (`Content-Type: application/x-ndjson`, one object a line),
        of completions that each name their `session_id`. Each item is answered as a single
        post would be (`status` 202, 422 with `errors` located inside the item, 409, 503):
        a bad item never fails the others. Retry the items that were not 202."""
        parsed = read_batch(await request.body(), request.headers.get("content-type", ""))
        valid = [(p.completion.session_id, p.completion) for p in parsed if p.completion]
        outcomes = await batcher.submit(valid) if valid else []
        answer = results(parsed, outcomes, stream=config.publish_stream)
        metrics.accepted.inc(answer.accepted)
        return answer

    @app.get(
        "/api/tutors/{tutor_id}/metrics",
        response_model=models.TutorMetrics,
        responses={k: PROBLEMS[k] for k in (400, 404, 503)},
        summary="A tutor's latest metrics, one row per window",
    )
    async def tutor_metrics(
        request: Request, tutor_id: TutorId, window: str | None = WindowQuery
    ) -> Response:
        """The newest row of each window (or of `window`): the design's "latest three"."""
        window = _window(window)

        async def read() -> dict[str, Any]:
            latest = await latest_reads.get(tutor_id)
            if latest is None:
                raise _unknown_tutor(tutor_id)
            rows = [r for r in latest if window is None or r["window"] == window]
            rows.sort(key=lambda r: ORDER[r["window"]])
            day = rows[0]["metric_date"] if rows else None
            return {"tutor_id": tutor_id, "metric_date": day, "metrics": rows}

        return await cached(request, tutor_id, models.TutorMetrics, read)

    @app.get(
        "/api/tutors/{tutor_id}/metrics/history",
        response_model=models.MetricHistory,
        responses={k: PROBLEMS[k] for k in (400, 404, 503)},
        summary="A tutor's daily rows of one window",
    )
    async def tutor_history(
        request: Request,
        tutor_id: TutorId,
        window: str | None = WindowQuery,
        days: int = Query(30, ge=1, le=366, description="Metric dates to return."),
    ) -> Response:
        """The last `days` metric dates of `window` (default 30day), oldest first."""
        from tutormax_cli.store import query

        name = _window(window) or "30day"

        def read() -> dict[str, Any]:
            with services.reads.connect() as conn:
                history = query.history_for_tutor_dicts(conn, tutor_id, days)
                if not history:
                    _require_tutor(conn, tutor_id)
            rows = [r for r in history if r["window"] == name][-days:]
            return {"tutor_id": tutor_id, "window": name, "days": days, "rows": rows}

        return await cached(request, tutor_id, models.MetricHistory, lambda: _blocking(read))

    @app.get(
        "/api/tutors",
        response_model=models.Leaderboard,
        responses={k: PROBLEMS[k] for k in (400, 503)},
        summary="The leaderboard of one window",
    )
    async def tutors(
        request: Request,
        tier: list[str] | None = Query(None, description="Keep these tiers (repeatable)."),
        window: str | None = WindowQuery,
        limit: int = Query(50, ge=1, le=10_000),
    ) -> Response:
        """Each tutor's newest row of `window` (default 30day), best tier first, then higher
        average rating, then more completed sessions."""
        from tutormax_cli import views
        from tutormax_cli.store import query

        name = _window(window) or "30day"
        tiers = views.tier_names(tier)

        def read() -> dict[str, Any]:
            with services.reads.connect() as conn:
                rows = views.numbered(query.leaderboard_dicts(conn, name, tiers=tiers, limit=limit))
            return {"window": name, "tiers": tiers, "count": len(rows), "tutors": rows}

        return await cached(request, None, models.Leaderboard, lambda: _blocking(read))

    @app.get("/healthz", response_model=models.Health, summary="The process answers")
    async def healthz() -> models.Health:
        """No dependency is checked, and the answer never waits for a thread: a load balancer
        restarts on this, not on an outage or a busy process."""
        return models.Health()

    @app.get(
        "/readyz",
        response_model=models.Readiness,
        responses={503: {"model": models.Readiness, "description": "A dependency is down."}},
        summary="The database (at this code's schema) and Redis answer",
    )
    def readyz() -> JSONResponse:
        checks = {"database": _check_database(services), "redis": _check_redis(services)}
        ready = all(c.ok for c in checks.values())
        body = models.Readiness(status="ready" if ready else "not ready", checks=checks)
        return JSONResponse(body.model_dump(), status_code=200 if ready else 503)

    @app.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text."}},
        summary="Prometheus metrics",
    )
    def prometheus() -> Response:
        return Response(exposition(metrics, stats), media_type=CONTENT_TYPE_LATEST)

    async def follow(ws: WebSocket, tutor_id: str | None) -> None:
        sub = hub.subscribe(tutor_id)
        metrics.ws_clients.inc()
        try:
            await ws.accept()
            await ws.send_json({"type": "subscribed", "tutor_id": tutor_id})
            await _pump(ws, sub)
        except WebSocketDisconnect:
            pass
        finally:
            hub.unsubscribe(sub)
            metrics.ws_clients.dec()

    @app.websocket("/ws/tutors/{tutor_id}")
    async def ws_tutor(ws: WebSocket, tutor_id: str) -> None:
        """Each update of one tutor's metrics, as the worker commits them."""
        if not 1 <= len(tutor_id) <= ID_LENGTH:
            await ws.close(code=1008, reason="tutor id must be 1 to 50 characters")
            return
        await follow(ws, tutor_id)

    @app.websocket("/ws/tutors")
    async def ws_all(ws: WebSocket) -> None:
        """Each update of any tutor's metrics."""
        await follow(ws, None)

    from tutormax_cli.stream.connection import describe

    served = config.settings
    names = {
        "redis": describe(served.redis_url, served.database_url),
        "database": served.database_label,
    }
    app.include_router(dashboard_router(services.engine, services.redis_probe, names))
    return app


async def _pump(ws: WebSocket, sub: Subscription) -> None:
    """Send the subscription's updates until the client leaves or falls too far behind."""
    leaving = asyncio.ensure_future(ws.receive())
    try:
        while True:
            getting = asyncio.ensure_future(sub.queue.get())
            done, _ = await asyncio.wait({getting, leaving}, return_when=asyncio.FIRST_COMPLETED)
            if leaving in done:
                getting.cancel()
                message = leaving.result()
                if message["type"] == "websocket.disconnect":
                    return
                leaving = asyncio.ensure_future(ws.receive())  # clients may send pings
                continue
            await ws.send_json(getting.result())
            if sub.overflowed:
                await ws.close(code=1013, reason="too far behind: reconnect and re-read")
                return
    finally:
        leaving.cancel()


def _require_tutor(conn: sa.Connection, tutor_id: str) -> None:
    """404 unless the tutor exists (a known tutor without metrics yet gets an empty answer)."""
    from tutormax_cli.store import query

    if not query.known_tutors(conn, [tutor_id]):
        raise _unknown_tutor(tutor_id)


def _unknown_tutor(tutor_id: str) -> HTTPException:
    return HTTPException(404, f"unknown tutor {tutor_id!r}")


def _sqlite_busy_timeout(dbapi_connection: Any, _record: Any) -> None:
    """After `open_engine`'s pragmas: the API's SQLite waits `SQLITE_BUSY_SECONDS` for a lock."""
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_SECONDS * 1000)}")
    cursor.close()


def _check_database(services: Services) -> models.Check:
    from tutormax_cli.store.db import require_schema

    try:
        require_schema(services.engine)
    except TutormaxError as exc:
        return models.Check(ok=False, error=str(exc))
    return models.Check(ok=True)


def _check_redis(services: Services) -> models.Check:
    try:
        services.redis_probe().ping()
    except (redis.RedisError, OSError, TutormaxError) as exc:
        return models.Check(ok=False, error=str(exc) or type(exc).__name__)
    return models.Check(ok=True)
