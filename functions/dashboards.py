"""Scheduled metric batches of the marketplace (the seed's paths under /dashboards): job status, manual
triggers, daily/weekly runs for a date, backfill, runs, calculated metrics, health; and the internal endpoint
Cloud Scheduler fires (`POST /batch-jobs/scheduled/{job_id}`, OIDC of the scheduler's service account)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Coroutine
from typing import Any, TypeVar

import flask
import functions_framework
from werkzeug.exceptions import NotFound
from werkzeug.routing import Map, Rule

from shared import runtime
from shared.app import platform
from shared.errors import Forbidden, InvalidRequest
from shared.http import authenticate, int_arg, json_response, register_error_handlers, verify_internal
from shared.metrics.jobs import DAILY, WEEKLY, job_spec, parse_day
from shared.runtime import WORK_LOOP
from shared.services import metric_runs
from shared.services.metric_runs import Dashboards
from shared.settings import get_settings

register_error_handlers(functions_framework.errorhandler)

T = TypeVar("T")

ROUTES = Map(
    [
        Rule("/batch-jobs/status", methods=["GET"], endpoint="status"),
        Rule("/batch-jobs/trigger/<job_id>", methods=["POST"], endpoint="trigger"),
        Rule("/batch-jobs/daily", methods=["POST"], endpoint="daily"),
        Rule("/batch-jobs/weekly", methods=["POST"], endpoint="weekly"),
        Rule("/batch-jobs/backfill", methods=["POST"], endpoint="backfill"),
        Rule("/batch-jobs/runs/<path:run_id>", methods=["GET"], endpoint="run"),
        Rule("/batch-jobs/scheduled/<job_id>", methods=["POST"], endpoint="scheduled"),
        Rule("/metrics/calculated", methods=["GET"], endpoint="calculated"),
        Rule("/health", methods=["GET"], endpoint="health"),
    ]
)
ADMIN_ONLY = {"trigger", "daily", "weekly", "backfill"}


def _dashboards(loop_name: str) -> Dashboards:
    wired = platform(loop_name)
    return Dashboards(engine=wired.engine, store=wired.metrics, scheduler=wired.scheduler)


def _run(coroutine: Coroutine[Any, Any, T], loop_name: str = runtime.API_LOOP) -> T:
    return runtime.run(coroutine, loop_name=loop_name)


@functions_framework.http
def dashboards(request: flask.Request) -> flask.Response:
    endpoint, args = ROUTES.bind("", path_info=request.path, url_scheme="http").match(
        request.path, method=request.method
    )
    if endpoint == "scheduled":
        return _scheduled(request, args["job_id"])
    principal = authenticate(request)
    if endpoint in ADMIN_ONLY and not principal.is_admin:
        raise Forbidden("only an admin key may start metric runs")
    dash = _dashboards(runtime.API_LOOP)
    query = request.args
    if endpoint == "status":
        return json_response(_run(metric_runs.jobs_status(dash=dash)))
    if endpoint == "health":
        return json_response(_run(metric_runs.health(dash=dash)))
    if endpoint == "run":
        return json_response(_run(metric_runs.get_run(dash=dash, run_id=args["run_id"])))
    if endpoint == "calculated":
        return json_response(
            _run(
                metric_runs.calculated(
                    dash=dash,
                    nombre=query.get("nombre_metrica"),
                    tipo=query.get("tipo"),
                    desde=_optional_day(query, "desde", dash),
                    hasta=_optional_day(query, "hasta", dash),
                    dimension=query.get("dimension"),
                    limit=int_arg(query, "limit", 50),
                    cursor=query.get("cursor"),
                )
            )
        )
    if endpoint == "trigger":
        job_spec(args["job_id"])  # 404 for an unknown job
        return json_response(_run(metric_runs.trigger(dash=dash, job_id=args["job_id"])), 202)
    if endpoint == "daily":
        day = parse_day(query.get("fecha"), name="fecha", today=dash.today())
        return json_response(_run(metric_runs.run_for_day(dash=dash, job_id=DAILY, last=day)), 202)
    if endpoint == "weekly":
        day = parse_day(query.get("fecha_fin"), name="fecha_fin", today=dash.today())
        return json_response(_run(metric_runs.run_for_day(dash=dash, job_id=WEEKLY, last=day)), 202)
    if endpoint == "backfill":
        job_id = query.get("job_id") or ""
        if not job_id:
            raise InvalidRequest("job_id is required", details=[{"field": "job_id", "problem": "required"}])
        job_spec(job_id)
        today = dash.today()
        desde = parse_day(query.get("desde"), name="desde", today=today)
        hasta = parse_day(query.get("hasta"), name="hasta", today=today)
        return json_response(
            _run(metric_runs.backfill(dash=dash, job_id=job_id, desde=desde, hasta=hasta)), 202
        )
    raise NotFound()


def _scheduled(request: flask.Request, job_id: str) -> flask.Response:
    """A Cloud Scheduler firing: its schedule time picks the period, so a late or repeated firing runs the
    period it was meant for."""
    settings = get_settings()
    verify_internal(
        request, function_name="dashboards", service_accounts=[settings.scheduler_service_account]
    )
    job_spec(job_id)
    fired_at = _schedule_time(request.headers.get("X-CloudScheduler-ScheduleTime"))
    dash = _dashboards(WORK_LOOP)
    return json_response(
        _run(metric_runs.fire(dash=dash, job_id=job_id, fired_at=fired_at or dash.engine.clock()), WORK_LOOP)
    )


def _schedule_time(raw: str | None) -> dt.datetime | None:
    if not raw:
        return None
    try:
        parsed = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _optional_day(query: Any, name: str, dash: Dashboards) -> dt.date | None:
    value = query.get(name)
    return None if value is None else parse_day(value, name=name, today=dash.today())
