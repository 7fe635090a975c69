"""Batch generation, the public side: submit, status, active, cancel, stats."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cachetools import TTLCache
from pydantic import ValidationError
from pydantic.alias_generators import to_camel

from shared.errors import Conflict, InvalidRequest, NotFound, PayloadTooLarge
from shared.models.auth import AuditRecord, Principal
from shared.models.batch import (
    ActiveBatch,
    BatchDoc,
    BatchStatus,
    BatchStatusResponse,
    ChunkDoc,
    ChunkProgress,
    ErrorInfo,
    GenerateBatchRequest,
    GenerateResponse,
    ItemResult,
    Pagination,
    ResolvedOptions,
    ResultDoc,
    ResultTotals,
    StoredRequest,
    Summary,
    TokenUsage,
)
from shared.ports import BatchSnapshot, BatchStore
from shared.services.engine import Engine, enqueue_chunk, request_object
from shared.settings import Settings

# A chunk document stays well below Firestore's 1 MiB limit.
CHUNK_BYTE_BUDGET = 800 * 1024
MAX_DEADLINE = dt.timedelta(hours=24)
DEADLINE_SLACK = dt.timedelta(minutes=5)
MAX_PAGE = 1000


@dataclass(frozen=True)
class CallerInfo:
    remote_addr: str
    user_agent: str

    def audit(self, action: str, *, tenant: str, target: str, at: dt.datetime) -> AuditRecord:
        """The audit record of this caller's `action` on `target`."""
        return AuditRecord(
            tenant=tenant,
            action=action,
            target=target,
            at=at,
            remote_addr=self.remote_addr,
            user_agent=self.user_agent,
        )


def validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    """pydantic errors as `{"field": "requests.0.prompt", "problem": "..."}`."""
    return [
        {"field": ".".join(str(part) for part in error["loc"]) or "body", "problem": error["msg"]}
        for error in exc.errors(include_url=False, include_input=False)
    ]


def parse_request(body: bytes, *, settings: Settings) -> GenerateBatchRequest:
    if len(body) > settings.batch_max_body_bytes:
        raise PayloadTooLarge(
            f"request body is {len(body)} bytes; the limit is {settings.batch_max_body_bytes}"
        )
    try:
        request = GenerateBatchRequest.model_validate_json(body)
    except ValidationError as exc:
        raise InvalidRequest("the request body is not valid", details=validation_details(exc)) from exc
    problems: list[dict[str, Any]] = []
    if len(request.requests) > settings.batch_max_requests:
        problems.append({"field": "requests", "problem": f"at most {settings.batch_max_requests} requests"})
    options = request.options
    if options.concurrency is not None and options.concurrency > settings.batch_concurrency_limit:
        problems.append(
            {"field": "options.concurrency", "problem": f"must be 1 to {settings.batch_concurrency_limit}"}
        )
    if options.timeout is not None and options.timeout > settings.batch_timeout_limit:
        problems.append({"field": "options.timeout", "problem": f"at most {settings.batch_timeout_limit} ms"})
    if problems:
        raise InvalidRequest("the request exceeds the platform's limits", details=problems)
    return request


def resolve_options(request: GenerateBatchRequest, *, settings: Settings) -> ResolvedOptions:
    options = request.options
    policy = options.retry_policy
    return ResolvedOptions(
        concurrency=options.concurrency or settings.batch_max_concurrency,
        fail_fast=options.fail_fast,
        timeout_ms=options.timeout or settings.batch_default_timeout,
        max_retries=policy.max_retries if policy else settings.batch_max_retries,
        base_delay_ms=policy.base_delay if policy else 1000,
        max_delay_ms=policy.max_delay if policy else 30_000,
        backoff_multiplier=policy.backoff_multiplier if policy else 2.0,
    )


def _deadline(now: dt.datetime, total: int, options: ResolvedOptions) -> dt.datetime:
    waves = math.ceil(total / options.concurrency)
    worst = dt.timedelta(milliseconds=options.timeout_ms * (options.max_retries + 1) * waves)
    return now + min(worst + DEADLINE_SLACK, MAX_DEADLINE)


MIN_LANE_CHUNK = 20


def plan_lanes(*, total: int, concurrency: int, settings: Settings) -> tuple[int, int]:
    """How many lanes of chunks run at once, and the chunk size: each lane gets at most
    `batch_lane_concurrency` of the batch's concurrency, and no lane a chunk of fewer than 20 requests."""
    lanes = max(1, min(math.ceil(concurrency / settings.batch_lane_concurrency), total // MIN_LANE_CHUNK))
    return lanes, min(settings.batch_chunk_size, math.ceil(total / lanes))


def lane_concurrency(*, chunk: int, lanes: int, concurrency: int) -> int:
    """The share of the batch's concurrency that chunk `chunk` runs with (lanes split it evenly)."""
    lane = chunk % lanes
    return concurrency // lanes + (1 if lane < concurrency % lanes else 0)


async def _build_chunks(
    *,
    engine: Engine,
    batch_id: str,
    owner: str,
    request: GenerateBatchRequest,
    chunk_size: int,
) -> list[ChunkDoc]:
    """Split the requests into chunks by count and bytes; oversized prompts go to Cloud Storage."""
    settings = engine.settings
    chunks: list[ChunkDoc] = []
    current: list[StoredRequest] = []
    current_bytes = 0
    start = 0
    uploads = []
    for index, item in enumerate(request.requests):
        stored = StoredRequest(
            prompt=item.prompt,
            model=item.model or settings.batch_default_model,
            temperature=item.temperature,
            max_tokens=item.max_tokens,
            custom_id=item.custom_id,
            system_instruction=item.system_instruction,
        )
        size = len(item.prompt.encode()) + len((item.system_instruction or "").encode()) + 200
        if size > settings.batch_inline_limit_bytes:
            object_name = request_object(batch_id, index)
            payload = json.dumps({"prompt": item.prompt, "systemInstruction": item.system_instruction})
            uploads.append(
                engine.blobs.put(
                    object_name=object_name, data=payload.encode(), content_type="application/json"
                )
            )
            stored = stored.model_copy(
                update={"prompt": None, "system_instruction": None, "ref": object_name}
            )
            size = 300
        if current and (len(current) >= chunk_size or current_bytes + size > CHUNK_BYTE_BUDGET):
            chunks.append(_chunk(batch_id, owner, len(chunks), start, current))
            start, current, current_bytes = index, [], 0
        current.append(stored)
        current_bytes += size
    chunks.append(_chunk(batch_id, owner, len(chunks), start, current))
    await asyncio.gather(*uploads)
    return chunks


def _chunk(batch_id: str, owner: str, index: int, start: int, requests: list[StoredRequest]) -> ChunkDoc:
    return ChunkDoc(
        batch_id=batch_id,
        owner=owner,
        index=index,
        start=start,
        end=start + len(requests),
        requests=requests,
        custom_ids=[request.custom_id for request in requests],
    )


def _batch_id(principal: Principal, idempotency_key: str | None) -> str:
    if idempotency_key is None:
        return uuid.uuid4().hex
    # Same tenant + key -> same batch id, so a retried submit lands on the batch it already created.
    return hashlib.sha256(f"{principal.tenant}\x00{idempotency_key}".encode()).hexdigest()[:32]


async def submit(
    *,
    engine: Engine,
    principal: Principal,
    body: bytes,
    idempotency_key: str | None,
    caller: CallerInfo,
) -> tuple[GenerateResponse, int]:
    """Validate, store the batch and its chunks, enqueue the first chunk; wait for it when asked."""
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= 200:
        raise InvalidRequest(
            "invalid Idempotency-Key",
            details=[{"field": "Idempotency-Key", "problem": "1 to 200 characters"}],
        )
    request = parse_request(body, settings=engine.settings)
    options = resolve_options(request, settings=engine.settings)
    now = engine.clock()
    batch_id = _batch_id(principal, idempotency_key)
    body_hash = hashlib.sha256(request.model_dump_json().encode()).hexdigest()
    lanes, chunk_size = plan_lanes(
        total=len(request.requests), concurrency=options.concurrency, settings=engine.settings
    )
    chunks = await _build_chunks(
        engine=engine, batch_id=batch_id, owner=principal.tenant, request=request, chunk_size=chunk_size
    )
    for chunk in chunks:
        chunk.concurrency = lane_concurrency(chunk=chunk.index, lanes=lanes, concurrency=options.concurrency)
    batch = BatchDoc(
        batch_id=batch_id,
        owner=principal.tenant,
        status=BatchStatus.QUEUED,
        created_at=now,
        deadline_at=_deadline(now, len(request.requests), options),
        total=len(request.requests),
        chunk_count=len(chunks),
        chunk_size=chunk_size,
        lanes=lanes,
        options=options,
        body_hash=body_hash,
        idempotency_key=idempotency_key,
    )
    audit = caller.audit("batch.submit", tenant=principal.tenant, target=batch_id, at=now)
    created = await engine.store.create_batch(batch=batch, chunks=chunks, audit=audit)
    if not created:
        existing = await engine.store.get_batch(batch_id)
        if existing is None or existing.owner != principal.tenant or existing.body_hash != body_hash:
            raise Conflict("this Idempotency-Key was already used with a different request body")
        batch = existing
    # Enqueue even when the batch existed: a submit that crashed before this line is repaired by its retry,
    # and the task name makes a second enqueue a no-op.
    for first in range(min(batch.lanes, batch.chunk_count)):
        await enqueue_chunk(engine=engine, batch_id=batch_id, chunk=first, segment=0)
    wait = request.options.wait
    if wait is None:
        wait = batch.total <= engine.settings.batch_wait_threshold
    status_url = f"{engine.settings.function_url('batch')}/status/{batch_id}"
    if not wait:
        message = "batch accepted" if created else "batch already submitted with this Idempotency-Key"
        return GenerateResponse(
            message=message, batch_id=batch_id, status=batch.status, status_url=status_url
        ), 202
    finished = await _wait_until_final(engine=engine, batch=batch)
    results = await _page(engine=engine, batch=finished, offset=0, limit=MAX_PAGE)
    totals, started = await current_totals(engine=engine, batch=finished)
    done = finished.finalized
    return (
        GenerateResponse(
            message="batch finished" if done else "batch still running; poll the status URL",
            batch_id=batch_id,
            status=_display_status(finished, totals, started=started),
            results=results,
            summary=summarize(finished, totals),
            status_url=status_url,
        ),
        200 if done else 202,
    )


async def _wait_until_final(*, engine: Engine, batch: BatchDoc) -> BatchDoc:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(
        engine.settings.batch_max_wait_seconds, (batch.deadline_at - engine.clock()).total_seconds()
    )
    interval = 0.02
    current = batch
    while not current.finalized and loop.time() < deadline:
        await asyncio.sleep(interval)
        interval = min(interval * 1.5, 0.5)
        current = await engine.store.get_batch(batch.batch_id) or current
    return current


async def get_owned_batch(*, engine: Engine, principal: Principal, batch_id: str) -> BatchDoc:
    """The batch, if the caller may see it; otherwise NotFound, exactly as for a missing id."""
    return (await _read_owned_batch(engine=engine, principal=principal, batch_id=batch_id)).batch


async def _read_owned_batch(*, engine: Engine, principal: Principal, batch_id: str) -> BatchSnapshot:
    read = await engine.store.read_batch(batch_id) if _plausible_id(batch_id) else None
    if read is None or (read.batch.owner != principal.tenant and not principal.is_admin):
        raise NotFound(f"no batch {batch_id}")
    return read


def _plausible_id(batch_id: str) -> bool:
    return 0 < len(batch_id) <= 64 and batch_id.isalnum()


class ProgressCache:
    """The chunks' progress as status polls read it: on one instance, reads of a batch within `max_age_s` of
    each other share one query (a read costs about 0.5 ms of CPU per chunk, and workers publish progress only
    once a second). Until a first result shows, every read queries: the first result is seen as soon as it is
    recorded. Workers and the finalizer read the store directly: they need it fresh."""

    def __init__(
        self, store: BatchStore, *, max_age_s: float, timer: Callable[[], float] = time.monotonic
    ) -> None:
        self._store = store
        self._cache: TTLCache[str, list[ChunkProgress]] | None = (
            TTLCache(maxsize=1024, ttl=max_age_s, timer=timer) if max_age_s > 0 else None
        )

    async def read(self, batch_id: str) -> list[ChunkProgress]:
        if self._cache is None:
            return await self._store.chunk_progress(batch_id)
        chunks = self._cache.get(batch_id)
        if chunks is None:
            chunks = await self._store.chunk_progress(batch_id)
            if any(chunk.progress.finished for chunk in chunks):
                self._cache[batch_id] = chunks
        return chunks


async def current_totals(
    *, engine: Engine, batch: BatchDoc, progress: ProgressCache | None = None
) -> tuple[ResultTotals, bool]:
    """Totals so far and whether any chunk started: exact once fanned in, else summed from the chunks'
    progress (at most a second behind, plus the age `progress` allows), so a status read costs one small
    query, not a scan of the results."""
    if batch.totals is not None:
        return batch.totals, True
    chunks = await (
        progress.read(batch.batch_id) if progress else engine.store.chunk_progress(batch.batch_id)
    )
    totals = ResultTotals()
    for chunk in chunks:
        totals = totals.plus(chunk.progress)
    return totals, any(chunk.claims > 0 for chunk in chunks)


def _display_status(batch: BatchDoc, totals: ResultTotals, *, started: bool) -> BatchStatus:
    if batch.status is BatchStatus.QUEUED and (started or totals.finished > 0):
        return BatchStatus.RUNNING
    if batch.status is BatchStatus.QUEUED and batch.finalized:
        return BatchStatus.COMPLETED
    return batch.status


def summarize(batch: BatchDoc, totals: ResultTotals) -> Summary:
    pending = batch.total - totals.finished
    stopped = batch.status in (BatchStatus.CANCELLED, BatchStatus.FAILED) and batch.finalized
    end = batch.finished_at or None
    return Summary(
        total=batch.total,
        successful=totals.successful,
        failed=totals.failed,
        cancelled=pending if stopped else 0,
        pending=0 if stopped else pending,
        total_time=int(((end or dt.datetime.now(dt.UTC)) - batch.created_at).total_seconds() * 1000),
        total_tokens=totals.total_tokens,
        cost_usd=round(totals.cost_usd, 8),
    )


def item_result(result: ResultDoc) -> ItemResult:
    return ItemResult(
        index=result.index,
        custom_id=result.custom_id,
        status="succeeded" if result.success else "failed",
        success=result.success,
        response=result.response,
        response_ref=result.response_ref,
        error=result.error,
        tokens_used=TokenUsage(
            input=result.input_tokens,
            output=result.output_tokens,
            cached=result.cached_tokens,
            total=result.total_tokens,
        ),
        processing_time=result.processing_ms,
        attempts=result.attempts,
    )


def missing_result(index: int, custom_id: str | None, *, stopped: bool) -> ItemResult:
    if stopped:
        return ItemResult(
            index=index,
            custom_id=custom_id,
            status="cancelled",
            success=False,
            error=ErrorInfo(code="cancelled", message="the batch stopped before this request ran"),
        )
    return ItemResult(index=index, custom_id=custom_id, status="pending", success=False)


async def _page(*, engine: Engine, batch: BatchDoc, offset: int, limit: int) -> list[ItemResult]:
    end = min(offset + limit, batch.total)
    if offset >= end:
        return []
    lines = await engine.store.result_lines(batch.batch_id, offset, end)
    missing = len(lines) < end - offset
    custom_ids = await engine.store.custom_ids(batch.batch_id, offset, end) if missing else {}
    stopped = batch.status in (BatchStatus.CANCELLED, BatchStatus.FAILED) and batch.finalized
    page: list[ItemResult] = []
    for index in range(offset, end):
        line = lines.get(index)
        page.append(
            ItemResult.model_validate_json(line)
            if line is not None
            else missing_result(index, custom_ids.get(index), stopped=stopped)
        )
    return page


async def status(
    *,
    engine: Engine,
    principal: Principal,
    batch_id: str,
    offset: int,
    limit: int,
    progress: ProgressCache | None = None,
) -> BatchStatusResponse:
    if offset < 0 or not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(
            "invalid pagination",
            details=[{"field": "offset/limit", "problem": f"offset >= 0 and 1 <= limit <= {MAX_PAGE}"}],
        )
    batch = await get_owned_batch(engine=engine, principal=principal, batch_id=batch_id)
    (totals, started), page = await asyncio.gather(
        current_totals(engine=engine, batch=batch, progress=progress),
        _page(engine=engine, batch=batch, offset=offset, limit=limit),
    )
    summary = summarize(batch, totals)
    results_url = expires_at = None
    if batch.finalized and batch.results_object:
        ttl = dt.timedelta(seconds=engine.settings.results_url_ttl_seconds)
        results_url = await engine.blobs.signed_url(object_name=batch.results_object, ttl=ttl)
        expires_at = engine.clock() + ttl
    end = min(offset + limit, batch.total)
    return BatchStatusResponse(
        batch_id=batch_id,
        status=_display_status(batch, totals, started=started),
        created_at=batch.created_at,
        finished_at=batch.finished_at,
        deadline_at=batch.deadline_at,
        stop_reason=batch.stop_reason,
        progress={
            "total": batch.total,
            "finished": totals.finished,
            "successful": totals.successful,
            "failed": totals.failed,
            "pending": summary.pending,
            "cancelled": summary.cancelled,
            "percent": round(100.0 * totals.finished / batch.total, 2),
        },
        timings={
            "elapsedMs": summary.total_time,
            "totalTimeMs": summary.total_time if batch.finalized else None,
        },
        tokens=TokenUsage(
            input=totals.input_tokens,
            output=totals.output_tokens,
            cached=totals.cached_tokens,
            total=totals.total_tokens,
        ),
        cost_usd=round(totals.cost_usd, 8),
        options={to_camel(name): value for name, value in batch.options.model_dump().items()},
        results=page,
        pagination=Pagination(
            offset=offset, limit=limit, total=batch.total, next_offset=end if end < batch.total else None
        ),
        results_url=results_url,
        results_url_expires_at=expires_at,
    )


async def active(*, engine: Engine, principal: Principal) -> list[ActiveBatch]:
    owner = None if principal.is_admin else principal.tenant
    batches = await engine.store.active_batches(owner, limit=200)
    return [
        ActiveBatch(
            batch_id=b.batch_id, status=b.status, owner=b.owner, created_at=b.created_at, total=b.total
        )
        for b in batches
    ]


async def cancel(*, engine: Engine, principal: Principal, batch_id: str, caller: CallerInfo) -> BatchDoc:
    """Stop the batch: no new request starts; finished results are kept; status `cancelled`."""
    read = await _read_owned_batch(engine=engine, principal=principal, batch_id=batch_id)
    now = engine.clock()

    cancelled_now = False

    def _cancel(batch: BatchDoc) -> dict[str, Any] | None:
        nonlocal cancelled_now
        cancelled_now = not batch.status.is_final
        if not cancelled_now:
            return None
        return {
            "status": BatchStatus.CANCELLED.value,
            "stop_reason": "cancelled by request",
            "finished_at": now,
        }

    audit = caller.audit("batch.cancel", tenant=principal.tenant, target=batch_id, at=now)
    # One commit for the change and its audit record, decided on the batch as just read.
    batch = await engine.store.update_batch(batch_id, _cancel, read=read, audit=audit)
    if batch is None:
        raise NotFound(f"no batch {batch_id}")
    if not cancelled_now:
        raise Conflict(f"batch {batch_id} already {batch.status.value}")
    return batch


async def stats(*, engine: Engine, principal: Principal) -> dict[str, Any]:
    owner = None if principal.is_admin else principal.tenant
    counts = await asyncio.gather(*(engine.store.count_batches(owner, s.value) for s in BatchStatus))
    sums = await engine.store.finished_batch_sums(owner)
    items, time_ms = sums.get("items", 0.0), sums.get("time_ms", 0.0)
    return {
        "scope": "all tenants" if owner is None else owner,
        "batches": {s.value: n for s, n in zip(BatchStatus, counts, strict=True)},
        "finishedBatches": int(sums.get("batches", 0)),
        "items": int(items),
        "failedItems": int(sums.get("failed", 0)),
        "failureRate": round(sums.get("failed", 0.0) / items, 4) if items else 0.0,
        "totalTokens": int(sums.get("tokens", 0)),
        "throughputItemsPerSecond": round(items / (time_ms / 1000), 2) if time_ms else 0.0,
    }
