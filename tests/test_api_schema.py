"""Schemathesis against the running API: every operation of the committed OpenAPI schema, fed
generated valid and invalid requests, must answer with a documented status, content type and
body shape, and never a 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import CheckFunction
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from tests.api_server import TOKEN, api_server
from tests.test_api import seed

schema = schemathesis.openapi.from_path(Path(__file__).parent.parent / "docs" / "openapi.json")


@pytest.fixture(scope="module")
def api_base(redis_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = f"sqlite:///{tmp_path_factory.mktemp('api') / 'tutormax.db'}"
    seed(url)
    with api_server(url, redis_server_url) as base:
        yield base


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_documented(case: schemathesis.Case[Any], api_base: str) -> None:
    # Schema-valid bodies name tutors and students that do not exist, which the API rightly
    # refuses with a 422, so "valid data is accepted" is the one check that does not apply.
    # The batch endpoint answers a schema-violating *item* in its 200 body (that item's 422),
    # by design: one bad item must not refuse the others. Its whole-body errors are still
    # checked (400, 413 are documented).
    excluded: list[CheckFunction] = [positive_data_acceptance]
    if case.path == "/api/sessions:batch":
        excluded.append(negative_data_rejection)
    case.call_and_validate(
        base_url=api_base, headers={"Authorization": f"Bearer {TOKEN}"}, excluded_checks=excluded
    )
