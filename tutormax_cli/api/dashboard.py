"""The dashboard: two pages (`/` and `/tutors/{tutor_id}`) and the report endpoints they read.

The pages are static files shipped in the package (`api/static/`: HTML, CSS and a little
JavaScript, no build step, nothing fetched from elsewhere); all they show comes from the JSON
endpoints below, which the OpenAPI schema documents, so a script sees the numbers the page
shows. Live changes arrive over the existing `/ws/tutors` feeds; on each, the page re-reads the
affected endpoint, so there is no polling loop for metric data.

Reads need no token, like the API's other reads: the bearer token guards writes. A deployment
that must hide the metrics puts authentication in front (nginx), as for `/api/tutors`.

No `from __future__ import annotations`: FastAPI reads the routes' annotations.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import redis
import sqlalchemy as sa
from fastapi import APIRouter, HTTPException, Query
from fastapi import Path as PathParam
from fastapi.responses import FileResponse

from tutormax_cli import reports
from tutormax_cli.api import report_models as rm
from tutormax_cli.api.config import OUTAGE_RETRY_AFTER_SECONDS
from tutormax_cli.api.models import Problem
from tutormax_cli.errors import DatabaseError, UsageError
from tutormax_cli.metrics.windows import WINDOWS

STATIC = Path(__file__).parent / "static"
"""The pages' files, served at `/static/`."""

TutorId = Annotated[str, PathParam(min_length=1, max_length=50, description="A tutor id.")]
Window = Annotated[str, Query(description="7day, 30day or 90day (400 otherwise).")]

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "A bad query parameter."},
    503: {
        "model": Problem,
        "description": f"The database is unavailable (`Retry-After: {OUTAGE_RETRY_AFTER_SECONDS}`)",
    },
}


def _window(name: str) -> str:
    if name not in WINDOWS:
        raise UsageError(f"window {name!r} is not one of {', '.join(WINDOWS)}")
    return name


def dashboard_router(  # noqa: C901 - one closure per route
    engine: sa.Engine,
    redis_client: Callable[[], redis.Redis],
    names: dict[str, str] | None = None,
) -> APIRouter:
    """The pages and report endpoints over one process's database engine and Redis client."""
    from tutormax_cli.metrics.tiers import load_tiers

    rules = load_tiers(None)
    router = APIRouter()

    @contextmanager
    def database() -> Iterator[sa.Connection]:
        """A connection whose failure is a problem in a report, not an exception."""
        from tutormax_cli.store.db import describe_error

        try:
            with engine.connect() as conn:
                yield conn
        except sa.exc.SQLAlchemyError as exc:
            raise DatabaseError(f"database unavailable: {describe_error(exc)}") from exc

    @router.get("/", include_in_schema=False)
    def overview_page() -> FileResponse:
        return FileResponse(STATIC / "overview.html")

    @router.get("/tutors/{tutor_id}", include_in_schema=False)
    def tutor_page(tutor_id: TutorId) -> FileResponse:
        return FileResponse(STATIC / "tutor.html")

    @router.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> FileResponse:
        path = STATIC / name
        if "/" in name or name.startswith(".") or not path.is_file():
            raise HTTPException(404, f"no static file {name!r}")
        return FileResponse(path, headers={"Cache-Control": "no-cache"})

    @router.get(
        "/api/tiers",
        response_model=rm.TierDistributions,
        responses=ERRORS,
        summary="The tier distribution of each window, against 7 days earlier",
    )
    def tiers(window: str | None = Query(None, description="Only this window.")) -> Any:
        """As `tutormax show tiers --json`, one document per window (or for `window`)."""
        names = [_window(window)] if window is not None else list(WINDOWS)
        with engine.connect() as conn:
            return {"windows": [reports.tier_report(conn, name) for name in names]}

    @router.get(
        "/api/status",
        response_model=rm.StatusReport,
        summary="Workers, lag, pending entries, dead letters and freshness",
    )
    def status() -> Any:
        """As `tutormax status --json`: always 200, `healthy` false (and `problems` saying why)
        for a backlog no live worker serves, Redis down or an unreadable database, with what
        could still be read (Redis down: the freshness; the database down: the workers). A
        report, not a probe: `/readyz` is the 503 for a load balancer."""
        return reports.status_report(redis_client, database, datetime.now(UTC), names)

    @router.get(
        "/api/needs-action",
        response_model=rm.NeedsAction,
        responses=ERRORS,
        summary="At Risk and Needs Attention tutors, the metrics that flagged them, 30-day trends",
    )
    def needs_action(window: Window = "30day", limit: int = Query(50, ge=1, le=1_000)) -> Any:
        """Worst first: At Risk, then more red flags, then tutor id."""
        with engine.connect() as conn:
            return reports.needs_action(conn, rules, window=_window(window), limit=limit)

    @router.get(
        "/api/tier-changes",
        response_model=rm.TierChanges,
        responses=ERRORS,
        summary="Recent tier changes, newest first",
    )
    def tier_changes(
        window: str | None = Query(None, description="Only this window."),
        days: int = Query(7, ge=1, le=90, description="Metric dates to look back over."),
        limit: int = Query(50, ge=1, le=1_000),
    ) -> Any:
        """Read from the daily rows: a tutor whose tier differs from its previous row's."""
        name = _window(window) if window is not None else None
        with engine.connect() as conn:
            return reports.tier_changes_from_rows(conn, days=days, limit=limit, window=name)

    @router.get(
        "/api/tutors/{tutor_id}/report",
        response_model=rm.TutorReport,
        responses={**ERRORS, 404: {"model": Problem, "description": "No metrics for the tutor."}},
        summary="One tutor's windows with flags, 30-day trend and the reasons for its tier",
    )
    def tutor_report(
        tutor_id: TutorId,
        window: Window = "30day",
        explain: bool = Query(True, description="Include the explanation of `window`'s tier."),
    ) -> Any:
        """As `tutormax show tutor ID --explain --json --window W`, plus the thresholds."""
        name = _window(window)
        with engine.connect() as conn:
            doc = reports.tutor_report(
                conn, tutor_id, rules, datetime.now(UTC), window=name, explain=explain
            )
        if doc is None:
            raise HTTPException(404, f"no metrics for tutor {tutor_id!r}")
        for w, row in doc["windows"].items():
            row.update(tutor_id=tutor_id, window=w)
        doc["thresholds"] = reports.thresholds(rules)
        return doc

    return router
