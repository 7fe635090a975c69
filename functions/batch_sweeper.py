"""Internal, scheduled every minute by Cloud Scheduler: recovers stalled chunks and overdue batches."""

from __future__ import annotations

import flask
import functions_framework

from shared import runtime
from shared.app import platform
from shared.http import json_response, register_error_handlers, verify_internal
from shared.runtime import WORK_LOOP
from shared.services.sweeper import sweep
from shared.settings import get_settings

register_error_handlers(functions_framework.errorhandler)


@functions_framework.http
def batch_sweeper(request: flask.Request) -> flask.Response:
    settings = get_settings()
    verify_internal(
        request,
        function_name="batch_sweeper",
        service_accounts=[settings.scheduler_service_account, settings.tasks_service_account],
    )
    return json_response(runtime.run(sweep(engine=platform(WORK_LOOP).engine), loop_name=WORK_LOOP))
