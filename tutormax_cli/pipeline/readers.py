"""Input files (CSV, JSONL, Parquet) and stream envelopes as frames of text, one row per record.

Every value is read as a string (or null), never as a typed value: a bad value must become a
reject with a reason in `validate`, not a reader crash that loses the whole file. Each row keeps
where it came from in bookkeeping columns, whose names start with `_`:

- `_file`: the path as given; `_line`: CSV physical line where the record starts (the header is
  line 1, the first data row line 2; a quoted value spanning lines counts all its lines), JSONL
  line number, Parquet row index + 1, envelope position + 1;
- `_error`: a record-level problem (bad JSON, wrong number of CSV fields), which rejects the row
  on its own.

Only a file that cannot be read at all (missing, not UTF-8, not Parquet) raises `InputError`.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from tutormax_cli.errors import TutormaxError
from tutormax_cli.pipeline import Format
from tutormax_cli.stream.events import Malformed, envelope_data
from tutormax_cli.text import non_utf8_reason

FILE = "_file"
LINE = "_line"
ERROR = "_error"
ENTRY = "_entry"
REASON = "reason"


class InputError(TutormaxError):
    """An input file that cannot be read at all (as opposed to a bad row in it)."""


_EXTENSIONS = {
    ".csv": Format.csv,
    ".jsonl": Format.jsonl,
    ".ndjson": Format.jsonl,
    ".json": Format.jsonl,
    ".parquet": Format.parquet,
    ".pq": Format.parquet,
}


def detect_format(path: Path, given: Format | None) -> Format:
    """`given`, or the format the extension names; an unknown extension needs `--format`."""
    if given is not None:
        return given
    found = _EXTENSIONS.get(path.suffix.lower())
    if found is None:
        raise InputError(
            f"{path}: cannot tell the format from the extension {path.suffix!r}; "
            "pass --format csv|jsonl|parquet"
        )
    return found


def is_bookkeeping(column: str) -> bool:
    """Columns of ours (`_line`, `_file`, …) as opposed to the input's own."""
    return column.startswith("_")


def input_columns(df: pl.DataFrame) -> list[str]:
    """The input's own columns, in order."""
    return [c for c in df.columns if not is_bookkeeping(c)]


def read_file(path: Path, fmt: Format | None = None) -> pl.DataFrame:
    """One file as text columns plus `_file`, `_line` and `_error`."""
    kind = detect_format(path, fmt)
    try:
        if kind is Format.csv:
            df = read_csv(path.read_bytes(), str(path))
        elif kind is Format.jsonl:
            df = read_jsonl(path.read_bytes(), str(path))
        else:
            df = read_parquet(path)
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return df.with_columns(pl.lit(str(path), dtype=pl.String).alias(FILE)).select(
        FILE, pl.exclude(FILE)
    )


def _decode(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(f"{name}:{line}: not valid UTF-8 (byte {exc.start})") from None


def read_csv(data: bytes, name: str = "<csv>") -> pl.DataFrame:
    """CSV with a header row. Empty fields are null; blank lines are skipped.

    polars reads the common case (one record per line, no ragged rows) ten times faster than
    Python; anything else (a quoted value spanning lines, blank lines, a row with too many
    fields, stray quotes) goes through Python's csv module, which tells where each record
    starts and turns a row with the wrong number of fields into a reject naming its line.
    """
    text = _decode(data, name)
    fast = _read_csv_fast(data.removeprefix(codecs.BOM_UTF8), text, name)
    return fast if fast is not None else _read_csv_python(text, name)


def _read_csv_fast(data: bytes, text: str, name: str) -> pl.DataFrame | None:
    """The polars reader, or None when its result might differ from `_read_csv_python`."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) < 2 or "\r" in text.replace("\r\n", ""):
        return None
    header = next(csv.reader([lines[0]]), None)
    try:
        df = pl.read_csv(data, infer_schema=False, raise_if_empty=True)
    except Exception:  # polars' errors have no common base class worth naming
        return None
    if header is None or df.columns != header or df.height != len(lines) - 1:
        return None  # renamed duplicates, quoted line breaks, blank lines
    if df.select(pl.all_horizontal(pl.all().is_null()).any()).item():
        return None  # a blank line or a row of empty fields: let Python tell them apart
    _check_header(header, name)
    # polars fills a row with too few fields with nulls: count the fields to reject it instead
    body = pl.Series("line", lines[1:], dtype=pl.String)
    counts = (body.str.count_matches(",", literal=True) + 1).to_list()
    for i in body.str.contains('"', literal=True).arg_true().to_list():
        counts[i] = len(next(csv.reader([lines[i + 1]]), []))  # quoted commas: really parse
    width = pl.lit(len(header))
    fields = pl.Series("__fields", counts, dtype=pl.Int64)
    return df.with_columns(fields).select(
        pl.int_range(2, pl.len() + 2, dtype=pl.Int64).alias(LINE),
        pl.when(pl.col("__fields") != width)
        .then(pl.format("row: has {} fields, the header has {}", pl.col("__fields"), width))
        .alias(ERROR),
        *[pl.when(pl.col(c) != "").then(pl.col(c)).alias(c) for c in header],
    )


def _read_csv_python(text: str, name: str) -> pl.DataFrame:
    limit = csv.field_size_limit()
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        try:
            header = next(reader)
        except StopIteration:
            raise InputError(f"{name}: empty file, expected a header row") from None
        _check_header(header, name)
        width = len(header)
        columns: list[list[str | None]] = [[] for _ in header]
        lines: list[int] = []
        errors: list[str | None] = []
        start = reader.line_num + 1
        for row in reader:
            if not row:  # a blank line
                start = reader.line_num + 1
                continue
            lines.append(start)
            start = reader.line_num + 1
            errors.append(
                None if len(row) == width else f"row: has {len(row)} fields, the header has {width}"
            )
            for i, column in enumerate(columns):
                value = row[i] if i < len(row) else ""
                column.append(value if value != "" else None)
    except csv.Error as exc:
        raise InputError(f"{name}:{reader.line_num}: cannot parse CSV: {exc}") from None
    finally:
        csv.field_size_limit(limit)
    series = [pl.Series(h, col, dtype=pl.String) for h, col in zip(header, columns, strict=True)]
    return pl.DataFrame(
        [
            pl.Series(LINE, lines, dtype=pl.Int64),
            pl.Series(ERROR, errors, dtype=pl.String),
            *series,
        ]
    )


def _check_header(header: list[str], name: str) -> None:
    seen: set[str] = set()
    for number, column in enumerate(header, start=1):
        if not column.strip():
            raise InputError(f"{name}:1: column {number} of the header has no name")
        if column in seen:
            raise InputError(f"{name}:1: column {column!r} appears twice in the header")
        if is_bookkeeping(column):
            raise InputError(f"{name}:1: column names may not start with '_' ({column!r})")
        seen.add(column)


def as_text_value(value: Any) -> str | None:
    """A JSON-native value as the text a CSV cell would hold: lists and objects as JSON."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return json.dumps(value, ensure_ascii=False, default=str)


def records_frame(
    records: Sequence[Any],
    lines: Sequence[int] | None = None,
    errors: Sequence[str | None] | None = None,
) -> pl.DataFrame:
    """Decoded JSON records (dicts; anything else is a reject) as text columns with `_line`.

    Columns are the union of the records' keys in first-seen order; a key missing from a record
    is null there. A record holding a string that is not UTF-8 text (`text.non_utf8_reason`) is
    a reject naming the field, its values left out, so it cannot fail the frame of the others.
    This is what a stream consumer calls on the `data` of decoded envelopes.
    """
    n = len(records)
    line_list = list(lines) if lines is not None else list(range(1, n + 1))
    error_list: list[str | None] = list(errors) if errors is not None else [None] * n
    columns: dict[str, list[str | None]] = {}
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            if error_list[i] is None:
                error_list[i] = f"row: not a JSON object ({type(record).__name__})"
            continue
        not_text = non_utf8_reason(record)
        if not_text is not None:  # a lone surrogate escape: no frame (nor batch) can hold it
            error_list[i] = error_list[i] or not_text
            continue
        for key, value in record.items():
            name = str(key)
            if is_bookkeeping(name):
                continue  # never let input data pose as bookkeeping
            column = columns.get(name)
            if column is None:
                column = columns[name] = [None] * n
            column[i] = as_text_value(value)
    return pl.DataFrame(
        [
            pl.Series(LINE, line_list, dtype=pl.Int64),
            pl.Series(ERROR, error_list, dtype=pl.String),
            *(pl.Series(name, values, dtype=pl.String) for name, values in columns.items()),
        ]
    )


def read_jsonl(data: bytes, name: str = "<jsonl>") -> pl.DataFrame:
    """One JSON object per line; blank lines are skipped, a bad line is a reject."""
    text = _decode(data, name)
    records: list[Any] = []
    lines: list[int] = []
    errors: list[str | None] = []
    # split on \n only: JSON strings may hold U+2028 and other characters splitlines() splits on
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        lines.append(number)
        try:
            records.append(json.loads(line))
            errors.append(None)
        except (json.JSONDecodeError, RecursionError) as exc:
            records.append(None)
            detail = (
                f"{exc.msg} at column {exc.colno}" if isinstance(exc, ValueError) else "too deep"
            )
            errors.append(f"row: not valid JSON ({detail})")
    return records_frame(records, lines, errors)


def read_parquet(path: Path) -> pl.DataFrame:
    """A Parquet file; typed columns are turned back into text (`as_text`). `_line` is the row
    index + 1, as Parquet has no lines."""
    try:
        df = pl.read_parquet(path)
    except OSError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()
        raise InputError(
            f"{path}: not a readable Parquet file: {first[0] if first else exc}"
        ) from None
    bad = [c for c in df.columns if is_bookkeeping(c)]
    if bad:
        raise InputError(f"{path}: column names may not start with '_' ({bad[0]!r})")
    return as_text(df).select(
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias(LINE),
        pl.lit(None, dtype=pl.String).alias(ERROR),
        pl.all(),
    )


def as_text(df: pl.DataFrame) -> pl.DataFrame:
    """Every non-bookkeeping column as text, in the forms `validate` parses: timestamps as
    ISO-8601 (naive ones stay naive, i.e. UTC), booleans as true/false, lists and structs as
    JSON. Lets typed sources (Parquet, frames built in code) go through the same checks."""
    out: list[pl.Series] = []
    for name, dtype in df.schema.items():
        col = df.get_column(name)
        if is_bookkeeping(name) or dtype == pl.String:
            out.append(col)
        elif isinstance(dtype, pl.Datetime):
            fmt = "%Y-%m-%dT%H:%M:%S%.f"
            if dtype.time_zone is not None:
                col = col.dt.convert_time_zone("UTC")
                fmt += "+00:00"
            out.append(col.dt.strftime(fmt))
        elif dtype == pl.Date:
            out.append(col.dt.strftime("%Y-%m-%d"))
        elif dtype == pl.Boolean or dtype.is_numeric() or dtype in (pl.Categorical, pl.Null):
            out.append(col.cast(pl.String))
        else:  # lists, arrays, structs, binary, …: JSON text, built in Python
            out.append(pl.Series(name, [as_text_value(v) for v in col.to_list()], dtype=pl.String))
    return pl.DataFrame(out)


FEEDBACK_ELSEWHERE = (
    "the stream takes a session's own fields: feedback goes through "
    "POST /api/sessions/{id}/complete or `tutormax ingest feedback`"
)


def refuse_unknown_fields(frame: pl.DataFrame, table: str) -> pl.DataFrame:
    """`frame` with each row that holds a field `table` does not have made a reject naming it
    (and those columns dropped). The stream's completions are refused as the API's body model
    refuses them: a `feedback` object or a misspelt field there was ignored and lost without a
    word. Files keep their extra columns (a CSV export often has more)."""
    from tutormax_cli.contract import table as contract_table

    known = set(contract_table(table).names)
    extra = [c for c in frame.columns if not is_bookkeeping(c) and c not in known]
    if not extra:
        return frame
    reasons = [
        pl.when(pl.col(c).is_not_null()).then(
            pl.lit(
                f"{c}: not a field of {table}"
                + (f" ({FEEDBACK_ELSEWHERE})" if c == "feedback" else "")
            )
        )
        for c in extra
    ]
    return frame.with_columns(pl.coalesce(pl.col(ERROR), *reasons).alias(ERROR)).drop(extra)


def envelopes_frame(entries: Iterable[tuple[bytes | str, Mapping[Any, Any]]]) -> pl.DataFrame:
    """Stream entries (id, fields) holding docs/metrics.md §5 envelopes, as `records_frame` of their
    `data`, with `_entry` (the stream id). An entry that is not a well-formed envelope (bad
    JSON, no data object, checksum mismatch) is a row with `_error`, never an exception."""
    ids: list[str] = []
    records: list[Any] = []
    errors: list[str | None] = []
    for entry_id, fields in entries:
        ids.append(entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id))
        data, error = _envelope_data(fields)
        records.append(data)
        errors.append(error)
    df = records_frame(records, None, errors)
    return df.with_columns(pl.Series(ENTRY, ids, dtype=pl.String))


def _envelope_data(fields: Mapping[Any, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """An entry's envelope `data`, or the reason it has none, as `events.envelope_data` (the
    one decoder of the envelope) judges it."""
    raw = fields.get("message", fields.get(b"message"))
    if raw is None:
        return None, "row: entry has no message field"
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
    except UnicodeDecodeError:
        return None, "row: message is not valid UTF-8"
    data = envelope_data(text)
    if isinstance(data, Malformed):
        return None, f"row: {data.reason}"
    return data, None


def write_rejects(rejects: pl.DataFrame, path: Path, *, with_file: bool) -> None:
    """The rejected rows: the input's columns, then `line` and `reason` (and `file` first when
    rows came from several files). The format follows the extension: .jsonl, .parquet, else
    CSV."""
    columns = [c for c in input_columns(rejects) if c != REASON]
    select = [pl.col(FILE).alias("file")] if with_file else []
    select += [pl.col(c) for c in columns]
    select += [pl.col(LINE).alias("line"), pl.col(REASON)]
    out = rejects.select(select)
    try:
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".ndjson", ".json"):
            out.write_ndjson(path)
        elif suffix in (".parquet", ".pq"):
            out.write_parquet(path)
        else:
            out.write_csv(path)
    except OSError as exc:
        raise InputError(f"--rejects {path}: cannot write: {exc.strerror or exc}") from None
