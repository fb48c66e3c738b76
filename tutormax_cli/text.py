"""Whether text can be stored: the one rule for strings that are not UTF-8 text.

JSON may spell an unpaired surrogate (`"\\ud800"`, `"Alg\\udc80"`), which `json.loads` turns
into a Python `str` that no UTF-8 encoder takes: polars, Redis and the database drivers all
fail on it, and in a batch built from many inputs one such string used to fail every row of
it. A percent-escaped path (`%FF`) can likewise hold bytes that are not UTF-8, which servers
decode to U+FFFD (so `%FF` and `%FE` would name one id). Both are refused, by field, before
anything is built from them: the API's request models (`api.models`), the single-completion
path id (`api.fast_path`), the group commit (`api.completion`) and every decoded JSON record
the ingest stage reads (`pipeline.readers.records_frame`: the stream pipeline, JSONL files).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_to_bytes

NOT_UTF8 = "is not valid UTF-8 text (an unpaired surrogate escape)"
"""The message for a string holding a lone surrogate (the only `str` UTF-8 cannot encode)."""

NOT_UTF8_TYPE = "string_not_utf8"
"""The `type` of the 422 error items these two messages are answered in."""

NOT_UTF8_BYTES = "is not valid UTF-8 text (its percent-escapes decode to bytes that are not)"
"""The message for a URL path whose percent-escapes are not UTF-8 (`%FF`)."""


def is_utf8_text(text: str) -> bool:
    """True unless `text` holds an unpaired surrogate; ASCII (nearly all text) costs one scan."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown(text: str) -> str:
    """`text` with what UTF-8 cannot encode as backslash escapes (`'Alg\\\\udc80'`): safe to
    log, answer and store as a reason."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def first_non_utf8_field(value: Any) -> tuple[str | int, ...] | None:
    """Where the first string of a decoded JSON value (walking nested objects and lists, keys
    included) is not UTF-8 text: the keys and indexes leading to it (`("feedback",
    "free_text_feedback")`, `("improvement_areas", 0)`; a bad key is named `shown`), `()` for
    `value` itself, None when every string is UTF-8 text."""
    if isinstance(value, str):
        return None if is_utf8_text(value) else ()
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and not is_utf8_text(key):
                return (shown(key),)
            if isinstance(item, str):  # the common case, without a call
                if item.isascii() or is_utf8_text(item):
                    continue
                return (key,)
            if isinstance(item, dict | list):
                inner = first_non_utf8_field(item)
                if inner is not None:
                    return (key, *inner)
        return None
    if isinstance(value, list):
        for index, item in enumerate(value):
            inner = first_non_utf8_field(item)
            if inner is not None:
                return (index, *inner)
    return None


def non_utf8_reason(record: Any) -> str | None:
    """Why a decoded JSON record cannot be read (`"subject: is not valid UTF-8 text (…)"`, the
    field dotted when nested), None when it can: a reject's reason, named by field."""
    where = first_non_utf8_field(record)
    if where is None:
        return None
    name = ".".join(str(part) for part in where) or "row"
    return f"{name}: {NOT_UTF8}"


def raw_path_is_utf8(raw_path: bytes) -> bool:
    """Whether a request's raw (percent-escaped) path decodes to UTF-8 text."""
    try:
        unquote_to_bytes(raw_path).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
