"""What one API process needs to know, read from the environment.

`tutormax api serve` resolves the settings (options, variables, `*_FILE` credential files)
and hands them to uvicorn's worker processes through their environment: each worker builds
its app with `create_app()` from `ApiConfig.from_env()`, so `--workers 4` needs no shared state
and no credential ever appears on a command line or in a log line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from tutormax_cli import keys
from tutormax_cli.settings import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL, Settings, from_file

DEFAULT_MAX_BODY_BYTES = 64 * 1024
"""A session with its feedback is well under 4 KiB; 64 KiB leaves room for long free text."""

DEFAULT_MAX_BATCH_BYTES = 4 * 1024 * 1024
"""`POST /api/sessions:batch`'s limit: 1,000 completions of 4 KiB each."""

STATS_TTL_SECONDS = 15.0
"""How long the tier distribution and freshness gauges of `/metrics` are reused between
scrapes: they cost three indexed queries, and Prometheus scrapes every 15 s by default."""

MAX_PENDING_ROWS = 5_000
"""Completions a process lets wait for its writer at most (`--max-pending`); beyond them a post
is answered 503 with `Retry-After` at once. At the measured batch rates (a few thousand
completions a second) this is well under a second of work. It lives here, not in
`api.batcher`, for the same reason as `READ_CACHE_SECONDS`."""

OUTAGE_RETRY_AFTER_SECONDS = 5
"""`Retry-After` of a 503 for an outage (Redis or the database down, the database locked): by
then redis-py has retried for ~4 s and SQLite has waited `SQLITE_BUSY_SECONDS` for its lock, so
what is left is longer than a blip (a restart, a Sentinel failover, a backfill holding the
lock); asking sooner only adds load while it recovers. The full queue's is 1 s
(`api.batcher.RETRY_AFTER_SECONDS`): the writer drains it in well under a second."""

SQLITE_BUSY_SECONDS = 5.0
"""How long an API request waits for another process's SQLite write lock (the CLI waits 30 s).
All writes of a process share one writer, so a wait holds up every completion behind it, and
30 s is past many clients' own timeouts: they would see a dropped connection, not the 503 with
`Retry-After` they can act on. The worker's transactions hold the lock for milliseconds."""


READ_CACHE_SECONDS = 5.0
"""How long an answer is reused when no announcement drops it first: the most a write that is
not announced (a recompute, a backfill) takes to show through the API. The worker's writes,
the real-time path, show at once; five seconds keeps "fresh within seconds" true of the rest.
It lives here, not in `api.read_cache`, so that the CLI shows it as `--read-cache-seconds`'
default without importing asyncio and Starlette at every start."""


@dataclass(frozen=True)
class ApiConfig:
    """Settings of one API process."""

    settings: Settings = field(default_factory=Settings)
    token: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES
    publish_stream: str = keys.ENRICHMENT_STREAM
    updates_stream: str = keys.METRICS_UPDATED_STREAM
    stats_ttl: float = STATS_TTL_SECONDS
    read_cache_seconds: float = READ_CACHE_SECONDS
    max_pending_rows: int = MAX_PENDING_ROWS

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ApiConfig:
        """The configuration `tutormax api serve` exported to this worker process."""
        env = os.environ if environ is None else environ
        settings = Settings(
            database_url=env.get("TUTORMAX_DATABASE_URL")
            or from_file("TUTORMAX_DATABASE_URL", env)
            or DEFAULT_DATABASE_URL,
            redis_url=env.get("TUTORMAX_REDIS_URL")
            or from_file("TUTORMAX_REDIS_URL", env)
            or DEFAULT_REDIS_URL,
        )
        token = env.get("TUTORMAX_API_TOKEN") or from_file("TUTORMAX_API_TOKEN", env)
        return cls(
            settings=settings,
            token=token or None,
            max_body_bytes=int(env.get("TUTORMAX_API_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)),
            max_batch_bytes=int(env.get("TUTORMAX_API_MAX_BATCH_BYTES", DEFAULT_MAX_BATCH_BYTES)),
            publish_stream=env.get("TUTORMAX_API_PUBLISH_STREAM", keys.ENRICHMENT_STREAM),
            updates_stream=env.get("TUTORMAX_API_UPDATES_STREAM", keys.METRICS_UPDATED_STREAM),
            read_cache_seconds=float(
                env.get("TUTORMAX_API_READ_CACHE_SECONDS", READ_CACHE_SECONDS)
            ),
            max_pending_rows=int(env.get("TUTORMAX_API_MAX_PENDING", MAX_PENDING_ROWS)),
        )

    def environ(self) -> dict[str, str]:
        """The variables `from_env` reads back: what `api serve` exports to its workers."""
        out = {
            "TUTORMAX_DATABASE_URL": self.settings.database_url,
            "TUTORMAX_REDIS_URL": self.settings.redis_url,
            "TUTORMAX_API_MAX_BODY_BYTES": str(self.max_body_bytes),
            "TUTORMAX_API_MAX_BATCH_BYTES": str(self.max_batch_bytes),
            "TUTORMAX_API_PUBLISH_STREAM": self.publish_stream,
            "TUTORMAX_API_UPDATES_STREAM": self.updates_stream,
            "TUTORMAX_API_READ_CACHE_SECONDS": repr(self.read_cache_seconds),
            "TUTORMAX_API_MAX_PENDING": str(self.max_pending_rows),
        }
        if self.token:
            out["TUTORMAX_API_TOKEN"] = self.token
        return out
