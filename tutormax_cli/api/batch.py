"""`POST /api/sessions:batch`: many completions in one request, answered item by item.

The path for pipelines that already batch: up to `MAX_ITEMS` completions as a JSON array or
as NDJSON (one object a line). Each item is checked against the request model on its own, so
one malformed item is a 422 *for that item* and the others still go through the same group
commit as single posts (`api.batcher`). The name follows Google's API convention for custom
methods on a collection (`POST /v1/things:batchCreate`): it cannot collide with a session id.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from tutormax_cli.api import models
from tutormax_cli.api.completion import ACCEPTED, INVALID, Outcome
from tutormax_cli.errors import UsageError

BATCH_PATH = "/api/sessions:batch"
MAX_ITEMS = 1_000
NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl")


class TooManyItems(UsageError):
    """More than `MAX_ITEMS` items: 413."""


@dataclass(frozen=True)
class Parsed:
    """One item as read: its model, or the errors that kept it from being one."""

    index: int
    session_id: str | None
    completion: models.BatchCompletion | None
    errors: tuple[dict[str, Any], ...] = ()


def _objects(body: bytes, content_type: str) -> list[Any]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"the body is not UTF-8 text (byte {exc.start})") from None
    if content_type.split(";")[0].strip().lower() in NDJSON_TYPES:
        out = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise UsageError(f"line {n} is not JSON: {exc.msg}") from None
            if len(out) > MAX_ITEMS:
                break
        return out
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"the body is not JSON: {exc.msg} (line {exc.lineno})") from None
    if not isinstance(items, list):
        raise UsageError(
            "the body must be a JSON array of completions (or NDJSON with "
            "Content-Type: application/x-ndjson)"
        )
    return items


def read_batch(body: bytes, content_type: str) -> list[Parsed]:
    """The items of a batch body, each validated against `BatchCompletion`."""
    items = _objects(body, content_type)
    if len(items) > MAX_ITEMS:
        raise TooManyItems(f"a batch holds at most {MAX_ITEMS} completions")
    out = []
    for index, item in enumerate(items):
        sid = item.get("session_id") if isinstance(item, dict) else None
        sid = sid if isinstance(sid, str) else None
        try:
            out.append(Parsed(index, sid, models.BatchCompletion.model_validate(item)))
        except ValidationError as exc:
            errors = tuple(
                {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()
            )
            out.append(Parsed(index, sid, None, errors))
    return out


def _in_item(loc: Sequence[str | int]) -> list[str | int]:
    """A single post's error location (`body.feedback.x`, `path.session_id`) inside the item."""
    return list(loc[1:]) if loc and loc[0] in ("body", "path") else list(loc)


def results(
    parsed: Sequence[Parsed], outcomes: Sequence[Outcome], *, stream: str
) -> models.BatchResult:
    """The answer: one result per item, in order (`outcomes` are those of the valid items)."""
    done = iter(outcomes)
    items = []
    for p in parsed:
        if p.completion is None:
            errors = [models.ItemError(**e) for e in p.errors]
            items.append(models.ItemResult(index=p.index, session_id=p.session_id,
                                           status=INVALID, errors=errors))  # fmt: skip
            continue
        o = next(done)
        errors = [models.ItemError(loc=_in_item(e.loc), msg=e.msg, type=e.type) for e in o.errors]
        items.append(models.ItemResult(
            index=p.index, session_id=p.session_id, status=o.status, feedback_id=o.feedback_id,
            errors=errors or None, detail=o.detail,
        ))  # fmt: skip
    accepted = sum(i.status == ACCEPTED for i in items)
    return models.BatchResult(count=len(items), accepted=accepted, stream=stream, items=items)


def batch_request_body() -> dict[str, Any]:
    """The route's documented request body (it reads the raw body itself, to answer per item)."""
    schema = models.BatchCompletion.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    # no `maxItems`: more than MAX_ITEMS is a documented 413, which a schema bound would
    # make a "schema-violating request accepted" for clients and checkers that expect 400/422
    array = {"type": "array", "items": schema, "description": f"At most {MAX_ITEMS} items."}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": array}}}}
