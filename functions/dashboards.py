"""Scheduled metric batches of the marketplace (the seed's paths under /dashboards): job status, manual
triggers, daily/weekly runs for a date, backfill, runs, calculated metrics, health; and the internal endpoint
Cloud Scheduler fires (`POST /batch-jobs/scheduled/{job_id}`, OIDC of the scheduler's service account).
Its document: GET /openapi.json, GET /docs."""

from __future__ import annotations

import datetime as dt
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

import flask
import functions_framework
from pydantic import Field

from shared import runtime
from shared.api import Access, Api, Call, QueryModel, Reply, Route
from shared.app import platform
from shared.errors import InvalidRequest
from shared.http import int_arg, json_response, register_error_handlers
from shared.metrics.jobs import DAILY, WEEKLY, job_spec, parse_day
from shared.models.api import ErrorBody
from shared.models.dashboards import Backfill, Calculated, Firing, Health, JobsStatus, RunView, StartedRun
from shared.runtime import WORK_LOOP
from shared.services import metric_runs
from shared.services.metric_runs import Dashboards

register_error_handlers(functions_framework.errorhandler)

T = TypeVar("T")

DAY = "YYYY-MM-DD, not in the future"
DATE = Field(default=None, description=DAY)


class CalculatedQuery(QueryModel):
    nombre_metrica: str | None = Field(default=None, max_length=100)
    tipo: Literal["diario", "semanal"] | None = None
    desde: str | None = DATE
    hasta: str | None = DATE
    dimension: str | None = Field(default=None, description="key:value, e.g. ciudad:Bogotá")
    limit: int = Field(default=50, ge=1, le=metric_runs.MAX_LIMIT)
    cursor: str | None = None


class DailyQuery(QueryModel):
    fecha: str = Field(description=DAY)


class WeeklyQuery(QueryModel):
    fecha_fin: str = Field(description=DAY)


class BackfillQuery(QueryModel):
    job_id: str = Field(min_length=1)
    desde: str = Field(description=DAY)
    hasta: str = Field(description=DAY)


def _dashboards(loop_name: str) -> Dashboards:
    wired = platform(loop_name)
    return Dashboards(engine=wired.engine, store=wired.metrics, scheduler=wired.scheduler)


def _run(coroutine: Coroutine[Any, Any, T], loop_name: str = runtime.API_LOOP) -> T:
    return runtime.run(coroutine, loop_name=loop_name)


def _status(call: Call) -> flask.Response:
    return json_response(_run(metric_runs.jobs_status(dash=_dashboards(runtime.API_LOOP))))


def _health(call: Call) -> flask.Response:
    return json_response(_run(metric_runs.health(dash=_dashboards(runtime.API_LOOP))))


def _get_run(call: Call) -> flask.Response:
    dash = _dashboards(runtime.API_LOOP)
    return json_response(_run(metric_runs.get_run(dash=dash, run_id=call.args["run_id"])))


def _calculated(call: Call) -> flask.Response:
    dash, query = _dashboards(runtime.API_LOOP), call.request.args
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


def _trigger(call: Call) -> flask.Response:
    dash = _dashboards(runtime.API_LOOP)
    job_spec(call.args["job_id"])  # 404 for an unknown job
    return json_response(_run(metric_runs.trigger(dash=dash, job_id=call.args["job_id"])), 202)


def _daily(call: Call) -> flask.Response:
    dash = _dashboards(runtime.API_LOOP)
    day = parse_day(call.request.args.get("fecha"), name="fecha", today=dash.today())
    return json_response(_run(metric_runs.run_for_day(dash=dash, job_id=DAILY, last=day)), 202)


def _weekly(call: Call) -> flask.Response:
    dash = _dashboards(runtime.API_LOOP)
    day = parse_day(call.request.args.get("fecha_fin"), name="fecha_fin", today=dash.today())
    return json_response(_run(metric_runs.run_for_day(dash=dash, job_id=WEEKLY, last=day)), 202)


def _backfill(call: Call) -> flask.Response:
    dash, query = _dashboards(runtime.API_LOOP), call.request.args
    job_id = query.get("job_id") or ""
    if not job_id:
        raise InvalidRequest("job_id is required", details=[{"field": "job_id", "problem": "required"}])
    job_spec(job_id)
    today = dash.today()
    desde = parse_day(query.get("desde"), name="desde", today=today)
    hasta = parse_day(query.get("hasta"), name="hasta", today=today)
    return json_response(_run(metric_runs.backfill(dash=dash, job_id=job_id, desde=desde, hasta=hasta)), 202)


def _scheduled(call: Call) -> flask.Response:
    """A Cloud Scheduler firing: its schedule time picks the period, so a late or repeated firing runs the
    period it was meant for. (The dispatcher verified the scheduler's OIDC token.)"""
    job_id = call.args["job_id"]
    job_spec(job_id)
    fired_at = _schedule_time(call.request.headers.get("X-CloudScheduler-ScheduleTime"))
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


ACCEPTED = [Reply(status=202, model=StartedRun)]
ADMIN_MESSAGE = "only an admin key may start metric runs"

API = Api(
    name="dashboards",
    title="Metric batches API (dashboards)",
    description="Scheduled metric batches of the spare-parts marketplace: jobs, runs, calculated metrics.",
    error_model=ErrorBody,
    routes=[
        Route(
            method="GET",
            path="/batch-jobs/status",
            handler=_status,
            summary="Each metric job's schedule and last runs",
            replies=[Reply(status=200, model=JobsStatus)],
        ),
        Route(
            method="POST",
            path="/batch-jobs/trigger/<job_id>",
            handler=_trigger,
            summary="Run a job now, for its latest period (admin)",
            replies=ACCEPTED,
            access=Access.ADMIN,
            admin_message=ADMIN_MESSAGE,
        ),
        Route(
            method="POST",
            path="/batch-jobs/daily",
            handler=_daily,
            summary="Run the daily metrics for a date (admin)",
            replies=ACCEPTED,
            query=DailyQuery,
            access=Access.ADMIN,
            admin_message=ADMIN_MESSAGE,
        ),
        Route(
            method="POST",
            path="/batch-jobs/weekly",
            handler=_weekly,
            summary="Run the weekly metrics for the week ending on a date (admin)",
            replies=ACCEPTED,
            query=WeeklyQuery,
            access=Access.ADMIN,
            admin_message=ADMIN_MESSAGE,
        ),
        Route(
            method="POST",
            path="/batch-jobs/backfill",
            handler=_backfill,
            summary="Run a job for every period between two dates (admin)",
            replies=[Reply(status=202, model=Backfill)],
            query=BackfillQuery,
            access=Access.ADMIN,
            admin_message=ADMIN_MESSAGE,
            errors=(404,),
        ),
        Route(
            method="GET",
            path="/batch-jobs/runs/<path:run_id>",
            handler=_get_run,
            summary="One run: its periods, batch and status",
            replies=[Reply(status=200, model=RunView)],
        ),
        Route(
            method="POST",
            path="/batch-jobs/scheduled/<job_id>",
            handler=_scheduled,
            summary="Cloud Scheduler's firing of a job (internal: the scheduler's OIDC token)",
            replies=[Reply(status=200, model=Firing)],
            access=Access.INTERNAL,
            service_accounts=lambda settings: [settings.scheduler_service_account],
            header_params={"X-CloudScheduler-ScheduleTime": {"type": "string"}},
        ),
        Route(
            method="GET",
            path="/metrics/calculated",
            handler=_calculated,
            summary="Calculated metrics, newest period first, one page",
            replies=[Reply(status=200, model=Calculated)],
            query=CalculatedQuery,
        ),
        Route(
            method="GET",
            path="/health",
            handler=_health,
            summary="The metric jobs' health",
            replies=[Reply(status=200, model=Health)],
        ),
    ],
)


@functions_framework.http
def dashboards(request: flask.Request) -> flask.Response:
    return API.dispatch(request)
