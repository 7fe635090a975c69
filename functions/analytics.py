"""Public API of the usage analytics: GET /metrics, /realtime, /insights, /stream (SSE); POST /export,
/reset (admin). Its document: GET /openapi.json, GET /docs."""

from __future__ import annotations

import datetime as dt
from typing import Literal

import flask
import functions_framework
from pydantic import Field

from shared import runtime
from shared.api import Access, Api, Body, Call, QueryModel, Reply, Route
from shared.app import platform
from shared.http import caller_info, json_response, register_error_handlers
from shared.models.analytics import Export, Insights, Metrics, Realtime, Reset
from shared.models.api import ErrorBody
from shared.models.auth import Principal
from shared.models.common import ClientModel
from shared.services import analytics as service
from shared.services import analytics_stream, insights, usage_export
from shared.settings import get_settings

register_error_handlers(functions_framework.errorhandler)

STREAMS = analytics_stream.StreamGate()
# The streams of one scope on an instance share a snapshot: a thousand dashboards cost one read an interval.
SNAPSHOTS = analytics_stream.SnapshotCache(
    max_age_s=min(1.0, get_settings().analytics_realtime_interval / 2000)
)
MAX_BODY_BYTES = 4096


class ResetRequest(ClientModel):
    tenant: str | None = None  # None: every tenant


class WindowQuery(QueryModel):
    """A window of time (ISO 8601 instants; the last 24 h by default), for one tenant (an admin's choice)."""

    from_: str | None = Field(default=None, alias="from")
    to: str | None = None


class MetricsQuery(WindowQuery):
    tenant: str | None = None
    model: str | None = None
    endpoint: str | None = None


class StreamQuery(QueryModel):
    events: Literal["message", "metrics"] | None = None


def _window(request: flask.Request) -> service.Window:
    return service.parse_window(
        raw_from=request.args.get("from"), raw_to=request.args.get("to"), now=platform().engine.clock()
    )


def _metrics(call: Call) -> flask.Response:
    request, principal = call.request, call.principal
    args = request.args
    metrics = service.metrics(
        usage=platform().usage,
        principal=principal,
        window=_window(request),
        tenant=args.get("tenant"),
        model=args.get("model"),
        endpoint=args.get("endpoint"),
    )
    return json_response(runtime.run(metrics))


def _realtime_view(call: Call) -> flask.Response:
    return json_response(runtime.run(_realtime(call.principal)))


def _insights(call: Call) -> flask.Response:
    found = insights.insights(usage=platform().usage, principal=call.principal, window=_window(call.request))
    return json_response(runtime.run(found))


def _stream(call: Call) -> flask.Response:
    request, principal = call.request, call.principal
    settings = get_settings()
    STREAMS.enter(settings.analytics_max_sse_connections)
    stream = analytics_stream.events(
        snapshot=lambda: SNAPSHOTS.get(principal, lambda: runtime.run(_realtime(principal))),
        interval_s=settings.analytics_realtime_interval / 1000,
        heartbeat_s=settings.analytics_sse_heartbeat_seconds,
        max_s=settings.analytics_sse_max_seconds,
        last_id=analytics_stream.last_event_id(request.headers.get("Last-Event-ID")),
        event_name=None if request.args.get("events") == "message" else "metrics",
    )
    response = flask.Response(stream, mimetype="text/event-stream")
    # Left when the response closes: the stream ended, the client went away, or it never started.
    response.call_on_close(STREAMS.leave)
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    return response


def _export(call: Call) -> flask.Response:
    principal, body = call.principal, call.body_as(usage_export.ExportRequest)
    wired, settings = platform(), get_settings()
    now = wired.engine.clock()
    window = service.parse_window(raw_from=body.from_, raw_to=body.to, now=now)
    exported = usage_export.export(
        usage=wired.usage,
        blobs=wired.engine.blobs,
        tenant=service.scope_of(principal, body.tenant),
        start=window.start,
        end=window.end,
        fmt=body.format,
        max_part_bytes=settings.analytics_export_max_bytes,
        prefix=settings.analytics_export_path,
        url_ttl=dt.timedelta(seconds=settings.results_url_ttl_seconds),
        now=now,
    )
    return json_response(runtime.run(exported))


def _reset(call: Call) -> flask.Response:
    request, principal, body = call.request, call.principal, call.body_as(ResetRequest)
    wired = platform()
    reset = service.reset(
        engine=wired.engine,
        usage=wired.usage,
        principal=principal,
        tenant=body.tenant,
        caller=caller_info(request),
    )
    return json_response(runtime.run(reset))


async def _realtime(principal: Principal) -> dict[str, object]:
    wired = platform()
    return await service.realtime(
        engine=wired.engine,
        usage=wired.usage,
        progress=wired.progress,
        principal=principal,
        now=wired.engine.clock(),
    )


def _body(model: type[ClientModel]) -> Body:
    # Every field has a default: no body at all is the defaults.
    return Body(models=(model,), max_bytes=MAX_BODY_BYTES, required=False)


API = Api(
    name="analytics",
    title="Usage analytics API",
    description="Usage of the platform's model calls: metrics, realtime, insights, an event stream, exports.",
    error_model=ErrorBody,
    routes=[
        Route(
            method="GET",
            path="/metrics",
            handler=_metrics,
            summary="Calls, tokens, cost, latency and errors over a window",
            replies=[Reply(status=200, model=Metrics)],
            query=MetricsQuery,
            errors=(403,),
        ),
        Route(
            method="GET",
            path="/realtime",
            handler=_realtime_view,
            summary="The last minutes' rates and the work in flight",
            replies=[Reply(status=200, model=Realtime)],
        ),
        Route(
            method="GET",
            path="/insights",
            handler=_insights,
            summary="Performance, trends, peak hours, cost and errors over a window",
            replies=[Reply(status=200, model=Insights)],
            query=WindowQuery,
        ),
        Route(
            method="GET",
            path="/stream",
            handler=_stream,
            summary="The realtime view as server-sent events",
            replies=[Reply(status=200, media_type="text/event-stream", schema={"type": "string"})],
            query=StreamQuery,
            errors=(503,),
            streaming=True,
        ),
        Route(
            method="POST",
            path="/export",
            handler=_export,
            summary="Export the usage events of a window to Cloud Storage (JSON or CSV)",
            replies=[Reply(status=200, model=Export)],
            body=_body(usage_export.ExportRequest),
            errors=(403,),
        ),
        Route(
            method="POST",
            path="/reset",
            handler=_reset,
            summary="Delete the usage records of a tenant or of all (admin)",
            replies=[Reply(status=200, model=Reset)],
            body=_body(ResetRequest),
            access=Access.ADMIN,
            admin_message="only an admin may reset analytics",
        ),
    ],
)


@functions_framework.http
def analytics(request: flask.Request) -> flask.Response:
    return API.dispatch(request)
