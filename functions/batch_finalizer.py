"""Internal: fan-in of a batch (results file, summary, final status). Reached only through Cloud Tasks."""

from __future__ import annotations

import flask
import functions_framework

from shared import runtime
from shared.app import platform
from shared.http import json_response, register_error_handlers, verify_internal
from shared.internal import parse_message
from shared.models.batch import FinalizeMessage
from shared.runtime import WORK_LOOP
from shared.services.finalizer import finalize
from shared.settings import get_settings

register_error_handlers(functions_framework.errorhandler)


@functions_framework.http
def batch_finalizer(request: flask.Request) -> flask.Response:
    settings = get_settings()
    verify_internal(
        request, function_name="batch_finalizer", service_accounts=[settings.tasks_service_account]
    )
    message = parse_message(request, FinalizeMessage)
    return json_response(
        runtime.run(
            finalize(engine=platform(WORK_LOOP).engine, batch_id=message.batch_id), loop_name=WORK_LOOP
        )
    )
