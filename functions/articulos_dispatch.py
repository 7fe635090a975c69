"""Internal, scheduled every minute by Cloud Scheduler: repairs the image queue after a crash (an item whose
engine batch ended without ending it, a slot whose item was never started) and fills free slots. The queue
does not depend on it to move: items are dispatched as slots free."""

from __future__ import annotations

import flask
import functions_framework

from shared import runtime
from shared.app import platform
from shared.http import json_response, register_error_handlers, verify_internal
from shared.runtime import WORK_LOOP
from shared.services.image_processing import repair
from shared.settings import get_settings

register_error_handlers(functions_framework.errorhandler)


@functions_framework.http
def articulos_dispatch(request: flask.Request) -> flask.Response:
    settings = get_settings()
    verify_internal(
        request,
        function_name="articulos_dispatch",
        service_accounts=[settings.scheduler_service_account, settings.tasks_service_account],
    )
    return json_response(runtime.run(repair(queue=platform(WORK_LOOP).image_queue), loop_name=WORK_LOOP))
