"""The answers' shapes that only the API documents: the error envelope and the lists and acknowledgements the
entry points build around the services' models. (A handler that returns a dict is held to these by the
contract tests: schemathesis checks every answer against the document.)"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from shared.models.batch import ActiveBatch, BatchStatus
from shared.models.common import ApiModel
from shared.models.reports import ActiveJob


class ErrorInfo(BaseModel):
    """`code` is stable and machine-readable; `details` name the fields at fault."""

    code: str
    message: str | None = None
    details: list[dict[str, Any]] | None = None


class ErrorBody(BaseModel):
    """Every error of the platform: `{"error": {"code", "message", "details"}}`."""

    error: ErrorInfo


class SeedErrorBody(BaseModel):
    """The catalog's errors: the seed's envelope with the platform's error next to it."""

    success: bool
    message: str | None
    data: None = None
    error: ErrorInfo


class SeedEnvelope(BaseModel):
    """Every answer of the catalog (the seed's `{"success", "message", "data"}`)."""

    model_config = ConfigDict(extra="allow")

    success: bool
    message: str | None = None
    data: Any = None


class JsonObject(BaseModel):
    """A JSON object whose fields the service composes (see the README for each)."""

    model_config = ConfigDict(extra="allow")


class ActiveBatches(ApiModel):
    batches: list[ActiveBatch]


class CancelledBatch(ApiModel):
    message: str
    batch_id: str
    status: BatchStatus


class ActiveJobs(ApiModel):
    jobs: list[ActiveJob]


class DeletedCollection(ApiModel):
    message: str
    name: str
