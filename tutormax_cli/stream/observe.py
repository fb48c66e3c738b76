"""What a worker tells the outside: Prometheus metrics and a heartbeat key with a TTL.

Each worker owns its registry, so several workers in one process (tests) do not collide and
`--metrics-port` serves exactly this worker's numbers.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 45, 60, 120, 300)
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class WorkerMetrics:
    """The worker's Prometheus instruments (names are what alert rules refer to)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.entries_read = Counter(
            "tutormax_worker_entries_read", "Stream entries read (new, recovered, claimed)",
            ["source"], registry=r,
        )  # fmt: skip
        self.tutors_recomputed = Counter(
            "tutormax_worker_tutors_recomputed", "Tutors whose metrics were recomputed", registry=r
        )
        self.flushes = Counter("tutormax_worker_flushes", "Committed flushes", registry=r)
        self.errors = Counter(
            "tutormax_worker_errors", "Failures by kind (database, redis, compute)",
            ["kind"], registry=r,
        )  # fmt: skip
        self.dead_lettered = Counter(
            "tutormax_worker_dead_lettered", "Entries moved to the dead-letter stream", registry=r
        )
        self.acked = Counter("tutormax_worker_entries_acked", "Entries acknowledged", registry=r)
        self.buffered_tutors = Gauge(
            "tutormax_worker_buffered_tutors", "Tutors waiting in the debounce buffer", registry=r
        )
        self.pending_entries = Gauge(
            "tutormax_stream_pending_entries", "Entries delivered to the group, not yet acked",
            registry=r,
        )  # fmt: skip
        self.lag_entries = Gauge(
            "tutormax_stream_lag_entries", "Entries not yet delivered to the group", registry=r
        )
        self.flush_duration = Histogram(
            "tutormax_worker_flush_duration_seconds", "Load + compute + write + ack of a flush",
            buckets=DURATION_BUCKETS, registry=r,
        )  # fmt: skip
        self.db_write = Histogram(
            "tutormax_worker_db_write_seconds", "Upsert and commit time of a flush",
            buckets=DURATION_BUCKETS, registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "tutormax_worker_end_to_end_latency_seconds",
            "From a stream entry's ID time to the commit of its tutor's rows",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.up = Gauge("tutormax_worker_up", "1 while the worker loop runs", registry=r)
