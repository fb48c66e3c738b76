"""The report documents that the CLI prints and the API serves: one tutor (`show tutor --json`),
the tier distribution (`show tiers --json`), the on-call's health (`status --json`), the
"needs action" list and recent tier changes (the dashboard's panels).

Each function reads what it needs through `store.query`, builds the document with `views`
and returns plain data (dates and datetimes as objects; each caller encodes them). One
definition per document, so a script reading `/api/...` and an operator reading the terminal
see the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from tutormax_cli import views
from tutormax_cli.errors import TutormaxError
from tutormax_cli.metrics.tiers import FLAGGED_METRICS, TierRules
from tutormax_cli.metrics.windows import WINDOWS

if TYPE_CHECKING:  # redis is imported by the status report only: `show` commands skip it
    import redis

    from tutormax_cli.store.reader import Conn

NEEDS_ACTION = ("At Risk", "Needs Attention")
"""The tiers the dashboard's "needs action" list shows, worst first."""

Connect = Callable[[], AbstractContextManager["Conn"]]


# -- one tutor --------------------------------------------------------------------------------


def tutor_report(
    conn: Conn,
    tutor_id: str,
    rules: TierRules,
    now: datetime,
    *,
    window: str = "30day",
    explain: bool = False,
) -> dict[str, Any] | None:
    """The `show tutor --json` document: the latest row of each window with its flags, the
    trend of `window` over the last 30 days, and with `explain` why that window's row has its
    tier. None when the tutor has no metric rows."""
    from tutormax_cli.store.query import (
        history_for_tutor_dicts,
        latest_for_tutor_dicts,
        tutor_sessions,
    )

    rows = latest_for_tutor_dicts(conn, tutor_id)
    if not rows:
        return None
    doc = views.tutor_document(rows, rules, now)
    doc["trend"] = views.trend(history_for_tutor_dicts(conn, tutor_id, views.TREND_DAYS), window)
    row = next((r for r in rows if r["window"] == window), None)
    if explain and row is not None:
        sessions = tutor_sessions(conn, tutor_id, *views.window_bounds(row))
        doc["explain"] = views.explain(row, sessions, rules).as_dict()
    return doc


def thresholds(rules: TierRules) -> dict[str, dict[str, str]]:
    """Per flagged metric, the rule that earns each flag (e.g. `≥ 4.5` green, `< 3.5` red)."""
    return {
        m: {
            "green": rules.threshold(m).describe("green"),
            "red": rules.threshold(m).describe("red"),
        }
        for m in FLAGGED_METRICS
    }


# -- tier distribution ------------------------------------------------------------------------

COMPARE_DAYS = 7


def tier_report(conn: Conn, window: str) -> dict[str, Any]:
    """The `show tiers --json` document: tutors per tier of each tutor's latest row, against
    the latest rows as they stood on the newest metric date minus 7 days (`compared_with`
    None when the history does not reach that far)."""
    from tutormax_cli.store.query import newest_metric_date, tier_counts

    newest = newest_metric_date(conn, window)
    current = tier_counts(conn, window)  # counted in the database: five numbers come back
    week = newest - timedelta(days=COMPARE_DAYS) if newest else None
    earlier = tier_counts(conn, window, week) if week else None
    if not earlier:
        earlier = None
    return {
        "window": window,
        "metric_date": newest,
        "compared_with": week if earlier is not None else None,
        "tutors": sum(current.values()),
        "tiers": views.tier_distribution_rows(current, earlier),
    }


# -- health -----------------------------------------------------------------------------------


def status_report(
    client: redis.Redis | Callable[[], redis.Redis],
    connect: Connect,
    now: datetime,
    names: dict[str, str] | Callable[[], dict[str, str]] | None = None,
) -> dict[str, Any]:
    """The `status --json` document: the servers read (`names`: `redis`, `database`), live
    workers (with the state their heartbeat carries), each consumer group's lag and pending
    entries, dead letters, and the freshness of active tutors' rows. Redis and the database are
    read each on its own, so one being down still reports the other; `healthy` is False when a
    problem was found (a backlog nobody serves, a worker not `ok`, a stream not found, a server
    that cannot be read). `client` may be a function that opens the client, so that an
    unreachable Redis is a problem in the document rather than an exception; `names` may be a
    function too (naming the Redis imports redis-py).

    The database is read on a thread of its own, started first: its freshness statement waits
    on the server (~0.2 s at 50,000 tutors) while this thread imports redis-py and asks Redis,
    so the on-call's `tutormax status` costs the longer of the two, not their sum."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="status-db") as pool:
        database = pool.submit(_freshness_part, connect, now)
        doc, problems, warnings = _stream_part(client, names)
        fresh, database_problems = database.result()
    doc.update(
        healthy=not (problems or database_problems),
        problems=problems + database_problems,
        warnings=warnings,
        freshness=fresh,
    )
    return doc


def _stream_part(
    client: redis.Redis | Callable[[], redis.Redis],
    names: dict[str, str] | Callable[[], dict[str, str]] | None,
) -> tuple[dict[str, Any], list[str], list[str]]:
    """The Redis half of `status_report`: the document so far, its problems and warnings."""
    import redis

    from tutormax_cli.stream import dead_letters, entries, groups, health, heartbeat, topology
    from tutormax_cli.stream.connection import one_line

    named = (names() if callable(names) else names) or {}
    where = named.get("redis", "Redis")
    problems: list[str] = []
    warnings: list[str] = []
    doc: dict[str, Any] = {"healthy": False, **named}
    try:
        found = client() if callable(client) else client
        now_ms = entries.server_ms(found)
        reports = groups.status_groups(found)
        workers = heartbeat.live_workers(found)
        dead = dead_letters.dead_letter_summary(found)
        problems, warnings = health.assess(reports, workers, dead, where)
        doc["workers"] = [w.as_dict(now_ms) for w in workers]
        doc["streams"] = [
            {**g.as_dict(), "workers": sum(w.serves(g.stream, g.group) for w in workers)}
            for g in reports
        ]
        doc["dead_letter"] = dead.as_dict()
    except TutormaxError as exc:
        problems.append(str(exc))
    except (redis.RedisError, *topology.TRANSIENT) as exc:  # type: ignore[misc]  # cluster errors are not RedisErrors
        problems.append(f"Redis error: {type(exc).__name__}: {one_line(exc)[:200]}")
    doc.setdefault("workers", [])
    doc.setdefault("streams", [])
    doc.setdefault("dead_letter", None)
    return doc, problems, warnings


def _freshness_part(connect: Connect, now: datetime) -> tuple[dict[str, Any] | None, list[str]]:
    """The database half of `status_report`: freshness, or None and the problem that stopped
    it (an unreachable or unready database is reported, never raised)."""
    from tutormax_cli.store.driver_errors import database_errors, describe_error
    from tutormax_cli.store.query import active_freshness_dicts

    try:
        with connect() as conn:
            return views.freshness(active_freshness_dicts(conn), now), []
    except TutormaxError as exc:
        return None, [str(exc)]
    except database_errors() as exc:  # e.g. a table dropped under a current schema
        return None, [f"database unavailable: {describe_error(exc)}"]


# -- needs action -----------------------------------------------------------------------------


def needs_action(
    conn: Conn, rules: TierRules, *, window: str = "30day", limit: int = 50
) -> dict[str, Any]:
    """The tutors whose latest row of `window` is At Risk or Needs Attention, worst first (At
    Risk, then more red flags, then tutor id), each with its red flags and the rule behind
    each, and its tier and red metrics day by day over the last 30 days (for a sparkline).
    `count` is every such tutor; `tutors` the first `limit`."""
    import polars as pl

    from tutormax_cli.store.query import history_for_tutors, latest_in_window

    latest = latest_in_window(conn, window).filter(pl.col("performance_tier").is_in(NEEDS_ACTION))
    listed = []
    for row in latest.to_dicts():
        flags = views.flags_of(row, rules)
        reds = [m for m, f in flags.items() if f["flag"] == "red"]
        listed.append((NEEDS_ACTION.index(row["performance_tier"]), -len(reds), row, flags, reds))
    listed.sort(key=lambda item: (item[0], item[1], item[2]["tutor_id"]))
    shown = listed[:limit]
    tutors: list[dict[str, Any]] = []
    if not shown:
        return {"window": window, "tiers": list(NEEDS_ACTION), "count": 0, "tutors": tutors}
    first = min(item[2]["metric_date"] for item in shown)  # one read for everyone's 30 days
    history = history_for_tutors(
        conn,
        [item[2]["tutor_id"] for item in shown],
        window,
        first - timedelta(days=views.TREND_DAYS - 1),
    )
    for _, _, row, flags, reds in shown:
        trend = views.trend(history.filter(pl.col("tutor_id") == row["tutor_id"]), window)
        tutors.append(
            {
                "tutor_id": row["tutor_id"],
                "performance_tier": row["performance_tier"],
                "metric_date": row["metric_date"],
                "calculation_date": row["calculation_date"],
                "red": reds,
                "flags": {m: {"value": row[m], **flags[m]} for m in reds},
                "trend": {
                    "dates": trend["dates"],
                    "tiers": trend.get("tiers", []),
                    "metrics": {m: trend["metrics"][m] for m in reds} if trend["dates"] else {},
                },
            }
        )
    return {"window": window, "tiers": list(NEEDS_ACTION), "count": len(listed), "tutors": tutors}


# -- tier changes -----------------------------------------------------------------------------


def tier_changes_from_rows(
    conn: Conn, *, days: int = 7, limit: int = 50, window: str | None = None
) -> dict[str, Any]:
    """Tier changes seen in the daily rows: a tutor whose tier on one metric date differs from
    its tier on its previous metric date of the same window, over the last `days` metric dates,
    newest first. Coarser than a change feed (two changes within one day show as one, or not
    at all when the tier came back), but it needs nothing but the table."""
    from tutormax_cli.store.query import tier_steps

    windows = [window] if window else list(WINDOWS)
    steps = tier_steps(conn, windows, days=days, limit=limit)
    return {
        "source": "daily rows",
        "days": days,
        "changes": [
            {
                "tutor_id": r["tutor_id"],
                "window": r["window"],
                "from": r["previous_tier"],
                "to": r["performance_tier"],
                "as_of": r["calculation_date"],
                "metric_date": r["metric_date"],
                "direction": _direction(r["previous_tier"], r["performance_tier"]),
            }
            for r in steps.to_dicts()
        ],
    }


def _direction(before: str | None, after: str | None) -> str:
    """`up` when `after` is a better tier than `before`, else `down`."""
    from tutormax_cli.metrics.tiers import TIER_NAMES

    rank = {name: i for i, name in enumerate(TIER_NAMES)}
    return "up" if rank.get(after or "", 99) < rank.get(before or "", 99) else "down"
