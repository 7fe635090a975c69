"""What every HTTP entry point shares: errors mapped to responses in one place, authentication of public
calls (API key + rate limit) and of internal calls (OIDC from the platform's service accounts)."""

from __future__ import annotations

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


def _platform_error(exc: PlatformError) -> flask.Response:
    if exc.http_status >= 500:
        log.warning(json.dumps({"severity": "WARNING", "error": exc.code, "message": exc.message}))
    response = json_response(exc.to_body(), exc.http_status)
    for name, value in exc.headers.items():
        response.headers[name] = value
    return response


def _http_error(exc: HTTPException) -> flask.Response:
    code = (exc.name or "error").lower().replace(" ", "_")
    return json_response({"error": {"code": code, "message": exc.description}}, exc.code or 500)


def register_error_handlers(errorhandler: Callable[[Any], Callable[[Any], Any]]) -> None:
    """Map every error to a JSON response, once per function (functions-framework's `errorhandler`)."""
    errorhandler(PlatformError)(_platform_error)
    errorhandler(HTTPException)(_http_error)


def caller_info(request: flask.Request) -> CallerInfo:
    forwarded = request.headers.get("X-Forwarded-For", "")
    return CallerInfo(
        remote_addr=(forwarded.split(",")[0].strip() or request.remote_addr or "unknown")[:100],
        user_agent=(request.headers.get("User-Agent") or "")[:300],
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
