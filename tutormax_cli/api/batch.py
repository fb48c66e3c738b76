"""`POST /api/sessions:batch`: many completions in one request, answered item by item.

The path for pipelines that already batch: up to `MAX_ITEMS` completions as a JSON array or
as NDJSON (one object a line). Each item is checked against the request model on its own, so
one malformed item is a 422 *for that item* and the others still go through the same group
commit as single posts (`api.batcher`). The name follows Google's API convention for custom
methods on a collection (`POST /v1/things:batchCreate`): it cannot collide with a session id.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from tutormax_cli.api import models
from tutormax_cli.api.completion import ACCEPTED, INVALID, Outcome
from tutormax_cli.errors import UsageError

BATCH_PATH = "/api/sessions:batch"
MAX_ITEMS = 1_000
NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl")


NESTED_TOO_DEEPLY = "request body is not JSON tutormax accepts: nested too deeply"
"""The 400 for JSON nested deeper than Python's parser recurses (~1,000 levels): a completion
is two levels deep, and the parser's `RecursionError` is no reason for a 500."""

NOT_FINITE = "Input should be a finite number"
"""Pydantic's own words for NaN or Infinity in an integer field, for the float fields too
(there NaN fails `le` and Infinity `le` or `ge`, which misnames the problem)."""

_BOUNDS = frozenset({"less_than", "less_than_equal", "greater_than", "greater_than_equal"})


class TooManyItems(UsageError):
    """More than `MAX_ITEMS` items: 413."""


def loads(text: str | bytes) -> Any:
    """`json.loads`, with JSON nested too deeply for it a one-line `UsageError` (400)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise UsageError(NESTED_TOO_DEEPLY) from None


def _plain(value: Any) -> bool:
    """Whether `value` is a JSON scalar that encodes as itself (not NaN or Infinity)."""
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, str | int | bool)


def validation_errors(errors: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic's errors as the API answers them, for single posts and batch items alike: NaN
    or Infinity (which JSON cannot carry back, and a bound misnames) is `finite_number`, and an
    `input` is echoed only when it is a plain scalar (an object or array can be nested too deeply
    to encode, and is the client's own body)."""
    out = []
    for e in errors:
        error = {"type": e["type"], "loc": list(e["loc"]), "msg": e["msg"]}
        value = e.get("input")
        if isinstance(value, float) and not math.isfinite(value) and e["type"] in _BOUNDS:
            error.update(type="finite_number", msg=NOT_FINITE)
        elif "ctx" in e and all(_plain(v) for v in e["ctx"].values()):
            error["ctx"] = dict(e["ctx"])
        if _plain(value):
            error["input"] = value
        out.append(error)
    return out


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
                    out.append(loads(line))
                except json.JSONDecodeError as exc:
                    raise UsageError(f"line {n} is not JSON: {exc.msg}") from None
            if len(out) > MAX_ITEMS:
                break
        return out
    try:
        items = loads(text)
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
                {k: e[k] for k in ("loc", "msg", "type")} for e in validation_errors(exc.errors())
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
