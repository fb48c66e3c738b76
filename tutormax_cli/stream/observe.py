"""What a worker tells the outside: Prometheus metrics and a heartbeat key with a TTL.

Each worker owns its registry, so several workers in one process (tests) do not collide and
`--metrics-port` serves exactly this worker's numbers.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from tutormax_cli.metrics.tiers import TIER_NAMES
from tutormax_cli.metrics.windows import WINDOWS

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 45, 60, 120, 300)
ENTRY_SOURCES = ("new", "recovered", "claimed")
ERROR_KINDS = ("database", "redis", "compute")
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class WorkerMetrics:
    """The worker's Prometheus instruments (names are what alert rules refer to)."""

    def __init__(
        self, prefix: str = "tutormax_worker", registry: CollectorRegistry | None = None
    ) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        p = prefix
        self.entries_read = Counter(
            f"{p}_entries_read", "Stream entries read (new, recovered, claimed)",
            ["source"], registry=r,
        )  # fmt: skip
        self.tutors_recomputed = Counter(
            f"{p}_tutors_recomputed", "Tutors whose metrics were recomputed", registry=r
        )
        self.flushes = Counter(f"{p}_flushes", "Committed flushes", registry=r)
        self.errors = Counter(
            f"{p}_errors", "Failures by kind (database, redis, compute)",
            ["kind"], registry=r,
        )  # fmt: skip
        self.dead_lettered = Counter(
            f"{p}_dead_lettered", "Entries moved to the dead-letter stream", registry=r
        )
        self.acked = Counter(f"{p}_entries_acked", "Entries acknowledged", registry=r)
        self.buffered_tutors = Gauge(
            f"{p}_buffered_tutors", "Tutors waiting in the debounce buffer", registry=r
        )
        self.pending_entries = Gauge(
            "tutormax_stream_pending_entries", "Entries delivered to the group, not yet acked",
            registry=r,
        )  # fmt: skip
        self.lag_entries = Gauge(
            "tutormax_stream_lag_entries", "Entries not yet delivered to the group", registry=r
        )
        self.stream_length = Gauge(
            "tutormax_stream_length", "Entries in the stream (XLEN)", ["stream"], registry=r
        )
        self.stream_memory = Gauge(
            "tutormax_stream_memory_bytes", "Memory the stream takes (MEMORY USAGE)",
            ["stream"], registry=r,
        )  # fmt: skip
        self.stream_trimmed = Gauge(
            "tutormax_stream_trimmed_entries",
            "Entries removed from the stream by trimming (input streams) or its length cap "
            "(dead letters), by every process, in all",
            ["stream"], registry=r,
        )  # fmt: skip
        self.stream_trimmed_below = Gauge(
            "tutormax_stream_trimmed_below_timestamp_seconds",
            "The time of the id below which the stream was last trimmed (entries older are gone)",
            ["stream"], registry=r,
        )  # fmt: skip
        self.reconciliations = Counter(
            f"{p}_reconciliations",
            "Reconciliations after a failover or a recreated group",
            registry=r,
        )  # fmt: skip
        self.flush_duration = Histogram(
            f"{p}_flush_duration_seconds", "Load + compute + write + ack of a flush",
            buckets=DURATION_BUCKETS, registry=r,
        )  # fmt: skip
        self.db_write = Histogram(
            f"{p}_db_write_seconds", "Upsert and commit time of a flush",
            buckets=DURATION_BUCKETS, registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            f"{p}_end_to_end_latency_seconds",
            "From a stream entry's ID time to the commit of its tutor's rows",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.up = Gauge(f"{p}_up", "1 while the worker loop runs", registry=r)
        self.swept_tutors = Counter(
            f"{p}_swept_tutors", "Tutors recomputed because the clock crossed a window edge",
            registry=r,
        )  # fmt: skip
        self.rolled_tutors = Counter(
            f"{p}_rolled_over_tutors", "Tutors given their end-of-day snapshot by the rollover",
            registry=r,
        )  # fmt: skip
        self.verify_mismatches = Gauge(
            "tutormax_verify_mismatches",
            "Rows of the last drift audit that differ from a recomputation from the raw rows",
            registry=r,
        )  # fmt: skip
        self.verify_rows = Gauge(
            "tutormax_verify_rows_checked", "Rows the last drift audit compared", registry=r
        )
        self.verify_runs = Counter("tutormax_verify_runs", "Drift audits run", registry=r)
        self.tier_changes = Counter(
            f"{p}_tier_changes", "Tier changes written (worker, sweep, rollover), by window",
            ["window", "from_tier", "to_tier"], registry=r,
        )  # fmt: skip
        # every label value exists from the first scrape, so rate() and sums over them are
        # defined before the first error (an absent series makes an alert expression empty)
        for source in ENTRY_SOURCES:
            self.entries_read.labels(source)
        for kind in ERROR_KINDS:
            self.errors.labels(kind)
        for window in WINDOWS:
            for old in TIER_NAMES:
                for new in TIER_NAMES:
                    if old != new:
                        self.tier_changes.labels(window, old, new)
