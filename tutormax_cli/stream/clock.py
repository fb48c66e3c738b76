"""Where the stream consumers get time, injectable so tests drive debounce windows, backoff and
retries without waiting: `monotonic` for intervals, `now` for as-of dates and heartbeats, and
`sleep` for every pause the consumer loop takes (a test clock advances instead of sleeping)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """Monotonic seconds, the wall clock, and the loop's sleeps."""

    def monotonic(self) -> float: ...

    def now(self) -> datetime: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)
