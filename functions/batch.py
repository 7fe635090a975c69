"""Public API of the batch engine: POST /{kind} (generate, embeddings, analyze), GET /status/{id},
GET /active, GET /jobs, GET /stats, DELETE /{id}; the embeddings' collections: GET /collections,
DELETE /collections/{name}. Its document: GET /openapi.json, GET /docs."""

from __future__ import annotations

import flask
import functions_framework
from pydantic import Field, JsonValue, field_validator

from shared import runtime
from shared.api import Api, Body, Call, QueryModel, Reply, Route
from shared.app import platform
from shared.http import caller_info, json_response, register_error_handlers
from shared.kinds.embeddings import COLLECTION_NAME
from shared.kinds.registry import KINDS
from shared.models.api import ActiveBatches, CancelledBatch, DeletedCollection, ErrorBody, JsonObject
from shared.models.batch import BatchStatus, BatchStatusResponse, JobList, SubmitResponse
from shared.models.common import ApiModel
from shared.services import batches, collections
from shared.services import status as reads
from shared.services.collections import CollectionView

register_error_handlers(functions_framework.errorhandler)

PUBLIC_KINDS = [kind for kind in KINDS.values() if kind.public]


SUBMITTED = {
    name: {"operationId": f"batch_{name}", "parameters": {"batch_id": "$response.body#/batchId"}}
    for name in ("status", "cancel")
}


class StatusQuery(QueryModel):
    offset: int = Field(default=0, ge=0)
    limit: int = Field(default=100, ge=1, le=reads.MAX_PAGE)


class Collections(ApiModel):
    collections: list[CollectionView]


def _submit(call: Call) -> flask.Response:
    wired = platform()
    response, status = runtime.run(
        batches.submit(
            engine=wired.engine,
            principal=call.principal,
            kind_name=call.args["kind"],
            body=call.request.get_data(cache=False),
            idempotency_key=call.request.headers.get("Idempotency-Key"),
            caller=caller_info(call.request),
        )
    )
    return json_response(response, status)


def _status(call: Call) -> flask.Response:
    wired = platform()
    query = call.query_as(StatusQuery)
    return json_response(
        runtime.run(
            reads.status(
                engine=wired.engine,
                principal=call.principal,
                batch_id=call.args["batch_id"],
                offset=query.offset,
                limit=query.limit,
                progress=wired.progress,
            )
        )
    )


class JobsQuery(QueryModel):
    kind: str | None = Field(default=None, json_schema_extra={"enum": list[JsonValue](sorted(KINDS))})
    status: BatchStatus | None = None
    limit: int = Field(default=50, ge=1, le=reads.MAX_JOBS_PAGE)
    cursor: str | None = Field(default=None, pattern="^[A-Za-z0-9]{1,64}$")

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str | None) -> str | None:
        if kind is not None and kind not in KINDS:
            raise ValueError(f"one of {', '.join(sorted(KINDS))}")
        return kind


def _jobs(call: Call) -> flask.Response:
    wired = platform()
    query = call.query_as(JobsQuery)
    listing = reads.jobs(
        engine=wired.engine,
        principal=call.principal,
        kind=query.kind,
        status=query.status,
        limit=query.limit,
        cursor=query.cursor,
        progress=wired.progress,
    )
    return json_response(runtime.run(listing).model_dump(mode="json", by_alias=True))


def _active(call: Call) -> flask.Response:
    active = runtime.run(reads.active(engine=platform().engine, principal=call.principal))
    return json_response({"batches": [b.model_dump(mode="json", by_alias=True) for b in active]})


def _stats(call: Call) -> flask.Response:
    return json_response(runtime.run(reads.stats(engine=platform().engine, principal=call.principal)))


def _cancel(call: Call) -> flask.Response:
    cancelled = runtime.run(
        batches.cancel(
            engine=platform().engine,
            principal=call.principal,
            batch_id=call.args["batch_id"],
            caller=caller_info(call.request),
        )
    )
    return json_response(
        {"message": "batch cancelled", "batchId": cancelled.batch_id, "status": cancelled.status.value}
    )


def _collections(call: Call) -> flask.Response:
    listed = runtime.run(collections.list_collections(engine=platform().engine, principal=call.principal))
    return json_response({"collections": [c.model_dump(mode="json", by_alias=True) for c in listed]})


def _delete_collection(call: Call) -> flask.Response:
    runtime.run(
        collections.delete_collection(
            engine=platform().engine,
            principal=call.principal,
            name=call.args["name"],
            caller=caller_info(call.request),
        )
    )
    return json_response({"message": "collection deleted", "name": call.args["name"]})


API = Api(
    name="batch",
    title="Batch API",
    description="Batches of model work (generate, embeddings, analyze) on the platform's job engine.",
    error_model=ErrorBody,
    routes=[
        Route(
            method="GET",
            path="/collections",
            handler=_collections,
            summary="The tenant's embedding collections",
            replies=[Reply(status=200, model=Collections)],
        ),
        Route(
            method="DELETE",
            path="/collections/<name>",
            handler=_delete_collection,
            summary="Delete an embedding collection",
            replies=[Reply(status=200, model=DeletedCollection)],
            path_params={"name": {"type": "string", "pattern": COLLECTION_NAME}},
        ),
        Route(
            method="POST",
            path="/<kind>",
            handler=_submit,
            summary="Submit a batch of one kind",
            replies=[
                Reply(
                    status=202,
                    model=SubmitResponse,
                    description="accepted, or still running",
                    links=SUBMITTED,
                ),
                Reply(
                    status=200, model=SubmitResponse, description="finished while it waited", links=SUBMITTED
                ),
            ],
            body=Body(
                models=tuple(kind.request_model for kind in PUBLIC_KINDS),
                max_bytes=lambda settings: settings.batch_max_body_bytes,
                parsed_by_service=True,
            ),
            path_params={"kind": {"type": "string", "enum": [kind.name for kind in PUBLIC_KINDS]}},
            header_params={"Idempotency-Key": {"type": "string", "minLength": 1, "maxLength": 200}},
            errors=(409,),
        ),
        Route(
            method="GET",
            path="/status/<batch_id>",
            handler=_status,
            summary="A batch's status, progress and one page of results",
            replies=[Reply(status=200, model=BatchStatusResponse)],
            query=StatusQuery,
        ),
        Route(
            method="GET",
            path="/active",
            handler=_active,
            summary="The tenant's batches not yet final",
            replies=[Reply(status=200, model=ActiveBatches)],
        ),
        Route(
            method="GET",
            path="/jobs",
            handler=_jobs,
            summary="The tenant's jobs of every kind, newest first, a page at a time",
            replies=[Reply(status=200, model=JobList)],
            query=JobsQuery,
        ),
        Route(
            method="GET",
            path="/stats",
            handler=_stats,
            summary="Batches, items, failures and throughput, in all and by kind",
            replies=[Reply(status=200, model=JsonObject)],
        ),
        Route(
            method="DELETE",
            path="/<batch_id>",
            handler=_cancel,
            summary="Cancel a batch (its queued and running work)",
            replies=[Reply(status=200, model=CancelledBatch)],
            errors=(409,),
        ),
    ],
)


@functions_framework.http
def batch(request: flask.Request) -> flask.Response:
    return API.dispatch(request)
