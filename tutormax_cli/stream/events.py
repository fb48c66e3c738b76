"""Entries on the session streams (docs/metrics.md §5): decoding, validation and encoding.

An entry is an *envelope* (one `message` field of JSON whose `checksum` is the SHA-256 of
`json.dumps(data, sort_keys=True)`) or *flat* fields typed by an operator. Only `tutor_id`
matters to the metrics worker; anything it cannot trust becomes a `Malformed` with a reason
for the dead-letter stream, never an exception.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

MAX_ID_LENGTH = 50


@dataclass(frozen=True)
class SessionEvent:
    """A well-formed entry: whose metrics to recompute, and what caused it."""

    tutor_id: str
    session_id: str | None
    kind: str  # "envelope" or "flat"


@dataclass(frozen=True)
class Malformed:
    """An entry that cannot be processed, and why (the dead-letter `reason`)."""

    reason: str


def checksum(data: Any) -> str:
    """The envelope checksum of docs/metrics.md §5: hex SHA-256 of Python's sorted-keys JSON."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _text(fields: dict[bytes | str, bytes | str], name: str) -> str | None:
    value = fields.get(name, fields.get(name.encode()))
    if value is None:
        return None
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _check_id(value: Any, name: str) -> str | Malformed:
    if not isinstance(value, str | int) or isinstance(value, bool):
        return Malformed(f"{name} missing" if value is None else f"{name} is not a string")
    text = str(value)
    if not text.strip():
        return Malformed(f"{name} is empty")
    if len(text) > MAX_ID_LENGTH:
        return Malformed(f"{name} longer than {MAX_ID_LENGTH} characters ({len(text)})")
    if not text.isprintable():
        return Malformed(f"{name} has non-printable characters")
    return text


def id_problem(value: Any, name: str) -> str | None:
    """Why the worker would dead-letter an entry for its `name` field holding `value` (None: it
    would not): what a producer checks before publishing, by the worker's own rule."""
    checked = _check_id(value, name)
    return checked.reason if isinstance(checked, Malformed) else None


def envelope_doc(message: str) -> dict[str, Any] | Malformed:
    """The JSON object of an envelope's `message` with its `data` object, checksum not checked
    (what an operator view needs to name the tutor of a stuck or dead entry)."""
    try:
        doc = json.loads(message)
    except json.JSONDecodeError as exc:
        return Malformed(f"message is not JSON ({exc.msg} at {exc.pos})")
    except RecursionError:
        return Malformed("message is not JSON (nested too deep)")
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), dict):
        return Malformed("envelope has no data object")
    return doc


def envelope_data(message: str) -> dict[str, Any] | Malformed:
    """The `data` object of an envelope's `message` once its checksum matches: the one check of
    an envelope, for the metrics worker and for the pipeline's stream reader alike."""
    doc = envelope_doc(message)
    if isinstance(doc, Malformed):
        return doc
    data: dict[str, Any] = doc["data"]
    given = doc.get("checksum")
    if not isinstance(given, str):
        return Malformed("envelope has no checksum")
    if given.lower() != checksum(data):
        return Malformed("checksum mismatch")
    return data


def _decode_envelope(message: str) -> SessionEvent | Malformed:
    data = envelope_data(message)
    if isinstance(data, Malformed):
        return data
    tutor = _check_id(data.get("tutor_id"), "tutor_id")
    if isinstance(tutor, Malformed):
        return tutor
    session = data.get("session_id")
    if session is not None:
        checked = _check_id(session, "session_id")
        if isinstance(checked, Malformed):
            return checked
        session = checked
    return SessionEvent(tutor, session, "envelope")


def decode(fields: dict[bytes | str, bytes | str]) -> SessionEvent | Malformed:
    """Classify one stream entry's fields as a `SessionEvent` or a `Malformed` with a reason."""
    try:
        message = _text(fields, "message")
        if message is not None:
            return _decode_envelope(message)
        tutor = _check_id(_text(fields, "tutor_id"), "tutor_id")
        if isinstance(tutor, Malformed):
            return tutor
        session = _text(fields, "session_id")
        if session is not None:
            checked = _check_id(session, "session_id")
            if isinstance(checked, Malformed):
                return checked
            session = checked
        event_time = _text(fields, "event_time")
        if event_time is not None:
            try:
                datetime.fromisoformat(event_time.replace("Z", "+00:00"))
            except ValueError:
                return Malformed(f"event_time {event_time[:40]!r} is not ISO-8601")
        return SessionEvent(tutor, session, "flat")
    except UnicodeDecodeError:
        return Malformed("field is not valid UTF-8")


def tutor_of(fields: dict[bytes, bytes]) -> str | None:
    """The `tutor_id` an entry is about, flat or inside an envelope (checksum or not); None
    when it names none."""

    def shown(name: str) -> str | None:
        value = fields.get(name.encode())
        return None if value is None else value.decode("utf-8", "backslashreplace")

    flat_tutor = shown("tutor_id")
    if flat_tutor is not None:
        return flat_tutor
    message = shown("message")
    if message is None:
        return None
    doc = envelope_doc(message)
    tutor = None if isinstance(doc, Malformed) else doc["data"].get("tutor_id")
    return None if tutor is None else str(tutor)


def envelope(data: dict[str, Any], *, channel: str, source: str = "tutormax") -> dict[str, str]:
    """Stream fields of a producer envelope for `data` (which carries tutor_id, session_id)."""
    doc = {
        "id": str(uuid.uuid4()),
        "timestamp": datetime.now(UTC).isoformat(),
        "channel": channel,
        "data": data,
        "metadata": {"source": source},
        "checksum": checksum(data),
    }
    return {"message": json.dumps(doc)}


def flat(tutor_id: str, session_id: str | None = None) -> dict[str, str]:
    """Stream fields of a flat entry, as an operator would XADD it."""
    fields = {"tutor_id": tutor_id, "event_time": datetime.now(UTC).isoformat()}
    if session_id is not None:
        fields["session_id"] = session_id
    return fields
