"""The loop of the `--watch` views: one look now, then one every interval, until Ctrl-C (or
`--count` looks); the rates of each consumer group between two looks."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperCommand

from tutormax_cli.cli import render

if TYPE_CHECKING:
    import redis

    from tutormax_cli.stream.rates import Rate, Sample

WATCH_HELP = "Refresh every SECONDS (default 2) until Ctrl-C: lag, pending, rate, time to drain."
DEFAULT_WATCH_S = 2.0


def watch_option() -> Any:
    """The `--watch [SECONDS]` option of `status` and `pending` (typed `float | None`)."""
    return typer.Option(None, "--watch", help=WATCH_HELP, min=0.1, metavar="SECONDS")


def count_option() -> Any:
    """The `--count N` option that ends a `--watch` (typed `int | None`)."""
    return typer.Option(None, "--count", min=1, help="With --watch: stop after N looks.")


def block_ms(deadline: float | None, longest: int = 1000) -> int | None:
    """How long a follower may block on XREAD before `deadline` (monotonic), at most
    `longest` ms; None once the deadline has passed (the follower stops)."""
    if deadline is None:
        return longest
    wait = int(min(longest, (deadline - time.monotonic()) * 1000))
    return None if wait <= 0 else max(wait, 1)


class WatchCommand(TyperCommand):
    """A command whose `--watch` takes an optional value: a bare `--watch` (last, or before
    another option) means every `DEFAULT_WATCH_S` seconds."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        given: list[str] = []
        for i, word in enumerate(args):
            given.append(word)
            if word == "--watch" and (i + 1 == len(args) or args[i + 1].startswith("-")):
                given.append(f"{DEFAULT_WATCH_S:g}")
        return super().parse_args(ctx, given)


def every(seconds: float, count: int | None, look: Callable[[int], None]) -> int:
    """Call `look(n)` now and every `seconds` until `count` looks or Ctrl-C; returns how many
    looks were made."""
    done = 0
    try:
        while True:
            started = time.monotonic()
            look(done)
            done += 1
            if count is not None and done >= count:
                break
            time.sleep(max(seconds - (time.monotonic() - started), 0.0))
    except KeyboardInterrupt:
        pass
    return done


class GroupRates:
    """The previous sample of each (stream, group), to turn two looks into a `Rate`."""

    def __init__(self) -> None:
        self.samples: dict[tuple[str, str], Sample] = {}

    def update(self, client: redis.Redis, stream: str, group: str, backlog: int) -> Rate | None:
        """The rate since the previous look at this group (None at the first)."""
        from tutormax_cli.stream import rates

        now = rates.sample(client, stream, backlog, time.monotonic())
        before = self.samples.get((stream, group))
        self.samples[(stream, group)] = now
        return None if before is None else rates.between(client, stream, before, now)


def clock() -> str:
    """The time of a look, UTC, for the line of each refresh."""
    return f"{datetime.now(UTC):%H:%M:%S}Z"


def now_iso() -> str:
    """The time of a look as ISO-8601 UTC, for `--watch --json` lines."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def json_line(doc: dict[str, Any]) -> None:
    """One compact JSON document per look (JSON lines)."""
    sys.stdout.write(json.dumps(doc, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def rate_text(rate: Rate | None) -> str:
    """`in 10.0/s out 25.0/s drain 12s` (or `rate after the next look` at the first)."""
    if rate is None:
        return "rate after the next look"
    drain = rate.drain_s
    shown = "never at this rate" if drain is None else "0s" if drain == 0 else render.age(drain)
    return f"in {rate.in_per_s:,.1f}/s out {rate.out_per_s:,.1f}/s drain {shown}"
