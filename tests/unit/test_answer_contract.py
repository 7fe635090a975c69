"""Every JSON answer of every route table is a model, closed wherever its shape is (`additionalProperties:
false` in the document, down to its nested objects), and the contract validator the e2e tests use refuses an
answer with an extra key, a missing key or a wrong type."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.api import JSON, Route
from shared.models.batchmode import JobStatusView
from shared.openapi import openapi_path
from tests.contract import AnswerMismatch, check_answer, shapes
from tests.fuzz.run import public_apis

APIS = public_apis()
ROUTES = [(name, route) for name, api in APIS.items() for route in api.routes]

# Answers open by their nature, and why: the schemas that may take keys they do not name.
OPEN_BY_NATURE = {
    # A kind composes its own status (shared/kinds/batchmode.py's job_view): the seed's fields and the kind's.
    JobStatusView.__name__,
}


def _ids(value: Any) -> str:
    name, route = value if isinstance(value, tuple) else ("", value)
    return f"{name} {route.method} {route.path}"


def _open_objects(schema: Any, schemas: dict[str, Any], seen: set[str]) -> list[str]:
    """The named objects reachable from `schema` that take keys they do not name."""
    found: list[str] = []
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str):
            name = ref.rsplit("/", 1)[-1]
            if name in seen:
                return []
            seen.add(name)
            target = schemas[name]
            if "properties" in target and target.get("additionalProperties") is not False:
                found.append(name)
            if name in OPEN_BY_NATURE:
                return found
            return found + _open_objects(target, schemas, seen)
        for value in schema.values():
            found += _open_objects(value, schemas, seen)
    elif isinstance(schema, list):
        for value in schema:
            found += _open_objects(value, schemas, seen)
    return found


@pytest.mark.parametrize(("name", "route"), ROUTES, ids=[_ids(r) for r in ROUTES])
def test_every_json_answer_is_a_model_closed_where_its_shape_is(name: str, route: Route) -> None:
    document = APIS[name].document()
    operation = document["paths"][openapi_path(route.path)][route.method.lower()]
    for reply in route.replies:
        if reply.media_type != JSON or not (shapes(reply) or reply.schema):
            continue  # a stream, or no body at all (a redirect)
        assert shapes(reply), f"{reply.status}: a JSON answer documented by a bare schema, not a model"
        schema = operation["responses"][str(reply.status)]["content"][JSON]["schema"]
        open_objects = _open_objects(schema, document["components"]["schemas"], set())
        assert set(open_objects) <= OPEN_BY_NATURE, f"{reply.status}: open objects {open_objects}"


def _stats_route() -> Route:
    return next(route for route in APIS["batch"].routes if route.path == "/stats")


STATS = {
    "batches": {"queued": 0, "running": 1, "completed": 2, "failed": 0, "cancelled": 0},
    "finishedBatches": 2,
    "items": 20,
    "failedItems": 1,
    "failureRate": 0.05,
    "totalTokens": 300,
    "throughputItemsPerSecond": 1.5,
    "scope": "acme",
    "byKind": {},
}


def _check(body: dict[str, Any]) -> None:
    check_answer(_stats_route(), status=200, media_type="application/json", body=json.dumps(body).encode())


def test_the_validator_takes_the_answer_as_documented() -> None:
    _check(STATS)


@pytest.mark.parametrize(
    "broken",
    [
        STATS | {"tokensUsed": 300},  # an extra key
        {key: value for key, value in STATS.items() if key != "totalTokens"},  # a missing key
        STATS | {"totalTokens": {"input": 100, "output": 200}},  # a wrong type: an integer became an object
        STATS | {"items": "20"},  # no coercion of a string to an integer
        STATS | {"items": 20.5},  # nor of a fraction
        STATS | {"finished_batches": 2},  # the python name is not the wire name
        STATS | {"batches": {"paused": 1}},  # a key of a closed map
        STATS | {"byKind": {"generate": {"items": 1}}},  # a nested answer's missing keys
    ],
    ids=["extra", "missing", "object", "string", "fraction", "python-name", "map-key", "nested"],
)
def test_the_validator_refuses_an_answer_that_is_not_as_documented(broken: dict[str, Any]) -> None:
    with pytest.raises(AnswerMismatch):
        _check(broken)


def test_an_undocumented_status_or_media_type_is_refused() -> None:
    body = json.dumps(STATS).encode()
    with pytest.raises(AnswerMismatch):
        check_answer(_stats_route(), status=201, media_type="application/json", body=body)
    with pytest.raises(AnswerMismatch):
        check_answer(_stats_route(), status=200, media_type="text/html", body=body)
