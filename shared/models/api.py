"""The answers' building blocks and the shapes the entry points build around the services' models: the error
envelope, the catalog's envelope, lists and acknowledgements. Every answer is a closed model (`Answer`,
`SeedAnswer`): the contract tests validate each real answer against its route's model strictly."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from shared.models.batch import ActiveBatch, BatchStatus
from shared.models.common import Answer, SeedAnswer
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


DataT = TypeVar("DataT")


class SeedEnvelope(SeedAnswer, Generic[DataT]):
    """An answer of the catalog: the seed's `{"success", "message", "data"}`, `data` of one shape a route."""

    success: bool
    message: str
    data: DataT


class ActiveBatches(Answer):
    batches: list[ActiveBatch]


class CancelledBatch(Answer):
    message: str
    batch_id: str
    status: BatchStatus


class ActiveJobs(Answer):
    jobs: list[ActiveJob]


class DeletedCollection(Answer):
    message: str
    name: str
