"""Internal, scheduled every minute by Cloud Scheduler: rolls closed minutes, hours and days of usage into
rollups and deletes usage past retention. Safe to run twice (deterministic rollup ids, `set`, a watermark)."""

from __future__ import annotations

import datetime as dt

import flask
import functions_framework

from shared import runtime
from shared.app import platform
from shared.http import json_response, register_error_handlers, verify_internal
from shared.runtime import WORK_LOOP
from shared.services.usage_rollups import roll
from shared.settings import get_settings

register_error_handlers(functions_framework.errorhandler)


@functions_framework.http
def analytics_rollup(request: flask.Request) -> flask.Response:
    settings = get_settings()
    verify_internal(
        request, function_name="analytics_rollup", service_accounts=[settings.scheduler_service_account]
    )
    wired = platform(WORK_LOOP)
    rolled = roll(
        usage=wired.usage,
        now=wired.engine.clock(),
        lag=dt.timedelta(seconds=settings.analytics_rollup_lag_seconds),
        retention=dt.timedelta(days=settings.analytics_retention_days),
    )
    return json_response(runtime.run(rolled, loop_name=WORK_LOOP))
