"""Writing whole contract tables from frames: the sample generator's sink, to a database (one
transaction; a plain COPY into a PostgreSQL table that was empty, an idempotent upsert
otherwise) or to CSV files with the contract's columns."""

from __future__ import annotations

import io
import queue
import threading
from collections.abc import Iterable
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import IO, Any

import polars as pl
import sqlalchemy as sa

from tutormax_cli.contract import INPUT_KEYS
from tutormax_cli.store.copy_binary import ColumnTypes, column_types, encode
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
    `ON CONFLICT` of the upsert (most of its cost) are skipped. All its indexes are dropped
    first (see `_drop_indexes`) and rebuilt once when its last batch is in, inside the same
    transaction: one sort per index instead of millions of B-tree inserts.
    Any other table is upserted, so a rerun with the same seed changes nothing.

    COPY's data is PostgreSQL's binary format where `store.copy_binary` encodes every column
    (the sample's tables: the backend then copies values instead of parsing text), CSV
    otherwise. The batches are taken (generated) and COPY's data encoded in this thread
    while a second one writes the previous batch (`_Writer`): the command and its PostgreSQL
    backend then work at the same time, on two cores. Each table's rows still go in order,
    one COPY at a time; a Ctrl-C while generating stops at once (the batch being written
    finishes, then the transaction rolls back).
    """
    written: dict[str, int] = {}
    with engine.begin() as conn:
        pg = is_postgres(conn)
        types = {n: column_types(conn, n) for n in TABLE_KEYS if pg and _is_empty(conn, n)}
        with _Writer(conn, set(types), written, changed) as writer:
            for name, df in batches:
                writer.put((name, df, _copy_data(name, df, types[name]) if name in types else None))
        _rebuild(conn, writer.rebuild)
    return written


_Payload = tuple[str, bytes]
"""COPY data and its format: `("binary", …)` or `("csv", …)`."""
_Item = tuple[str, pl.DataFrame, _Payload | None]


class _Writer:
    """Writes `(table, frame, COPY data or None)` items, in order, in a thread of its own, at
    most `depth` waiting. Leaving the `with` normally waits for every item to be written and
    raises the thread's error, if any; leaving on an error (Ctrl-C) lets the item being
    written finish and drops the rest. `put` raises the thread's error as soon as there is
    one. The caller uses `conn` again only after the `with`."""

    def __init__(
        self,
        conn: sa.Connection,
        copying: set[str],
        written: dict[str, int],
        changed: dict[str, int] | None,
        depth: int = 1,
    ) -> None:
        self.conn = conn
        self.copying = copying
        self.written = written
        self.changed = changed
        self.rebuild: list[str] = []
        """The index statements of the table being filled, run by the caller at the end."""
        self._queue: queue.Queue[_Item | None] = queue.Queue(maxsize=depth)
        self._abort = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="sample-writer", daemon=True)

    def __enter__(self) -> _Writer:
        self._thread.start()
        return self

    def put(self, item: _Item) -> None:
        """Queue `item` (blocks while `depth` items wait)."""
        while True:
            if self._error is not None:
                raise self._error
            with suppress(queue.Full):
                self._queue.put(item, timeout=0.05)
                return

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None:
            self._abort.set()
        while self._thread.is_alive():  # the end mark, unless the thread is gone already
            with suppress(queue.Full):
                self._queue.put(None, timeout=0.05)
                break
        self._thread.join()
        if exc_type is None and self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            while (item := self._queue.get()) is not None and not self._abort.is_set():
                self._write(*item)
        except BaseException as error:  # raised in the caller's thread by `put` or `__exit__`
            self._error = error

    def _write(self, name: str, df: pl.DataFrame, payload: _Payload | None) -> None:
        conn = self.conn
        if name not in self.written:
            _rebuild(conn, self.rebuild)
            self.written[name] = 0
            if self.changed is not None:
                self.changed[name] = 0
            self.rebuild = _drop_indexes(conn, name) if name in self.copying else []
        if payload is not None:
            sent = new = _copy(conn, name, df.columns, payload)
        else:
            sent, new = upsert_changed(conn, name, df, TABLE_KEYS[name])
        self.written[name] += sent
        if self.changed is not None:
            self.changed[name] += new


def _drop_indexes(conn: sa.Connection, name: str) -> list[str]:
    """Drop `name`'s indexes, the primary key's and unique constraints' too (unless a foreign
    key depends on one); returns the statements recreating them, constraints first.

    Checking a key row by row while COPY inserts costs as much as the COPY itself; building
    each index once from the loaded rows is a sort. A duplicate key still fails the run: when
    its constraint is added back, inside the same transaction.
    """
    rows = conn.execute(
        sa.text(
            "SELECT i.indexrelid::regclass::text, c.conname, "
            "pg_get_indexdef(i.indexrelid), pg_get_constraintdef(c.oid) "
            "FROM pg_index i LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid "
            "AND c.conrelid = i.indrelid AND c.contype IN ('p', 'u') "
            "WHERE i.indrelid = CAST(:t AS regclass) AND NOT EXISTS (SELECT 1 FROM "
            "pg_constraint o WHERE o.conindid = i.indexrelid AND (o.contype NOT IN ('p', 'u') "
            "OR o.conrelid <> i.indrelid)) ORDER BY c.conname IS NULL, 1"
        ),
        {"t": f'"{name}"'},
    ).all()
    table = _quote(name)
    recreate: list[str] = []
    for index, constraint, index_def, constraint_def in rows:
        if constraint is None:
            conn.execute(sa.text(f"DROP INDEX {index}"))
            recreate.append(index_def)
        else:
            conn.execute(sa.text(f"ALTER TABLE {table} DROP CONSTRAINT {_quote(constraint)}"))
            recreate.append(
                f"ALTER TABLE {table} ADD CONSTRAINT {_quote(constraint)} {constraint_def}"
            )
    return recreate


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _rebuild(conn: sa.Connection, definitions: list[str]) -> None:
    if definitions:
        conn.execute(sa.text("SET LOCAL maintenance_work_mem = '1GB'"))
    for definition in definitions:
        conn.execute(sa.text(definition))


def _is_empty(conn: sa.Connection, name: str) -> bool:
    table = metadata.tables[name]
    return conn.execute(sa.select(sa.literal(1)).select_from(table).limit(1)).first() is None


def _copy_data(name: str, df: pl.DataFrame, types: ColumnTypes) -> _Payload:
    """`df` as COPY's input for PostgreSQL table `name` (column types `types`): binary when
    every column encodes, CSV otherwise."""
    binary = encode(df, types) if df.height else None
    if binary is not None:
        return "binary", binary
    buffer = io.BytesIO()
    _prepare(df, metadata.tables[name], pg=True).write_csv(buffer, include_header=False)
    return "csv", buffer.getvalue()


def _copy(conn: sa.Connection, name: str, columns: list[str], payload: _Payload) -> int:
    """COPY encoded rows into PostgreSQL table `name` as they are (no conflict handling);
    returns the rows copied."""
    form, data = payload
    if not data:
        return 0
    raw: Any = conn.connection.dbapi_connection
    assert raw is not None
    names = ", ".join(_quote(c) for c in columns)
    with raw.cursor() as cursor:
        cursor.copy_expert(
            f"COPY {_quote(name)} ({names}) FROM STDIN WITH (FORMAT {form})",
            io.BytesIO(data),
            size=1 << 20,
        )
        return int(cursor.rowcount)


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
