"""Rich rendering shared by the views: consoles, tier colours, flags, numbers, sparklines."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence

from rich.console import Console

out = Console(highlight=False, soft_wrap=not sys.stdout.isatty())
"""Tables and reports: stdout. Text lines are wrapped to the width only on a terminal: a file,
a pipe or journald gets each message on one line, whole, for grep (tables keep their width)."""

err = Console(stderr=True, highlight=False, soft_wrap=not sys.stderr.isatty())
"""Progress and messages: stderr, so stdout stays clean for pipes; unwrapped off a terminal."""

TIER_STYLES = {
    "Exemplary": "bold green",
    "Strong": "green",
    "Developing": "yellow",
    "Needs Attention": "dark_orange",
    "At Risk": "bold red",
}

SPARK = "▁▂▃▄▅▆▇█"


def tier(name: str | None) -> str:
    """The tier name in its colour (markup)."""
    if name is None:
        return "—"
    return f"[{TIER_STYLES.get(name, 'white')}]{name}[/]"


def number(value: float | int | None, suffix: str = "") -> str:
    """A metric value for a table cell: integers plain, floats with 2 decimals, null as —."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, int):
        return f"{value}{suffix}"
    return f"{value:.2f}{suffix}"


def flagged(value: float | int | None, flag: str | None, rule: str | None) -> str:
    """A value coloured by its flag, with the threshold it met (✓) or missed (✗)."""
    text = number(value)
    if flag == "green":
        return f"[green]{text} ✓ {rule}[/]"
    if flag == "red":
        return f"[red]{text} ✗ {rule}[/]"
    return text


def sparkline(values: Sequence[float | None]) -> str:
    """Eight-level bars for a series; gaps (null) as a space."""
    present = [v for v in values if v is not None]
    if not present:
        return ""
    low, high = min(present), max(present)
    span = high - low
    chars = []
    for v in values:
        if v is None:
            chars.append(" ")
        else:
            level = 0 if span == 0 else round((v - low) / span * (len(SPARK) - 1))
            chars.append(SPARK[level])
    return "".join(chars)


def age(seconds: float) -> str:
    """A duration as an operator reads it: 42s, 5m, 3h, 2d."""
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"


def count(n: int, singular: str, plural: str | None = None) -> str:
    """`n` things as an operator reads them: "1 entry", "2,000 entries" (one thousands style)."""
    if n == 1:
        return f"1 {singular}"
    if plural is None:
        plural = singular[:-1] + "ies" if singular.endswith("y") else singular + "s"
    return f"{n:,} {plural}"


def size(n_bytes: int) -> str:
    """Bytes as a person reads them: `812 B`, `3.4 KiB`, `1.2 MiB`, `2.0 GiB`."""
    value = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
