"""Windows of docs/metrics.md §2: names, lengths, and the as-of arithmetic."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

WINDOWS: dict[str, int] = {"7day": 7, "30day": 30, "90day": 90}
"""Window name -> length in days, shortest first."""

LONGEST_DAYS = max(WINDOWS.values())


def as_utc(moment: datetime) -> datetime:
    """A timezone-aware UTC datetime; naive input is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def metric_date_of(as_of: datetime) -> date:
    """The UTC day of the window's last instant, `as_of − 1 µs` (docs/metrics.md §2)."""
    return (as_utc(as_of) - timedelta(microseconds=1)).date()


def end_of_day(day: date) -> datetime:
    """The as-of instant of the end-of-day snapshot of `day`: the next midnight UTC."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
