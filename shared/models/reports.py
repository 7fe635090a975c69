"""Asynchronous reports: what clients send, and what the API returns (the seed's field names)."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any

from pydantic import Field

from shared.models.common import Answer, ClientModel


class ReportState(StrEnum):
    QUEUED = "Queued"
    PROCESSING = "Processing"
    COMPLETED = "Completed"
    FAILED = "Failed"


class QueueForm(ClientModel):
    """The form fields of `POST /reports/queue-multipart` (the file is `dataFile`)."""

    report_type: str = Field(min_length=1, max_length=100)
    user_name: str = Field(min_length=1, max_length=320)
    is_large_dataset: bool = False


class QueueJsonRequest(QueueForm):
    """`POST /reports/queue-json`: the dataset in `jsonData`, as a JSON text (the seed) or as JSON itself."""

    json_data: str | list[Any] | dict[str, Any]


class UploadRequest(ClientModel):
    """`POST /reports/uploads`: a resumable upload session for one file of exactly `sizeBytes`."""

    file_name: str = Field(min_length=1, max_length=200)
    size_bytes: int = Field(ge=1)
    report_type: str = Field(min_length=1, max_length=100)


class QueueUploadRequest(ClientModel):
    """`POST /reports/queue`: a job over a file uploaded through a session."""

    report_type: str = Field(min_length=1, max_length=100)
    user_name: str = Field(min_length=1, max_length=320)
    upload_id: str = Field(min_length=1, max_length=64)
    is_large_dataset: bool = True


class PerformanceMetrics(Answer):
    processing_time_ms: int
    # The seed's spelling both ways: a model reads back what it writes (the contract tests validate by alias).
    # Whole MB, rounded up, as the seed's clients read it (`"memoryUsageMB": 256`).
    memory_usage_mb: int = Field(validation_alias="memoryUsageMB", serialization_alias="memoryUsageMB")
    records_processed: int


class JobProgress(Answer):
    bytes_read: int
    bytes_total: int
    records_read: int
    percent: float


class QueuedResponse(Answer):
    job_id: str
    status: ReportState
    message: str
    status_url: str
    created_at: dt.datetime


class UploadResponse(Answer):
    upload_id: str
    upload_url: str
    method: str = "PUT"
    size_bytes: int
    max_bytes: int
    expires_at: dt.datetime


class ReportStatusResponse(Answer):
    job_id: str
    status: ReportState
    message: str
    report_type: str
    user_name: str
    created_at: dt.datetime
    completed_at: dt.datetime | None = None
    file_name: str | None = None
    file_size_bytes: int | None = None
    download_url: str | None = None
    download_expires_at: dt.datetime | None = None
    performance_metrics: PerformanceMetrics | None = None
    progress: JobProgress | None = None
    records_invalid: int | None = None
    cache_hit: bool | None = None


class ActiveJob(Answer):
    job_id: str
    status: ReportState
    report_type: str
    user_name: str
    created_at: dt.datetime


class CacheStats(Answer):
    """`GET /reports/cache-stats`: the tenant's report cache."""

    entries: int
    hits: int
    misses: int
    hit_rate: float = Field(description="a fraction of the lookups")
    # Named by the validation and serialization aliases, so that the service builds it by its name.
    size_bytes: int = Field(validation_alias="bytes", serialization_alias="bytes")
