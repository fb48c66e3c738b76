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

TIER_CHANGES_STREAM = "tutormax:tiers:changed"
"""One entry per (tutor, window) whose current tier a write changed (`stream.tier_changes`)."""

TIER_CHANGES_MAXLEN = 100_000
"""Tier changes are rarer than updates (a few per tutor a month): 100k keeps weeks of them at
50,000 tutors; older history is read back from the daily rows."""

STREAM_RETENTION = 3600.0
"""Seconds of acknowledged history an input stream keeps (`--stream-retention`): an hour of
sessions is what an operator looks back over when something went wrong (`pending --entries`,
replays), and at 100,000 sessions a day of ~1 KB envelopes it is ~4 MB."""

TRIM_EVERY = 5.0
"""Seconds between trims of one stream by one process: XINFO GROUPS, one XPENDING per group
and one XTRIM, a few round trips, never per entry."""

DEAD_LETTER_MAXLEN = 100_000
"""Dead letters kept (`--dead-letter-maxlen`, 0 = unbounded): days of a bad producer's
output at ~1 KB each (~100 MB at most), far more than anyone replays, and a flood cannot take
Redis' memory. What the cap drops is counted (`tutormax_stream_trimmed_entries`)."""

SWEEP_LEASE_PREFIX = "tutormax:sweep:lease:"
"""`SWEEP_LEASE_PREFIX + job + ":" + group`: which worker of a group holds the window sweep (or
the day rollover) now; SET NX PX, so a crashed holder's lease runs out."""


def sweep_lease_key(job: str, group: str) -> str:
    """The lease key of one periodic job (`sweep`, `rollover`, `verify`) of one group."""
    return f"{SWEEP_LEASE_PREFIX}{job}:{group}"


HEARTBEAT_PREFIX = "tutormax:worker:heartbeat:"
"""`HEARTBEAT_PREFIX + consumer` holds a live worker's status JSON, with a TTL."""


def heartbeat_key(stream: str, group: str, consumer: str) -> str:
    """The heartbeat key of one consumer of one group."""
    return f"{HEARTBEAT_PREFIX}{stream}:{group}:{consumer}"


TRIM_PREFIX = "tutormax:trim:"
"""`TRIM_PREFIX + "{" + stream + "}"`: a hash of what trimming did to one stream (`below`, the
last MINID; `dropped`, entries removed in all; `at_ms`), kept by `stream.retention`."""


def trim_key(stream: str) -> str:
    """The trim record of `stream`. The stream's name is the key's hash tag, so in a Redis
    Cluster the record lives in the stream's own slot (on the same node, failing over with
    it)."""
    return f"{TRIM_PREFIX}{{{stream}}}"
