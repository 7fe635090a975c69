"""Shared shape of the internal functions (reached only through Cloud Tasks or Cloud Scheduler)."""

from __future__ import annotations

import json
from typing import TypeVar

import flask
from pydantic import BaseModel, ValidationError

from shared.errors import InvalidRequest
from shared.services.batches import validation_details

M = TypeVar("M", bound=BaseModel)


def parse_message(request: flask.Request, model: type[M]) -> M:
    """A task body as its pydantic model; a malformed body is a permanent failure (400)."""
    try:
        return model.model_validate_json(request.get_data(cache=False) or b"{}")
    except (ValidationError, json.JSONDecodeError) as exc:
        details = validation_details(exc) if isinstance(exc, ValidationError) else []
        raise InvalidRequest("malformed task body", details=details) from exc


def retry_count(request: flask.Request) -> int:
    try:
        return int(request.headers.get("X-CloudTasks-TaskRetryCount", "0"))
    except ValueError:
        return 0
