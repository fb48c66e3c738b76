"""Publication: one docs/metrics.md §5 envelope per persisted session on the enrichment stream.

Called only after the rows are committed, so the metrics worker never reads a session the
database does not have yet. Entries go out with pipelined XADDs, a chunk per round trip. The
stream is not trimmed here: entries the worker has not read yet must not be dropped.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii
from typing import Any

import polars as pl
import redis

from tutormax_cli import keys
from tutormax_cli.contract import SESSIONS
from tutormax_cli.errors import RedisUnavailable
from tutormax_cli.pipeline.enrich import SESSION_COLUMNS
from tutormax_cli.pipeline.persist import latest

PIPELINE_CHUNK = 1_000
SOURCE = "tutormax-ingest"

DATA_COLUMNS = (
    tuple(c for c in SESSIONS.names if c not in ("created_at", "updated_at")) + SESSION_COLUMNS
)
"""What an envelope's `data` may hold: the session's contract fields (the ones the row has),
then its derived fields."""


def _json_native(sessions: pl.DataFrame) -> pl.DataFrame:
    """The data columns in sorted order (as the checksum sorts keys), timestamps as ISO-8601
    UTC text, one row per session (the last of a repeated session_id)."""
    df = latest("sessions", sessions)
    select = []
    for name in sorted(c for c in DATA_COLUMNS if c in df.columns):
        col = pl.col(name)
        if isinstance(df.schema[name], pl.Datetime):
            col = col.dt.convert_time_zone("UTC").dt.strftime("%Y-%m-%dT%H:%M:%S%.f+00:00")
        select.append(col.alias(name))
    return df.select(select)


def session_data(sessions: pl.DataFrame) -> list[dict[str, Any]]:
    """JSON-native `data` objects, one per session."""
    if sessions.height < SMALL_FRAME:
        try:
            return _small_session_data(sessions)
        except (ValueError, OverflowError):  # a year Python's datetime cannot hold
            pass
    df = _json_native(sessions)
    return [dict(zip(df.columns, row, strict=True)) for row in df.iter_rows()]


def _iso_utc(value: datetime | None) -> str | None:
    """`value` as `_json_native` writes it: UTC, `%.f` (no fraction, or 3 or 6 digits)."""
    if value is None:
        return None
    v = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    us = v.microsecond
    fraction = "" if not us else f".{us // 1000:03d}" if not us % 1000 else f".{us:06d}"
    return (
        f"{v.year:04d}-{v.month:02d}-{v.day:02d}T{v.hour:02d}:{v.minute:02d}:{v.second:02d}"
        f"{fraction}+00:00"
    )


def _small_session_data(sessions: pl.DataFrame) -> list[dict[str, Any]]:
    """`session_data` of a few sessions from the frame's Python values: no query (the
    timestamps' `strftime` in one cost a group commit ~0.3 ms)."""
    df = latest("sessions", sessions)
    names = sorted(c for c in DATA_COLUMNS if c in df.columns)
    stamps = {n for n in names if isinstance(df.schema[n], pl.Datetime)}
    columns = [
        [_iso_utc(v) for v in df.get_column(n).to_list()]
        if n in stamps
        else df.get_column(n).to_list()
        for n in names
    ]
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]


def _float_json(value: float) -> str:
    return float.__repr__(value) if math.isfinite(value) else json.dumps(value)


def _json_values(series: pl.Series) -> pl.Series:
    """Each value as `json.dumps` writes it: the same C string encoder, `float.__repr__`."""
    if series.dtype == pl.String:
        text = [None if v is None else encode_basestring_ascii(v) for v in series.to_list()]
        out = pl.Series(text, dtype=pl.String)
    elif series.dtype == pl.Float64:
        out = pl.Series([None if v is None else _float_json(v) for v in series.to_list()])
    else:  # integers and booleans: polars writes them as JSON does
        out = series.cast(pl.String)
    return out.fill_null("null")


SMALL_FRAME = 100
"""Below this many sessions `data_json` dumps each row's dict: a column-by-column build costs a
fixed ~40 polars calls, which a group commit of a few completions pays for nothing."""


def data_json(sessions: pl.DataFrame) -> list[str]:
    """`json.dumps(data, sort_keys=True)` of each session's `data`, exactly (that text is what
    the checksum hashes), assembled column by column: five times cheaper than a dict and a
    `json.dumps` per row, from `SMALL_FRAME` rows on."""
    if sessions.height < SMALL_FRAME:
        return [json.dumps(data, sort_keys=True) for data in session_data(sessions)]
    df = _json_native(sessions)
    parts = []
    for i, name in enumerate(df.columns):
        prefix = ("{" if i == 0 else ", ") + encode_basestring_ascii(name) + ": "
        parts.append(pl.lit(prefix) + pl.lit(_json_values(df.get_column(name))))
    if not parts:
        return ["{}"] * df.height
    return pl.select(pl.concat_str([*parts, pl.lit("}")])).to_series().to_list()


def _uuid4s(n: int) -> list[str]:
    """`n` random (version 4) UUIDs from one call to the OS random source."""
    raw = bytearray(os.urandom(16 * n))
    for i in range(6, 16 * n, 16):
        raw[i] = raw[i] & 0x0F | 0x40
        raw[i + 2] = raw[i + 2] & 0x3F | 0x80
    h = raw.hex()
    return [
        f"{h[k : k + 8]}-{h[k + 8 : k + 12]}-{h[k + 12 : k + 16]}-{h[k + 16 : k + 20]}-"
        f"{h[k + 20 : k + 32]}"
        for k in range(0, 32 * n, 32)
    ]


def envelope_messages(bodies: list[str], *, channel: str) -> list[str]:
    """The `message` field `events.envelope(data)` writes, for each data JSON of `data_json`,
    byte for byte (the data's keys are sorted, so its sorted-keys JSON is also its JSON)."""
    stamp = datetime.now(UTC).isoformat()
    head = f'", "timestamp": "{stamp}", "channel": {json.dumps(channel)}, "data": '
    tail = f', "metadata": {{"source": {json.dumps(SOURCE)}}}, "checksum": "'
    return [
        f'{{"id": "{uid}{head}{body}{tail}{hashlib.sha256(body.encode()).hexdigest()}"}}'
        for uid, body in zip(_uuid4s(len(bodies)), bodies, strict=True)
    ]


def publish(
    client: redis.Redis,
    sessions: pl.DataFrame,
    *,
    stream: str = keys.ENRICHMENT_STREAM,
    chunk: int = PIPELINE_CHUNK,
) -> int:
    """XADD one envelope per session in `sessions` (already committed); entries written."""
    messages = envelope_messages(data_json(sessions), channel=stream)
    sent = 0
    try:
        for start in range(0, len(messages), max(1, chunk)):
            pipe = client.pipeline(transaction=False)
            for message in messages[start : start + chunk]:
                pipe.xadd(stream, {"message": message})
            pipe.execute()
            sent += min(chunk, len(messages) - start)
    except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError, OSError) as exc:
        raise RedisUnavailable(
            f"publishing to {stream} failed after {sent} entries: {exc}"
        ) from None
    return sent
