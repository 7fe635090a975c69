"""The ports services depend on; adapters in shared/adapters implement them against Google Cloud."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from shared.models.auth import ApiKeyRecord, AuditRecord
from shared.models.batch import BatchDoc, BatchStatus, ChunkDoc, ChunkProgress, ChunkState, ResultTotals
from shared.models.usage import UsageRecord


@dataclass(frozen=True)
class ChunkSnapshot:
    chunk: ChunkDoc
    version: Any  # opaque token for compare-and-set (Firestore update_time)


@dataclass(frozen=True)
class BatchSnapshot:
    batch: BatchDoc
    version: Any  # opaque token for compare-and-set (Firestore update_time)


@dataclass(frozen=True)
class BatchStop:
    """Whether a batch stopped, and why (a projection of its document)."""

    status: BatchStatus
    stop_reason: str | None


@dataclass(frozen=True)
class LeaseView:
    """A chunk's lease and state without its requests (a projection), with its compare-and-set version."""

    lease_owner: str | None
    state: ChunkState
    version: Any


@dataclass(frozen=True)
class ResultPage:
    """The results one commit of a chunk's lease holder recorded: each request's API result as a JSON line,
    aligned with `indices`, and their sums."""

    chunk: int
    indices: list[int]
    lines: list[str]
    totals: ResultTotals


@dataclass(frozen=True)
class ExpiredLease:
    batch_id: str
    chunk: int
    segment: int
    claims: int


class BatchStore(Protocol):
    async def create_batch(self, *, batch: BatchDoc, chunks: list[ChunkDoc], audit: AuditRecord) -> bool: ...
    async def get_batch(self, batch_id: str) -> BatchDoc | None: ...
    async def read_batch(self, batch_id: str) -> BatchSnapshot | None: ...
    async def update_batch(
        self,
        batch_id: str,
        mutate: Callable[[BatchDoc], dict[str, Any] | None],
        *,
        read: BatchSnapshot | None = None,
        audit: AuditRecord | None = None,
    ) -> BatchDoc | None: ...
    async def get_chunk(self, batch_id: str, chunk: int) -> ChunkSnapshot | None: ...
    async def get_lease(self, batch_id: str, chunk: int) -> LeaseView | None: ...
    async def get_stop(self, batch_id: str) -> BatchStop | None: ...
    async def update_chunk_if_unchanged(
        self, batch_id: str, chunk: int, *, version: Any, changes: dict[str, Any]
    ) -> Any | None: ...
    async def record_results(
        self,
        batch_id: str,
        chunk: int,
        *,
        version: Any,
        page: ResultPage | None,
        usage: UsageRecord | None,
        changes: dict[str, Any],
    ) -> Any | None: ...
    async def chunk_results(self, batch_id: str, chunk: int) -> list[ResultPage]: ...
    async def chunk_progress(self, batch_id: str) -> list[ChunkProgress]: ...
    async def result_lines(self, batch_id: str, start: int, end: int) -> dict[int, str]: ...
    def stream_pages(self, batch_id: str) -> AsyncIterator[ResultPage]: ...
    async def custom_ids(self, batch_id: str, start: int, end: int) -> dict[int, str | None]: ...
    async def expired_leases(self, now: dt.datetime, limit: int) -> list[ExpiredLease]: ...
    async def overdue_batches(self, now: dt.datetime, limit: int) -> list[BatchDoc]: ...
    async def active_batches(self, owner: str | None, limit: int) -> list[BatchDoc]: ...
    async def count_batches(self, owner: str | None, kind: str, status: str) -> int: ...
    async def finished_batch_sums(self, owner: str | None, kind: str) -> dict[str, float]: ...
    async def write_audit(self, record: AuditRecord) -> None:
        """An audit record of a change made outside the batch documents (a collection deleted)."""
        ...


class KeyStore(Protocol):
    async def get_api_key(self, key_hash: str) -> ApiKeyRecord | None: ...
    async def put_api_key(self, key_hash: str, record: ApiKeyRecord) -> None: ...
    async def add_requests(
        self, *, tenant: str, window: int, count: int, shards: int, expire_at: dt.datetime
    ) -> int: ...


class TaskQueue(Protocol):
    async def enqueue(
        self,
        *,
        task_id: str,
        function_name: str,
        body: bytes,
        service_account: str,
        schedule_time: dt.datetime | None = None,
    ) -> bool:
        """Create a named HTTP task; False when a task of that name exists or existed recently."""
        ...


class BlobStore(Protocol):
    async def put(self, *, object_name: str, data: bytes, content_type: str) -> None: ...
    async def get(self, *, object_name: str) -> bytes: ...
    async def signed_url(self, *, object_name: str, ttl: dt.timedelta) -> str: ...


@dataclass(frozen=True)
class ModelCall:
    model: str
    prompt: str
    system_instruction: str | None
    temperature: float | None
    max_tokens: int | None
    timeout_s: float
    # A JSON Schema the reply must follow: the model is asked for JSON (`application/json`) shaped by it.
    response_schema: dict[str, Any] | None = None


@dataclass(frozen=True)
class ModelReply:
    text: str
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    total_tokens: int


class TextModel(Protocol):
    async def generate(self, call: ModelCall) -> ModelReply:
        """Raises errors.ModelError (with `is_transient` and the server's retry delay)."""
        ...


@dataclass(frozen=True)
class EmbedCall:
    """Up to 100 texts embedded in one call (Gemini's batchEmbedContents)."""

    model: str
    texts: list[str]
    dimension: int | None  # outputDimensionality; None: the model's default
    task_type: str | None  # RETRIEVAL_DOCUMENT, RETRIEVAL_QUERY, ...
    timeout_s: float


@dataclass(frozen=True)
class EmbedReply:
    vectors: list[list[float]]  # one per text, in order
    input_tokens: int  # the API reports none for embeddings: estimated, about four characters a token


class EmbeddingModel(Protocol):
    async def embed(self, call: EmbedCall) -> EmbedReply:
        """Raises errors.ModelError (with `is_transient` and the server's retry delay)."""
        ...


@dataclass(frozen=True)
class VectorDocument:
    doc_id: str
    text: str
    metadata: dict[str, Any]
    embedding: list[float]


@dataclass(frozen=True)
class VectorMatch:
    doc_id: str
    text: str
    metadata: dict[str, Any]
    score: float  # cosine similarity: 1 is the same direction


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    model: str
    dimension: int
    created_at: dt.datetime
    document_count: int | None = None  # filled by list_collections


class VectorStore(Protocol):
    """A tenant's named collections of embedded documents (Firestore documents with a Vector field)."""

    async def get_collection(self, *, tenant: str, name: str) -> CollectionInfo | None: ...
    async def ensure_collection(self, *, tenant: str, info: CollectionInfo) -> CollectionInfo:
        """Create the collection if absent; returns the collection as stored (compare model and dimension)."""
        ...

    async def upsert(self, *, tenant: str, name: str, documents: list[VectorDocument]) -> None:
        """Write the documents under their ids (replacing any), in one commit: safe to repeat."""
        ...

    async def find_nearest(
        self, *, tenant: str, name: str, vector: list[float], top_k: int, where: dict[str, Any]
    ) -> list[VectorMatch]:
        """The `top_k` documents nearest to `vector` by cosine distance, best first, among those whose
        metadata equals `where` on every key (a pre-filter of Firestore's vector search)."""
        ...

    async def list_collections(self, *, tenant: str) -> list[CollectionInfo]: ...
    async def delete_collection(self, *, tenant: str, name: str) -> bool:
        """Delete the collection and its documents; False when it did not exist."""
        ...


# --- scheduled metric batches (shared/metrics) ------------------------------------------------------------


@dataclass(frozen=True)
class MetricQuery:
    """Filters of the calculated metrics, newest period first."""

    nombre: str | None = None
    tipo: str | None = None
    desde: dt.datetime | None = None  # periodo_inicio >= desde
    hasta: dt.datetime | None = None  # periodo_inicio < hasta
    dimension: tuple[str, Any] | None = None  # dimensiones.<key> == value


class MetricsStore(Protocol):
    """The marketplace's source collections (read only) and the metric runs' own documents."""

    def stream_range(
        self, *, collection: str, start: dt.datetime, end: dt.datetime
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Documents with `creada_en` in [start, end), oldest first, read in bounded pages."""
        ...

    async def created_at(self, *, collection: str, ids: list[str]) -> dict[str, dt.datetime]:
        """`creada_en` of the given documents (missing ones are left out)."""
        ...

    async def replace_metrics(self, *, nombre: str, periodo_inicio: dt.datetime, docs: dict[str, Any]) -> int:
        """Write the metric documents under their ids and delete the metric's other documents of that period;
        how many were deleted."""
        ...

    async def query_metrics(
        self, *, query: MetricQuery, limit: int, after: tuple[dt.datetime, str] | None
    ) -> list[tuple[str, dict[str, Any]]]: ...
    async def get_run(self, run_key: str) -> dict[str, Any] | None: ...
    async def begin_run(
        self, run_key: str, decide: Callable[[dict[str, Any] | None], dict[str, Any] | None]
    ) -> tuple[dict[str, Any], bool]:
        """In a transaction: `decide` gets the run (or None) and returns the run to write (None: keep it).
        Returns the run as stored and whether it was written."""
        ...

    async def update_run(self, run_key: str, changes: dict[str, Any]) -> None: ...
    async def put_outcome(self, run_key: str, outcome_id: str, data: dict[str, Any]) -> None: ...
    async def outcomes(self, run_key: str, batch_id: str) -> list[dict[str, Any]]: ...
    async def last_run(self, job_id: str) -> dict[str, Any] | None: ...
    async def delete_expired(self, *, collection: str, field_name: str, now: dt.datetime, limit: int) -> int:
        """Delete up to `limit` documents whose `field_name` is before `now` (with their run outcomes)."""
        ...

    async def ping(self) -> None: ...


@dataclass(frozen=True)
class ScheduledJob:
    name: str
    schedule: str
    time_zone: str
    state: str  # ENABLED, PAUSED, ... (Cloud Scheduler's)
    next_run: dt.datetime | None
    last_attempt: dt.datetime | None


class SchedulerJobs(Protocol):
    async def get_job(self, name: str) -> ScheduledJob | None: ...
