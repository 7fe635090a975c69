"""Asynchronous reports: queue a job over an input in Cloud Storage, its status, download tokens, the cache
and the clean-up. The job itself runs as the engine's `report` kind (shared/kinds/report.py)."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import secrets
import uuid
from dataclasses import dataclass
from typing import Any, BinaryIO

from shared.errors import InvalidRequest, NotFound, PayloadTooLarge, RateLimited
from shared.kinds.report import CACHE_COLLECTION, PROGRESS_COLLECTION, ReportJob, output_object
from shared.models.auth import Principal
from shared.models.batch import BatchDoc, BatchStatus
from shared.models.reports import (
    ActiveJob,
    CacheStats,
    JobProgress,
    PerformanceMetrics,
    QueuedResponse,
    ReportState,
    ReportStatusResponse,
    UploadResponse,
)
from shared.ports import ObjectInfo, ReportStore, StreamingBlobs
from shared.reports.types import REPORT_TYPES
from shared.services import batches
from shared.services.batches import CallerInfo
from shared.services.engine import Engine
from shared.services.results import parse
from shared.services.status import get_owned_batch

JOBS = "reports"
UPLOADS = "report_uploads"
TOKENS = "report_tokens"
STATS = "report_stats"
TOKEN_MISSES = "report_token_misses"
TOKEN_BYTES = 32  # 256 random bits
CLEANUP_BATCH = 200


@dataclass(frozen=True)
class Reports:
    """What the reports service needs: the engine (jobs are its batches), the reports' own documents and
    the reports bucket."""

    engine: Engine
    store: ReportStore
    files: StreamingBlobs


class TooManyGuesses(RateLimited):
    """Too many unknown download tokens from this address; try again in a minute."""


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _check_type(report_type: str) -> None:
    if report_type not in REPORT_TYPES:
        raise InvalidRequest(
            f"unknown reportType {report_type!r}",
            details=[{"field": "reportType", "problem": f"one of {', '.join(sorted(REPORT_TYPES))}"}],
        )


def _input_object(owner: str, input_id: str) -> str:
    return f"inputs/{owner}/{input_id}.json"


def store_input(
    *, reports: Reports, principal: Principal, report_type: str, file: BinaryIO
) -> tuple[ObjectInfo, str]:
    """Stream a request's dataset into the reports bucket (blocking: call it off the event loop)."""
    _check_type(report_type)
    input_id = uuid.uuid4().hex
    info = reports.files.upload_file(
        object_name=_input_object(principal.tenant, input_id), file=file, content_type="application/json"
    )
    return info, input_id


async def open_upload(
    *,
    reports: Reports,
    principal: Principal,
    file_name: str,
    size_bytes: int,
    report_type: str,
    origin: str | None,
) -> UploadResponse:
    """A resumable upload session for exactly `size_bytes` (at most REPORTS_MAX_UPLOAD_BYTES)."""
    settings = reports.engine.settings
    _check_type(report_type)
    if size_bytes > settings.reports_max_upload_bytes:
        raise PayloadTooLarge(
            f"sizeBytes is {size_bytes}; the limit is {settings.reports_max_upload_bytes} bytes",
            details=[{"field": "sizeBytes", "problem": f"at most {settings.reports_max_upload_bytes}"}],
        )
    upload_id = uuid.uuid4().hex
    object_name = _input_object(principal.tenant, upload_id)
    url = await reports.files.upload_session(
        object_name=object_name, size=size_bytes, content_type="application/json", origin=origin
    )
    now = reports.engine.clock()
    await reports.store.create(
        collection=UPLOADS,
        doc_id=upload_id,
        fields={
            "owner": principal.tenant,
            "object_name": object_name,
            "file_name": file_name,
            "size_bytes": size_bytes,
            "report_type": report_type,
            "created_at": now,
            "job_id": None,
        },
    )
    return UploadResponse(
        upload_id=upload_id,
        upload_url=url,
        size_bytes=size_bytes,
        max_bytes=settings.reports_max_upload_bytes,
        expires_at=now + dt.timedelta(days=7),  # Cloud Storage keeps a resumable session a week
    )


async def queue_upload(
    *,
    reports: Reports,
    principal: Principal,
    report_type: str,
    user_name: str,
    upload_id: str,
    is_large_dataset: bool,
    caller: CallerInfo,
) -> QueuedResponse:
    """Queue a job over an uploaded file. A file bigger than announced, or than the cap, is refused and
    deleted; a second queue of the same upload returns the job it already made."""
    _check_type(report_type)
    upload = await reports.store.get(collection=UPLOADS, doc_id=upload_id) if upload_id.isalnum() else None
    if upload is None or upload["owner"] != principal.tenant:
        raise NotFound(f"no upload {upload_id}")
    if upload.get("job_id"):
        return await _queued(reports=reports, principal=principal, job_id=upload["job_id"], again=True)
    info = await reports.files.stat(object_name=upload["object_name"])
    if info is None:
        raise InvalidRequest(
            "the upload is not complete", details=[{"field": "uploadId", "problem": "no file uploaded yet"}]
        )
    limit = min(int(upload["size_bytes"]), reports.engine.settings.reports_max_upload_bytes)
    if info.size > limit:
        # Cloud Storage refuses bytes beyond the announced size; this check keeps the same promise where the
        # storage does not (the local emulator).
        await reports.files.delete(object_name=upload["object_name"])
        raise PayloadTooLarge(f"the uploaded file has {info.size} bytes; the session allowed {limit}")
    response = await queue_job(
        reports=reports,
        principal=principal,
        report_type=report_type,
        user_name=user_name,
        info=info,
        input_id=upload_id,
        is_large_dataset=is_large_dataset,
        caller=caller,
    )
    await reports.store.merge(collection=UPLOADS, doc_id=upload_id, fields={"job_id": response.job_id})
    return response


async def queue_job(
    *,
    reports: Reports,
    principal: Principal,
    report_type: str,
    user_name: str,
    info: ObjectInfo,
    input_id: str,
    is_large_dataset: bool,
    caller: CallerInfo,
) -> QueuedResponse:
    """Queue a report job over a stored input: a batch of the engine's `report` kind (one item)."""
    _check_type(report_type)
    engine, store = reports.engine, reports.store
    owner = principal.tenant
    # Same content (its MD5, as Cloud Storage computed it, and size), type and options: the same report.
    checksum = info.md5_hash or f"generation-{info.generation}"
    cache_key = hashlib.sha256(
        f"{owner}\x00{report_type}\x00v1\x00{checksum}\x00{info.size}".encode()
    ).hexdigest()
    cached = await _cached(reports=reports, owner=owner, cache_key=cache_key)
    await store.increment(collection=STATS, doc_id=owner, counts={"hits" if cached else "misses": 1})
    job_id = batches.batch_id_for(principal, input_id)  # the batch id the engine derives from this key
    now = engine.clock()
    await store.create(
        collection=JOBS,
        doc_id=job_id,
        fields={
            "owner": owner,
            "user_name": user_name,
            "report_type": report_type,
            "is_large_dataset": is_large_dataset,
            "input_object": info.name,
            "input_bytes": info.size,
            "cache_key": cache_key,
            "created_at": now,
        },
    )
    request = ReportJob(
        report_type=report_type,
        user_name=user_name,
        input_object=info.name,
        input_generation=info.generation,
        input_bytes=info.size,
        cache_key=cache_key,
        cached=cached,
        options={  # type: ignore[arg-type]
            "concurrency": 1,
            "timeout": engine.settings.batch_timeout_limit,
            "wait": False,
            "retryPolicy": {"maxRetries": 3, "baseDelay": 2000, "maxDelay": 30_000},
        },
    )
    await batches.submit(
        engine=engine,
        principal=principal,
        kind_name="report",
        body=request.model_dump_json(by_alias=True).encode(),
        idempotency_key=input_id,
        caller=caller,
        private=True,
    )
    return await _queued(reports=reports, principal=principal, job_id=job_id, again=False)


async def _queued(*, reports: Reports, principal: Principal, job_id: str, again: bool) -> QueuedResponse:
    batch = await get_owned_batch(engine=reports.engine, principal=principal, batch_id=job_id)
    return QueuedResponse(
        job_id=job_id,
        status=ReportState.QUEUED,
        message="job already queued from this upload" if again else "job queued",
        status_url=f"{reports.engine.settings.function_url('reports')}/status/{job_id}",
        created_at=batch.created_at,
    )


async def _cached(*, reports: Reports, owner: str, cache_key: str) -> dict[str, Any] | None:
    entry = await reports.store.get(collection=CACHE_COLLECTION, doc_id=cache_key)
    if entry is None or entry.get("owner") != owner:
        return None
    if await reports.files.stat(object_name=entry["object_name"]) is None:
        return None  # the report was cleaned up
    result: dict[str, Any] = entry["result"]
    return result


def _state(batch: BatchDoc, result: dict[str, Any] | None) -> ReportState:
    if result is not None:
        return ReportState.COMPLETED if result.get("success") else ReportState.FAILED
    if batch.status.is_final:
        return ReportState.FAILED
    return ReportState.PROCESSING if batch.status is BatchStatus.RUNNING else ReportState.QUEUED


async def status(*, reports: Reports, principal: Principal, job_id: str) -> ReportStatusResponse:
    """The job's state; while it runs, what it has read; once completed, a fresh download token."""
    engine = reports.engine
    batch = await get_owned_batch(engine=engine, principal=principal, batch_id=job_id)
    if batch.kind != "report":
        raise NotFound(f"no batch {job_id}")
    lines = await engine.store.result_lines(job_id, 0, 1)
    result = parse(lines[0]) if 0 in lines else None
    state = _state(batch, result)
    response = ReportStatusResponse(
        job_id=job_id,
        status=state,
        message=_message(state, batch, result),
        report_type=batch.params.get("reportType", ""),
        user_name=batch.params.get("userName", ""),
        created_at=batch.created_at,
    )
    if state is ReportState.PROCESSING:
        progress = await reports.store.get(collection=PROGRESS_COLLECTION, doc_id=job_id)
        if progress is not None:
            total = int(progress.get("bytes_total") or 0)
            read = int(progress.get("bytes_read") or 0)
            response.progress = JobProgress(
                bytes_read=read,
                bytes_total=total,
                records_read=int(progress.get("records_read") or 0),
                percent=round(100.0 * read / total, 1) if total else 0.0,
            )
    if result is None:
        response.completed_at = batch.finished_at if state is ReportState.FAILED else None
        return response
    # The report's own end (not the batch's fan-in, which follows it, nor the time of this read).
    ended = result.get("completedAt")
    response.completed_at = dt.datetime.fromisoformat(ended) if ended else batch.finished_at or engine.clock()
    if state is ReportState.FAILED:
        return response
    metrics = result["performanceMetrics"]
    response.file_name = result["fileName"]
    response.file_size_bytes = result["fileSizeBytes"]
    response.records_invalid = result.get("recordsInvalid")
    response.cache_hit = result.get("cacheHit")
    response.performance_metrics = PerformanceMetrics(
        processing_time_ms=metrics["processingTimeMs"],
        memory_usage_mb=math.ceil(metrics["memoryUsageMB"]),
        records_processed=metrics["recordsProcessed"],
    )
    token, expires_at = await _mint_token(reports=reports, owner=batch.owner, job_id=job_id, result=result)
    response.download_url = f"{engine.settings.function_url('reports')}/download/{token}"
    response.download_expires_at = expires_at
    return response


def _message(state: ReportState, batch: BatchDoc, result: dict[str, Any] | None) -> str:
    if state is ReportState.COMPLETED:
        return "Reporte generado exitosamente"
    if state is ReportState.FAILED:
        if result is not None and result.get("error"):
            return str(result["error"].get("message") or "the report failed")
        return batch.stop_reason or "the report failed"
    if state is ReportState.PROCESSING:
        return "Generando reporte"
    return "En cola"


async def _mint_token(
    *, reports: Reports, owner: str, job_id: str, result: dict[str, Any]
) -> tuple[str, dt.datetime]:
    """A new download token (256 random bits), stored only as its SHA-256, valid REPORTS_TOKEN_HOURS."""
    settings = reports.engine.settings
    token = secrets.token_urlsafe(TOKEN_BYTES)
    now = reports.engine.clock()
    expires_at = now + dt.timedelta(hours=settings.reports_token_hours)
    await reports.store.create(
        collection=TOKENS,
        doc_id=_hash(token),
        fields={
            "owner": owner,
            "job_id": job_id,
            "object_name": result["objectName"],
            "file_name": result["fileName"],
            "created_at": now,
            "expire_at": expires_at,  # also the TTL field
        },
    )
    return token, expires_at


async def download_url(*, reports: Reports, token: str, client_address: str) -> str:
    """A short-lived signed URL of the token's report. Unknown or expired tokens are 404; an address that
    guessed too many in a minute is refused (429) before the lookup."""
    engine, store = reports.engine, reports.store
    now = engine.clock()
    minute = now.strftime("%Y%m%d%H%M")
    misses_id = hashlib.sha256(f"{client_address}\x00{minute}".encode()).hexdigest()
    misses = await store.get(collection=TOKEN_MISSES, doc_id=misses_id)
    limit = engine.settings.reports_token_misses_per_minute
    if misses is not None and int(misses.get("count", 0)) >= limit:
        raise TooManyGuesses(
            f"more than {limit} unknown download tokens in a minute from this address",
            retry_after_s=60 - now.second,
        )
    entry = await store.get(collection=TOKENS, doc_id=_hash(token)) if 20 <= len(token) <= 100 else None
    if entry is None or entry["expire_at"] <= now:
        await store.increment(collection=TOKEN_MISSES, doc_id=misses_id, counts={"count": 1})
        await store.merge(
            collection=TOKEN_MISSES, doc_id=misses_id, fields={"expire_at": now + dt.timedelta(minutes=2)}
        )
        raise NotFound("unknown or expired download token")
    ttl = dt.timedelta(seconds=engine.settings.reports_download_url_seconds)
    return await reports.files.signed_url(
        object_name=entry["object_name"], ttl=ttl, file_name=entry["file_name"]
    )


async def active_jobs(*, reports: Reports, principal: Principal) -> list[ActiveJob]:
    """The tenant's report jobs not yet finished, oldest first (the order they run in)."""
    running = await reports.engine.store.active_batches(principal.tenant, limit=200)
    jobs = [batch for batch in running if batch.kind == "report"]
    return [
        ActiveJob(
            job_id=batch.batch_id,
            status=_state(batch, None),
            report_type=batch.params.get("reportType", ""),
            user_name=batch.params.get("userName", ""),
            created_at=batch.created_at,
        )
        for batch in sorted(jobs, key=lambda batch: batch.created_at)
    ]


async def cache_stats(*, reports: Reports, principal: Principal) -> CacheStats:
    entries, size = await reports.store.cache_sums(owner=principal.tenant)
    counters = await reports.store.get(collection=STATS, doc_id=principal.tenant) or {}
    hits, misses = int(counters.get("hits", 0)), int(counters.get("misses", 0))
    return CacheStats(
        entries=entries,
        hits=hits,
        misses=misses,
        hit_rate=round(hits / (hits + misses), 4) if hits + misses else 0.0,
        size_bytes=size,
    )


async def cleanup(*, reports: Reports) -> dict[str, int]:
    """Delete jobs, inputs, reports, cache entries, upload sessions and tokens older than
    REPORTS_RETENTION_HOURS. Safe to run twice: every deletion of something already gone is a no-op."""
    engine, store, files = reports.engine, reports.store, reports.files
    now = engine.clock()
    cutoff = now - dt.timedelta(hours=engine.settings.reports_retention_hours)
    counts = {"jobs": 0, "objects": 0, "cacheEntries": 0, "uploads": 0, "tokens": 0}
    for job_id, job in await store.older_than(
        collection=JOBS, field="created_at", before=cutoff, limit=CLEANUP_BATCH
    ):
        report_type = REPORT_TYPES.get(job["report_type"])
        if report_type is not None:
            output = output_object(owner=job["owner"], job_id=job_id, report_type=report_type.name)
            counts["objects"] += await files.delete(object_name=output)
        counts["objects"] += await files.delete(object_name=job["input_object"])
        await store.delete(collection=PROGRESS_COLLECTION, doc_id=job_id)
        await store.delete_batch_tree(batch_id=job_id)
        await store.delete(collection=JOBS, doc_id=job_id)
        counts["jobs"] += 1
    for key, _ in await store.older_than(
        collection=CACHE_COLLECTION, field="created_at", before=cutoff, limit=CLEANUP_BATCH
    ):
        await store.delete(collection=CACHE_COLLECTION, doc_id=key)
        counts["cacheEntries"] += 1
    for upload_id, upload in await store.older_than(
        collection=UPLOADS, field="created_at", before=cutoff, limit=CLEANUP_BATCH
    ):
        counts["objects"] += await files.delete(object_name=upload["object_name"])
        await store.delete(collection=UPLOADS, doc_id=upload_id)
        counts["uploads"] += 1
    for token_hash, _ in await store.older_than(
        collection=TOKENS, field="expire_at", before=now, limit=CLEANUP_BATCH
    ):
        await store.delete(collection=TOKENS, doc_id=token_hash)
        counts["tokens"] += 1
    return counts


def check_request_size(*, reports: Reports, content_length: int | None) -> None:
    """Refuse a body over REPORTS_MAX_REQUEST_BYTES before anything is read or stored."""
    limit = reports.engine.settings.reports_max_request_bytes
    if content_length is not None and content_length > limit:
        raise body_too_large(reports=reports, size=f"{content_length} bytes")


def body_too_large(*, reports: Reports, size: str = "larger than that") -> PayloadTooLarge:
    """The refusal of a body over REPORTS_MAX_REQUEST_BYTES, announced or found while it is read."""
    limit = reports.engine.settings.reports_max_request_bytes
    return PayloadTooLarge(
        f"the request body is {size}; the limit is {limit} bytes. For larger files open an upload session "
        "(POST /reports/uploads), upload the file to its URL, then POST /reports/queue"
    )
