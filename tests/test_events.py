"""Stream entry decoding (docs/metrics.md §5): envelopes, flat fields, every malformed reason."""

from __future__ import annotations

import hashlib
import json

import pytest

from tests.streams import as_fields
from tutormax_cli.stream.events import Malformed, SessionEvent, checksum, decode, envelope, flat


def test_envelope_round_trip() -> None:
    fields = envelope({"tutor_id": "T1", "session_id": "S9", "no_show": False}, channel="c")
    assert decode(as_fields(fields)) == SessionEvent("T1", "S9", "envelope")
    raw = {k.encode(): v.encode() for k, v in fields.items()}  # as redis-py returns them
    assert decode(as_fields(raw)) == SessionEvent("T1", "S9", "envelope")


def test_checksum_is_sha256_of_sorted_json_with_default_separators() -> None:
    data = {"b": 1, "a": "é"}
    # json.dumps(data, sort_keys=True) == '{"a": "\\u00e9", "b": 1}'
    assert checksum(data) == hashlib.sha256(b'{"a": "\\u00e9", "b": 1}').hexdigest()


def test_flat_fields() -> None:
    assert decode(as_fields(flat("T7", "S1"))) == SessionEvent("T7", "S1", "flat")
    assert decode(as_fields({b"tutor_id": b"T7"})) == SessionEvent("T7", None, "flat")
    assert decode(as_fields({"tutor_id": "Tütor ✓"})) == SessionEvent("Tütor ✓", None, "flat")


def _env(doc: object) -> dict[str, str]:
    return {"message": json.dumps(doc)}


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"session_id": "S1"}, "tutor_id missing"),
        ({"tutor_id": ""}, "tutor_id is empty"),
        ({"tutor_id": "x" * 51}, "tutor_id longer than 50 characters (51)"),
        ({"tutor_id": "T1", "session_id": "s" * 60}, "session_id longer than 50 characters (60)"),
        ({"tutor_id": "T1", "event_time": "yesterday"}, "event_time 'yesterday' is not ISO-8601"),
        ({"tutor_id": "T\x00"}, "tutor_id has non-printable characters"),
        (
            {"message": "{not json"},
            "message is not JSON (Expecting property name enclosed in double quotes at 1)",
        ),
        (_env([1, 2]), "envelope has no data object"),
        (_env({"data": {"tutor_id": "T1"}}), "envelope has no checksum"),
        (_env({"data": {"tutor_id": "T1"}, "checksum": "00"}), "checksum mismatch"),
        (_env({"data": {}, "checksum": checksum({})}), "tutor_id missing"),
        (
            _env({"data": {"tutor_id": 5.5}, "checksum": checksum({"tutor_id": 5.5})}),
            "tutor_id is not a string",
        ),
        ({b"tutor_id": b"\xff\xfe"}, "field is not valid UTF-8"),
    ],
)
def test_malformed_reasons(fields: dict[str, str] | dict[bytes, bytes], reason: str) -> None:
    assert decode(as_fields(fields)) == Malformed(reason)


def test_tampered_data_fails_checksum() -> None:
    fields = envelope({"tutor_id": "T1", "session_id": "S1"}, channel="c")
    doc = json.loads(fields["message"])
    doc["data"]["tutor_id"] = "T2"
    assert decode({"message": json.dumps(doc)}) == Malformed("checksum mismatch")
