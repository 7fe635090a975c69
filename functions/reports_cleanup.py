"""Internal, scheduled hourly by Cloud Scheduler: deletes report jobs, inputs, reports, cache entries, upload
sessions and tokens older than REPORTS_RETENTION_HOURS. Safe to run twice."""

from __future__ import annotations

import flask
import functions_framework

from shared import runtime
from shared.app import platform
from shared.http import json_response, register_error_handlers, verify_internal
from shared.runtime import WORK_LOOP
from shared.services.reports import cleanup
from shared.settings import get_settings

register_error_handlers(functions_framework.errorhandler)


@functions_framework.http
def reports_cleanup(request: flask.Request) -> flask.Response:
    settings = get_settings()
    verify_internal(
        request,
        function_name="reports_cleanup",
        service_accounts=[settings.scheduler_service_account, settings.tasks_service_account],
    )
    return json_response(runtime.run(cleanup(reports=platform(WORK_LOOP).reports), loop_name=WORK_LOOP))
