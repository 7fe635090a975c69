"""The OpenAPI 3.1 document of a route table, from the very pydantic models the dispatcher validates with."""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from shared.settings import get_settings

if TYPE_CHECKING:
    from shared.api import Api, Body, Route

REF_TEMPLATE = "#/components/schemas/{model}"
API_KEY_SCHEME = "apiKey"
OIDC_SCHEME = "oidc"
_PATH_PARAM = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")

Mode = Literal["validation", "serialization"]


def openapi_path(path: str) -> str:
    """`/status/<batch_id>` or `/runs/<path:run_id>` -> `/status/{batch_id}`, `/runs/{run_id}`."""
    return _PATH_PARAM.sub(r"{\1}", path)


def path_param_names(path: str) -> list[str]:
    return _PATH_PARAM.findall(path)


def build_document(api: Api) -> dict[str, Any]:
    wanted: list[tuple[type[BaseModel], Mode]] = [(api.error_model, "serialization")]
    for route in api.routes:
        if route.body is not None:
            wanted += [(model, "validation") for model in route.body.models]
        if route.query is not None:
            wanted.append((route.query, "validation"))
        for reply in route.replies:
            models = ([reply.model] if reply.model is not None else []) + list(reply.alternatives)
            wanted += [(model, "serialization") for model in models]
    unique = list(dict.fromkeys(wanted))
    found, top = models_json_schema(unique, ref_template=REF_TEMPLATE)
    refs: dict[tuple[type[BaseModel], Mode], Any] = {key: value for key, value in found.items()}  # type: ignore[misc]
    schemas: dict[str, Any] = top.get("$defs", {})
    error_ref = refs[(api.error_model, "serialization")]

    paths: dict[str, dict[str, Any]] = {}
    for route in api.routes:
        operation = _operation(api, route, refs=refs, schemas=schemas, error_ref=error_ref)
        paths.setdefault(openapi_path(route.path), {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": api.title, "version": "1.0.0", "description": api.description},
        "servers": [{"url": f"/{api.name}"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                API_KEY_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A tenant's API key (make api-key): `Authorization: Bearer bp_...`",
                },
                OIDC_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "An OIDC token of one of the platform's service accounts, minted for this "
                    "function's URL (Cloud Tasks, Cloud Scheduler)",
                },
            },
        },
    }


def _operation(
    api: Api,
    route: Route,
    *,
    refs: dict[tuple[type[BaseModel], Mode], Any],
    schemas: dict[str, Any],
    error_ref: Any,
) -> dict[str, Any]:
    from shared.api import Access

    parameters: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": dict(route.path_params.get(name, {"type": "string"})),
        }
        for name in path_param_names(route.path)
    ]
    parameters += [
        {"name": name, "in": "header", "required": False, "schema": dict(schema)}
        for name, schema in route.header_params.items()
    ]
    if route.query is not None:
        query_schema = _resolve(refs[(route.query, "validation")], schemas)
        required = set(query_schema.get("required", []))
        for name, schema in query_schema.get("properties", {}).items():
            parameters.append({"name": name, "in": "query", "required": name in required, "schema": schema})
    responses: dict[str, Any] = {}
    for reply in route.replies:
        answer: dict[str, Any] = {"description": reply.description or HTTPStatus(reply.status).phrase}
        schema = dict(reply.schema) if reply.schema is not None else None
        if reply.model is not None:
            schema = refs[(reply.model, "serialization")]
            if reply.alternatives:
                shapes = [reply.model, *reply.alternatives]
                schema = {"anyOf": [refs[(model, "serialization")] for model in shapes]}
        if schema is not None:
            answer["content"] = {reply.media_type: {"schema": schema}}
        if reply.headers:
            answer["headers"] = {
                name: {"description": text, "schema": {"type": "string"}}
                for name, text in reply.headers.items()
            }
        if reply.links:
            answer["links"] = {name: dict(link) for name, link in reply.links.items()}
        responses[str(reply.status)] = answer
    for status in route.error_statuses():
        error: dict[str, Any] = {
            "description": HTTPStatus(status).phrase,
            "content": {"application/json": {"schema": error_ref}},
        }
        if status == 429:
            error["headers"] = {
                "Retry-After": {
                    "description": "seconds to wait",
                    "schema": {"type": "string"},
                    "required": True,
                }
            }
        responses[str(status)] = error
    operation: dict[str, Any] = {
        "operationId": f"{api.name}_{route.operation_id}",
        "summary": route.summary,
        "tags": [api.name],
        "parameters": parameters,
        "responses": responses,
        "x-access": route.access.value,
    }
    if route.access in (Access.USER, Access.ADMIN):
        operation["security"] = [{API_KEY_SCHEME: []}]
    elif route.access is Access.INTERNAL:
        operation["security"] = [{OIDC_SCHEME: []}]
    else:
        operation["security"] = []
    if route.body is not None:
        operation["requestBody"] = _request_body(route.body, refs=refs, schemas=schemas)
    return operation


def _request_body(
    body: Body, *, refs: dict[tuple[type[BaseModel], Mode], Any], schemas: dict[str, Any]
) -> dict[str, Any]:
    if body.schema is not None:
        schema: dict[str, Any] = dict(body.schema)
    elif body.media_type.startswith("multipart/") and body.models:
        # A form's fields are the model's; the file parts are binary strings next to them.
        schema = dict(_resolve(refs[(body.models[0], "validation")], schemas))
        files = {name: {"type": "string", "format": "binary"} for name in body.file_fields}
        schema["properties"] = {**schema.get("properties", {}), **files}
        schema["required"] = [*schema.get("required", []), *body.file_fields]
    elif len(body.models) == 1:
        schema = refs[(body.models[0], "validation")]
    else:
        schema = {"anyOf": [refs[(model, "validation")] for model in body.models]}
    return {
        "required": body.required,
        "content": {body.media_type: {"schema": schema}},
        "x-max-bytes": body.limit(get_settings()),
    }


def _resolve(ref: Any, schemas: dict[str, Any]) -> dict[str, Any]:
    name = str(ref["$ref"]).rsplit("/", 1)[-1]
    resolved: dict[str, Any] = schemas[name]
    return resolved
