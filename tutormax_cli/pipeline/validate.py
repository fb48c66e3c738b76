"""Validation: text rows in, typed contract rows and rejects with reasons out.

Every check is a polars expression over the whole frame, so a file of 100k rows is validated in
a fraction of a second; only list and JSON cells are parsed in Python. A row is valid when no
check says otherwise. Whatever the database would refuse (NOT NULL, VARCHAR lengths, 32-bit
integers, NUL characters, unique columns) is checked here too, because one refused row would
otherwise fail its whole batch.

Reasons read `column: what is wrong`, several joined by `; `. Duplicate primary keys keep the
last row; an earlier row with the same key and different values is rejected, an identical one is
kept (persisting it twice changes nothing).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import polars as pl
import sqlalchemy as sa

from tutormax_cli.contract import INPUT_KEYS as TABLE_KEYS
from tutormax_cli.contract import INPUT_TABLES
from tutormax_cli.contract import table as contract_table
from tutormax_cli.instants import EARLIEST_TIME, LATEST_TIME
from tutormax_cli.metrics.frames import TS
from tutormax_cli.pipeline import TABLE_ALIASES
from tutormax_cli.pipeline.readers import (
    ERROR,
    FILE,
    LINE,
    REASON,
    as_text,
    is_bookkeeping,
)
from tutormax_cli.store.db import is_postgres
from tutormax_cli.store.schema import metadata

SESSION_TYPES = ("1-on-1", "group", "workshop")
TUTOR_STATUSES = ("active", "inactive", "churned")
MAX_DURATION_MINUTES = 300
MAX_LATE_START_MINUTES = 60
MAX_SCHEDULE_AHEAD = timedelta(days=30)
MAX_AGE = 150
RATING_COLUMNS = (
    "overall_rating",
    "subject_knowledge_rating",
    "communication_rating",
    "patience_rating",
    "engagement_rating",
    "helpfulness_rating",
)
IGNORED_COLUMNS = frozenset({"updated_at"})
"""Contract columns accepted in a file but not taken from it: tutormax sets `updated_at` to the
time it writes the row (docs/metrics.md §1)."""

_INT32 = 2**31 - 1
_TRUE = ("true", "t", "1", "yes", "y")
_FALSE = ("false", "f", "0", "no", "n")
_NON_PRINTABLE = r"[\p{C}\p{Zl}\p{Zp}]|[\p{Zs}&&[^ ]]"  # what str.isprintable() refuses
_ROW = "__row"
_AT = "__at"  # where a row is, for reasons that point at another row: `line 7` or `FILE:7`
_SHOW_CHARS = 40
ERRORS = "_errors"
"""The rejects' per-field failures, with `validate(..., detail=True)`."""
_ERRORS_DTYPE = pl.List(pl.Struct({"field": pl.String, "message": pl.String}))


def table_name(name: str) -> str:
    """The contract table for a command-line name or a table name."""
    table = TABLE_ALIASES.get(name, name)
    if table not in TABLE_KEYS:
        raise ValueError(f"unknown input table {name!r}: use one of {', '.join(TABLE_ALIASES)}")
    return table


@dataclass(frozen=True)
class ColumnSpec:
    """How one contract column is parsed and checked; derived from the schema, not restated."""

    name: str
    kind: str  # id, text, json, int, float, bool, ts, list
    dtype: pl.DataType
    required: bool
    max_length: int | None


@functools.cache
def specs(table: str) -> tuple[ColumnSpec, ...]:
    """The input columns of `table`, in contract order (`updated_at` is not one). Derived once
    per table: the contract does not change while a process runs."""
    sa_table = metadata.tables[table]
    out = []
    for name, dtype in contract_table(table).schema.items():
        if name in IGNORED_COLUMNS:
            continue
        column = sa_table.c[name]
        kind = _kind(name, dtype, column)
        length = getattr(column.type, "length", None)
        required = not column.nullable and column.server_default is None
        out.append(ColumnSpec(name, kind, dtype, required, length))
    return tuple(out)


def _kind(name: str, dtype: pl.DataType, column: sa.Column[Any]) -> str:
    if isinstance(dtype, pl.List):
        return "list"
    if dtype == TS:
        return "ts"
    if dtype == pl.Boolean:
        return "bool"
    if dtype == pl.Int64:
        return "int"
    if dtype == pl.Float64:
        return "float"
    if isinstance(column.type, sa.JSON):
        return "json"
    return "id" if name.endswith("_id") else "text"


def known_columns(table: str) -> frozenset[str]:
    """Columns a file of `table` may have without a warning."""
    return frozenset(s.name for s in specs(table)) | IGNORED_COLUMNS


def required_columns(table: str) -> list[str]:
    """Columns every row of `table` must have a value in."""
    return [s.name for s in specs(table) if s.required]


# -- references --------------------------------------------------------------------------------


class References(Protocol):
    """Where referenced rows are looked up: the database, plus rows arriving in the same batch."""

    def owners(self, table: str, column: str, values: Sequence[str]) -> dict[str, str]:
        """For each of `values` present in `table.column`, the primary key of the row holding
        it (for the key column itself, the value)."""
        ...

    def owners_many(
        self, lookups: Sequence[tuple[str, str, Sequence[str]]]
    ) -> list[dict[str, str]]:
        """`owners` of each `(table, column, values)`, at once: validation asks for every
        referenced table of a frame together, so a database answers them in one round trip."""
        ...


class StaticReferences:
    """References known in advance (tests, or a consumer that keeps its own cache)."""

    def __init__(
        self,
        ids: Mapping[str, Iterable[str]] | None = None,
        unique: Mapping[tuple[str, str], Mapping[str, str]] | None = None,
    ) -> None:
        self._ids = {table: set(values) for table, values in (ids or {}).items()}
        self._unique = {k: dict(v) for k, v in (unique or {}).items()}

    def owners(self, table: str, column: str, values: Sequence[str]) -> dict[str, str]:
        if column == TABLE_KEYS[table][0]:
            known = self._ids.get(table, set())
            return {v: v for v in values if v in known}
        held = self._unique.get((table, column), {})
        return {v: held[v] for v in values if v in held}

    def owners_many(
        self, lookups: Sequence[tuple[str, str, Sequence[str]]]
    ) -> list[dict[str, str]]:
        return [self.owners(t, c, v) for t, c, v in lookups]


class DatabaseReferences:
    """Looks ids up in the database, one query per table and chunk of distinct values; ids in
    `arriving` (table → primary keys persisted in the same batch) count as present, and are not
    looked up.

    With `cache` (shared by the references of one transaction, until it writes), a value
    already looked up, found or not, is not asked again: an API round looks the sessions'
    feedback up by session id to derive its ids, then validates those same session ids as the
    feedback's unique column."""

    def __init__(
        self,
        conn: sa.Connection,
        arriving: Mapping[str, Iterable[str]] | None = None,
        *,
        cache: dict[tuple[str, str], dict[str, str | None]] | None = None,
    ) -> None:
        self.conn = conn
        self._arriving = {table_name(t): set(ids) for t, ids in (arriving or {}).items()}
        self._pg = is_postgres(conn)
        self._chunk = 10_000 if self._pg else 900  # SQLite: bound-parameter limit
        self._cache = cache

    def owners(self, table: str, column: str, values: Sequence[str]) -> dict[str, str]:
        return self.owners_many([(table, column, values)])[0]

    def owners_many(
        self, lookups: Sequence[tuple[str, str, Sequence[str]]]
    ) -> list[dict[str, str]]:
        """`owners` of each `(table, column, values)`; on PostgreSQL in one round trip for all
        of them (a batch of completions looks up its tutors and students together)."""
        out: list[dict[str, str]] = []
        asks: list[tuple[int, str, str, list[str]]] = []
        for n, (table, column, values) in enumerate(lookups):
            key = TABLE_KEYS[table][0]
            distinct = list(dict.fromkeys(values))
            arriving = self._arriving.get(table, set()) if column == key else set()
            known = {} if self._cache is None else self._cache.get((table, column), {})
            found = {v: v for v in distinct if v in arriving}
            found.update((v, o) for v in distinct if (o := known.get(v)) is not None)
            todo = [v for v in distinct if v not in arriving and v not in known]
            out.append(found)
            if todo:
                asks.append((n, table, column, todo))
        if asks:
            rows = self._lookup(asks)
            for n, table, column, todo in asks:
                answers = rows.get(n, {})
                out[n].update(answers)
                if self._cache is not None:
                    known = self._cache.setdefault((table, column), {})
                    known.update(dict.fromkeys(todo))  # looked up: absent unless found
                    known.update(answers)
        return out

    def _lookup(self, asks: Sequence[tuple[int, str, str, list[str]]]) -> dict[int, dict[str, str]]:
        """Each ask's values found in its table, by the ask's number."""
        found: dict[int, dict[str, str]] = {}
        if not self._pg:
            for n, table, column, todo in asks:
                held = found.setdefault(n, {})
                for start in range(0, len(todo), self._chunk):
                    chunk = todo[start : start + self._chunk]
                    query = _owners_query(table, column)
                    for value, owner in self.conn.execute(query, {"ids": chunk}):
                        held[str(value)] = str(owner)
            return found
        # one statement for every ask: a SELECT each, `= ANY` of an array, through the driver
        # (SQLAlchemy's execute of a prebuilt statement cost ~0.3 ms of CPU per lookup)
        parts, params = [], []
        for n, table, column, todo in asks:
            for start in range(0, len(todo), self._chunk):
                parts.append(_owners_sql(table, column) % n)
                params.append(todo[start : start + self._chunk])
        if not self.conn.in_transaction():
            self.conn.begin()  # the DBAPI cursor below bypasses SQLAlchemy's autobegin
        raw: Any = self.conn.connection.dbapi_connection
        with raw.cursor() as cursor:
            cursor.execute(" UNION ALL ".join(parts), params)
            for n, value, owner in cursor.fetchall():
                found.setdefault(n, {})[value] = owner
        return found


@functools.cache
def _owners_sql(table: str, column: str) -> str:
    """PostgreSQL's lookup of `table.column` (`%d`: the ask's number, `%%s`: an array)."""
    key = TABLE_KEYS[table][0]
    return f'SELECT %d, "{column}"::text, "{key}"::text FROM "{table}" WHERE "{column}" = ANY(%%s)'


@functools.cache
def _owners_query(table: str, column: str) -> sa.Select[tuple[Any, Any]]:
    """`column` and the primary key of the rows whose `column` is in the list `ids`: built
    once (an expanding parameter), where building one per lookup cost more than running it."""
    sa_table = metadata.tables[table]
    key = sa_table.c[TABLE_KEYS[table][0]]
    values: sa.BindParameter[str] = sa.bindparam("ids", expanding=True)
    return sa.select(sa_table.c[column], key).where(sa_table.c[column].in_(values))


# -- parsing -----------------------------------------------------------------------------------
#
# Values are parsed column by column (eagerly, so costly fallbacks run only on the rows that
# need them). Checks are boolean flags over the whole frame; the reason texts are built only for
# the rows that fail, which keeps a clean file of 100k rows cheap.


def _t(name: str) -> pl.Expr:
    """The typed value of a column (the work frame holds both text and typed values)."""
    return pl.col(f"__t_{name}")


def show(expr: pl.Expr) -> pl.Expr:
    """A value quoted for a reason: at most 40 characters, control characters as `?`."""
    text = expr.cast(pl.String)
    short = text.str.slice(0, _SHOW_CHARS).str.replace_all(r"\p{C}", "?")
    tail = pl.when(text.str.len_chars() > _SHOW_CHARS).then(pl.lit("…")).otherwise(pl.lit(""))
    return pl.concat_str([pl.lit("'"), short, tail, pl.lit("'")])


_AWARE_FORMATS = ("%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%d %H:%M%#z")
_NAIVE_FORMATS = ("%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M", "%Y-%m-%d")


def _timestamp_text(stripped: pl.Expr) -> pl.Expr:
    """ISO-8601 text (stripped of surrounding whitespace) in the one spelling the formats below
    read: a space, `+00:00` for `Z`."""
    return stripped.str.replace(r"^(\d{4}-\d{2}-\d{2})[Tt]", "${1} ").str.replace(
        r"[zZ]$", "+00:00"
    )


def _first_timestamp(stripped: pl.Expr) -> pl.Expr:
    """The first (and by far the most common) format: what a whole frame is parsed with in one
    pass; `parse_timestamps` runs only on a column where some rows need another format."""
    return _timestamp_text(stripped).str.strptime(TS, _AWARE_FORMATS[0], strict=False)


def parse_timestamps(raw: pl.Series) -> pl.Series:
    """ISO-8601 text to UTC: `T` or space, seconds and fraction optional, `Z` or an offset
    optional (no offset means UTC), or a bare date (midnight UTC); null where it does not parse.
    Each further format is tried only on the rows still unparsed."""
    stripped = pl.lit(raw).str.strip_chars()
    text = pl.select(_timestamp_text(stripped)).to_series()
    out = pl.select(_first_timestamp(stripped)).to_series()
    for fmt in (*_AWARE_FORMATS[1:], *_NAIVE_FORMATS):
        todo = (out.is_null() & text.is_not_null()).arg_true()
        if todo.is_empty():
            break
        rest = text.gather(todo)
        if fmt in _AWARE_FORMATS:
            parsed = rest.str.strptime(TS, fmt, strict=False)
        else:
            parsed = rest.str.strptime(pl.Datetime("us"), fmt, strict=False)
            parsed = parsed.dt.replace_time_zone("UTC")
        out = out.scatter(todo, parsed)
    return out.alias(raw.name)


def _parse_int(raw: pl.Series) -> pl.Series:
    """Integers; `60.0` too (JSON writers and spreadsheets emit integral floats)."""
    text = raw.str.strip_chars()
    out = text.cast(pl.Int64, strict=False)
    todo = (out.is_null() & text.is_not_null()).arg_true()
    if not todo.is_empty():
        f = text.gather(todo).cast(pl.Float64, strict=False)
        whole = f.is_finite() & (f == f.floor()) & (f.abs() < 2**53)
        out = out.scatter(
            todo,
            f.zip_with(
                whole.fill_null(False), pl.repeat(None, f.len(), dtype=pl.Float64, eager=True)
            ).cast(pl.Int64),
        )
    return out


def _parse_bool(stripped: pl.Expr) -> pl.Expr:
    return stripped.str.to_lowercase().replace_strict(
        [*_TRUE, *_FALSE],
        [True] * len(_TRUE) + [False] * len(_FALSE),
        default=None,
        return_dtype=pl.Boolean,
    )


@functools.cache
def _typing_plan(
    columns: tuple[ColumnSpec, ...],
) -> tuple[
    tuple[tuple[pl.Expr, ...], tuple[pl.Expr, ...]],
    tuple[pl.Expr, ...],
    dict[str, ColumnSpec],
    tuple[ColumnSpec, ...],
]:
    """The passes that strip each cell (`__s_<name>`) and say which are blank (`__b_<name>`),
    the pass of expressions that types `columns`, the columns to parse again where that pass
    missed, and the columns parsed in Python; built once per table's columns. Stripping once
    per cell, read by the blank test and the parsers, saves a string pass per typed column."""
    strip = [pl.col(spec.name).str.strip_chars().alias(_stripped(spec.name)) for spec in columns]
    blanks = [_is_blank(pl.col(_stripped(spec.name))).alias(_blank(spec.name)) for spec in columns]
    exprs: list[pl.Expr] = []
    retry: dict[str, ColumnSpec] = {}
    python: list[ColumnSpec] = []
    for spec in columns:
        name, raw = f"__t_{spec.name}", pl.col(spec.name)
        stripped, blank = pl.col(_stripped(spec.name)), pl.col(_blank(spec.name))
        kind = spec.kind
        if kind in ("list", "json"):
            python.append(spec)
            continue
        if kind == "float":
            number = stripped.cast(pl.Float64, strict=False)
            infinite = number.is_not_null() & ~number.is_finite()
            exprs += [pl.when(~infinite).then(number).alias(name),
                      infinite.alias(f"__nf_{spec.name}")]  # fmt: skip
            continue
        if kind == "int":
            value = stripped.cast(pl.Int64, strict=False)
            retry[name] = spec
        elif kind == "bool":
            value = _parse_bool(stripped)
        elif kind == "ts":
            value = _first_timestamp(stripped)
            retry[name] = spec
        else:
            value = raw
        exprs.append(pl.when(~blank).then(value.cast(spec.dtype)).alias(name))
    passes = (tuple(strip), tuple(blanks))
    return passes, tuple(exprs), retry, tuple(python)  # shared by every call: never mutated


def _is_blank(stripped: pl.Expr) -> pl.Expr:
    """A cell with no value (given stripped of whitespace): null, or nothing but whitespace."""
    return stripped.is_null() | (stripped == "")


def _stripped(name: str) -> str:
    """The column of the work frame holding `name`'s cells stripped of surrounding whitespace."""
    return f"__s_{name}"


def _blank(name: str) -> str:
    """The column of the work frame that says where `name` is blank (`_is_blank`): computed
    once, read by the typing and by every check that asks (five per column, some)."""
    return f"__b_{name}"


def _typed(text: pl.LazyFrame, columns: Sequence[ColumnSpec]) -> pl.DataFrame:
    """`text` with `__t_<name>` for every column (the typed value, null where blank or
    unparsable), `__nf_<name>` for floats (not finite) and `__pe_<name>` for list and JSON
    columns (the parse error).

    One pass of expressions types the whole frame (a small frame costs one query, not one per
    column), and says in the same query (`__miss_<name>`) which integer and timestamp columns
    have a present value that did not parse that way: only those are parsed again with the
    fallbacks (`60.0`, other ISO-8601 spellings). Only list and JSON cells go through Python."""
    (strip, blanks), exprs, retry, python = _typing_plan(tuple(columns))
    plan = text.with_columns(strip).with_columns(blanks).with_columns(exprs)
    if retry:
        plan = plan.with_columns(
            (pl.col(name).is_null() & ~pl.col(_blank(spec.name))).any().alias(f"__miss_{name}")
            for name, spec in retry.items()
        )
    out = _run(plan)
    redo = []
    for name, spec in retry.items():
        if out.height and out.get_column(f"__miss_{name}")[0]:
            cells = out.get_column(spec.name)
            empty = out.get_column(_blank(spec.name))
            again = _parse_int if spec.kind == "int" else parse_timestamps
            typed = again(cells).cast(spec.dtype)
            redo.append(pl.select(pl.when(~empty).then(typed)).to_series().alias(name))
    if redo:
        out = out.with_columns(redo)
    for spec in python:
        cell = _parse_list if spec.kind == "list" else _json_text
        parsed, error = _python_column(out.get_column(spec.name).to_list(), cell, spec.dtype)
        # new columns of the same height: stacked, not a query
        out = out.hstack([parsed.alias(f"__t_{spec.name}"), error.alias(f"__pe_{spec.name}")])
    return out


_PLAIN = pl.QueryOptFlags.none(simplify_expression=True)


def _run(plan: pl.LazyFrame) -> pl.DataFrame:
    """Run one of validation's plans as an eager `DataFrame.with_columns` runs: on the in-memory
    engine, with no optimization but expression simplification. The plans are chains of
    `with_columns` over a frame in memory, which the other passes do not speed up; for a batch
    of 16 rows the optimizer and the "auto" engine's set-up cost several times the query."""
    return plan.collect(engine="in-memory", optimizations=_PLAIN)


def _parse_list(text: str) -> list[str]:
    """A JSON array of strings or a PostgreSQL array literal `{a,"b c"}`."""
    text = text.strip()
    if text.startswith("["):
        try:
            items = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            raise ValueError("is not a valid JSON array") from None
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise ValueError("must be an array of strings")
        return items
    if text.startswith("{") and text.endswith("}"):
        return _parse_pg_array(text[1:-1])
    raise ValueError('is not a list (use ["a", "b"] or {a,b})')


def _parse_pg_array(body: str) -> list[str]:
    """The inside of a one-dimensional PostgreSQL array literal of text."""
    items: list[str] = []
    i, n = 0, len(body)
    if not body.strip():
        return items
    while True:
        while i < n and body[i].isspace():
            i += 1
        if i < n and body[i] == '"':
            item, i = _pg_quoted(body, i + 1)
            while i < n and body[i].isspace():
                i += 1
        else:
            j = body.find(",", i)
            j = n if j < 0 else j
            item = body[i:j].strip()
            if not item:
                raise ValueError("has an empty unquoted element")
            if item.upper() == "NULL":
                raise ValueError("has a NULL element")
            if any(c in item for c in '{}"\\'):
                raise ValueError("is not a one-dimensional array of strings")
            i = j
        items.append(item)
        if i >= n:
            return items
        if body[i] != ",":
            raise ValueError("is not a valid array literal")
        i += 1


def _pg_quoted(body: str, i: int) -> tuple[str, int]:
    """A double-quoted element starting after its opening quote; returns it and the index
    after its closing quote."""
    chars = []
    n = len(body)
    while i < n and body[i] != '"':
        if body[i] == "\\" and i + 1 < n:
            i += 1
        chars.append(body[i])
        i += 1
    if i >= n:
        raise ValueError("has an unterminated quoted element")
    return "".join(chars), i + 1


def _python_column(
    values: list[str | None], parse: Callable[[str], Any], dtype: pl.DataType
) -> tuple[pl.Series, pl.Series]:
    """Parse cells that polars cannot (list literals, JSON validity) one by one."""
    parsed: list[Any] = []
    errors: list[str | None] = []
    for value in values:
        if value is None or not value.strip():
            parsed.append(None)
            errors.append(None)
            continue
        try:
            parsed.append(parse(value))
            errors.append(None)
        except ValueError as exc:
            parsed.append(None)
            errors.append(str(exc))
    return pl.Series(parsed, dtype=dtype), pl.Series(errors, dtype=pl.String)


def _json_text(text: str) -> str:
    try:
        json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise ValueError("is not valid JSON") from None
    if "\\u0000" in text:
        raise ValueError("holds \\u0000, which PostgreSQL's JSONB cannot store")
    return text


# -- checks ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One rule: `flag` is true on the rows that break it; `message` says how, and is built
    only for those rows."""

    column: str
    flag: pl.Expr
    message: pl.Expr


@functools.cache
def _column_checks(spec: ColumnSpec) -> tuple[Check, ...]:
    """Presence, type, and what the database would refuse, for one column. Built once per
    column: polars expressions are immutable plans, and building them is most of what a
    one-row frame (an API completion) costs."""
    name, kind = spec.name, spec.kind
    raw, value = pl.col(name), _t(name)
    blank = pl.col(_blank(name))
    present = ~blank
    checks = []
    if spec.required:
        checks.append(Check(name, blank, pl.lit("missing")))
    if spec.max_length is not None:
        length = raw.str.len_chars()
        checks.append(
            Check(
                name,
                present & (length > spec.max_length),
                pl.format("longer than {} characters ({})", pl.lit(spec.max_length), length),
            )
        )
    if kind == "id":
        flag = present & raw.str.contains(_NON_PRINTABLE)
        checks.append(Check(name, flag, pl.lit("has non-printable characters")))
    elif kind in ("text", "json"):
        checks.append(Check(name, raw.str.contains("\x00"), pl.lit("has a NUL character")))
    if kind in ("list", "json"):
        error = pl.col(f"__pe_{name}")
        checks.append(Check(name, error.is_not_null(), error))
    elif kind == "float":
        infinite = pl.col(f"__nf_{name}")
        checks.append(Check(name, infinite, pl.format("{} is not a finite number", show(raw))))
        checks.append(
            Check(
                name,
                present & value.is_null() & ~infinite,
                pl.format("{} is not a number", show(raw)),
            )
        )
    elif kind in _NOT_A:
        checks.append(
            Check(name, present & value.is_null(), pl.format(f"{{}} {_NOT_A[kind]}", show(raw)))
        )
    if kind == "int":
        checks.append(Check(name, value.abs() > _INT32, pl.format("{} is out of range", value)))
    elif kind == "ts":
        checks.append(_time_range(name))
    return tuple(checks)


def _time_range(name: str) -> Check:
    """A timestamp within `EARLIEST_TIME`…`LATEST_TIME` once in UTC. One flag for both ends (a
    batch of completions pays per flag); the message quotes the text as given, since its offset
    is usually what carried it out of range."""
    value = _t(name)
    early = value < pl.lit(EARLIEST_TIME)
    late = value > pl.lit(LATEST_TIME)
    before = f"is before {_iso(EARLIEST_TIME)} (UTC), the earliest time tutormax can read back"
    after = f"is after {_iso(LATEST_TIME)} (UTC), the latest time tutormax can read back"
    message = pl.when(early).then(pl.lit(before)).otherwise(pl.lit(after))
    return Check(name, early | late, pl.format("{} {}", show(pl.col(name)), message))


def _iso(value: datetime) -> str:
    """An instant as the messages write it: ISO-8601 with `Z`, fraction only when it has one."""
    return value.isoformat().replace("+00:00", "Z")


_NOT_A = {
    "int": "is not an integer",
    "bool": "is not a boolean (true/false, 1/0, yes/no)",
    "ts": "is not an ISO-8601 time",
}


def _between(name: str, low: float, high: float) -> Check:
    value = _t(name)
    return Check(
        name,
        (value < low) | (value > high),
        pl.format("{} is not between {} and {}", value, pl.lit(low), pl.lit(high)),
    )


def _one_of(name: str, allowed: Sequence[str]) -> Check:
    value = _t(name)
    return Check(
        name,
        ~value.is_in(list(allowed)),
        pl.format("{} is not one of {}", show(value), pl.lit(", ".join(allowed))),
    )


_LATEST = "__latest"
"""The latest scheduled start accepted (`now` + 30 days), a column of the work frame: the domain
checks read it there, so they are built once per table instead of once per call."""


@functools.cache
def _domain_checks(table: str) -> tuple[Check, ...]:
    """Rules of the contract beyond types (docs/metrics.md §1 and issue #6), on typed values.
    Built once per table (building them cost a small batch more than evaluating them)."""
    return tuple(_domain_rules(table))


def _domain_rules(table: str) -> list[Check]:
    if table == "sessions":
        late, duration, start = (
            _t("late_start_minutes"),
            _t("duration_minutes"),
            _t("scheduled_start"),
        )
        return [
            _one_of("session_type", SESSION_TYPES),
            _between("duration_minutes", 0, MAX_DURATION_MINUTES),
            _between("late_start_minutes", 0, MAX_LATE_START_MINUTES),
            Check(
                "late_start_minutes",
                (late >= 0)
                & (late <= MAX_LATE_START_MINUTES)
                & (duration >= 0)
                & (duration <= MAX_DURATION_MINUTES)
                & (late > duration),
                pl.format("{} is above duration_minutes ({})", late, duration),
            ),
            _between("engagement_score", 0, 1),
            Check("session_number", _t("session_number") < 1, pl.lit("must be ≥ 1")),
            Check(
                "scheduled_start",
                # past LATEST_TIME, `_time_range` already says so: one reason, not two
                (start > pl.col(_LATEST)) & (start <= pl.lit(LATEST_TIME)),
                pl.format("{} is more than 30 days ahead", start.dt.strftime("%Y-%m-%dT%H:%M:%SZ")),
            ),
            Check(
                "actual_start",
                _t("no_show") & _t("actual_start").is_not_null(),
                pl.lit("must be empty on a no-show session"),
            ),
        ]
    if table == "student_feedback":
        return [_between(name, 1, 5) for name in RATING_COLUMNS]
    if table == "tutors":
        baseline = _t("baseline_sessions_per_week")
        return [
            _one_of("status", TUTOR_STATUSES),
            Check("baseline_sessions_per_week", baseline < 0, pl.lit("must be ≥ 0")),
        ]
    if table == "students":
        return [_between("age", 0, MAX_AGE)]
    return []


_REFERENCES: dict[str, tuple[tuple[str, str, str], ...]] = {
    t.name: tuple((r.column, r.table, r.noun) for r in t.references) for t in INPUT_TABLES
}
"""Column → referenced table, checked against the database plus rows arriving with them."""

_UNIQUE: dict[str, tuple[str, ...]] = {t.name: t.unique for t in INPUT_TABLES}
"""Unique columns other than the primary key (the contract's)."""


class _Work:
    """The frame being validated (text, typed values, flags) and the checks applied so far.

    After each `apply` the frame also holds `__ok<n>`: the rows no check has failed yet. The
    later stages ask for it several times each (reference lookups, duplicates, the split), and
    one column costs nothing where re-folding sixty flags costs most of a small batch's time.

    Steps are added to a lazy `plan` and run together when `frame` is read, as one query: a
    batch of 16 completions paid more for a query per step than for the checks themselves."""

    def __init__(self, frame: pl.DataFrame) -> None:
        self.plan = frame.lazy().with_columns(pl.col(ERROR).is_null().alias("__ok0"))
        self.height = frame.height  # no step adds or drops rows
        self.checks: list[tuple[str, Check]] = []
        self._ok = "__ok0"

    @property
    def plan(self) -> pl.LazyFrame:
        """The frame with every step so far, not run yet."""
        return self._plan

    @plan.setter
    def plan(self, plan: pl.LazyFrame) -> None:
        self._plan = plan
        self._frame: pl.DataFrame | None = None

    @property
    def frame(self) -> pl.DataFrame:
        """The frame with every step so far (the pending ones run now, in one query)."""
        if self._frame is None:
            frame = _run(self._plan)
            self._plan, self._frame = frame.lazy(), frame
        return self._frame

    def apply(self, checks: Sequence[Check]) -> None:
        """Evaluate the flags of `checks` in one pass, then fold them into a new snapshot of
        the rows still passing. A null flag counts as passing; it is kept null rather than
        filled (a fill per flag was a tenth of a small batch's checks): the fold's sum ignores
        nulls, `ok(column)` fills its one result, and a reason's `when` reads null as false."""
        start = len(self.checks)
        named = [(f"__f{start + i}", check) for i, check in enumerate(checks)]
        if not named:
            return
        self.checks.extend(named)
        failed = pl.sum_horizontal(pl.col(name) for name, _ in named) > 0
        ok = f"__ok{len(self.checks)}"
        self.plan = self.plan.with_columns(
            check.flag.alias(name) for name, check in named
        ).with_columns((pl.col(self._ok) & ~failed).alias(ok))
        self._ok = ok

    def passing(self, name: str) -> pl.Series:
        """The work frame's column `name` on the rows no check has failed so far: read from the
        frame (a `select` of it is a query, ~35 µs each on a batch of 16)."""
        frame = self.frame
        return frame.get_column(name).filter(frame.get_column(self._ok))

    def passing_rows(self) -> int:
        """How many rows no check has failed so far."""
        return int(self.frame.get_column(self._ok).sum())

    def ok(self, column: str | None = None) -> pl.Expr:
        """Rows no check has failed so far (of `column` only, when given)."""
        if column is None:
            return pl.col(self._ok)
        flags = [pl.col(name) for name, c in self.checks if c.column == column]
        failed = pl.any_horizontal(flags).fill_null(False) if flags else pl.lit(False)
        return pl.col(ERROR).is_null() & ~failed

    def reasons(self, *, detail: bool = False) -> pl.DataFrame:
        """`__row` and `reason` of every failing row; a record-level `_error` stands alone.

        With `detail`, also `_errors`: the same failures as a list of `{field, message}` (field
        null for a record-level error), for callers that answer per field (the HTTP API) and
        must not parse `reason` back apart."""
        bad = self.frame.filter(~self.ok())
        parts = [
            pl.when(pl.col(name)).then(pl.lit(f"{check.column}: ") + check.message)
            for name, check in self.checks
        ]
        reason = pl.concat_str(parts, separator="; ", ignore_nulls=True) if parts else pl.lit("")
        columns = [_ROW, pl.coalesce(pl.col(ERROR), reason).alias(REASON)]
        if detail:
            record = pl.struct(field=pl.lit(None, dtype=pl.String), message=pl.col(ERROR))
            fields = [
                pl.when(pl.col(name)).then(
                    pl.struct(field=pl.lit(check.column), message=check.message)
                )
                for name, check in self.checks
            ]
            failed = pl.concat_list(fields).list.drop_nulls() if fields else pl.lit(None)
            errors = pl.when(pl.col(ERROR).is_not_null()).then(pl.concat_list([record]))
            columns.append(errors.otherwise(failed).alias(ERRORS))
        return bad.select(columns)


# -- the stage ---------------------------------------------------------------------------------


def validate(
    table: str,
    df: pl.DataFrame,
    refs: References,
    *,
    now: datetime | None = None,
    detail: bool = False,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split `df` (text or typed columns, as read) into valid rows and rejects.

    Valid rows have the contract columns the input has (all required ones) typed as
    `tutormax_cli.contract` says, plus the bookkeeping columns. Rejects have the input's
    columns as text, the bookkeeping columns and `reason`. Every input row is in exactly one
    of the two. `now` is the instant "30 days ahead" is measured from. With `detail`, rejects
    also have `_errors`, each failure as `{field, message}`.
    """
    table = table_name(table)
    now = now or datetime.now(UTC)
    columns = specs(table)
    text, names = _prepare(df)
    present = set(names)
    keep = [s.name for s in columns if s.required or s.name in present]
    missing = [s.name for s in columns if s.name not in present]
    text = text.with_columns(
        *(pl.lit(None, dtype=pl.String).alias(name) for name in missing),
        utc_lit(now + MAX_SCHEDULE_AHEAD).alias(_LATEST),
    )
    work = _Work(_typed(text, columns))
    work.apply([check for spec in columns for check in _column_checks(spec)]
               + list(_domain_checks(table)))  # fmt: skip
    _check_references(work, table, refs)
    _check_duplicates(work, table, keep)
    for column in _UNIQUE.get(table, ()):
        _check_unique(work, table, column, refs)
    bookkeeping = [c for c in names if is_bookkeeping(c) and not c.startswith("__") and c != ERROR]
    originals = [c for c in df.columns if not is_bookkeeping(c)]
    frame = work.frame
    if work.passing_rows() == work.height:  # a clean frame: no reason to build
        types = frame.schema
        schema = {c: types[c] for c in (*bookkeeping, *originals)}
        schema[REASON] = pl.String()
        if detail:
            schema[ERRORS] = _ERRORS_DTYPE
        return _valid(frame, keep, bookkeeping), pl.DataFrame(schema=schema)
    valid = _valid(frame.filter(work.ok()), keep, bookkeeping)
    reasons = work.reasons(detail=detail)
    rejects = (
        frame[[*names, *missing]]
        .join(reasons, on=_ROW, how="inner", maintain_order="left")
        .select(*bookkeeping, *originals, REASON, *([ERRORS] if detail else []))
    )
    return valid, rejects


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utc_lit(value: datetime) -> pl.Expr:
    """`pl.lit(value)`, without the 0.4 ms of CPU polars spends converting an aware datetime
    (a batch of completions built two): a UTC one is its epoch microseconds cast to the same
    dtype, the same value."""
    if value.tzinfo is UTC:
        micros = (value - _EPOCH) // timedelta(microseconds=1)
        return pl.lit(micros, dtype=pl.Int64).cast(pl.Datetime("us", "UTC"))
    return pl.lit(value)


def _valid(frame: pl.DataFrame, keep: Sequence[str], bookkeeping: Sequence[str]) -> pl.DataFrame:
    """The typed columns of `keep` under their own names, then the bookkeeping columns: taken
    from `frame` as they are (a `select` of them is a query: 0.2 ms on a batch of 16)."""
    typed = [frame.get_column(f"__t_{c}").alias(c) for c in keep]
    return pl.DataFrame([*typed, *(frame.get_column(c) for c in bookkeeping)])


def _prepare(df: pl.DataFrame) -> tuple[pl.LazyFrame, list[str]]:
    """Text columns, with `_line`, `_error`, a row index and where each row is (`__at`), as a
    plan (run with the typing, in one query) and its columns."""
    text = as_text(df)
    names = list(text.columns)
    plan = text.lazy()
    if LINE not in names:
        plan = plan.with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias(LINE))
        names.append(LINE)
    if ERROR not in names:
        plan = plan.with_columns(pl.lit(None, dtype=pl.String).alias(ERROR))
        names.append(ERROR)
    at = (
        pl.format("{}:{}", pl.col(FILE), pl.col(LINE))
        if FILE in names
        else pl.format("line {}", pl.col(LINE))
    )
    plan = plan.with_columns(
        pl.int_range(pl.len(), dtype=pl.Int64).alias(_ROW),
        pl.col(ERROR).cast(pl.String),
        at.alias(_AT),
    )
    return plan, [*names, _ROW, _AT]


def _check_references(work: _Work, table: str, refs: References) -> None:
    """Referenced rows exist: one lookup per referenced table for the distinct ids (those that
    passed their own column's checks: an over-long id is not also reported unknown); the
    distinct ids of every referencing column are read in one query."""
    references = _REFERENCES.get(table, ())
    if not references:
        return
    values = {column: pl.when(work.ok(column)).then(_t(column)) for column, _, _ in references}
    distinct = work.frame.select(
        value.drop_nulls().unique().implode().alias(column) for column, value in values.items()
    ).row(0, named=True)
    asks = [(t, TABLE_KEYS[t][0], distinct[c]) for c, t, _ in references if distinct[c]]
    answers = iter(refs.owners_many(asks))
    checks = []
    for column, _target, noun in references:
        known = set(next(answers)) if distinct[column] else set()
        value = values[column]
        checks.append(
            Check(
                column,
                value.is_not_null() & ~value.is_in(list(known)),
                _unknown(column, noun),
            )
        )
    work.apply(checks)


@functools.cache
def _unknown(column: str, noun: str) -> pl.Expr:
    """The message of an unknown reference, built once per column (only the flag changes)."""
    return pl.format("unknown {} {}", pl.lit(noun), show(_t(column)))


def _check_duplicates(work: _Work, table: str, keep: Sequence[str]) -> None:
    """Same primary key twice among valid rows: the last wins, earlier different rows are
    rejected (a batch upsert cannot touch a key twice, and the input disagrees with itself)."""
    (key,) = TABLE_KEYS[table]
    if work.height < 2:  # a key cannot repeat: skip the query
        return
    ok_key = pl.when(work.ok()).then(_t(key))
    keys = work.passing(f"__t_{key}").drop_nulls()
    if keys.n_unique() == keys.len():  # the cheapest test (is_unique hashes in a query)
        return
    row_hash = pl.struct([_t(c) for c in keep]).hash()
    work.plan = work.plan.with_columns(
        row_hash.alias("__hash"),
        pl.col(_AT).last().over(ok_key).alias("__dup_at"),
        pl.col(_ROW).last().over(ok_key).alias("__dup_row"),
    ).with_columns(pl.col("__hash").last().over(ok_key).alias("__dup_hash"))
    work.apply(
        [
            Check(
                key,
                ok_key.is_not_null()
                & (pl.col(_ROW) != pl.col("__dup_row"))
                & (pl.col("__hash") != pl.col("__dup_hash")),
                pl.format(
                    "{} again on {} with different values (the later row is kept)",
                    show(_t(key)),
                    pl.col("__dup_at"),
                ),
            )
        ]
    )


def _check_unique(work: _Work, table: str, column: str, refs: References) -> None:
    """A unique column must not repeat across keys in the batch, nor belong to another row in
    the database; within the batch the last row keeps the value.

    Each check is added only where it can fail: not when no value repeats in the batch (every
    row is its value's last), not when the database holds none of the values. That is an
    API batch of new sessions' feedback, which skips two window functions and a join."""
    (key,) = TABLE_KEYS[table]
    ok_value = pl.when(work.ok()).then(_t(column))
    # the values of the rows that passed so far, before either check here
    present = work.passing(f"__t_{column}").drop_nulls()
    values = present.unique().to_list()
    if len(values) < present.len():
        owner, owner_at = f"__owner_{column}", f"__owner_at_{column}"
        work.plan = work.plan.with_columns(
            _t(key).last().over(ok_value).alias(owner),
            pl.col(_AT).last().over(ok_value).alias(owner_at),
        )
        work.apply(
            [
                Check(
                    column,
                    ok_value.is_not_null() & (_t(key) != pl.col(owner)),
                    pl.format(
                        "{} is also on {} ({} {})",
                        show(_t(column)),
                        pl.col(owner_at),
                        pl.lit(key),
                        show(pl.col(owner)),
                    ),
                )
            ]
        )
    held = refs.owners(table, column, values) if values else {}
    if not held:
        return
    db_owner = f"__db_owner_{column}"
    owners = pl.DataFrame(
        {"__v": list(held), db_owner: list(held.values())},
        schema={"__v": pl.String, db_owner: pl.String},
    )
    work.plan = work.plan.join(
        owners.lazy(), left_on=f"__t_{column}", right_on="__v", how="left", maintain_order="left"
    )
    work.apply(
        [
            Check(
                column,
                ok_value.is_not_null() & (pl.col(db_owner) != _t(key)),
                pl.format(
                    "{} already belongs to {} {}",
                    show(_t(column)),
                    pl.lit(key),
                    show(pl.col(db_owner)),
                ),
            )
        ]
    )
