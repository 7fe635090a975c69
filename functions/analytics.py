"""Public API of the usage analytics: GET /metrics, /realtime, /insights, /stream (SSE); POST /export,
/reset (admin)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TypeVar

import flask
import functions_framework
from pydantic import ValidationError
from werkzeug.exceptions import NotFound
from werkzeug.routing import Map, Rule

from shared import runtime
from shared.app import platform
from shared.errors import InvalidRequest
from shared.http import authenticate, caller_info, json_response, register_error_handlers
from shared.models.auth import Principal
from shared.models.common import ClientModel
from shared.services import analytics as service
from shared.services import analytics_stream, insights, usage_export
from shared.services.batches import validation_details
from shared.settings import get_settings

register_error_handlers(functions_framework.errorhandler)

ROUTES = Map(
    [
        Rule("/metrics", methods=["GET"], endpoint="metrics"),
        Rule("/realtime", methods=["GET"], endpoint="realtime"),
        Rule("/insights", methods=["GET"], endpoint="insights"),
        Rule("/stream", methods=["GET"], endpoint="stream"),
        Rule("/export", methods=["POST"], endpoint="export"),
        Rule("/reset", methods=["POST"], endpoint="reset"),
    ]
)
M = TypeVar("M", bound=ClientModel)
STREAMS = analytics_stream.StreamGate()
# The streams of one scope on an instance share a snapshot: a thousand dashboards cost one read an interval.
SNAPSHOTS = analytics_stream.SnapshotCache(
    max_age_s=min(1.0, get_settings().analytics_realtime_interval / 2000)
)
MAX_BODY_BYTES = 4096


class ResetRequest(ClientModel):
    tenant: str | None = None  # None: every tenant


@functions_framework.http
def analytics(request: flask.Request) -> flask.Response:
    endpoint, _ = ROUTES.bind("", path_info=request.path, url_scheme="http").match(
        request.path, method=request.method
    )
    principal = authenticate(request)
    handler = HANDLERS.get(endpoint)
    if handler is None:
        raise NotFound()
    return handler(request, principal)


def _window(request: flask.Request) -> service.Window:
    return service.parse_window(
        raw_from=request.args.get("from"), raw_to=request.args.get("to"), now=platform().engine.clock()
    )


def _metrics(request: flask.Request, principal: Principal) -> flask.Response:
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


def _realtime_view(request: flask.Request, principal: Principal) -> flask.Response:
    return json_response(runtime.run(_realtime(principal)))


def _insights(request: flask.Request, principal: Principal) -> flask.Response:
    found = insights.insights(usage=platform().usage, principal=principal, window=_window(request))
    return json_response(runtime.run(found))


def _stream(request: flask.Request, principal: Principal) -> flask.Response:
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


def _export(request: flask.Request, principal: Principal) -> flask.Response:
    body = _body(request, usage_export.ExportRequest)
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


def _reset(request: flask.Request, principal: Principal) -> flask.Response:
    body = _body(request, ResetRequest)
    wired = platform()
    reset = service.reset(
        engine=wired.engine,
        usage=wired.usage,
        principal=principal,
        tenant=body.tenant,
        caller=caller_info(request),
    )
    return json_response(runtime.run(reset))


HANDLERS: dict[str, Callable[[flask.Request, Principal], flask.Response]] = {
    "metrics": _metrics,
    "realtime": _realtime_view,
    "insights": _insights,
    "stream": _stream,
    "export": _export,
    "reset": _reset,
}


async def _realtime(principal: Principal) -> dict[str, object]:
    wired = platform()
    return await service.realtime(
        engine=wired.engine,
        usage=wired.usage,
        progress=wired.progress,
        principal=principal,
        now=wired.engine.clock(),
    )


def _body(request: flask.Request, model: type[M]) -> M:
    if (request.content_length or 0) > MAX_BODY_BYTES:
        raise InvalidRequest(f"the body is larger than {MAX_BODY_BYTES} bytes")
    try:
        return model.model_validate_json(request.get_data(cache=False) or b"{}")
    except ValidationError as exc:
        raise InvalidRequest("invalid body", details=validation_details(exc)) from exc
