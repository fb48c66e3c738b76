"""The API's Prometheus numbers: its own requests, and the metric table's health.

Request counts are labelled by route *template* (`/api/tutors/{tutor_id}/metrics`), never by
the path a client sent, so ids cannot blow up the label set. The tier distribution and the
freshness of the active tutors' rows are read from the database when Prometheus scrapes (cached
for `stats_ttl` seconds): they are properties of the table, not of any one process, so the
dashboard and the freshness alert do not depend on which worker computed a row.

With several uvicorn workers, `tutormax api serve` sets `PROMETHEUS_MULTIPROC_DIR` and `/metrics`
adds up the workers' files (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tutormax_cli.metrics.tiers import TIER_NAMES
from tutormax_cli.metrics.windows import WINDOWS

log = logging.getLogger("tutormax.api")

API_METRIC_NAMES = frozenset(
    {
        "tutormax_api_requests_total",
        "tutormax_api_request_duration_seconds",
        "tutormax_api_sessions_accepted_total",
        "tutormax_api_overloaded_total",
        "tutormax_api_batch_rows",
        "tutormax_api_batch_wait_seconds",
        "tutormax_api_websocket_clients",
        "tutormax_api_updates_pushed_total",
        "tutormax_api_read_cache_lookups_total",
        "tutormax_metrics_tutors",
        "tutormax_metrics_freshness_seconds",
    }
)
"""What the API exports, as alert rules and the dashboard name it (counters with `_total`)."""

REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
BATCH_ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
WAIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)


def multiprocess_dir() -> str | None:
    """The directory of prometheus_client's multiprocess mode, when `api serve` set one."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class ApiMetrics:
    """The instruments one API process updates."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "tutormax_api_requests", "HTTP requests answered, by route template and status",
            ["method", "route", "status"], registry=r,
        )  # fmt: skip
        self.duration = Histogram(
            "tutormax_api_request_duration_seconds", "Time to answer a request",
            ["method", "route"], buckets=REQUEST_BUCKETS, registry=r,
        )  # fmt: skip
        self.accepted = Counter(
            "tutormax_api_sessions_accepted", "Completions committed and published", registry=r
        )
        self.overloaded = Counter(
            "tutormax_api_overloaded", "Completions answered 503 because the batch queue was full",
            registry=r,
        )  # fmt: skip
        self.batch_rows = Histogram(
            "tutormax_api_batch_rows", "Completions written per group commit",
            buckets=BATCH_ROW_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch_wait = Histogram(
            "tutormax_api_batch_wait_seconds", "Time a completion waited for its batch to start",
            buckets=WAIT_BUCKETS, registry=r,
        )  # fmt: skip
        self.ws_clients = Gauge(
            "tutormax_api_websocket_clients", "Open WebSocket subscriptions",
            registry=r, multiprocess_mode="livesum",
        )  # fmt: skip
        self.read_cache = Counter(
            "tutormax_api_read_cache_lookups",
            "Read-route answers: kept (hit), read for this request (miss), or sharing another "
            "request's read of the same answer (shared)",
            ["result"], registry=r,
        )  # fmt: skip
        self.pushed = Counter(
            "tutormax_api_updates_pushed", "Metric updates sent to WebSocket clients", registry=r
        )

    def observe_batch(self, rows: int, waits: list[float]) -> None:
        """A group commit's size and its requests' waits (`Batcher(observe=...)`)."""
        self.batch_rows.observe(rows)
        for wait in waits:
            self.batch_wait.observe(wait)


class TableStats(Collector):
    """`tutormax_metrics_tutors{window,tier}` and `tutormax_metrics_freshness_seconds{window,
    edge}` from the database, at most once per `ttl` seconds; nothing when it cannot be read
    (the scrape still answers, `/readyz` says why)."""

    def __init__(
        self,
        engine: sa.Engine,
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.ttl = ttl
        self.clock = clock
        self._lock = threading.Lock()
        self._cached: list[Metric] = []
        self._at: float | None = None

    def describe(self) -> list[Metric]:
        """Nothing: describing would read the database at registration."""
        return []

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            now = self.clock()
            if self._at is None or now - self._at >= self.ttl:
                try:
                    self._cached = self._read()
                except sa.exc.SQLAlchemyError as exc:
                    from tutormax_cli.store.db import describe_error

                    log.warning("metrics table stats unavailable: %s", describe_error(exc))
                    self._cached = []
                self._at = now
            yield from self._cached

    def _read(self) -> list[Metric]:
        from tutormax_cli import views
        from tutormax_cli.store import query

        tutors = GaugeMetricFamily(
            "tutormax_metrics_tutors",
            "Tutors per tier in each window's latest rows",
            labels=["window", "tier"],
        )
        fresh = GaugeMetricFamily(
            "tutormax_metrics_freshness_seconds",
            "Age of the newest and the oldest calculation_date among active tutors' latest rows",
            labels=["window", "edge"],
        )
        with self.engine.connect() as conn:
            for window in WINDOWS:
                counts = query.tier_counts(conn, window)
                for tier in (*TIER_NAMES, *sorted(set(counts) - set(TIER_NAMES))):
                    tutors.add_metric([window, str(tier)], counts.get(tier, 0))
            ages = views.freshness(query.active_freshness(conn), datetime.now(UTC))
        for window, info in ages.items():
            for edge in ("newest", "oldest"):
                age = info[f"{edge}_age_s"]
                if age is not None:
                    fresh.add_metric([window, edge], age)
        return [tutors, fresh]


def exposition(metrics: ApiMetrics, stats: TableStats | None) -> bytes:
    """The `/metrics` body: this process's instruments and the table stats or, in multiprocess
    mode, every worker's instruments (from their files) and the table stats."""
    directory = multiprocess_dir()
    if directory is None:
        return generate_latest(metrics.registry)  # `create_app` registered `stats` in it
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    if stats is not None:
        registry.register(stats)
    return generate_latest(registry)
