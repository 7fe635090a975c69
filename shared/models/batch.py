"""Batch generation: the request a client sends, the documents stored, the responses returned."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.models.common import Answer, ApiModel, ClientModel


class BatchStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.CANCELLED})
ACTIVE_STATUSES = (BatchStatus.QUEUED, BatchStatus.RUNNING)


class ChunkState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in (ChunkState.DONE, ChunkState.FAILED, ChunkState.CANCELLED)


# --- what clients send -------------------------------------------------------------------------------


class RetryPolicy(ClientModel):
    max_retries: int = Field(ge=0, le=10)
    base_delay: int = Field(default=1000, ge=0, le=60_000)  # ms
    max_delay: int = Field(default=30_000, ge=0, le=600_000)  # ms
    backoff_multiplier: float = Field(default=2.0, ge=1.0, le=10.0)


class BatchOptions(ClientModel):
    concurrency: int | None = Field(default=None, ge=1)
    fail_fast: bool = False
    timeout: int | None = Field(default=None, ge=100)  # ms per request
    wait: bool | None = None
    retry_policy: RetryPolicy | None = None


# --- what is stored ----------------------------------------------------------------------------------


class ResolvedOptions(BaseModel):
    """Options with the platform's defaults applied; stored with the batch."""

    concurrency: int
    fail_fast: bool
    timeout_ms: int
    max_retries: int
    base_delay_ms: int
    max_delay_ms: int
    backoff_multiplier: float


class Stage(BaseModel):
    """Chunks `first` .. `first + count - 1`, run in `lanes` chains: chunks n, n + lanes, n + 2 x lanes...
    one after another in lane n. A stage starts when every chunk of the one before it is finished."""

    first: int
    count: int
    lanes: int

    @property
    def end(self) -> int:
        return self.first + self.count


class BatchDoc(BaseModel):
    batch_id: str
    owner: str
    kind: str
    status: BatchStatus
    created_at: dt.datetime
    deadline_at: dt.datetime
    finished_at: dt.datetime | None = None
    total: int  # items
    chunk_count: int
    chunk_size: int
    stages: list[Stage]
    options: ResolvedOptions
    params: dict[str, Any] = {}  # the kind's batch-wide settings (Plan.params)
    entry_starts: list[int] | None = None  # the first item of each result entry, when not one per item
    body_hash: str
    idempotency_key: str | None = None
    # False while the submit writes the chunks after the first of each lane (work has started on those); a
    # batch left so by a submit that died is stopped by the sweeper.
    plan_written: bool = True
    stop_reason: str | None = None
    finalized: bool = False
    results_object: str | None = None
    summary: dict[str, Any] | None = None
    totals: ResultTotals | None = None  # exact, written at fan-in

    @property
    def entries(self) -> int:
        """How many results the caller sees: one per item, or one per entry of `entry_starts`."""
        return self.total if self.entry_starts is None else len(self.entry_starts)

    def stage_of(self, chunk: int) -> Stage:
        return next(stage for stage in self.stages if stage.first <= chunk < stage.end)

    def following_in_lane(self, chunk: int) -> int | None:
        """The chunk that runs after `chunk` in its lane, None at the end of the lane."""
        stage = self.stage_of(chunk)
        following = chunk + stage.lanes
        return following if following < stage.end else None


class ResultTotals(BaseModel):
    """Sums over recorded results: kept per chunk by its worker, and exact for the batch at fan-in."""

    finished: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def successful(self) -> int:
        return self.finished - self.failed

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def plus(self, other: ResultTotals) -> ResultTotals:
        return ResultTotals(
            finished=self.finished + other.finished,
            failed=self.failed + other.failed,
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            cost_usd=self.cost_usd + other.cost_usd,
        )


class ChunkProgress(BaseModel):
    """What the status endpoint reads of a chunk (a projection: not its requests)."""

    index: int
    state: ChunkState
    claims: int
    progress: ResultTotals
    lease_expires_at: dt.datetime | None = None
    segment: int = 0
    finished_at: dt.datetime | None = None
    # The time of the document's last commit, as read: a finished chunk is never written again, so of the
    # lanes that end a stage together, the one whose release committed last is the one that chains on.
    version: dt.datetime | None = None


class ChunkDoc(BaseModel):
    batch_id: str
    owner: str
    index: int
    start: int
    end: int  # exclusive
    items: bytes  # the kind's items, one JSON array (read back with the kind's item_adapter)
    custom_ids: list[str | None]  # the items' customIds, so pages can read them by projection
    concurrency: int = 0  # this chunk's share of the batch's concurrency (0: all of it)
    state: ChunkState = ChunkState.PENDING
    segment: int = 0
    lease_owner: str | None = None
    lease_expires_at: dt.datetime | None = None
    claims: int = 0
    progress: ResultTotals = ResultTotals()  # results recorded so far, updated by the lease holder
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    error: str | None = None
    deferrals: int = 0  # times an item of the chunk asked to run later (ItemDeferred)
    deferred_until: dt.datetime | None = None  # when the chunk's current segment's task is scheduled


class ErrorInfo(ApiModel):
    code: str
    message: str
    status: int | None = None


class TokenUsage(Answer):
    input: int = 0
    output: int = 0
    cached: int = 0
    total: int = 0


# --- what is returned --------------------------------------------------------------------------------


class ItemResult(ApiModel):
    """The engine's fields of a result line; the kind's own fields (a response, matches, a label...) sit
    between `success` and `error`."""

    index: int
    custom_id: str | None
    status: str  # succeeded | failed | pending | cancelled
    success: bool
    error: ErrorInfo | None = None
    tokens_used: int | None = None  # the seed's integer: input + output tokens
    tokens: TokenUsage | None = None
    processing_time: int | None = None  # ms
    attempts: int | None = None


class Summary(Answer):
    total: int
    successful: int
    failed: int
    cancelled: int
    pending: int
    total_time: int  # ms
    total_tokens: int
    cost_usd: float


class SubmitResponse(Answer):
    message: str
    batch_id: str
    kind: str
    status: BatchStatus
    results: list[dict[str, Any]] | None = None
    summary: dict[str, Any] | None = None
    status_url: str


class Pagination(Answer):
    offset: int
    limit: int
    total: int
    next_offset: int | None


class BatchStatusResponse(Answer):
    batch_id: str
    kind: str
    status: BatchStatus
    created_at: dt.datetime
    finished_at: dt.datetime | None
    deadline_at: dt.datetime
    stop_reason: str | None
    progress: dict[str, int | float]
    timings: dict[str, int | None]
    tokens: TokenUsage
    cost_usd: float
    options: dict[str, Any]
    summary: dict[str, Any] | None = None  # once finished
    results: list[dict[str, Any]]
    pagination: Pagination
    results_url: str | None = None
    results_url_expires_at: dt.datetime | None = None


class ActiveBatch(Answer):
    batch_id: str
    kind: str
    status: BatchStatus
    owner: str
    created_at: dt.datetime
    total: int


class JobListing(Answer):
    """One job in `GET /batch/jobs`: any kind, with the same progress block as its status."""

    batch_id: str
    kind: str
    status: BatchStatus
    owner: str
    created_at: dt.datetime
    finished_at: dt.datetime | None
    deadline_at: dt.datetime
    stop_reason: str | None
    progress: dict[str, int | float]


class JobList(Answer):
    jobs: list[JobListing]
    next_cursor: str | None


# Task bodies ignore fields they do not know: during a rolling deploy a task enqueued by a newer instance
# (with a field added since) is delivered to an older one, which runs it as before instead of refusing it
# until a newer instance takes it. Only the platform's service accounts can send them (OIDC).
TASK_BODY = ConfigDict(extra="ignore")


class WorkMessage(BaseModel):
    """The body of a chunk task (ids, never payloads: Cloud Tasks caps task size)."""

    model_config = TASK_BODY

    batch_id: str
    chunk: int = Field(ge=0)
    segment: int = Field(default=0, ge=0)
    # The chunk's version as the submit wrote it (its update time), to claim it without reading it first.
    version: dt.datetime | None = None


class FinalizeMessage(BaseModel):
    """The body of a fan-in task."""

    model_config = TASK_BODY

    batch_id: str


class KindStats(Answer):
    """Batches by status, items, failures, tokens and throughput of finished batches."""

    batches: dict[BatchStatus, int]
    finished_batches: int
    items: int
    failed_items: int
    failure_rate: float = Field(description="a fraction of the items")
    total_tokens: int
    throughput_items_per_second: float


class BatchStats(KindStats):
    """`GET /batch/stats`: in all and by kind, over the caller's batches (an admin's: every tenant's)."""

    scope: str = Field(description="the tenant, or `all tenants`")
    by_kind: dict[str, KindStats]
