"""Public API of the batch engine: POST /{kind} (generate, embeddings, analyze), GET /status/{id},
GET /active, GET /jobs, GET /stats, DELETE /{id}; the embeddings' collections: GET /collections,
DELETE /collections/{name}; Gemini Batch Mode jobs paid with credits: POST /create, GET /history,
DELETE /history/{id}, GET /credits, POST /credits/grant, GET /webhook-secret; upload sessions for inputs
past one body: POST /uploads. Its document: GET /openapi.json, GET /docs."""

from __future__ import annotations

import flask
import functions_framework
from pydantic import Field, JsonValue, field_validator

from shared import runtime
from shared.api import Access, Api, Body, Call, QueryModel, Reply, Route
from shared.app import platform
from shared.http import caller_info, json_response, register_error_handlers
from shared.kinds.embeddings import COLLECTION_NAME
from shared.kinds.registry import KINDS
from shared.models.api import ActiveBatches, CancelledBatch, DeletedCollection, ErrorBody
from shared.models.batch import BatchStats, BatchStatus, BatchStatusResponse, JobList, SubmitResponse
from shared.models.batch_inputs import InputUploadRequest, InputUploadResponse
from shared.models.batchmode import (
    CreatedJob,
    CreateRequest,
    CreditsView,
    DeletedJob,
    Granted,
    GrantRequest,
    History,
    JobStatusView,
    JobType,
    WebhookSecret,
)
from shared.models.common import Answer
from shared.services import batch_inputs, batches, batchmode, collections
from shared.services import status as reads
from shared.services.collections import CollectionView
from shared.settings import get_settings

register_error_handlers(functions_framework.errorhandler)

PUBLIC_KINDS = [kind for kind in KINDS.values() if kind.public]


SUBMITTED = {
    name: {"operationId": f"batch_{name}", "parameters": {"batch_id": "$response.body#/batchId"}}
    for name in ("status", "cancel")
}


class StatusQuery(QueryModel):
    offset: int = Field(default=0, ge=0, le=reads.MAX_OFFSET)
    limit: int = Field(default=100, ge=1, le=reads.MAX_PAGE)
    # At most BATCH_MAX_WAIT_SECONDS, in the API's document too (a fuzzer or client reads the bound there).
    wait_seconds: float = Field(
        default=0,
        ge=0,
        le=get_settings().batch_max_wait_seconds,
        alias="waitSeconds",
        description="answer once the batch is finished, or after this many seconds with its current state",
    )


class Collections(Answer):
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


def _uploads(call: Call) -> flask.Response:
    upload = call.body_as(InputUploadRequest)
    opened = batch_inputs.open_input_upload(
        engine=platform().engine,
        principal=call.principal,
        size_bytes=upload.size_bytes,
        origin=call.request.headers.get("Origin"),
        caller=caller_info(call.request),
    )
    return json_response(runtime.run(opened), 201)


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
                wait_seconds=query.wait_seconds,
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


# --- Gemini Batch Mode jobs (shared/services/batchmode.py); their status is GET /status/{id} -------------


class HistoryQuery(QueryModel):
    type: JobType | None = None
    limit: int = Field(default=50, ge=1, le=batchmode.HISTORY_MAX_PAGE)
    cursor: str | None = Field(default=None, pattern="^[A-Za-z0-9]{1,64}$")


def _bm_create(call: Call) -> flask.Response:
    created = batchmode.create(
        service=platform().batchmode, principal=call.principal, body=call.request.get_data(cache=False)
    )
    return json_response(runtime.run(created), 202)


def _bm_history(call: Call) -> flask.Response:
    query = call.query_as(HistoryQuery)
    listed, cursor = runtime.run(
        batchmode.history(
            service=platform().batchmode,
            principal=call.principal,
            job_type=query.type.value if query.type else None,
            limit=query.limit,
            cursor=query.cursor,
        )
    )
    response = json_response(listed)
    if cursor:
        response.headers["X-Next-Cursor"] = cursor
    return response


def _bm_delete(call: Call) -> flask.Response:
    job_id = call.args["batch_id"]  # a Batch Mode job is a batch: one id
    runtime.run(batchmode.delete_job(service=platform().batchmode, principal=call.principal, job_id=job_id))
    return json_response(DeletedJob(message="batch job deleted", id=job_id))


def _bm_credits(call: Call) -> flask.Response:
    return json_response(
        runtime.run(batchmode.credits_view(service=platform().batchmode, principal=call.principal))
    )


def _bm_grant(call: Call) -> flask.Response:
    granted = batchmode.grant(
        service=platform().batchmode, principal=call.principal, body=call.request.get_data(cache=False)
    )
    return json_response(runtime.run(granted))


def _bm_webhook_secret(call: Call) -> flask.Response:
    tenant = call.principal.tenant
    secret = batchmode.webhook_secret(settings=platform().batchmode.settings, tenant=tenant)
    return json_response(WebhookSecret(tenant=tenant, secret=secret, header=batchmode.SIGNATURE_HEADER))


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
            path="/create",
            handler=_bm_create,
            summary="Create a Gemini Batch Mode job of images, paid with credits (an admin key: 403)",
            replies=[Reply(status=202, model=CreatedJob, description="created and debited")],
            body=Body(
                models=(CreateRequest,),
                max_bytes=lambda settings: settings.batch_max_body_bytes,
                parsed_by_service=True,
            ),
            errors=(402, 403),
        ),
        Route(
            method="GET",
            path="/history",
            handler=_bm_history,
            summary="The tenant's Batch Mode jobs, newest first (the next page's cursor in X-Next-Cursor)",
            replies=[
                Reply(
                    status=200,
                    model=History,
                    headers={"X-Next-Cursor": "the cursor of the next page, absent on the last"},
                )
            ],
            query=HistoryQuery,
        ),
        Route(
            method="DELETE",
            path="/history/<batch_id>",
            handler=_bm_delete,
            summary="Delete a finished Batch Mode job: its record, its Gemini job and its images",
            replies=[Reply(status=200, model=DeletedJob)],
            errors=(409,),
        ),
        Route(
            method="GET",
            path="/credits",
            handler=_bm_credits,
            summary="The tenant's credit balance and its latest ledger entries",
            replies=[Reply(status=200, model=CreditsView)],
        ),
        Route(
            method="POST",
            path="/credits/grant",
            handler=_bm_grant,
            summary="Grant credits to a tenant (admin only)",
            replies=[Reply(status=200, model=Granted)],
            access=Access.ADMIN,
            body=Body(models=(GrantRequest,), parsed_by_service=True),
        ),
        Route(
            method="GET",
            path="/webhook-secret",
            handler=_bm_webhook_secret,
            summary="The tenant's secret for checking the signature of Batch Mode webhooks",
            replies=[Reply(status=200, model=WebhookSecret)],
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
            method="POST",
            path="/uploads",
            handler=_uploads,
            summary="An upload session for a JSONL file of requests past one body (then inputUri)",
            replies=[Reply(status=201, model=InputUploadResponse)],
            body=Body(models=(InputUploadRequest,)),
        ),
        Route(
            method="GET",
            path="/status/<batch_id>",
            handler=_status,
            summary="A batch's status, progress and one page of results",
            replies=[Reply(status=200, model=BatchStatusResponse, alternatives=(JobStatusView,))],
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
            replies=[Reply(status=200, model=BatchStats)],
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
