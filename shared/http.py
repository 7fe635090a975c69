"""What every HTTP entry point shares: errors mapped to responses in one place, authentication of public
calls (API key + rate limit) and of internal calls (OIDC from the platform's service accounts)."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

import flask
from pydantic import BaseModel
from werkzeug.exceptions import HTTPException

from shared import runtime
from shared.app import oidc_verifier, platform
from shared.errors import InvalidRequest, PlatformError
from shared.models.auth import Principal
from shared.services.batches import CallerInfo
from shared.settings import get_settings

log = logging.getLogger("platform")


def json_response(payload: BaseModel | dict[str, Any] | list[Any], status: int = 200) -> flask.Response:
    if isinstance(payload, BaseModel):
        body = payload.model_dump_json(by_alias=True)
    else:
        body = json.dumps(payload, default=str)
    return flask.Response(body, status=status, mimetype="application/json")


# A refused body is read on and dropped, so the client that is still sending gets the answer instead of a
# reset connection; past this much the connection is simply closed.
DISCARD_MAX_BYTES = 64 * 1024 * 1024


def error_response(
    body: dict[str, Any], status: int, headers: Mapping[str, str] | None = None
) -> flask.Response:
    """An error's JSON answer. For a 413 the rest of the body is read and dropped, a MiB at a time (never
    held), and the answer streams: functions-framework reads what the handler left of a request before a
    non-streamed answer, whole into memory, and fails (a 500) on a body cut off at its limit."""
    response = json_response(body, status)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    if status == 413 and flask.has_request_context():
        _discard_body(flask.request.environ.get("wsgi.input"))
        response.response = iter([response.get_data()])  # an iterator: a streamed answer
    return response


def _discard_body(stream: Any) -> None:
    read = 0
    with contextlib.suppress(OSError, ValueError):
        while stream is not None and read < DISCARD_MAX_BYTES:
            chunk = stream.read(1024 * 1024)
            if not chunk:
                return
            read += len(chunk)


def _platform_error(exc: PlatformError) -> flask.Response:
    if exc.http_status >= 500:
        log.warning(json.dumps({"severity": "WARNING", "error": exc.code, "message": exc.message}))
    return error_response(exc.to_body(), exc.http_status, exc.headers)


def _http_error(exc: HTTPException) -> flask.Response:
    code = (exc.name or "error").lower().replace(" ", "_")
    return error_response({"error": {"code": code, "message": exc.description}}, exc.code or 500)


def register_error_handlers(errorhandler: Callable[[Any], Callable[[Any], Any]]) -> None:
    """Map every error to a JSON response, once per function (functions-framework's `errorhandler`)."""
    errorhandler(PlatformError)(_platform_error)
    errorhandler(HTTPException)(_http_error)


def forwarded_client(forwarded_for: str, peer: str | None, *, hops: int) -> str:
    """The caller's address as the platform's own proxies saw it: the entry `hops` from the right of
    `X-Forwarded-For`. Google's front end (and the local gateway) append the peer they accepted the
    connection from; the entries left of it are whatever the client sent, so never trusted."""
    entries = [entry.strip() for entry in forwarded_for.split(",") if entry.strip()]
    if hops and len(entries) >= hops:
        return entries[-hops][:100]
    return (peer or "unknown")[:100]


def client_address(request: flask.Request) -> str:
    forwarded_for = request.headers.get("X-Forwarded-For", "")
    return forwarded_client(forwarded_for, request.remote_addr, hops=get_settings().forwarded_hops)


def caller_info(request: flask.Request) -> CallerInfo:
    return CallerInfo(
        remote_addr=client_address(request), user_agent=(request.headers.get("User-Agent") or "")[:300]
    )


def authenticate(request: flask.Request) -> Principal:
    """The API-key principal of a public call, after counting it against the tenant's rate limit."""
    wired = platform()

    async def _authenticate() -> Principal:
        principal = await wired.authenticator.authenticate(request.headers.get("Authorization"))
        await wired.rate_limiter.check(principal, now=wired.engine.clock())
        return principal

    return runtime.run(_authenticate())


def verify_internal(request: flask.Request, *, function_name: str, service_accounts: list[str]) -> str:
    """Accept only OIDC tokens of the given service accounts, minted for this function's own URL."""
    settings = get_settings()
    return oidc_verifier().verify(
        request.headers.get("Authorization"),
        audience=settings.function_url(function_name),
        allowed_emails=service_accounts,
    )


def int_arg(args: Mapping[str, str], name: str, default: int) -> int:
    """An integer query parameter; 400 naming it when it is not one."""
    raw = args.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise InvalidRequest(
            f"{name} must be an integer", details=[{"field": name, "problem": "not an integer"}]
        ) from exc
