"""Public API of the batch engine: POST /{kind} (generate, embeddings, analyze), GET /status/{id},
GET /active, GET /jobs, GET /stats, DELETE /{id}; the embeddings' collections: GET /collections,
DELETE /collections/{name}; upload sessions for inputs past one body: POST /uploads."""

from __future__ import annotations

import flask
import functions_framework
from pydantic import ValidationError
from werkzeug.exceptions import NotFound
from werkzeug.routing import Map, Rule

from shared import runtime
from shared.app import platform
from shared.errors import InvalidRequest, PayloadTooLarge
from shared.http import authenticate, caller_info, int_arg, json_response, register_error_handlers
from shared.models.batch_inputs import InputUploadRequest
from shared.services import batch_inputs, batches, collections
from shared.services import status as reads
from shared.services.batches import validation_details

register_error_handlers(functions_framework.errorhandler)

ROUTES = Map(
    [
        Rule("/collections", methods=["GET"], endpoint="collections"),
        Rule("/collections/<name>", methods=["DELETE"], endpoint="delete_collection"),
        Rule("/uploads", methods=["POST"], endpoint="uploads"),
        Rule("/<kind>", methods=["POST"], endpoint="submit"),
        Rule("/status/<batch_id>", methods=["GET"], endpoint="status"),
        Rule("/active", methods=["GET"], endpoint="active"),
        Rule("/jobs", methods=["GET"], endpoint="jobs"),
        Rule("/stats", methods=["GET"], endpoint="stats"),
        Rule("/<batch_id>", methods=["DELETE"], endpoint="cancel"),
    ]
)


def _upload_request(body: bytes) -> InputUploadRequest:
    try:
        return InputUploadRequest.model_validate_json(body or b"{}")
    except ValidationError as exc:
        raise InvalidRequest("the request body is not valid", details=validation_details(exc)) from exc


@functions_framework.http
def batch(request: flask.Request) -> flask.Response:
    endpoint, args = ROUTES.bind("", path_info=request.path, url_scheme="http").match(
        request.path, method=request.method
    )
    principal = authenticate(request)
    wired = platform()
    engine = wired.engine
    if endpoint == "submit":
        if (
            request.content_length is not None
            and request.content_length > engine.settings.batch_max_body_bytes
        ):
            raise PayloadTooLarge(f"request body is larger than {engine.settings.batch_max_body_bytes} bytes")
        response, status = runtime.run(
            batches.submit(
                engine=engine,
                principal=principal,
                kind_name=args["kind"],
                body=request.get_data(cache=False),
                idempotency_key=request.headers.get("Idempotency-Key"),
                caller=caller_info(request),
            )
        )
        return json_response(response, status)
    if endpoint == "uploads":
        upload = _upload_request(request.get_data(cache=False))
        opened = runtime.run(
            batch_inputs.open_input_upload(
                engine=engine,
                principal=principal,
                size_bytes=upload.size_bytes,
                origin=request.headers.get("Origin"),
                caller=caller_info(request),
            )
        )
        return json_response(opened, 201)
    if endpoint == "status":
        offset, limit = int_arg(request.args, "offset", 0), int_arg(request.args, "limit", 100)
        return json_response(
            runtime.run(
                reads.status(
                    engine=engine,
                    principal=principal,
                    batch_id=args["batch_id"],
                    offset=offset,
                    limit=limit,
                    progress=wired.progress,
                )
            )
        )
    if endpoint == "active":
        active = runtime.run(reads.active(engine=engine, principal=principal))
        return json_response({"batches": [b.model_dump(mode="json", by_alias=True) for b in active]})
    if endpoint == "jobs":
        listing = reads.jobs(
            engine=engine,
            principal=principal,
            kind=request.args.get("kind"),
            status=request.args.get("status"),
            limit=int_arg(request.args, "limit", 50),
            cursor=request.args.get("cursor"),
            progress=wired.progress,
        )
        return json_response(runtime.run(listing).model_dump(mode="json", by_alias=True))
    if endpoint == "stats":
        return json_response(runtime.run(reads.stats(engine=engine, principal=principal)))
    if endpoint == "cancel":
        cancelled = runtime.run(
            batches.cancel(
                engine=engine, principal=principal, batch_id=args["batch_id"], caller=caller_info(request)
            )
        )
        return json_response(
            {"message": "batch cancelled", "batchId": cancelled.batch_id, "status": cancelled.status.value}
        )
    if endpoint == "collections":
        listed = runtime.run(collections.list_collections(engine=engine, principal=principal))
        return json_response({"collections": [c.model_dump(mode="json", by_alias=True) for c in listed]})
    if endpoint == "delete_collection":
        runtime.run(
            collections.delete_collection(
                engine=engine, principal=principal, name=args["name"], caller=caller_info(request)
            )
        )
        return json_response({"message": "collection deleted", "name": args["name"]})
    raise NotFound()
