"""The pipeline upstream of the metrics worker: validate, enrich, persist, publish.

Each stage takes and returns a polars frame and is usable alone, so files (`tutormax ingest`)
and the raw stream (`tutormax pipeline run`) share them. Import them from their modules:

    from tutormax_cli.pipeline.readers import envelopes_frame   # or read_file, records_frame
    from tutormax_cli.pipeline.validate import DatabaseReferences, validate
    from tutormax_cli.pipeline.enrich import enrich
    from tutormax_cli.pipeline.persist import persist
    from tutormax_cli.pipeline.publish import publish

    df = envelopes_frame(entries)
    with engine.connect() as conn:
        valid, rejects = validate("sessions", df, DatabaseReferences(conn))
        valid = enrich("sessions", valid)
        persist(conn, "sessions", valid)     # inside the caller's transaction
        conn.commit()
    publish(redis_client, valid)             # after the commit; then acknowledge the entries

Every input row ends in `valid` or in `rejects` with a `reason`; bookkeeping columns (`_line`,
`_file`, `_entry`) ride along so a reject can be traced back. `ingest_files` chains the stages
for files.

This module itself imports nothing heavy (the CLI reads `Format` and `TABLE_ALIASES` from it at
start-up); polars, SQLAlchemy and Redis are imported when a function runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import polars as pl
    import redis
    import sqlalchemy as sa

DEFAULT_BATCH_SIZE = 5_000
"""Rows per upsert statement and per transaction."""

TABLE_ALIASES = {
    "tutors": "tutors",
    "students": "students",
    "sessions": "sessions",
    "feedback": "student_feedback",
    "events": "tutor_events",
}
"""Command-line names of the input tables (`feedback` is `student_feedback`, `events` is
`tutor_events`); the table names themselves are accepted too."""


class Format(StrEnum):
    """Input file formats; the default is taken from the file's extension."""

    csv = "csv"
    jsonl = "jsonl"
    parquet = "parquet"


Progress = Callable[[str, int, int], None]
"""`progress(phase, done, total)`: how far a phase ("reading", "validating", "writing") is."""


@dataclass(frozen=True)
class IngestResult:
    """What one `ingest_files` run did. `rejects` holds the input's columns as text, `_file`,
    `_line` and `reason`, in input order."""

    table: str
    files: tuple[str, ...]
    rows: int
    valid: int
    """Rows that passed validation: persisted, or on a dry run what would be."""
    persisted: int
    """Rows committed to the database (0 on a dry run, which writes nothing)."""
    published: int
    rejects: pl.DataFrame
    seconds: float
    dry_run: bool

    @property
    def rejected(self) -> int:
        """Rows rejected by validation or refused by the database."""
        return self.rejects.height

    def summary(self) -> dict[str, object]:
        """The counts, JSON-ready (`tutormax ingest --json`)."""
        return {
            "table": self.table,
            "files": list(self.files),
            "rows": self.rows,
            "valid": self.valid,
            "persisted": self.persisted,
            "rejected": self.rejected,
            "published": self.published,
            "dry_run": self.dry_run,
            "seconds": round(self.seconds, 3),
        }


class _Publisher:
    """Publishes committed batches on one background thread, one batch in flight, so that
    building and sending a batch's envelopes overlaps the next batch's upsert. A publishing
    error surfaces at the next batch or at `close`, which waits for the last batch."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tutormax-publish")
        self.pending: Future[int] | None = None
        self.sent = 0

    def _wait(self) -> None:
        from tutormax_cli.errors import RedisUnavailable

        if self.pending is not None:
            pending, self.pending = self.pending, None
            try:
                self.sent += pending.result()
            except RedisUnavailable as exc:
                raise RedisUnavailable(
                    f"{exc} ({self.sent:,} published before; the rows are persisted: rerun the "
                    "same ingest to publish them)"
                ) from None

    def submit(self, batch: pl.DataFrame) -> None:
        from tutormax_cli.pipeline.publish import publish

        self._wait()
        self.pending = self.pool.submit(publish, self.client, batch)

    def close(self) -> int:
        """Entries published, once the last batch is out."""
        try:
            self._wait()
        finally:
            self.pool.shutdown(wait=True)
        return self.sent


def read_inputs(
    table: str,
    paths: Sequence[Path],
    fmt: Format | None = None,
    *,
    warn: Callable[[str], None] | None = None,
) -> pl.DataFrame:
    """All files as one text frame. A file without a required column is an `InputError`
    before anything is written; unknown columns are ignored with one warning per file."""
    import polars as pl

    from tutormax_cli.pipeline.readers import InputError, input_columns, read_file
    from tutormax_cli.pipeline.validate import known_columns, required_columns, table_name

    table = table_name(table)
    required = required_columns(table)
    known = known_columns(table)
    frames = []
    for path in paths:
        df = read_file(path, fmt)
        columns = input_columns(df)
        missing = [c for c in required if c not in columns]
        if columns and missing:
            raise InputError(f"{path}: no column {', '.join(missing)} (required in {table})")
        unknown = [c for c in columns if c not in known]
        if unknown and warn is not None:
            warn(f"{path}: ignoring unknown column{'s' if len(unknown) > 1 else ''} "
                 f"{', '.join(unknown)}")  # fmt: skip
        frames.append(df)
    if not frames:
        raise InputError("no input files")
    return pl.concat(frames, how="diagonal")


def ingest_files(
    engine: sa.Engine,
    table: str,
    paths: Sequence[Path],
    *,
    fmt: Format | None = None,
    publisher: redis.Redis | None = None,
    dry_run: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    now: datetime | None = None,
    warn: Callable[[str], None] | None = None,
    progress: Progress | None = None,
) -> IngestResult:
    """Read, validate, enrich, persist (in batches) and publish (sessions, after each commit).

    With `dry_run` nothing is written or published; the database is only read for references.
    `publisher` None means no publication (`--no-publish`, or a table other than sessions).
    """
    import polars as pl

    from tutormax_cli.pipeline.enrich import enrich
    from tutormax_cli.pipeline.persist import persist_batches
    from tutormax_cli.pipeline.readers import FILE, LINE, REASON, input_columns
    from tutormax_cli.pipeline.validate import DatabaseReferences, table_name, validate

    started = time.perf_counter()
    table = table_name(table)
    report = progress or (lambda phase, done, total: None)
    report("reading", 0, len(paths))
    text = read_inputs(table, paths, fmt, warn=warn)
    report("validating", 0, text.height)
    with engine.connect() as conn:
        valid, rejects = validate(table, text, DatabaseReferences(conn), now=now)
    valid = enrich(table, valid)
    published = 0
    refused = 0
    if not dry_run:
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            report("writing", done, valid.height)

        report("writing", 0, valid.height)
        sink = _Publisher(publisher) if publisher is not None and table == "sessions" else None
        try:
            result = persist_batches(
                engine, table, valid, batch_size=batch_size, progress=advance,
                after_commit=sink.submit if sink is not None else None,
            )  # fmt: skip
        finally:
            published = sink.close() if sink is not None else 0
        refused = result.refused.height
        if refused:
            back = text.join(result.refused, on=[FILE, LINE], how="inner").select(rejects.columns)
            rejects = pl.concat([rejects, back])
    order = {str(p): i for i, p in enumerate(paths)}
    rejects = rejects.sort(pl.col(FILE).replace_strict(order, default=len(order)), LINE)
    return IngestResult(
        table=table,
        files=tuple(str(p) for p in paths),
        rows=text.height,
        valid=valid.height,
        persisted=0 if dry_run else valid.height - refused,
        published=published,
        rejects=rejects.select(*input_columns(text), FILE, LINE, REASON),
        seconds=time.perf_counter() - started,
        dry_run=dry_run,
    )
