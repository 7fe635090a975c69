"""Public API of the catalog and its image queue (the seed's paths under the function's prefix):
PUT /{id}, PUT /{id}/imagen, GET /{id}, GET /?activo=true&categoria_id=1, POST /batch-process-images,
GET /processing-queue/status, GET /processing-queue/history, POST /processing-queue/{id}/retry,
DELETE /processing-queue/clean?dias=7. Every answer is the seed's `{"success", "message", "data"}`.
Its document: GET /openapi.json, GET /docs."""

from __future__ import annotations

from typing import Any, Literal

import flask
import functions_framework
from pydantic import BaseModel, Field
from werkzeug.exceptions import HTTPException

from shared import runtime
from shared.api import Api, Body, Call, QueryModel, Reply, Route
from shared.app import platform
from shared.errors import PayloadTooLarge, PlatformError
from shared.http import caller_info, error_response, json_response, register_error_handlers
from shared.models.api import SeedEnvelope, SeedErrorBody
from shared.models.articulos import ArticuloIn, BatchProcessIn, CategoriaId, QueueState
from shared.models.articulos_answers import (
    AddedToQueue,
    ArticuloPage,
    ArticuloView,
    Cleaned,
    HistoryPage,
    HistoryRow,
    QueueStatus,
)
from shared.services import articulos as articles
from shared.services import image_queue

ARTICULO_ID = {"type": "integer", "minimum": 1, "maximum": articles.MAX_ID}


class ListQuery(QueryModel):
    activo: Literal["true", "false"] | None = None
    categoria_id: CategoriaId | None = None  # the seed's `?categoria_id=1`: one category's articles
    limit: int = Field(default=100, ge=1, le=articles.LIST_MAX)
    cursor: str | None = Field(default=None, pattern=r"^[0-9]{1,16}$")  # an article id
    tenant: str | None = None  # an admin's: another tenant's articles


class ArticleQuery(QueryModel):
    tenant: str | None = None  # an admin's: another tenant's article


class StatusQuery(QueryModel):
    tenant: str | None = None  # an admin's: only that tenant's items (without it: every tenant's)


class HistoryQuery(QueryModel):
    limit: int = Field(default=50, ge=1, le=image_queue.HISTORY_MAX)
    offset: int = Field(default=0, ge=0, le=10_000)
    estado: QueueState | None = None
    cursor: str | None = Field(default=None, pattern=r"^[A-Za-z0-9]{1,40}$")
    tenant: str | None = None  # an admin's: only that tenant's items (without it: every tenant's)


class CleanQuery(QueryModel):
    dias: int = Field(default=7, ge=1, le=365)
    tenant: str | None = None  # an admin's: only that tenant's items (without it: every tenant's)


def _seed_error(exc: PlatformError) -> flask.Response:
    """The seed's envelope for errors, with the platform's machine code and the fields at fault."""
    body = {"success": False, "message": exc.message, "data": None} | exc.to_body()
    return error_response(body, exc.http_status, exc.headers)


def _seed_http_error(exc: HTTPException) -> flask.Response:
    code = (exc.name or "error").lower().replace(" ", "_")
    body = {"success": False, "message": exc.description, "data": None, "error": {"code": code}}
    return error_response(body, exc.code or 500)


register_error_handlers(functions_framework.errorhandler)
functions_framework.errorhandler(PlatformError)(_seed_error)
functions_framework.errorhandler(HTTPException)(_seed_http_error)


def _answer(call: Call, action: str, result: BaseModel | dict[str, Any]) -> flask.Response:
    if call.request.method != "GET":
        # Who changed what: after the change, like a collection's deletion (shared/services/collections.py).
        target = call.args.get("queue_id") or call.args.get("articulo_id") or action
        at = platform().engine.clock()
        record = caller_info(call.request).audit(
            f"articulos.{action}", tenant=call.principal.tenant, target=target, at=at
        )
        runtime.run(platform().engine.store.write_audit(record))
    return json_response(result)


def _add(call: Call) -> flask.Response:
    body = call.request.get_data(cache=False)
    queue = platform().image_queue
    return _answer(
        call, "add", runtime.run(image_queue.add_batch(queue=queue, principal=call.principal, body=body))
    )


def _status(call: Call) -> flask.Response:
    query, queue = call.query_as(StatusQuery), platform().image_queue
    result = runtime.run(image_queue.queue_status(queue=queue, principal=call.principal, tenant=query.tenant))
    return _answer(call, "status", result)


def _history(call: Call) -> flask.Response:
    query, queue = call.query_as(HistoryQuery), platform().image_queue
    result = runtime.run(
        image_queue.history(
            queue=queue,
            principal=call.principal,
            limit=query.limit,
            offset=query.offset,
            estado=query.estado,
            cursor=query.cursor,
            tenant=query.tenant,
        )
    )
    return _answer(call, "history", result)


def _retry(call: Call) -> flask.Response:
    queue = platform().image_queue
    result = runtime.run(
        image_queue.retry(queue=queue, principal=call.principal, queue_id=call.args["queue_id"])
    )
    return _answer(call, "retry", result)


def _clean(call: Call) -> flask.Response:
    query, queue = call.query_as(CleanQuery), platform().image_queue
    result = runtime.run(
        image_queue.clean(queue=queue, principal=call.principal, dias=query.dias, tenant=query.tenant)
    )
    return _answer(call, "clean", result)


def _list(call: Call) -> flask.Response:
    query, queue = call.query_as(ListQuery), platform().image_queue
    result = runtime.run(
        articles.list_articles(
            queue=queue,
            principal=call.principal,
            tenant=query.tenant,
            activo=None if query.activo is None else query.activo == "true",
            categoria_id=query.categoria_id,
            limit=query.limit,
            after_id=None if query.cursor is None else int(query.cursor),
        )
    )
    return _answer(call, "list", result)


def _put(call: Call) -> flask.Response:
    articulo_id = articles.parse_id(call.args["articulo_id"])
    body = call.request.get_data(cache=False)
    queue = platform().image_queue
    result = runtime.run(
        articles.put_article(queue=queue, principal=call.principal, articulo_id=articulo_id, body=body)
    )
    return _answer(call, "put", result)


def _get(call: Call) -> flask.Response:
    articulo_id = articles.parse_id(call.args["articulo_id"])
    queue = platform().image_queue
    tenant = call.query_as(ArticleQuery).tenant
    result = runtime.run(
        articles.get_article(queue=queue, principal=call.principal, articulo_id=articulo_id, tenant=tenant)
    )
    return _answer(call, "get", result)


def _upload(call: Call) -> flask.Response:
    articulo_id = articles.parse_id(call.args["articulo_id"])
    request, queue = call.request, platform().image_queue
    limit = queue.settings.image_max_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(
            f"the image is larger than {limit} bytes",
            details=[{"field": "imagen", "problem": f"at most {limit} bytes (IMAGE_MAX_BYTES)"}],
        )
    data = request.stream.read(limit + 1)
    result = runtime.run(
        articles.upload_image(queue=queue, principal=call.principal, articulo_id=articulo_id, data=data)
    )
    return _answer(call, "upload", result)


SAME_ARTICLE = {"articulo_id": "$request.path.articulo_id"}
PUT_ARTICLE = [
    Reply(
        status=200,
        model=SeedEnvelope[ArticuloView],
        links={
            "get": {"operationId": "articulos_get", "parameters": SAME_ARTICLE},
            "upload": {"operationId": "articulos_upload", "parameters": SAME_ARTICLE},
        },
    )
]

API = Api(
    name="articulos",
    title="Catalog API (articulos)",
    description="The catalog's articles and the image-processing queue; every answer is the seed's envelope.",
    error_model=SeedErrorBody,
    routes=[
        Route(
            method="GET",
            path="/",
            handler=_list,
            summary="List the articles",
            replies=[Reply(status=200, model=SeedEnvelope[ArticuloPage])],
            query=ListQuery,
        ),
        Route(
            method="POST",
            path="/batch-process-images",
            handler=_add,
            summary="Add articles with an image to the processing queue",
            replies=[Reply(status=200, model=SeedEnvelope[AddedToQueue])],
            body=Body(models=(BatchProcessIn,), parsed_by_service=True),
        ),
        Route(
            method="GET",
            path="/processing-queue/status",
            handler=_status,
            query=StatusQuery,
            summary="The processing queue's counts",
            replies=[Reply(status=200, model=SeedEnvelope[QueueStatus])],
        ),
        Route(
            method="GET",
            path="/processing-queue/history",
            handler=_history,
            summary="The processing queue's items, newest first",
            replies=[Reply(status=200, model=SeedEnvelope[HistoryPage])],
            query=HistoryQuery,
            errors=(404,),
        ),
        Route(
            method="DELETE",
            path="/processing-queue/clean",
            handler=_clean,
            summary="Delete completed and failed items older than dias",
            replies=[Reply(status=200, model=SeedEnvelope[Cleaned])],
            query=CleanQuery,
        ),
        Route(
            method="POST",
            path="/processing-queue/<queue_id>/retry",
            handler=_retry,
            summary="Retry a failed item",
            replies=[Reply(status=200, model=SeedEnvelope[HistoryRow])],
            errors=(409,),
        ),
        Route(
            method="PUT",
            path="/<articulo_id>",
            handler=_put,
            summary="Create or replace an article",
            replies=PUT_ARTICLE,
            body=Body(models=(ArticuloIn,), parsed_by_service=True),
            path_params={"articulo_id": ARTICULO_ID},
        ),
        Route(
            method="GET",
            path="/<articulo_id>",
            handler=_get,
            summary="One article, its image as a signed URL",
            replies=[Reply(status=200, model=SeedEnvelope[ArticuloView])],
            query=ArticleQuery,
            path_params={"articulo_id": ARTICULO_ID},
        ),
        Route(
            method="PUT",
            path="/<articulo_id>/imagen",
            handler=_upload,
            summary="Upload an article's image (PNG, JPEG or WebP)",
            replies=[Reply(status=200, model=SeedEnvelope[ArticuloView])],
            # Capped by the handler at IMAGE_MAX_BYTES, naming the field `imagen`.
            body=Body(
                media_type="application/octet-stream",
                schema={"type": "string", "format": "binary"},
                max_bytes=lambda settings: settings.image_max_bytes,
                capped_by_handler=True,
            ),
            path_params={"articulo_id": ARTICULO_ID},
        ),
    ],
)


@functions_framework.http
def articulos(request: flask.Request) -> flask.Response:
    return API.dispatch(request)
