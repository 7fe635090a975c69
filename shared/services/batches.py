"""The engine's public side, for every kind: submit, status, active, cancel, stats."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
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
from shared.kinds.base import Kind, KindRequest, Plan
from shared.models.auth import AuditRecord, Principal
from shared.models.batch import (
    ActiveBatch,
    BatchDoc,
    BatchStatus,
    BatchStatusResponse,
    ChunkDoc,
    ChunkProgress,
    Pagination,
    ResolvedOptions,
    ResultTotals,
    Stage,
    SubmitResponse,
    Summary,
    TokenUsage,
)
from shared.ports import BatchSnapshot, BatchStore
from shared.services.engine import Engine, enqueue_chunk
from shared.services.results import entries, entry_items, missing_result, parse
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


def kind_of(engine: Engine, name: str) -> Kind[Any, Any]:
    kind = engine.kinds.get(name)
    if kind is None:
        raise NotFound(f"no kind of batch {name!r}")
    return kind


def parse_request(body: bytes, *, kind: Kind[Any, Any], settings: Settings) -> KindRequest:
    if len(body) > settings.batch_max_body_bytes:
        raise PayloadTooLarge(
            f"request body is {len(body)} bytes; the limit is {settings.batch_max_body_bytes}"
        )
    try:
        request = kind.request_model.model_validate_json(body)
    except ValidationError as exc:
        raise InvalidRequest("the request body is not valid", details=validation_details(exc)) from exc
    problems = kind.limits(request, settings=settings)
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


def resolve_options(request: KindRequest, *, settings: Settings) -> ResolvedOptions:
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


def _capped(deadline: dt.datetime, *, now: dt.datetime, seconds: float | None) -> dt.datetime:
    return deadline if seconds is None else min(deadline, now + dt.timedelta(seconds=seconds))


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


def _build_chunks(
    *, batch_id: str, owner: str, plan: Plan[Any], concurrency: int, settings: Settings
) -> tuple[list[ChunkDoc], list[Stage], int]:
    """Split each stage's items into chunks by count and bytes (a chunk never spans two stages), and plan
    each stage's lanes. Returns the chunks, the stages and the largest chunk size."""
    chunks: list[ChunkDoc] = []
    stages: list[Stage] = []
    largest = 1
    bounds = [*plan.stage_starts, len(plan.items)]
    for stage_start, stage_end in zip(bounds, bounds[1:], strict=False):
        lanes, chunk_size = plan_lanes(
            total=stage_end - stage_start, concurrency=concurrency, settings=settings
        )
        largest = max(largest, chunk_size)
        first = len(chunks)
        current: list[bytes] = []
        current_bytes = 0
        start = stage_start
        for index in range(stage_start, stage_end):
            encoded = plan.items[index].model_dump_json(exclude_none=True).encode()
            if current and (len(current) >= chunk_size or current_bytes + len(encoded) > CHUNK_BYTE_BUDGET):
                chunks.append(_chunk(batch_id, owner, len(chunks), start, current, plan.custom_ids))
                start, current, current_bytes = index, [], 0
            current.append(encoded)
            current_bytes += len(encoded)
        chunks.append(_chunk(batch_id, owner, len(chunks), start, current, plan.custom_ids))
        lanes = min(lanes, len(chunks) - first)
        stages.append(Stage(first=first, count=len(chunks) - first, lanes=lanes))
        for chunk in chunks[first:]:
            chunk.concurrency = lane_concurrency(
                chunk=chunk.index - first, lanes=lanes, concurrency=concurrency
            )
    return chunks, stages, largest


def _chunk(
    batch_id: str, owner: str, index: int, start: int, items: list[bytes], custom_ids: list[str | None]
) -> ChunkDoc:
    return ChunkDoc(
        batch_id=batch_id,
        owner=owner,
        index=index,
        start=start,
        end=start + len(items),
        items=b"[" + b",".join(items) + b"]",
        custom_ids=custom_ids[start : start + len(items)],
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
    kind_name: str,
    body: bytes,
    idempotency_key: str | None,
    caller: CallerInfo,
) -> tuple[SubmitResponse, int]:
    """Validate, store the batch and its chunks, enqueue the first chunks; wait for the batch when asked."""
    kind = kind_of(engine, kind_name)
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= 200:
        raise InvalidRequest(
            "invalid Idempotency-Key",
            details=[{"field": "Idempotency-Key", "problem": "1 to 200 characters"}],
        )
    settings = engine.settings
    request = parse_request(body, kind=kind, settings=settings)
    options = resolve_options(request, settings=settings)
    now = engine.clock()
    batch_id = _batch_id(principal, idempotency_key)
    body_hash = hashlib.sha256(f"{kind.name}\x00{request.model_dump_json()}".encode()).hexdigest()
    plan = await kind.plan(request, tenant=principal.tenant, batch_id=batch_id, ports=engine.ports)
    chunks, stages, chunk_size = _build_chunks(
        batch_id=batch_id,
        owner=principal.tenant,
        plan=plan,
        concurrency=options.concurrency,
        settings=settings,
    )
    batch = BatchDoc(
        batch_id=batch_id,
        owner=principal.tenant,
        kind=kind.name,
        status=BatchStatus.QUEUED,
        created_at=now,
        deadline_at=_capped(_deadline(now, len(plan.items), options), now=now, seconds=plan.deadline_s),
        total=len(plan.items),
        chunk_count=len(chunks),
        chunk_size=chunk_size,
        stages=stages,
        options=options,
        params=plan.params,
        entry_starts=plan.entry_starts,
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
    await enqueue_stage(engine=engine, batch=batch, stage=batch.stages[0])
    wait = request.options.wait
    if wait is None:
        wait = batch.entries <= settings.batch_wait_threshold
    status_url = f"{settings.function_url('batch')}/status/{batch_id}"
    if not wait:
        message = "batch accepted" if created else "batch already submitted with this Idempotency-Key"
        return SubmitResponse(
            message=message, batch_id=batch_id, kind=kind.name, status=batch.status, status_url=status_url
        ), 202
    finished = await _wait_until_final(engine=engine, batch=batch)
    results = await _page(engine=engine, batch=finished, offset=0, limit=MAX_PAGE)
    totals, started = await current_totals(engine=engine, batch=finished)
    done = finished.finalized
    return (
        SubmitResponse(
            message="batch finished" if done else "batch still running; poll the status URL",
            batch_id=batch_id,
            kind=kind.name,
            status=_display_status(finished, totals, started=started),
            results=results,
            summary=finished.summary if done and finished.summary else summarize(finished, totals),
            status_url=status_url,
        ),
        200 if done else 202,
    )


async def enqueue_stage(*, engine: Engine, batch: BatchDoc, stage: Stage) -> None:
    """Start a stage: the first chunk of each of its lanes (named tasks: enqueuing twice is harmless)."""
    for first in range(stage.first, stage.first + stage.lanes):
        await enqueue_chunk(engine=engine, batch_id=batch.batch_id, chunk=first, segment=0)


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


def summarize(
    batch: BatchDoc, totals: ResultTotals, *, results: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The engine's summary. Counts are of items from the totals, or of the caller's results when given
    (the fan-in of a kind whose results are not one per item)."""
    stopped = batch.status in (BatchStatus.CANCELLED, BatchStatus.FAILED) and batch.finalized
    if results is None:
        total, successful, failed = batch.total, totals.successful, totals.failed
    else:
        total = len(results)
        successful = sum(1 for result in results if result.get("success"))
        failed = sum(1 for result in results if result.get("status") == "failed")
    pending = total - successful - failed
    end = batch.finished_at or None
    return Summary(
        total=total,
        successful=successful,
        failed=failed,
        cancelled=pending if stopped else 0,
        pending=0 if stopped else pending,
        total_time=int(((end or dt.datetime.now(dt.UTC)) - batch.created_at).total_seconds() * 1000),
        total_tokens=totals.total_tokens,
        cost_usd=round(totals.cost_usd, 8),
    ).model_dump(by_alias=True)


async def _page(*, engine: Engine, batch: BatchDoc, offset: int, limit: int) -> list[dict[str, Any]]:
    """The caller's results [offset, offset + limit), in order, joined to their customIds."""
    end = min(offset + limit, batch.entries)
    if offset >= end:
        return []
    first, last = entry_items(batch, offset, end)
    lines = await engine.store.result_lines(batch.batch_id, first, last)
    missing = len(lines) < last - first
    custom_ids = await engine.store.custom_ids(batch.batch_id, first, last) if missing else {}
    stopped = batch.status in (BatchStatus.CANCELLED, BatchStatus.FAILED) and batch.finalized
    items = {
        index: parse(lines[index])
        if index in lines
        else missing_result(index, custom_ids.get(index), stopped=stopped)
        for index in range(first, last)
    }
    return entries(kind=kind_of(engine, batch.kind), batch=batch, start=offset, end=end, items=items)


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
    end = min(offset + limit, batch.entries)
    return BatchStatusResponse(
        batch_id=batch_id,
        kind=batch.kind,
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
            "pending": summary["pending"],
            "cancelled": summary["cancelled"],
            "percent": round(100.0 * totals.finished / batch.total, 2),
        },
        timings={
            "elapsedMs": summary["totalTime"],
            "totalTimeMs": summary["totalTime"] if batch.finalized else None,
        },
        tokens=TokenUsage(
            input=totals.input_tokens,
            output=totals.output_tokens,
            cached=totals.cached_tokens,
            total=totals.total_tokens,
        ),
        cost_usd=round(totals.cost_usd, 8),
        options={to_camel(name): value for name, value in batch.options.model_dump().items()},
        summary=batch.summary if batch.finalized else None,
        results=page,
        pagination=Pagination(
            offset=offset, limit=limit, total=batch.entries, next_offset=end if end < batch.entries else None
        ),
        results_url=results_url,
        results_url_expires_at=expires_at,
    )


async def active(*, engine: Engine, principal: Principal) -> list[ActiveBatch]:
    owner = None if principal.is_admin else principal.tenant
    batches = await engine.store.active_batches(owner, limit=200)
    return [
        ActiveBatch(
            batch_id=b.batch_id,
            kind=b.kind,
            status=b.status,
            owner=b.owner,
            created_at=b.created_at,
            total=b.entries,
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
    """Batches by status, items, failures, tokens and throughput: in all and by kind."""
    owner = None if principal.is_admin else principal.tenant
    names = list(engine.kinds)
    sums = await asyncio.gather(*(_kind_sums(engine=engine, owner=owner, kind=name) for name in names))
    by_kind = {name: _stats_view(kind_sums) for name, kind_sums in zip(names, sums, strict=True)}
    everything: dict[str, Any] = {}
    for kind_sums in sums:
        for key, value in kind_sums.items():
            everything[key] = everything.get(key, 0) + value
    return {"scope": "all tenants" if owner is None else owner, **_stats_view(everything), "byKind": by_kind}


async def _kind_sums(*, engine: Engine, owner: str | None, kind: str) -> dict[str, float]:
    counts = await asyncio.gather(*(engine.store.count_batches(owner, kind, s.value) for s in BatchStatus))
    sums = await engine.store.finished_batch_sums(owner, kind)
    return {f"status:{s.value}": float(n) for s, n in zip(BatchStatus, counts, strict=True)} | sums


def _stats_view(sums: dict[str, float]) -> dict[str, Any]:
    items, failed, time_ms = sums.get("items", 0.0), sums.get("failed", 0.0), sums.get("time_ms", 0.0)
    return {
        "batches": {s.value: int(sums.get(f"status:{s.value}", 0)) for s in BatchStatus},
        "finishedBatches": int(sums.get("batches", 0)),
        "items": int(items),
        "failedItems": int(failed),
        "failureRate": round(failed / items, 4) if items else 0.0,
        "totalTokens": int(sums.get("tokens", 0)),
        "throughputItemsPerSecond": round(items / (time_ms / 1000), 2) if time_ms else 0.0,
    }
