"""Public API of the catalog and its image queue (the seed's paths under the function's prefix):
PUT /{id}, PUT /{id}/imagen, GET /{id}, GET /?activo=true, POST /batch-process-images,
GET /processing-queue/status, GET /processing-queue/history, POST /processing-queue/{id}/retry,
DELETE /processing-queue/clean?dias=7. Every answer is the seed's `{"success", "message", "data"}`."""

from __future__ import annotations

from typing import Any

import flask
import functions_framework
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, Rule

from shared import runtime
from shared.app import platform
from shared.errors import PayloadTooLarge, PlatformError
from shared.http import authenticate, caller_info, json_response, register_error_handlers
from shared.services import articulos as articles
from shared.services import image_queue

ROUTES = Map(
    [
        Rule("/", methods=["GET"], endpoint="list"),
        Rule("/batch-process-images", methods=["POST"], endpoint="add"),
        Rule("/processing-queue/status", methods=["GET"], endpoint="status"),
        Rule("/processing-queue/history", methods=["GET"], endpoint="history"),
        Rule("/processing-queue/clean", methods=["DELETE"], endpoint="clean"),
        Rule("/processing-queue/<queue_id>/retry", methods=["POST"], endpoint="retry"),
        Rule("/<articulo_id>", methods=["PUT"], endpoint="put"),
        Rule("/<articulo_id>", methods=["GET"], endpoint="get"),
        Rule("/<articulo_id>/imagen", methods=["PUT"], endpoint="upload"),
    ],
    strict_slashes=False,
)


def _seed_error(exc: PlatformError) -> flask.Response:
    """The seed's envelope for errors, with the platform's machine code and the fields at fault."""
    body = exc.to_body()
    response = json_response({"success": False, "message": exc.message, "data": None} | body, exc.http_status)
    for name, value in exc.headers.items():
        response.headers[name] = value
    return response


def _seed_http_error(exc: HTTPException) -> flask.Response:
    code = (exc.name or "error").lower().replace(" ", "_")
    body = {"success": False, "message": exc.description, "data": None, "error": {"code": code}}
    return json_response(body, exc.code or 500)


register_error_handlers(functions_framework.errorhandler)
functions_framework.errorhandler(PlatformError)(_seed_error)
functions_framework.errorhandler(HTTPException)(_seed_http_error)


@functions_framework.http
def articulos(request: flask.Request) -> flask.Response:
    path = request.path or "/"
    endpoint, args = ROUTES.bind("", path_info=path, url_scheme="http").match(path, method=request.method)
    principal = authenticate(request)
    queue = platform().image_queue
    query = {name: value for name, value in request.args.items()}
    result: dict[str, Any]
    if endpoint == "add":
        body = request.get_data(cache=False)
        result = runtime.run(image_queue.add_batch(queue=queue, principal=principal, body=body))
    elif endpoint == "status":
        result = runtime.run(image_queue.queue_status(queue=queue, principal=principal))
    elif endpoint == "history":
        result = runtime.run(image_queue.history(queue=queue, principal=principal, args=query))
    elif endpoint == "retry":
        result = runtime.run(image_queue.retry(queue=queue, principal=principal, queue_id=args["queue_id"]))
    elif endpoint == "clean":
        result = runtime.run(image_queue.clean(queue=queue, principal=principal, dias_raw=query.get("dias")))
    elif endpoint == "list":
        result = runtime.run(articles.list_articles(queue=queue, principal=principal, args=query))
    elif endpoint in ("put", "get", "upload"):
        articulo_id = articles.parse_id(args["articulo_id"])
        if endpoint == "put":
            body = request.get_data(cache=False)
            result = runtime.run(
                articles.put_article(queue=queue, principal=principal, articulo_id=articulo_id, body=body)
            )
        elif endpoint == "get":
            result = runtime.run(
                articles.get_article(
                    queue=queue, principal=principal, articulo_id=articulo_id, tenant=query.get("tenant")
                )
            )
        else:
            limit = queue.settings.image_max_bytes
            if request.content_length is not None and request.content_length > limit:
                raise PayloadTooLarge(
                    f"the image is larger than {limit} bytes",
                    details=[{"field": "imagen", "problem": f"at most {limit} bytes (IMAGE_MAX_BYTES)"}],
                )
            data = request.stream.read(limit + 1)
            result = runtime.run(
                articles.upload_image(queue=queue, principal=principal, articulo_id=articulo_id, data=data)
            )
    else:
        raise NotFound()
    if request.method != "GET":
        # Who changed what: after the change, like a collection's deletion (shared/services/collections.py).
        target = args.get("queue_id") or args.get("articulo_id") or endpoint
        at = platform().engine.clock()
        record = caller_info(request).audit(
            f"articulos.{endpoint}", tenant=principal.tenant, target=target, at=at
        )
        runtime.run(platform().engine.store.write_audit(record))
    return json_response(result)
