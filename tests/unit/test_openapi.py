"""The route tables and their OpenAPI documents agree: every route is documented and every documented
operation is served; every document loads in schemathesis; clients cannot send server-owned fields."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from werkzeug.routing import Map, Rule

from shared.api import Access, Api, Route
from shared.openapi import openapi_path
from tests.fuzz.run import public_apis

APIS = public_apis()


def _operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in document["paths"].items() for method in item}


def test_every_public_function_has_a_route_table() -> None:
    assert set(APIS) == {"batch", "reports", "articulos", "analytics", "dashboards"}


@pytest.mark.parametrize("name", sorted(APIS))
def test_every_route_is_in_the_document_and_every_operation_is_a_route(name: str) -> None:
    api = APIS[name]
    document = api.document()

    table = {(route.method, openapi_path(route.path)) for route in api.routes}

    assert _operations(document) == table
    assert len(table) == len(api.routes), "two routes share a method and path"


@pytest.mark.parametrize("name", sorted(APIS))
def test_each_documented_path_reaches_its_own_route(name: str) -> None:
    """A concrete URL of each operation dispatches to the route that documents it (no route shadows
    another)."""
    api = APIS[name]
    urls = Map(
        [Rule(route.path, methods=[route.method], endpoint=index) for index, route in enumerate(api.routes)],
        strict_slashes=False,
    ).bind("")
    for index, route in enumerate(api.routes):
        params = api.document()["paths"][openapi_path(route.path)][route.method.lower()]["parameters"]
        values = {p["name"]: _example(p["schema"]) for p in params if p["in"] == "path"}
        path = openapi_path(route.path).format(**values)
        assert urls.match(path, method=route.method)[0] == index, (route.method, path)


def _example(schema: dict[str, Any]) -> str:
    if "enum" in schema:
        return str(schema["enum"][0])
    return "7" if schema.get("type") == "integer" else "x7"


@pytest.mark.parametrize("name", sorted(APIS))
def test_the_document_is_openapi_3_1_that_schemathesis_loads_with_its_links(name: str) -> None:
    document = APIS[name].document()

    schema = schemathesis.openapi.from_dict(document)
    operations = [result.ok() for result in schema.get_all_operations()]

    assert document["openapi"] == "3.1.0"
    assert len(operations) == len(APIS[name].routes)
    ids = {op["operationId"] for item in document["paths"].values() for op in item.values()}
    assert len(ids) == len(APIS[name].routes)
    for item in document["paths"].values():
        for operation in item.values():
            for answer in operation["responses"].values():
                for link in answer.get("links", {}).values():
                    assert link["operationId"] in ids


def _routes() -> list[tuple[str, Route]]:
    return [(name, route) for name, api in APIS.items() for route in api.routes]


@pytest.mark.parametrize(("name", "route"), _routes(), ids=lambda v: v if isinstance(v, str) else v.path)
def test_each_operation_documents_its_credential_and_its_errors(name: str, route: Route) -> None:
    operation = APIS[name].document()["paths"][openapi_path(route.path)][route.method.lower()]
    statuses = set(operation["responses"])

    if route.access is Access.PUBLIC:
        assert operation["security"] == []
    else:
        assert operation["security"] and "401" in statuses
    if route.access is Access.ADMIN:
        assert "403" in statuses
    if route.body is not None:
        assert {"400", "413"} <= statuses
    for status in statuses - {str(reply.status) for reply in route.replies}:
        schema = operation["responses"][status]["content"]["application/json"]["schema"]
        assert schema["$ref"].endswith(APIS[name].error_model.__name__)


@pytest.mark.parametrize(("name", "route"), _routes(), ids=lambda v: v if isinstance(v, str) else v.path)
def test_request_bodies_refuse_unknown_fields(name: str, route: Route) -> None:
    """Clients never set server-owned fields (status, owner, attempts, cost, credits): every JSON body model
    forbids what it does not declare."""
    if route.body is None:
        return
    for model in route.body.models:
        assert model.model_config.get("extra") == "forbid", model.__name__


def test_an_api_without_routes_has_an_empty_document() -> None:
    from shared.models.api import ErrorBody

    api = Api(name="empty", title="Empty", description="", routes=[], error_model=ErrorBody)

    assert api.document()["paths"] == {}
