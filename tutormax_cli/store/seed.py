"""Writing whole contract tables from frames: the sample generator's sink, to a database (one
transaction; a plain COPY into a PostgreSQL table that was empty, an idempotent upsert
otherwise) or to CSV files with the contract's columns."""

from __future__ import annotations

import io
from collections.abc import Iterable
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any

import polars as pl
import sqlalchemy as sa

from tutormax_cli.contract import INPUT_KEYS
from tutormax_cli.store.db import is_postgres
from tutormax_cli.store.save import _prepare, pg_array_literal, upsert_changed
from tutormax_cli.store.schema import metadata

TABLE_KEYS = INPUT_KEYS
"""Primary key of each input table, in the order they are written (the contract's)."""

Batches = Iterable[tuple[str, pl.DataFrame]]
"""`(table, frame)` pairs, each table's batches together, tables in `TABLE_KEYS` order."""


def save_tables(engine: sa.Engine, tables: dict[str, pl.DataFrame]) -> dict[str, int]:
    """Upsert every given table in one transaction; returns rows sent per table."""
    return save_batches(engine, ((name, tables[name]) for name in TABLE_KEYS if name in tables))


def save_batches(
    engine: sa.Engine, batches: Batches, *, changed: dict[str, int] | None = None
) -> dict[str, int]:
    """Write every batch in one transaction (all or nothing); returns rows sent per table, and
    fills `changed` (when given) with the rows the database inserted or changed per table: a
    rerun with the same seed sends every row and changes none.

    On PostgreSQL a table that holds no row when the run starts is filled by plain COPY: the
    batches carry each key once, so there is nothing to merge and the staging table and
    `ON CONFLICT` of the upsert (most of its cost) are skipped. Its indexes other than the
    primary key and unique constraints are dropped first and rebuilt once at the end, inside
    the same transaction: one sort per index instead of millions of random B-tree inserts.
    Any other table is upserted, so a rerun with the same seed changes nothing.
    """
    written: dict[str, int] = {}
    with engine.begin() as conn:
        pg = is_postgres(conn)
        copying: str | None = None
        rebuild: list[str] = []
        for name, df in batches:
            if name not in written:
                _rebuild(conn, rebuild)
                written[name] = 0
                if changed is not None:
                    changed[name] = 0
                copying = name if pg and _is_empty(conn, name) else None
                rebuild = _drop_plain_indexes(conn, name) if copying else []
            if copying == name:
                sent = new = _copy_frame(conn, name, df)
            else:
                sent, new = upsert_changed(conn, name, df, TABLE_KEYS[name])
            written[name] += sent
            if changed is not None:
                changed[name] += new
        _rebuild(conn, rebuild)
    return written


def _drop_plain_indexes(conn: sa.Connection, name: str) -> list[str]:
    """Drop `name`'s indexes that back no constraint; returns the statements recreating them."""
    rows = conn.execute(
        sa.text(
            "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) "
            "FROM pg_index i WHERE i.indrelid = CAST(:t AS regclass) AND NOT EXISTS "
            "(SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)"
        ),
        {"t": f'"{name}"'},
    ).all()
    for index, _ in rows:
        conn.execute(sa.text(f"DROP INDEX {index}"))
    return [definition for _, definition in rows]


def _rebuild(conn: sa.Connection, definitions: list[str]) -> None:
    if definitions:
        conn.execute(sa.text("SET LOCAL maintenance_work_mem = '256MB'"))
    for definition in definitions:
        conn.execute(sa.text(definition))


def _is_empty(conn: sa.Connection, name: str) -> bool:
    table = metadata.tables[name]
    return conn.execute(sa.select(sa.literal(1)).select_from(table).limit(1)).first() is None


def _copy_frame(conn: sa.Connection, name: str, df: pl.DataFrame) -> int:
    """COPY `df` into PostgreSQL table `name` as it is (no conflict handling)."""
    if df.is_empty():
        return 0
    table = metadata.tables[name]
    prepared = _prepare(df, table, pg=True)
    columns = ", ".join(f'"{c}"' for c in df.columns)
    raw: Any = conn.connection.dbapi_connection
    assert raw is not None
    with raw.cursor() as cursor:
        buffer = io.BytesIO(prepared.write_csv(include_header=False).encode())
        cursor.copy_expert(f'COPY "{name}" ({columns}) FROM STDIN WITH (FORMAT csv)', buffer)
    return df.height


def write_csv_tables(tables: dict[str, pl.DataFrame], out: Path) -> list[Path]:
    """One `<table>.csv` per table: see `write_csv_batches`."""
    return write_csv_batches(tables.items(), out)


def write_csv_batches(batches: Batches, out: Path) -> list[Path]:
    """One `<table>.csv` per table: ISO-8601 UTC timestamps, lists as PostgreSQL array literals,
    so `COPY table FROM 'file' WITH (FORMAT csv, HEADER true)` loads them as they are."""
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    with ExitStack() as files:
        handles: dict[str, IO[bytes]] = {}
        for name, df in batches:
            if name not in handles:
                paths[name] = out / f"{name}.csv"
                handles[name] = files.enter_context(paths[name].open("wb"))
                include_header = True
            else:
                include_header = False
            _csv_text(df).write_csv(handles[name], include_header=include_header)
    return list(paths.values())


def _csv_text(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns(
        [
            pg_array_literal(pl.col(c)).alias(c)
            for c, t in df.schema.items()
            if isinstance(t, pl.List)
        ]
        + [
            pl.col(c).dt.strftime("%Y-%m-%dT%H:%M:%S%.6f+00:00").alias(c)
            for c, t in df.schema.items()
            if isinstance(t, pl.Datetime)
        ]
    )
