"""Rates between two looks at a consumer group, for `status --watch` and `pending --watch`:
entries arriving and entries done per second over the last interval, and the time to drain
the backlog (lag + pending) at that pace."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from tutormax_cli.stream import entries
from tutormax_cli.stream.entries import SCAN_LIMIT, text


@dataclass(frozen=True)
class Sample:
    """One look at a group: when (monotonic seconds), the stream's newest entry ID, and the
    backlog (entries not delivered yet plus entries delivered and not acknowledged)."""

    at_s: float
    last_id: str
    backlog: int


@dataclass(frozen=True)
class Rate:
    """What happened between two samples."""

    interval_s: float
    arrived: int
    done: int
    backlog: int

    @property
    def in_per_s(self) -> float:
        """Entries added to the stream per second."""
        return self.arrived / self.interval_s if self.interval_s > 0 else 0.0

    @property
    def out_per_s(self) -> float:
        """Entries taken off the backlog (acknowledged or dead-lettered) per second."""
        return self.done / self.interval_s if self.interval_s > 0 else 0.0

    @property
    def drain_s(self) -> float | None:
        """Seconds until the backlog is empty at this pace: 0 when it is, None when it is not
        shrinking."""
        if self.backlog == 0:
            return 0.0
        net = self.out_per_s - self.in_per_s
        return self.backlog / net if net > 0 else None

    def as_dict(self) -> dict[str, Any]:
        """The rate fields of a `--watch --json` line."""
        return {
            "interval_s": round(self.interval_s, 3),
            "arrived": self.arrived,
            "done": self.done,
            "in_per_s": round(self.in_per_s, 2),
            "out_per_s": round(self.out_per_s, 2),
            "drain_s": None if self.drain_s is None else round(self.drain_s, 1),
        }


def sample(client: redis.Redis, stream: str, backlog: int, at_s: float) -> Sample:
    """A sample of a group on `stream` whose backlog (lag + pending) was just read at `at_s`."""
    newest = entries.xrevrange(client, stream, "+", "-", 1)
    last_id = str(text(newest[0][0])) if newest else "0-0"
    return Sample(at_s, last_id, backlog)


def between(client: redis.Redis, stream: str, before: Sample, after: Sample) -> Rate:
    """The rate from `before` to `after`: arrivals are the entries between the two newest IDs
    (counted, so trimming cannot make them negative; at most `SCAN_LIMIT`), done is what the
    backlog lost net of them."""
    arrived = 0
    if after.last_id != before.last_id:
        for _ in entries.walk(client, stream, f"({before.last_id}", after.last_id):
            arrived += 1
            if arrived >= SCAN_LIMIT:
                break
    done = max(before.backlog + arrived - after.backlog, 0)
    return Rate(after.at_s - before.at_s, arrived, done, after.backlog)
