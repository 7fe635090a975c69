"""The ports services depend on; adapters in shared/adapters implement them against Google Cloud."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

from shared.models.auth import ApiKeyRecord, AuditRecord
from shared.models.batch import BatchDoc, BatchStatus, ChunkDoc, ChunkProgress, ChunkState, ResultTotals
from shared.models.usage import UsageRecord
from shared.models.usage_stats import UsageStats


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


@dataclass(frozen=True)
class GuardedWrite:
    """A write of a document outside the engine's, committed atomically with a batch's creation.

    `path` is `collection/doc[/collection/doc...]`; `op` is `create` (fails if the document exists),
    `set` (replaces it) or `update` (merges into it, with `version`: only if the document is still at that
    version, as read)."""

    path: str
    op: str
    data: dict[str, Any]
    version: Any = None


class PreconditionFailed(Exception):
    """A guarded write found its document changed since it was read (read again and decide again)."""


class BatchStore(Protocol):
    async def create_batch(
        self,
        *,
        batch: BatchDoc,
        chunks: list[ChunkDoc],
        audit: AuditRecord,
        writes: Sequence[GuardedWrite] = (),
    ) -> dict[int, Any] | None: ...
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
    async def until_finalized(self, batch_id: str) -> bool: ...
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
    async def claimed_chunk_progress(self, batch_id: str) -> list[ChunkProgress]: ...
    async def result_lines(self, batch_id: str, start: int, end: int) -> dict[int, str]: ...
    def stream_pages(self, batch_id: str) -> AsyncIterator[ResultPage]: ...
    async def custom_ids(self, batch_id: str, start: int, end: int) -> dict[int, str | None]: ...
    async def expired_leases(self, now: dt.datetime, limit: int) -> list[ExpiredLease]: ...
    async def overdue_batches(self, now: dt.datetime, limit: int) -> list[BatchDoc]: ...
    async def unfinished_batches(self, created_before: dt.datetime, limit: int) -> list[BatchDoc]: ...
    async def active_batches(self, owner: str | None, limit: int) -> list[BatchDoc]: ...
    async def list_batches(
        self, *, owner: str | None, kind: str | None, status: str | None, limit: int, after: str | None
    ) -> list[BatchDoc]:
        """Newest first, from the batch after the one whose id is `after` (a cursor of the last page)."""
        ...

    async def count_batches(self, owner: str | None, kind: str, status: str) -> int: ...
    async def finished_batch_sums(self, owner: str | None, kind: str) -> dict[str, float]: ...
    async def write_audit(self, record: AuditRecord) -> None:
        """An audit record of a change made outside the batch documents (a collection deleted)."""
        ...

    async def put_chunks(self, *, batch_id: str, chunks: list[ChunkDoc]) -> None:
        """Write chunks of a batch not created yet (a streamed submit writes its chunks as it reads them,
        then `create_batch` with none)."""
        ...

    async def add_later_chunks(self, *, batch_id: str, chunks: list[ChunkDoc]) -> None:
        """Create the rest of the chunks of a batch already running, and mark its plan written once every one
        of them is. Never written over: a commit retried after it was applied writes nothing."""
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
        queue_name: str | None = None,
    ) -> bool:
        """Create a named HTTP task (on `queue_name` of the same project and region, or the engine's queue);
        False when a task of that name exists or existed recently."""
        ...


class BlobStore(Protocol):
    async def put(self, *, object_name: str, data: bytes, content_type: str) -> None: ...
    async def get(self, *, object_name: str) -> bytes: ...
    async def signed_url(self, *, object_name: str, ttl: dt.timedelta) -> str: ...
    async def put_parts(
        self, *, object_name: str, parts: AsyncIterator[bytes], content_type: str, if_absent: bool = False
    ) -> bool:
        """Write an object from parts as they come, never holding it whole (a 50,000-line results file);
        with `if_absent`, only if it does not exist (one upload, whoever races): False when it did."""
        ...


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


class KindRecords(Protocol):
    """A kind's own small documents (`collection/doc_id`), outside the engine's: progress of a long item,
    a cache, counters. Every write is a merge, so writing the same fields twice is harmless."""

    async def get(self, *, collection: str, doc_id: str) -> dict[str, Any] | None: ...
    async def merge(self, *, collection: str, doc_id: str, fields: dict[str, Any]) -> None: ...
    async def increment(self, *, collection: str, doc_id: str, counts: dict[str, int]) -> None: ...


@dataclass(frozen=True)
class ObjectInfo:
    name: str
    size: int
    generation: int
    md5_hash: str | None
    content_type: str | None
    updated: dt.datetime | None


class StreamingBlobs(Protocol):
    """Cloud Storage objects too large to hold in memory: read and written as streams (blocking file
    objects: use them off the event loop), and resumable upload sessions a client writes into directly."""

    def open_read(self, *, object_name: str, generation: int | None = None) -> BinaryIO: ...
    def open_write(self, *, object_name: str, content_type: str) -> BinaryIO:
        """A stream into a new version of the object: `close()` finishes it; leaving it as a context
        manager with an exception abandons it (no object is written)."""
        ...

    def upload_file(self, *, object_name: str, file: BinaryIO, content_type: str) -> ObjectInfo:
        """Upload a local file object (resumable, in chunks), never reading it whole into memory."""
        ...

    async def stat(self, *, object_name: str) -> ObjectInfo | None: ...
    async def upload_session(
        self, *, object_name: str, size: int, content_type: str, origin: str | None
    ) -> str:
        """A resumable upload session's URL for exactly `size` bytes (the client PUTs into it)."""
        ...

    async def copy(self, *, source: str, destination: str) -> ObjectInfo | None:
        """A server-side copy within the bucket; None when the source is gone."""
        ...

    async def delete(self, *, object_name: str) -> bool: ...
    async def signed_url(self, *, object_name: str, ttl: dt.timedelta, file_name: str) -> str:
        """A V4 signed GET URL that downloads the object as `file_name`."""
        ...


class ReportStore(KindRecords, Protocol):
    """The reports' own documents: jobs, upload sessions, download tokens, the cache and its counters."""

    async def create(self, *, collection: str, doc_id: str, fields: dict[str, Any]) -> bool:
        """Create the document; False when it exists."""
        ...

    async def delete(self, *, collection: str, doc_id: str) -> None: ...
    async def older_than(
        self, *, collection: str, field: str, before: dt.datetime, limit: int
    ) -> list[tuple[str, dict[str, Any]]]: ...
    async def cache_sums(self, *, owner: str) -> tuple[int, int]:
        """A tenant's cache entries and their total bytes."""
        ...

    async def delete_batch_tree(self, *, batch_id: str) -> None:
        """Delete a finished job's batch document with its chunks and pages (the clean-up)."""
        ...


# --- catalog images (the image queue, `functions/articulos.py`) -------------------------------------------


@dataclass(frozen=True)
class ImageCall:
    """An image model asked to remake `image` as `prompt` says (the image goes inline); with no image, to
    draw what `prompt` says."""

    model: str
    prompt: str
    image: bytes | None
    mime_type: str | None
    timeout_s: float


@dataclass(frozen=True)
class ImageReply:
    image: bytes | None  # the first inline image of the answer, if any
    mime_type: str | None
    input_tokens: int
    output_tokens: int


class ImageModel(Protocol):
    async def edit(self, call: ImageCall) -> ImageReply:
        """Raises errors.ModelError (with `is_transient` and the server's retry delay)."""
        ...


class ImageObjects(Protocol):
    """The catalog's image objects in Cloud Storage."""

    async def put(self, *, object_name: str, data: bytes, content_type: str) -> None: ...
    async def get(self, *, object_name: str) -> bytes: ...
    async def delete(self, *, object_name: str) -> None:
        """Delete the object; a missing object is not an error (deletes are retried)."""
        ...

    async def signed_url(self, *, object_name: str, ttl: dt.timedelta) -> str: ...
    async def names_older_than(self, *, prefix: str, before: dt.datetime) -> list[str]:
        """The names of the objects under `prefix` last written before `before`."""
        ...


ALL_TENANTS = "*"  # the scope of rollups over every tenant


@dataclass(frozen=True)
class UsageSummary:
    """A usage record without its events: who, when, and the statistics of its calls."""

    tenant: str
    at: dt.datetime
    stats: UsageStats


@dataclass(frozen=True)
class Rollup:
    """The merged statistics of one scope (a tenant, or ALL_TENANTS) over one minute, hour or day."""

    scope: str
    grain: str  # minute | hour | day
    start: dt.datetime
    stats: UsageStats
    expire_at: dt.datetime


class UsageStore(Protocol):
    """Usage records (written by the engine with its results) and the analytics' rollups of them."""

    async def usage_summaries(
        self, *, tenant: str | None, start: dt.datetime, end: dt.datetime
    ) -> list[UsageSummary]:
        """The records with `at` in [start, end), of one tenant or all (None), without their events, in one
        query."""
        ...

    async def tail_summaries(
        self, *, tenant: str | None, spans: list[tuple[dt.datetime, dt.datetime]]
    ) -> list[UsageSummary]:
        """The same for a few minutes' worth of [start, end) spans, looked up by minute (no query): its cost
        follows the minutes, so it is for recent spans and a window's partial minutes."""
        ...

    def usage_records(
        self, *, tenant: str | None, start: dt.datetime, end: dt.datetime
    ) -> AsyncIterator[UsageRecord]:
        """The records with `at` in [start, end), with their events, oldest first."""
        ...

    async def earliest_usage_at(self) -> dt.datetime | None: ...
    async def put_rollups(self, rollups: list[Rollup]) -> None:
        """Write rollups under ids derived from scope, grain and start (a repeat overwrites the same)."""
        ...

    async def rollups(
        self, *, scope: str | None, grain: str, start: dt.datetime, end: dt.datetime
    ) -> list[Rollup]:
        """The rollups of `grain` starting in [start, end), of one scope or of all (None)."""
        ...

    async def rollups_at(self, *, scope: str, periods: list[tuple[str, dt.datetime]]) -> list[Rollup]:
        """The rollups of one scope for the given (grain, start) periods, by id (absent ones: none)."""
        ...

    async def get_watermark(self) -> dt.datetime | None:
        """The end of the last minute rolled up."""
        ...

    async def set_watermark(self, at: dt.datetime) -> None: ...
    async def delete_usage(self, *, tenant: str | None) -> tuple[int, int]:
        """Delete the usage records of a tenant or of all: (records, calls) removed."""
        ...

    async def delete_rollups(self, *, tenant: str | None) -> int:
        """Delete a tenant's rollups, taking them out of the all-tenant rollups in the same commits; or every
        rollup (None). Returns how many rollups of the tenant (or in all) were deleted."""
        ...

    async def delete_expired(self, *, now: dt.datetime, limit: int) -> int:
        """Delete usage records and rollups whose `expire_at` is past (at most `limit` of each)."""
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


# --- Gemini Batch Mode jobs paid with credits (shared/kinds/batchmode.py, shared/services/batchmode.py) ----


@dataclass(frozen=True)
class BatchRow:
    """One inline request of a Gemini batch job; `key` comes back with its answer (in any order)."""

    key: str
    prompt: str
    image: bytes | None
    mime_type: str | None


@dataclass(frozen=True)
class BatchAnswer:
    """One inline response of a finished Gemini batch job: an image (and text), or an error."""

    key: str
    image: bytes | None
    mime_type: str | None
    text: str | None
    error: str | None
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class GeminiBatchJob:
    name: str
    display_name: str
    state: str  # JOB_STATE_PENDING, _RUNNING, _SUCCEEDED, _FAILED, _CANCELLED, _EXPIRED
    answers: list[BatchAnswer]  # once succeeded

    @property
    def done(self) -> bool:
        return self.state in FINAL_JOB_STATES


FINAL_JOB_STATES = frozenset(
    {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"}
)


class GeminiBatches(Protocol):
    """Gemini's Batch Mode (google-genai's `batches`). Errors are ModelError, transient or not."""

    async def create(self, *, model: str, rows: list[BatchRow], display_name: str) -> GeminiBatchJob: ...
    async def get(self, *, name: str) -> GeminiBatchJob | None:
        """The job, or None when Gemini no longer knows it."""
        ...

    async def find(self, *, display_name_part: str) -> GeminiBatchJob | None:
        """A job whose display name contains `display_name_part` (an orphan of a crashed submit)."""
        ...

    async def cancel(self, *, name: str) -> None: ...
    async def delete(self, *, name: str) -> None: ...


@dataclass(frozen=True)
class LedgerEntry:
    entry_id: str  # `{job}:debit`, `{job}:refund:{row}`, `grant:{id}`
    tenant: str
    units: int  # hundredths of a credit, signed: a debit is negative
    kind: str  # grant | debit | refund
    reason: str
    job_id: str | None
    at: dt.datetime


class Credits(Protocol):
    """Each tenant's balance and its ledger. The balance always equals the sum of the tenant's entries: an
    entry is created only if absent, in the same commit that moves the balance."""

    async def balance(self, *, tenant: str) -> tuple[int, Any]:
        """The tenant's balance (hundredths) and its version, for a debit guarded by it."""
        ...

    def debit_writes(self, *, entry: LedgerEntry, balance: int, version: Any) -> list[GuardedWrite]:
        """The writes of a debit, committed with the job it pays for (they fail if the balance moved)."""
        ...

    async def post(self, *, entries: list[LedgerEntry]) -> int:
        """Post the entries that are not in the ledger yet, moving the balance by their sum, in one
        transaction; returns the units posted now (0 when every entry was already there)."""
        ...

    async def entries(self, *, tenant: str, limit: int) -> list[LedgerEntry]:
        """The tenant's latest entries, newest first."""
        ...

    async def ledger_sum(self, *, tenant: str) -> int: ...


class BatchmodeJobs(Protocol):
    """The jobs of `POST /batch/create` (`batchmode_jobs/{id}`): what history lists and status adds."""

    def create_write(self, *, job_id: str, data: dict[str, Any]) -> GuardedWrite: ...
    async def get(self, *, job_id: str) -> dict[str, Any] | None: ...
    async def merge(self, *, job_id: str, fields: dict[str, Any]) -> None: ...
    async def history(
        self, *, tenant: str, job_type: str | None, limit: int, after: str | None
    ) -> list[dict[str, Any]]:
        """The tenant's jobs newest first (after the job `after`, for the next page)."""
        ...

    async def delete(self, *, job_id: str) -> None: ...


class WebhookQueue(Protocol):
    async def enqueue_webhook(
        self, *, task_id: str, url: str, body: bytes, headers: dict[str, str], queue_name: str
    ) -> bool:
        """A named Cloud Task POSTing `body` to an outside `url` (no OIDC token), retried by the queue; False
        when that name was taken."""
        ...
