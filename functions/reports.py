"""Public API of asynchronous reports: POST /queue-multipart, POST /queue-json, POST /uploads, POST /queue,
GET /status/{jobId}, GET /download/{downloadToken}, GET /active-jobs, GET /cache-stats.

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
from werkzeug.exceptions import NotFound
from werkzeug.routing import Map, Rule

from shared import runtime
from shared.app import platform
from shared.errors import InvalidRequest
from shared.http import authenticate, caller_info, json_response, register_error_handlers
from shared.models.auth import Principal
from shared.models.reports import QueueForm, QueueJsonRequest, QueueUploadRequest, UploadRequest
from shared.ports import ObjectInfo
from shared.services import reports as service
from shared.services.batches import validation_details

register_error_handlers(functions_framework.errorhandler)

M = TypeVar("M", bound=BaseModel)

ROUTES = Map(
    [
        Rule("/queue-multipart", methods=["POST"], endpoint="queue_multipart"),
        Rule("/queue-json", methods=["POST"], endpoint="queue_json"),
        Rule("/uploads", methods=["POST"], endpoint="uploads"),
        Rule("/queue", methods=["POST"], endpoint="queue"),
        Rule("/status/<job_id>", methods=["GET"], endpoint="status"),
        Rule("/download/<token>", methods=["GET"], endpoint="download"),
        Rule("/active-jobs", methods=["GET"], endpoint="active_jobs"),
        Rule("/cache-stats", methods=["GET"], endpoint="cache_stats"),
    ]
)


def _parse(model: type[M], data: dict[str, Any] | bytes) -> M:
    try:
        if isinstance(data, bytes):
            return model.model_validate_json(data or b"{}")
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequest("the request is not valid", details=validation_details(exc)) from exc


@functions_framework.http
def reports(request: flask.Request) -> flask.Response:
    endpoint, args = ROUTES.bind("", path_info=request.path, url_scheme="http").match(
        request.path, method=request.method
    )
    wired = platform().reports
    if endpoint == "download":
        url = runtime.run(
            service.download_url(
                reports=wired, token=args["token"], client_address=caller_info(request).remote_addr
            )
        )
        response = flask.make_response("", 302)
        response.headers["Location"] = url
        return response
    principal = authenticate(request)
    if endpoint in ("queue_multipart", "queue_json", "uploads", "queue"):
        service.check_request_size(reports=wired, content_length=request.content_length)
        # A body sent without a length is cut off at the same limit while it is read.
        request.max_content_length = wired.engine.settings.reports_max_request_bytes
    if endpoint == "queue_multipart":
        form = _parse(QueueForm, request.form.to_dict())
        data_file = request.files.get("dataFile")
        if data_file is None:
            raise InvalidRequest(
                "dataFile is missing", details=[{"field": "dataFile", "problem": "required"}]
            )
        # Werkzeug spools the part to a temporary file as it arrives; it is uploaded from there in chunks.
        info, input_id = service.store_input(
            reports=wired,
            principal=principal,
            report_type=form.report_type,
            file=data_file.stream,  # type: ignore[arg-type]
        )
        return _queued(
            wired=wired, principal=principal, form=form, info=info, input_id=input_id, request=request
        )
    if endpoint == "queue_json":
        body = _parse(QueueJsonRequest, request.get_data(cache=False))
        data = body.json_data.encode() if isinstance(body.json_data, str) else to_json(body.json_data)
        info, input_id = service.store_input(
            reports=wired, principal=principal, report_type=body.report_type, file=io.BytesIO(data)
        )
        return _queued(
            wired=wired, principal=principal, form=body, info=info, input_id=input_id, request=request
        )
    if endpoint == "uploads":
        upload = _parse(UploadRequest, request.get_data(cache=False))
        opened = runtime.run(
            service.open_upload(
                reports=wired,
                principal=principal,
                file_name=upload.file_name,
                size_bytes=upload.size_bytes,
                report_type=upload.report_type,
                origin=request.headers.get("Origin"),
            )
        )
        return json_response(opened, 201)
    if endpoint == "queue":
        queue = _parse(QueueUploadRequest, request.get_data(cache=False))
        queued = runtime.run(
            service.queue_upload(
                reports=wired,
                principal=principal,
                report_type=queue.report_type,
                user_name=queue.user_name,
                upload_id=queue.upload_id,
                is_large_dataset=queue.is_large_dataset,
                caller=caller_info(request),
            )
        )
        return json_response(queued, 202)
    if endpoint == "status":
        return json_response(
            runtime.run(service.status(reports=wired, principal=principal, job_id=args["job_id"]))
        )
    if endpoint == "active_jobs":
        jobs = runtime.run(service.active_jobs(reports=wired, principal=principal))
        return json_response({"jobs": [job.model_dump(mode="json", by_alias=True) for job in jobs]})
    if endpoint == "cache_stats":
        return json_response(runtime.run(service.cache_stats(reports=wired, principal=principal)))
    raise NotFound()


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
