"""`tutormax recompute`: snapshots as of an instant, daily backfills, catch-up after downtime.

Parses, calls `tutormax_cli.recompute.run`, renders: one summary line (or `--json`) on stdout,
progress bars on stderr only when it is a terminal, nothing but errors under `--quiet`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from tutormax_cli.cli import context, render
from tutormax_cli.errors import LockHeld, UsageError

if TYPE_CHECKING:
    from collections.abc import Callable

    import sqlalchemy as sa

    from tutormax_cli.recompute import ChunkProgress, RecomputeRequest, RecomputeResult
    from tutormax_cli.stream.tier_changes import TierChange


def register(app: typer.Typer) -> None:
    """Add the top-level `recompute` command to `app`."""
    app.command("recompute")(recompute)


def _day(text: str | None, option: str) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"{option}: {text!r} is not a date (YYYY-MM-DD)") from None


@contextmanager
def _bars(enabled: bool) -> Iterator[ChunkProgress | None]:
    """Load/compute/write bars on stderr, only when a person is watching."""
    if not (enabled and render.err.is_terminal):
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress(
        "{task.description:>8}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=render.err, transient=True,
    ) as bars:  # fmt: skip
        tasks = {phase: bars.add_task(phase, total=None) for phase in ("load", "compute", "write")}

        def advance(phase: str, done: int, total: int) -> None:
            bars.update(tasks[phase], completed=done, total=total)

        yield advance


def _run(
    engine: sa.Engine,
    request: RecomputeRequest,
    *,
    quiet: bool,
    on_wait: Callable[[], None],
    on_changes: Callable[[list[TierChange]], None] | None = None,
) -> RecomputeResult:
    """Run with progress bars; on Ctrl-C say what is committed and how to finish (exit 130)."""
    from tutormax_cli.recompute import run

    written = [0, 0]  # chunks written (each is committed on its own), chunks planned

    def track(bars: ChunkProgress | None) -> ChunkProgress:
        def progress(phase: str, done: int, total: int) -> None:
            if phase == "write":
                written[:] = [done, total]
            if bars is not None:
                bars(phase, done, total)

        return progress

    try:
        with _bars(not quiet) as bars:
            return run(
                engine, request, progress=track(bars), on_wait=on_wait, on_changes=on_changes
            )
    except KeyboardInterrupt:
        done, total = written
        what = "written and committed" if request.write else "computed (nothing written)"
        render.err.print(
            f"Interrupted: {done:,} of {total or '?'} chunks {what}. Run the same command again "
            "to finish: chunks already written are upserted again unchanged.",
            markup=False, highlight=False, soft_wrap=True,
        )  # fmt: skip
        raise typer.Exit(130) from None


def summary_line(r: RecomputeResult) -> str:
    """What the run did, in one line an operator can grep from a cron log."""
    verb, what = _what_was_written(r)
    if r.mode == "daily":
        when = f"end-of-day snapshots of {r.days} days, {r.first_day} … {r.metric_date}"
    else:
        when = f"as of {r.as_of:%Y-%m-%dT%H:%M:%S}Z (metric_date {r.metric_date})"
    if r.mode == "changed":
        since = r.changed_since or "the beginning (no mark yet)"
        when += f", tutors changed since {since}"
    shard = f", shard {r.shard}" if r.shard else ""
    chunks = f"{r.chunks} chunk" + ("" if r.chunks == 1 else "s")
    phases = ", ".join(f"{k} {v:.2f}s" for k, v in r.seconds.items())
    return (
        f"{verb} {what}, {when}{shard}; {chunks}, {r.rows_read:,} rows read; {phases}."
        + _tier_summary(r)
    )


def _what_was_written(r: RecomputeResult) -> tuple[str, str]:
    """The summary's verb and counts. "Wrote" counts the rows the database inserted or changed:
    a rerun over unchanged data computes every row again and writes none."""
    rows = f"{r.rows:,} rows for {r.tutors:,} tutors"
    changed = f"{r.rows_changed:,} new or changed, {r.tier_changes:,} tier changes"
    if r.output:
        if not r.written:
            return f"Exported to {r.output} (database untouched)", rows
        return f"Wrote and exported to {r.output}", f"{rows} ({changed})"
    if not r.written:
        return "Computed (dry run, nothing written)", rows
    if r.rows == 0:
        return "Nothing to write:", rows
    if r.rows_changed == 0:
        return "Nothing changed:", f"{rows} computed, every one as stored ({changed})"
    if r.rows_changed < r.rows:
        kept = r.rows - r.rows_changed
        return "Wrote", (
            f"{r.rows_changed:,} of {r.rows:,} rows for {r.tutors:,} tutors ({changed}, "
            f"{kept:,} as stored)"
        )
    return "Wrote", f"{rows} ({changed})"


def _tier_summary(r: RecomputeResult) -> str:
    """Tutors per 30-day tier: of the snapshot, or of a daily run's last day (every window's,
    and every day's, are in `--json`)."""
    from tutormax_cli.metrics.tiers import TIER_NAMES

    counts = r.tiers.get("30day")
    if not counts:
        return ""
    on = f" on {r.metric_date}" if r.mode == "daily" else ""
    shown = ", ".join(f"{t} {counts.get(t, 0)}" for t in TIER_NAMES)
    return f" 30day tiers{on} (tutors): {shown}."


def recompute(
    ctx: typer.Context,
    as_of: str | None = typer.Option(
        None, "--as-of", help="One snapshot as of this instant (ISO-8601; default: now)."
    ),
    since: str | None = typer.Option(
        None, "--since", help="Backfill end-of-day snapshots from this day (YYYY-MM-DD)."
    ),
    until: str | None = typer.Option(
        None, "--until", help="Last day of the backfill (default: yesterday, UTC)."
    ),
    changed_since: str | None = typer.Option(
        None,
        "--changed-since",
        help="Only tutors whose inputs changed since this instant, as of now; 'auto' continues "
        "from the last successful run.",
    ),
    tutor: list[str] | None = typer.Option(
        None, "--tutor", help="Only this tutor (repeatable). Default: every tutor."
    ),
    allow_unknown: bool = typer.Option(
        False, "--allow-unknown", help="With --tutor: accept ids the database does not know."
    ),
    shard: str | None = typer.Option(
        None, "--shard", help="K/N: only tutors whose stable hash mod N is K (split a run)."
    ),
    chunk_size: int | None = typer.Option(
        None,
        "--chunk-size",
        min=1,
        help="Tutors per chunk (default: 5000 on PostgreSQL, 1000 on SQLite; backfills: "
        "sized to a memory budget).",
    ),
    tiers_file: Path | None = typer.Option(None, "--tiers", help=context.TIERS_HELP),
    dry_run: bool = typer.Option(False, "--dry-run", help="Compute and report; write nothing."),
    output: Path | None = typer.Option(
        None, "--output", help="Export the rows to this .parquet or .csv file instead of writing."
    ),
    write: bool = typer.Option(False, "--write", help="With --output: write the rows as well."),
    wait: bool = typer.Option(
        False, "--wait", help="If another run holds the lock, wait for it instead of exiting."
    ),
    raw: bool = typer.Option(
        False, "--raw", help="Aggregate raw rows even when `db partials` is enabled."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress, no summary line."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Compute and upsert tutors' 7/30/90-day metrics: as of an instant, as daily end-of-day
    snapshots (--since), or for tutors changed since a time (--changed-since).

    Exit status: 0 done (or skipped: another run holds the lock), 1 failure, 2 usage error.

    Example: tutormax recompute --since 2026-01-01 --until 2026-01-31 --shard 0/4 --quiet
    """
    from tutormax_cli.metrics.tiers import load_tiers
    from tutormax_cli.recompute import RecomputeRequest, Shard

    context.imports_done()

    if dry_run and write:
        raise UsageError("--dry-run and --write cannot be combined")
    auto = changed_since is not None and changed_since.strip().lower() == "auto"
    request = RecomputeRequest(
        as_of=None if as_of is None else context.parse_instant(as_of, "--as-of"),
        since=_day(since, "--since"),
        until=_day(until, "--until"),
        changed_since=(
            None if changed_since is None or auto
            else context.parse_instant(changed_since, "--changed-since")
        ),
        changed_auto=auto,
        tutors=tuple(tutor) if tutor else None,
        shard=None if shard is None else Shard.parse(shard),
        chunk_size=chunk_size,
        tiers=load_tiers(tiers_file),
        write=not dry_run and (output is None or write),
        output=output,
        wait=wait,
        raw=raw,
    )  # fmt: skip
    request.validate()
    engine = context.database(ctx)
    if tutor and not allow_unknown:
        from tutormax_cli.store.known import require_known

        with engine.connect() as conn:
            require_known(conn, tutor)

    def waiting() -> None:
        if not quiet:
            render.err.print("Another recompute holds the lock: waiting for it…")

    feed = _Feed(ctx, quiet)
    try:
        result = _run(engine, request, quiet=quiet, on_wait=waiting, on_changes=feed.publish)
    except LockHeld:
        if quiet:
            raise typer.Exit(0) from None
        raise
    if as_json:
        context.print_json(result.as_dict())
    elif not quiet:
        render.out.print(summary_line(result), markup=False, highlight=False, soft_wrap=True)


class _Feed:
    """Publishes each chunk's tier changes on `tutormax:tiers:changed`, connecting to Redis only
    when there is a change to publish. The rows are committed already: an unreachable Redis
    costs the feed its entries (said once on stderr), never the run."""

    def __init__(self, ctx: typer.Context, quiet: bool) -> None:
        self.ctx = ctx
        self.quiet = quiet
        self.client: object | None = None
        self.failed = False

    def publish(self, changes: list[TierChange]) -> None:
        import redis

        from tutormax_cli.errors import RedisUnavailable
        from tutormax_cli.stream import tier_changes
        from tutormax_cli.stream.connection import connect

        if self.failed:
            return
        try:
            if self.client is None:
                self.client = connect(context.settings(self.ctx).redis_url)
            assert isinstance(self.client, redis.Redis)
            tier_changes.publish(self.client, changes)
        except (RedisUnavailable, redis.RedisError) as exc:
            self.failed = True
            if not self.quiet:
                render.err.print(
                    f"Tier changes not published on the feed ({exc}); the rows are written.",
                    markup=False, highlight=False, soft_wrap=True,
                )  # fmt: skip
