"""One declarative route table per function: the single source of its dispatch and of its OpenAPI document.

A function declares its routes (method, path, handler, body and query models, responses, errors, who may
call) in an `Api`; its entry point is `API.dispatch(request)`. The dispatcher authenticates the caller as the
route says, caps the body, validates the query and the body with the route's own models, and calls the
handler; `GET /openapi.json` and `GET /docs` are generated from the same table (shared/openapi.py,
shared/api_docs.py), so a route cannot be served without being documented or documented without being served.
Adding a route is one `Route(...)` plus one handler.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

import flask
from pydantic import BaseModel, ConfigDict, ValidationError
from werkzeug.routing import Map, Rule

from shared.errors import Forbidden, InvalidRequest, PayloadTooLarge
from shared.http import authenticate, json_response, verify_internal
from shared.models.auth import Principal
from shared.services.batches import validation_details
from shared.settings import Settings, get_settings

M = TypeVar("M", bound=BaseModel)

JSON = "application/json"
# A body the dispatcher reads whole to validate it: small by default; a route that takes more says so.
DEFAULT_MAX_BODY_BYTES = 64 * 1024


class Access(StrEnum):
    """Who may call a route."""

    PUBLIC = "public"  # no credential (a capability in the path, e.g. a download token)
    USER = "user"  # any API key of a tenant
    ADMIN = "admin"  # an admin API key; a user key gets 403
    INTERNAL = "internal"  # an OIDC token of one of the platform's service accounts, for this function's URL


class QueryModel(BaseModel):
    """A route's query parameters: unknown ones are ignored (clients add their own, e.g. a cache buster)."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


@dataclass(frozen=True, kw_only=True)
class Body:
    """A request body: its models (the first that validates wins), its media type and its size cap.

    `parsed_by_service`: the service validates the raw bytes with these very models (it also runs without
    HTTP, e.g. a kind's request submitted by another service); the dispatcher then only caps the size.
    `schema` stands for the models where the body is not JSON (an image's bytes)."""

    models: tuple[type[BaseModel], ...] = ()
    media_type: str = JSON
    max_bytes: int | Callable[[Settings], int] = DEFAULT_MAX_BODY_BYTES
    # The handler enforces `max_bytes` itself (with a message of its own, e.g. pointing to upload sessions).
    capped_by_handler: bool = False
    parsed_by_service: bool = False
    schema: Mapping[str, Any] | None = None
    required: bool = True
    # multipart/form-data: the file parts, documented as binary strings next to the model's fields.
    file_fields: tuple[str, ...] = ()

    def limit(self, settings: Settings) -> int:
        return self.max_bytes(settings) if callable(self.max_bytes) else self.max_bytes


@dataclass(frozen=True, kw_only=True)
class Reply:
    """One documented answer: its status, its model (None: no JSON body) and its media type."""

    status: int
    model: type[BaseModel] | None = None
    # Other shapes of the same answer (a kind that composes its own status): documented as anyOf.
    alternatives: tuple[type[BaseModel], ...] = ()
    description: str = ""
    media_type: str = JSON
    schema: Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    # OpenAPI links to the operations this answer leads to (schemathesis' stateful phase follows them):
    # {"status": {"operationId": "batch_status", "parameters": {"batch_id": "$response.body#/batchId"}}}
    links: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Call:
    """What a handler gets: the request, the caller, the path parameters, the validated query and body."""

    request: flask.Request
    args: Mapping[str, str]
    caller: Principal | None = None
    query: BaseModel | None = None
    body: BaseModel | None = None

    @property
    def principal(self) -> Principal:
        if self.caller is None:  # a PUBLIC or INTERNAL route has no API-key principal
            raise RuntimeError("this route is not called with an API key")
        return self.caller

    def query_as(self, model: type[M]) -> M:
        if not isinstance(self.query, model):
            raise RuntimeError(f"the route's query model is not {model.__name__}")
        return self.query

    def body_as(self, model: type[M]) -> M:
        if not isinstance(self.body, model):
            raise RuntimeError(f"the route's body model is not {model.__name__}")
        return self.body


Handler = Callable[[Call], flask.Response]


@dataclass(frozen=True, kw_only=True)
class Route:
    """One endpoint: `path` in werkzeug syntax (`/status/<batch_id>`), relative to the function's URL."""

    method: str
    path: str
    handler: Handler
    summary: str
    replies: Sequence[Reply]
    access: Access = Access.USER
    body: Body | None = None
    query: type[QueryModel] | None = None
    # The JSON Schema of each path parameter (a string when not named).
    path_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # Request headers the handler reads (documented; the service validates them).
    header_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # Errors this route answers besides those its access, body, query and path imply.
    errors: Sequence[int] = ()
    # Internal routes: the service accounts (from the settings) whose OIDC tokens are accepted.
    service_accounts: Callable[[Settings], list[str]] | None = None
    # Not fuzzed (e.g. a server-sent event stream that stays open for minutes); still documented and in the
    # access-control matrix.
    streaming: bool = False
    admin_message: str = "only an admin key may do this"

    @property
    def operation_id(self) -> str:
        return self.handler.__name__.strip("_")

    def error_statuses(self) -> list[int]:
        """Every error status this route can answer."""
        statuses = set(self.errors)
        if self.access is not Access.PUBLIC:
            statuses.add(401)
        if self.access in (Access.USER, Access.ADMIN):
            statuses.add(429)
        if self.access in (Access.ADMIN, Access.INTERNAL):
            statuses.add(403)
        if self.body is not None:
            statuses.update((400, 413))
        if self.query is not None:
            statuses.add(400)
        if "<" in self.path:
            statuses.add(404)
        return sorted(statuses)


class Api:
    """A function's route table, its dispatcher and the source of its OpenAPI document."""

    def __init__(
        self,
        *,
        name: str,
        title: str,
        description: str,
        routes: Sequence[Route],
        error_model: type[BaseModel],
    ) -> None:
        self.name = name
        self.title = title
        self.description = description
        self.routes = list(routes)
        self.error_model = error_model
        self._map = Map(
            [Rule(r.path, methods=[r.method], endpoint=i) for i, r in enumerate(self.routes)],
            strict_slashes=False,
        )
        self._document: dict[str, Any] | None = None

    def document(self) -> dict[str, Any]:
        """The OpenAPI 3.1 document of this table (built once)."""
        if self._document is None:
            from shared.openapi import build_document

            self._document = build_document(self)
        return self._document

    def dispatch(self, request: flask.Request) -> flask.Response:
        path = request.path or "/"
        if request.method in ("GET", "HEAD") and path == "/openapi.json":
            return json_response(self.document())
        if request.method in ("GET", "HEAD") and (path == "/docs" or path.startswith("/docs/")):
            from shared.api_docs import docs_response

            return docs_response(title=self.title, asset=path.removeprefix("/docs").strip("/"))
        index: int
        args: Mapping[str, str]
        index, args = self._map.bind("", path_info=path, url_scheme="http").match(path, method=request.method)
        route = self.routes[index]
        principal = self._admit(route, request)
        query = _parse_query(route.query, request) if route.query is not None else None
        body = _parse_body(route.body, request) if route.body is not None else None
        return route.handler(Call(request=request, args=args, caller=principal, query=query, body=body))

    def _admit(self, route: Route, request: flask.Request) -> Principal | None:
        if route.access is Access.PUBLIC:
            return None
        if route.access is Access.INTERNAL:
            accounts = route.service_accounts(get_settings()) if route.service_accounts else []
            verify_internal(request, function_name=self.name, service_accounts=accounts)
            return None
        principal = authenticate(request)
        if route.access is Access.ADMIN and not principal.is_admin:
            raise Forbidden(route.admin_message)
        return principal


def _parse_query(model: type[QueryModel], request: flask.Request) -> QueryModel:
    try:
        return model.model_validate(request.args.to_dict())
    except ValidationError as exc:
        raise InvalidRequest("the query is not valid", details=validation_details(exc)) from exc


def _parse_body(body: Body, request: flask.Request) -> BaseModel | None:
    limit = body.limit(get_settings())
    if not body.capped_by_handler:
        if request.content_length is not None and request.content_length > limit:
            raise PayloadTooLarge(
                f"request body is larger than {limit} bytes",
                details=[{"field": "body", "problem": f"at most {limit} bytes"}],
            )
        # A body sent without a length is cut off at the same limit while it is read (werkzeug answers 413).
        request.max_content_length = limit
    if body.parsed_by_service or body.media_type != JSON or not body.models:
        return None
    raw = request.get_data(cache=True)
    if not raw:
        if body.required:
            raise InvalidRequest("a body is required", details=[{"field": "body", "problem": "required"}])
        raw = b"{}"
    try:
        json.loads(raw)  # one error naming the body for malformed JSON or invalid UTF-8, whatever the model
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidRequest(
            "the body is not valid JSON", details=[{"field": "body", "problem": "not valid JSON (UTF-8)"}]
        ) from exc
    errors: list[dict[str, Any]] = []
    for model in body.models:
        try:
            # Strict: in JSON `false` is not a number nor "1" an integer, as the document says.
            return model.model_validate_json(raw, strict=True)
        except ValidationError as exc:
            errors.extend(validation_details(exc))
    raise InvalidRequest("the request body is not valid", details=errors)
