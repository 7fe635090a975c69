"""Public API of the batch engine: POST /{kind} (generate, embeddings, analyze), GET /status/{id},
GET /active, GET /stats, DELETE /{id}; the embeddings' collections: GET /collections,
DELETE /collections/{name}; Gemini Batch Mode jobs paid with credits: POST /create, GET /history,
DELETE /history/{id}, GET /credits, POST /credits/grant, GET /webhook-secret."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flask
import functions_framework
from werkzeug.exceptions import NotFound
from werkzeug.routing import Map, Rule

from shared import runtime
from shared.app import platform
from shared.errors import PayloadTooLarge
from shared.http import authenticate, caller_info, int_arg, json_response, register_error_handlers
from shared.models.auth import Principal
from shared.services import batches, batchmode, collections
from shared.services import status as reads
from shared.services.batchmode import Batchmode

register_error_handlers(functions_framework.errorhandler)

ROUTES = Map(
    [
        Rule("/collections", methods=["GET"], endpoint="collections"),
        Rule("/collections/<name>", methods=["DELETE"], endpoint="delete_collection"),
        Rule("/create", methods=["POST"], endpoint="bm_create"),
        Rule("/history", methods=["GET"], endpoint="bm_history"),
        Rule("/history/<job_id>", methods=["DELETE"], endpoint="bm_delete"),
        Rule("/credits", methods=["GET"], endpoint="bm_credits"),
        Rule("/credits/grant", methods=["POST"], endpoint="bm_grant"),
        Rule("/webhook-secret", methods=["GET"], endpoint="bm_webhook_secret"),
        Rule("/<kind>", methods=["POST"], endpoint="submit"),
        Rule("/status/<batch_id>", methods=["GET"], endpoint="status"),
        Rule("/active", methods=["GET"], endpoint="active"),
        Rule("/stats", methods=["GET"], endpoint="stats"),
        Rule("/<batch_id>", methods=["DELETE"], endpoint="cancel"),
    ]
)


@functions_framework.http
def batch(request: flask.Request) -> flask.Response:
    endpoint, args = ROUTES.bind("", path_info=request.path, url_scheme="http").match(
        request.path, method=request.method
    )
    principal = authenticate(request)
    wired = platform()
    engine = wired.engine
    if endpoint.startswith("bm_"):
        return _batchmode(request, endpoint, args, principal, wired.batchmode)
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


def _batchmode(
    request: flask.Request, endpoint: str, args: Mapping[str, Any], principal: Principal, service: Batchmode
) -> flask.Response:
    """Gemini Batch Mode jobs (shared/services/batchmode.py); their status is `GET /status/{id}`."""
    if endpoint == "bm_create":
        body = request.get_data(cache=False)
        return json_response(
            runtime.run(batchmode.create(service=service, principal=principal, body=body)), 202
        )
    if endpoint == "bm_history":
        listed, cursor = runtime.run(
            batchmode.history(
                service=service,
                principal=principal,
                job_type=request.args.get("type"),
                limit=int_arg(request.args, "limit", 50),
                cursor=request.args.get("cursor"),
            )
        )
        response = json_response(listed)
        if cursor:
            response.headers["X-Next-Cursor"] = cursor
        return response
    if endpoint == "bm_delete":
        runtime.run(batchmode.delete_job(service=service, principal=principal, job_id=args["job_id"]))
        return json_response({"message": "batch job deleted", "id": args["job_id"]})
    if endpoint == "bm_credits":
        return json_response(runtime.run(batchmode.credits_view(service=service, principal=principal)))
    if endpoint == "bm_grant":
        body = request.get_data(cache=False)
        return json_response(runtime.run(batchmode.grant(service=service, principal=principal, body=body)))
    secret = batchmode.webhook_secret(settings=service.settings, tenant=principal.tenant)
    return json_response({"tenant": principal.tenant, "secret": secret, "header": batchmode.SIGNATURE_HEADER})
