"""Every Redis key, stream and group name tutormax uses, in one place."""

from __future__ import annotations

SESSIONS_STREAM = "tutormax:sessions"
"""Raw session completions, before validation (read by `tutormax pipeline run`)."""

VALIDATION_GROUP = "validation-workers"

ENRICHMENT_STREAM = "tutormax:sessions:enrichment"
"""Persisted, enriched sessions: what the metrics worker consumes (docs/metrics.md §5)."""

METRICS_GROUP = "metrics-workers"

DEAD_LETTER_STREAM = "tutormax:dead_letter"
"""Entries that could not be processed, with `reason`, `source_stream`, `source_id`, `group`."""

METRICS_UPDATED_STREAM = "tutormax:metrics:updated"
"""One entry per recomputed tutor after each flush, for live views."""

METRICS_UPDATED_MAXLEN = 10_000

HEARTBEAT_PREFIX = "tutormax:worker:heartbeat:"
"""`HEARTBEAT_PREFIX + consumer` holds a live worker's status JSON, with a TTL."""


def heartbeat_key(stream: str, group: str, consumer: str) -> str:
    """The heartbeat key of one consumer of one group."""
    return f"{HEARTBEAT_PREFIX}{stream}:{group}:{consumer}"
