"""Gemini Batch Mode jobs paid with credits (`POST /batch/create`): what clients send, the job's states."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, field_validator

from shared.models.common import Answer, ApiModel, ClientModel

MAX_PROMPT_CHARS = 8_000
# 7 MB of image as base64 (4 characters per 3 bytes) plus a data-URL prefix.
MAX_IMAGE_BASE64_CHARS = 7 * 1024 * 1024 * 4 // 3 + 100


class JobType(StrEnum):
    CHARACTER = "character"
    FOOD = "food"
    PRODUCT = "product"
    TEXT = "text"  # text to image: no input image


class Mode(StrEnum):
    BATCH = "batch"  # always Gemini Batch Mode, at half price
    AUTO = "auto"  # small or urgent jobs run interactively, at the interactive price


class JobState(StrEnum):
    PENDING = "JOB_STATE_PENDING"
    RUNNING = "JOB_STATE_RUNNING"
    SUCCEEDED = "JOB_STATE_SUCCEEDED"
    FAILED = "JOB_STATE_FAILED"
    CANCELLED = "JOB_STATE_CANCELLED"
    EXPIRED = "JOB_STATE_EXPIRED"

    @property
    def is_final(self) -> bool:
        return self not in (JobState.PENDING, JobState.RUNNING)

    @property
    def status(self) -> str:
        """The seed's `status` of a job in this state."""
        return {
            JobState.PENDING: "pending",
            JobState.RUNNING: "processing",
            JobState.SUCCEEDED: "completed",
            JobState.CANCELLED: "cancelled",
        }.get(self, "failed")


class RowRequest(ClientModel):
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    image_base64: str | None = Field(default=None, min_length=1, max_length=MAX_IMAGE_BASE64_CHARS)


class Notify(ClientModel):
    url: str = Field(min_length=8, max_length=2048)


class CreateRequest(ClientModel):
    type: JobType
    requests: list[RowRequest] = Field(min_length=1)
    display_name: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    mode: Mode = Mode.BATCH
    deadline_seconds: int | None = Field(default=None, ge=1, le=30 * 86_400)
    notify: Notify | None = None


class GrantRequest(ClientModel):
    tenant: str = Field(min_length=1, max_length=128)
    amount: float = Field(gt=0, le=1_000_000)
    reason: str = Field(min_length=1, max_length=200)

    @field_validator("amount")
    @classmethod
    def _hundredths(cls, value: float) -> float:
        if abs(round(value * 100) - value * 100) > 1e-6:
            raise ValueError("at most two decimals")
        return value


# --- what the engine stores: the items of a job's batch ---------------------------------------------------


class RowInput(BaseModel):
    """One row as the kind reads it: its prompt and, when it has one, its image in Cloud Storage."""

    prompt: str
    image_object: str | None = None
    mime_type: str | None = None


class Step(BaseModel):
    """An item of a job's batch: `submit` (creates the Gemini batch job with every row), `poll` (until the
    job is final) or one `row` (its answer to Cloud Storage; interactive jobs carry the row's input)."""

    step: Literal["submit", "poll", "row"]
    row: int | None = None
    rows: list[RowInput] | None = None
    input: RowInput | None = None


class JobStatusView(ApiModel):
    """`GET /batch/status/{id}` of a Batch Mode job: the seed's fields, plus state and credits (documented
    here; the kind composes it in shared/kinds/batchmode.py's job_view)."""

    model_config = ConfigDict(extra="allow")

    id: str
    status: str
    type: str
    created_at: str
    results: list[str | None]
    errors: list[Any]
    success_count: int
    fail_count: int
    request_count: int
    state: JobState
    credit_cost: float
    credits_refunded: float


# --- answers ----------------------------------------------------------------------------------------------

RunMode = Literal["batch", "interactive"]


class CreatedJob(Answer):
    """`POST /batch/create`: the seed's answer, plus the mode it runs in and where to follow it."""

    id: str
    status: str = Field(description="the seed's status: pending, processing, completed, failed, cancelled")
    type: str = Field(description="batch-{type}")
    request_count: int
    credit_cost: float
    message: str
    mode: RunMode
    status_url: str


class HistoryEntry(Answer):
    """One job of `GET /batch/history`: the seed's fields, plus state, refunds and mode."""

    id: str
    status: str
    type: str
    created_at: str
    request_count: int
    success_count: int
    credit_cost: float
    state: JobState
    credits_refunded: float
    mode: RunMode


class History(RootModel[list[HistoryEntry]]):
    """`GET /batch/history`: the seed's list, newest first."""


class DeletedJob(Answer):
    message: str
    id: str


class LedgerLine(Answer):
    id: str
    kind: str = Field(description="grant, debit or refund")
    amount: float = Field(description="credits, signed: a debit is negative")
    reason: str
    job_id: str | None
    at: str


class CreditsView(Answer):
    """`GET /batch/credits`: the balance and the latest ledger entries."""

    tenant: str
    balance: float
    entries: list[LedgerLine]


class Granted(Answer):
    tenant: str
    granted: float
    balance: float
    entry_id: str


class WebhookSecret(Answer):
    tenant: str
    secret: str
    header: str = Field(description="the request header that carries the signature")
