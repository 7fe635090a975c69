"""Public API of the usage analytics: GET /metrics, /realtime, /insights, /stream (SSE); POST /export,
/reset (admin)."""

from __future__ import annotations

import datetime as dt
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
    wired = platform()
    settings, usage, engine = wired.settings, wired.usage, wired.engine
    now = engine.clock()
    if endpoint == "metrics":
        window = service.parse_window(
            raw_from=request.args.get("from"), raw_to=request.args.get("to"), now=now
        )
        return json_response(
            runtime.run(
                service.metrics(
                    usage=usage,
                    principal=principal,
                    window=window,
                    tenant=request.args.get("tenant"),
                    model=request.args.get("model"),
                    endpoint=request.args.get("endpoint"),
                )
            )
        )
    if endpoint == "realtime":
        return json_response(runtime.run(_realtime(principal)))
    if endpoint == "insights":
        window = service.parse_window(
            raw_from=request.args.get("from"), raw_to=request.args.get("to"), now=now
        )
        return json_response(runtime.run(insights.insights(usage=usage, principal=principal, window=window)))
    if endpoint == "stream":
        STREAMS.enter(settings.analytics_max_sse_connections)
        stream = analytics_stream.events(
            snapshot=lambda: SNAPSHOTS.get(principal, lambda: runtime.run(_realtime(principal))),
            interval_s=settings.analytics_realtime_interval / 1000,
            heartbeat_s=settings.analytics_sse_heartbeat_seconds,
            max_s=settings.analytics_sse_max_seconds,
            last_id=analytics_stream.last_event_id(request.headers.get("Last-Event-ID")),
            gate=STREAMS,
            event_name=None if request.args.get("events") == "message" else "metrics",
        )
        response = flask.Response(stream, mimetype="text/event-stream")
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Accel-Buffering"] = "no"
        return response
    if endpoint == "export":
        body = _body(request, usage_export.ExportRequest)
        window = service.parse_window(raw_from=body.from_, raw_to=body.to, now=now)
        return json_response(
            runtime.run(
                usage_export.export(
                    usage=usage,
                    blobs=engine.blobs,
                    tenant=service.scope_of(principal, body.tenant),
                    start=window.start,
                    end=window.end,
                    fmt=body.format,
                    max_part_bytes=settings.analytics_export_max_bytes,
                    prefix=settings.analytics_export_path,
                    url_ttl=dt.timedelta(seconds=settings.results_url_ttl_seconds),
                    now=now,
                )
            )
        )
    if endpoint == "reset":
        reset = _body(request, ResetRequest)
        return json_response(
            runtime.run(
                service.reset(
                    engine=engine,
                    usage=usage,
                    principal=principal,
                    tenant=reset.tenant,
                    caller=caller_info(request),
                )
            )
        )
    raise NotFound()


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
