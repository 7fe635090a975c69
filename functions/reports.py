"""Public API of asynchronous reports: POST /queue-multipart, POST /queue-json, POST /uploads, POST /queue,
GET /status/{jobId}, GET /download/{downloadToken}, GET /active-jobs, GET /cache-stats. Its document:
GET /openapi.json, GET /docs.

Bodies are capped at REPORTS_MAX_REQUEST_BYTES (Cloud Functions takes at most 32 MB); larger files go
straight to Cloud Storage through an upload session. Every route but the download needs an API key; the
download token is the download's credential.
"""

from __future__ import annotations

import io
from typing import Any, TypeVar

import flask
import functions_framework
from pydantic import BaseModel, ValidationError
from pydantic_core import to_json
from werkzeug.exceptions import RequestEntityTooLarge

from shared import runtime
from shared.api import Access, Api, Body, Call, Reply, Route
from shared.app import platform
from shared.errors import InvalidRequest
from shared.http import (
    caller_info,
    client_address,
    error_response,
    json_response,
    register_error_handlers,
)
from shared.models.api import ActiveJobs, ErrorBody
from shared.models.auth import Principal
from shared.models.reports import (
    CacheStats,
    QueuedResponse,
    QueueForm,
    QueueJsonRequest,
    QueueUploadRequest,
    ReportStatusResponse,
    UploadRequest,
    UploadResponse,
)
from shared.ports import ObjectInfo
from shared.services import reports as service
from shared.services.batches import validation_details

register_error_handlers(functions_framework.errorhandler)


def _too_large(_: RequestEntityTooLarge) -> flask.Response:
    """A body sent without a length, cut off at the limit while read: the same answer as one announced."""
    exc = service.body_too_large(reports=platform().reports)
    return error_response(exc.to_body(), exc.http_status)


functions_framework.errorhandler(RequestEntityTooLarge)(_too_large)


M = TypeVar("M", bound=BaseModel)


def _parse(model: type[M], data: dict[str, Any] | bytes) -> M:
    try:
        if isinstance(data, bytes):
            return model.model_validate_json(data or b"{}", strict=True)
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequest("the request is not valid", details=validation_details(exc)) from exc


def _capped(request: flask.Request, wired: service.Reports) -> None:
    service.check_request_size(reports=wired, content_length=request.content_length)
    # A body sent without a length is cut off at the same limit while it is read.
    request.max_content_length = wired.engine.settings.reports_max_request_bytes


def _download(call: Call) -> flask.Response:
    url = runtime.run(
        service.download_url(
            reports=platform().reports,
            token=call.args["token"],
            client_address=client_address(call.request),
        )
    )
    response = flask.make_response("", 302)
    response.headers["Location"] = url
    return response


def _queue_multipart(call: Call) -> flask.Response:
    request, wired = call.request, platform().reports
    _capped(request, wired)
    form = _parse(QueueForm, request.form.to_dict())
    data_file = request.files.get("dataFile")
    if data_file is None:
        raise InvalidRequest("dataFile is missing", details=[{"field": "dataFile", "problem": "required"}])
    # Werkzeug spools the part to a temporary file as it arrives; it is uploaded from there in chunks.
    info, input_id = service.store_input(
        reports=wired,
        principal=call.principal,
        report_type=form.report_type,
        file=data_file.stream,  # type: ignore[arg-type]
    )
    return _queued(
        wired=wired, principal=call.principal, form=form, info=info, input_id=input_id, request=request
    )


def _queue_json(call: Call) -> flask.Response:
    request, wired = call.request, platform().reports
    _capped(request, wired)
    body = _parse(QueueJsonRequest, request.get_data(cache=False))
    data = body.json_data.encode() if isinstance(body.json_data, str) else to_json(body.json_data)
    info, input_id = service.store_input(
        reports=wired, principal=call.principal, report_type=body.report_type, file=io.BytesIO(data)
    )
    return _queued(
        wired=wired, principal=call.principal, form=body, info=info, input_id=input_id, request=request
    )


def _uploads(call: Call) -> flask.Response:
    request, wired = call.request, platform().reports
    _capped(request, wired)
    upload = _parse(UploadRequest, request.get_data(cache=False))
    opened = runtime.run(
        service.open_upload(
            reports=wired,
            principal=call.principal,
            file_name=upload.file_name,
            size_bytes=upload.size_bytes,
            report_type=upload.report_type,
            origin=request.headers.get("Origin"),
        )
    )
    return json_response(opened, 201)


def _queue(call: Call) -> flask.Response:
    request, wired = call.request, platform().reports
    _capped(request, wired)
    queue = _parse(QueueUploadRequest, request.get_data(cache=False))
    queued = runtime.run(
        service.queue_upload(
            reports=wired,
            principal=call.principal,
            report_type=queue.report_type,
            user_name=queue.user_name,
            upload_id=queue.upload_id,
            is_large_dataset=queue.is_large_dataset,
            caller=caller_info(request),
        )
    )
    return json_response(queued, 202)


def _status(call: Call) -> flask.Response:
    wired = platform().reports
    return json_response(
        runtime.run(service.status(reports=wired, principal=call.principal, job_id=call.args["job_id"]))
    )


def _active_jobs(call: Call) -> flask.Response:
    jobs = runtime.run(service.active_jobs(reports=platform().reports, principal=call.principal))
    return json_response({"jobs": [job.model_dump(mode="json", by_alias=True) for job in jobs]})


def _cache_stats(call: Call) -> flask.Response:
    return json_response(
        runtime.run(service.cache_stats(reports=platform().reports, principal=call.principal))
    )


def _queued(
    *,
    wired: service.Reports,
    principal: Principal,
    form: QueueForm,
    info: ObjectInfo,
    input_id: str,
    request: flask.Request,
) -> flask.Response:
    queued = runtime.run(
        service.queue_job(
            reports=wired,
            principal=principal,
            report_type=form.report_type,
            user_name=form.user_name,
            info=info,
            input_id=input_id,
            is_large_dataset=form.is_large_dataset,
            caller=caller_info(request),
        )
    )
    return json_response(queued, 202)


def _body(model: type[BaseModel], media_type: str = "application/json", **extra: Any) -> Body:
    """A body the handler parses and caps itself (REPORTS_MAX_REQUEST_BYTES, pointing to upload sessions)."""
    return Body(
        models=(model,),
        media_type=media_type,
        max_bytes=lambda settings: settings.reports_max_request_bytes,
        capped_by_handler=True,
        parsed_by_service=True,
        **extra,
    )


QUEUED = [
    Reply(
        status=202,
        model=QueuedResponse,
        links={
            "status": {"operationId": "reports_status", "parameters": {"job_id": "$response.body#/jobId"}}
        },
    )
]

API = Api(
    name="reports",
    title="Reports API",
    description="Asynchronous reports over large datasets (up to 32 MB in the request, 500 MB by upload).",
    error_model=ErrorBody,
    routes=[
        Route(
            method="POST",
            path="/queue-multipart",
            handler=_queue_multipart,
            summary="Queue a report over a file sent as multipart/form-data (dataFile)",
            replies=QUEUED,
            body=_body(QueueForm, "multipart/form-data", file_fields=("dataFile",)),
        ),
        Route(
            method="POST",
            path="/queue-json",
            handler=_queue_json,
            summary="Queue a report over a dataset sent in jsonData",
            replies=QUEUED,
            body=_body(QueueJsonRequest),
        ),
        Route(
            method="POST",
            path="/uploads",
            handler=_uploads,
            summary="Open a resumable upload session straight to Cloud Storage",
            replies=[Reply(status=201, model=UploadResponse)],
            body=_body(UploadRequest),
        ),
        Route(
            method="POST",
            path="/queue",
            handler=_queue,
            summary="Queue a report over an uploaded file",
            replies=QUEUED,
            body=_body(QueueUploadRequest),
            errors=(404,),
        ),
        Route(
            method="GET",
            path="/status/<job_id>",
            handler=_status,
            summary="A report job's status, progress and download URL",
            replies=[Reply(status=200, model=ReportStatusResponse)],
        ),
        Route(
            method="GET",
            path="/download/<token>",
            handler=_download,
            summary="Redirect to the report's signed URL (the token is the credential)",
            replies=[
                Reply(status=302, description="to the report's signed URL", headers={"Location": "the URL"})
            ],
            access=Access.PUBLIC,
            errors=(429,),  # too many unknown tokens from one address
        ),
        Route(
            method="GET",
            path="/active-jobs",
            handler=_active_jobs,
            summary="The tenant's report jobs not yet final",
            replies=[Reply(status=200, model=ActiveJobs)],
        ),
        Route(
            method="GET",
            path="/cache-stats",
            handler=_cache_stats,
            summary="The tenant's report cache: entries, hits, misses, bytes",
            replies=[Reply(status=200, model=CacheStats)],
        ),
    ],
)


@functions_framework.http
def reports(request: flask.Request) -> flask.Response:
    return API.dispatch(request)
