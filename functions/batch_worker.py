"""Internal: runs one chunk of a batch. Reached only through Cloud Tasks with the platform's OIDC token.

Answers 2xx when the chunk is handled (including per-request failures, which are recorded) and non-2xx only
when the whole delivery should be retried by Cloud Tasks (store unavailable, lease held by another worker).
"""

from __future__ import annotations

import flask
import functions_framework

from shared import runtime
from shared.app import platform
from shared.http import json_response, register_error_handlers, verify_internal
from shared.internal import parse_message, retry_count
from shared.models.batch import WorkMessage
from shared.runtime import WORK_LOOP
from shared.services.worker import process_chunk
from shared.settings import get_settings

register_error_handlers(functions_framework.errorhandler)


@functions_framework.http
def batch_worker(request: flask.Request) -> flask.Response:
    settings = get_settings()
    verify_internal(request, function_name="batch_worker", service_accounts=[settings.tasks_service_account])
    message = parse_message(request, WorkMessage)
    outcome = runtime.run(
        process_chunk(engine=platform(WORK_LOOP).engine, message=message, retry_count=retry_count(request)),
        loop_name=WORK_LOOP,
    )
    return json_response(outcome)
