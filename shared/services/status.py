"""The engine's read side, for every kind: status with its page of results, active batches, stats."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Any

from cachetools import LRUCache, TTLCache
from pydantic.alias_generators import to_camel

from shared.errors import InvalidRequest, NotFound, StoreUnavailable
from shared.models.auth import Principal
from shared.models.batch import (
    ActiveBatch,
    BatchDoc,
    BatchStats,
    BatchStatus,
    BatchStatusResponse,
    ChunkProgress,
    JobList,
    JobListing,
    KindStats,
    Pagination,
    ResultTotals,
    Summary,
    TokenUsage,
)
from shared.ports import BatchSnapshot, BatchStore
from shared.services.engine import Engine, kind_of
from shared.services.results import entries, entry_items, missing_result, parse

log = logging.getLogger(__name__)

MAX_PAGE = 1000
# Past any batch, and within Firestore's 64-bit integers once a page is added (the page's lines are queried
# by index before the batch says how many entries it has).
MAX_OFFSET = 2**62


async def get_owned_batch(*, engine: Engine, principal: Principal, batch_id: str) -> BatchDoc:
    """The batch, if the caller may see it; otherwise NotFound, exactly as for a missing id."""
    return (await read_owned_batch(engine=engine, principal=principal, batch_id=batch_id)).batch


async def read_owned_batch(*, engine: Engine, principal: Principal, batch_id: str) -> BatchSnapshot:
    read = await engine.store.read_batch(batch_id) if _plausible_id(batch_id) else None
    if read is None or (read.batch.owner != principal.tenant and not principal.is_admin):
        raise NotFound(f"no batch {batch_id}")
    return read


def _plausible_id(batch_id: str) -> bool:
    return 0 < len(batch_id) <= 64 and batch_id.isalnum()


class ProgressCache:
    """The progress of a batch's claimed chunks as status polls read it (the others have none): on one
    instance, reads of a batch within `max_age_s` of each other share one query (a read costs about 0.5 ms of
    CPU per chunk, and workers publish progress only once a second). Until a first result shows, every read
    queries: the first result is seen as soon as it is recorded. Workers and the finalizer read every chunk
    from the store directly: they need it fresh, and count the chunks not claimed yet."""

    def __init__(
        self, store: BatchStore, *, max_age_s: float, timer: Callable[[], float] = time.monotonic
    ) -> None:
        self._store = store
        self._cache: TTLCache[str, list[ChunkProgress]] | None = (
            TTLCache(maxsize=1024, ttl=max_age_s, timer=timer) if max_age_s > 0 else None
        )
        # Batches seen fanned in on this instance: their totals are in the batch document, so a status poll
        # does not read their progress ahead of the batch (see `read_ahead`).
        self._fanned_in: LRUCache[str, bool] = LRUCache(maxsize=4096)

    async def read_ahead(self, batch_id: str) -> list[ChunkProgress] | None:
        """The progress, read beside the batch before knowing whether it is needed; None (no read) for a
        batch already seen fanned in."""
        if batch_id in self._fanned_in:
            return None
        return await self.read(batch_id)

    def seen_fanned_in(self, batch_id: str) -> None:
        self._fanned_in[batch_id] = True

    async def read(self, batch_id: str) -> list[ChunkProgress]:
        if self._cache is None:
            return await self._store.claimed_chunk_progress(batch_id)
        chunks = self._cache.get(batch_id)
        if chunks is None:
            chunks = await self._store.claimed_chunk_progress(batch_id)
            if any(chunk.progress.finished for chunk in chunks):
                self._cache[batch_id] = chunks
        return chunks


async def current_totals(
    *,
    engine: Engine,
    batch: BatchDoc,
    progress: ProgressCache | None = None,
    chunks: list[ChunkProgress] | None = None,
) -> tuple[ResultTotals, bool]:
    """Totals so far and whether any chunk started: exact once fanned in, else summed from the progress of
    the chunks ever claimed (at most a second behind, plus the age `progress` allows), so a status read costs
    one small query, not a scan of the results. `chunks`: that progress, when the caller read it already."""
    if batch.totals is not None:
        return batch.totals, True
    if chunks is None:
        chunks = await (
            progress.read(batch.batch_id) if progress else engine.store.claimed_chunk_progress(batch.batch_id)
        )
    totals = ResultTotals()
    for chunk in chunks:
        totals = totals.plus(chunk.progress)
    return totals, any(chunk.claims > 0 for chunk in chunks)


def display_status(batch: BatchDoc, totals: ResultTotals, *, started: bool) -> BatchStatus:
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


async def results_page(
    *,
    engine: Engine,
    batch: BatchDoc,
    offset: int,
    limit: int,
    lines_read: dict[int, str] | None = None,
) -> list[dict[str, Any]]:
    """The caller's results [offset, offset + limit), in order, joined to their customIds. `lines_read`:
    the result lines of items [offset, offset + limit), when the caller read them already (used only where
    entries are items)."""
    end = min(offset + limit, batch.entries)
    if offset >= end:
        return []
    first, last = entry_items(batch, offset, end)
    if lines_read is not None and batch.entry_starts is None:
        lines = {index: line for index, line in lines_read.items() if first <= index < last}
    else:
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


async def wait_until_finished(*, engine: Engine, batch: BatchDoc, seconds: float) -> bool:
    """Return once the batch is fanned in (its results file and summary written; True), or after `seconds`,
    whichever comes first; `batch` as the caller read it. A listener on the batch's document tells of the
    fan-in as it commits (no polling); should the listener fail, the wait ends early and the caller answers
    with the batch as it is then (a client waits again)."""
    if batch.finalized:
        return True
    try:
        async with asyncio.timeout(seconds):
            return await engine.store.until_finalized(batch.batch_id)
    except TimeoutError:
        return False
    except StoreUnavailable as exc:
        log.warning("the wait for batch %s ended early: %r", batch.batch_id, exc)
        return False


async def status(
    *,
    engine: Engine,
    principal: Principal,
    batch_id: str,
    offset: int,
    limit: int,
    progress: ProgressCache | None = None,
    wait_seconds: float = 0.0,
) -> BatchStatusResponse | dict[str, Any]:
    """The engine's status of a batch with a page of its results, or its kind's own view (`status_view`).
    With `wait_seconds`, answered once the batch is finished or after that long, whichever comes first
    (as Google's `operations.wait`): a client learns of the end at once, without polling."""
    if not 0 <= offset <= MAX_OFFSET or not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(
            "invalid pagination",
            details=[
                {"field": "offset/limit", "problem": f"0 <= offset <= 2^62 and 1 <= limit <= {MAX_PAGE}"}
            ],
        )
    longest = engine.settings.batch_max_wait_seconds
    if not 0 <= wait_seconds <= longest:
        raise InvalidRequest(
            "invalid waitSeconds", details=[{"field": "waitSeconds", "problem": f"0 to {longest:g} seconds"}]
        )
    if not _plausible_id(batch_id):
        raise NotFound(f"no batch {batch_id}")
    if wait_seconds:
        waited = await get_owned_batch(engine=engine, principal=principal, batch_id=batch_id)
        if await wait_until_finished(engine=engine, batch=waited, seconds=wait_seconds) and progress:
            progress.seen_fanned_in(batch_id)  # its totals are in the batch: its progress is not read
    # The chunks' progress and the page's result lines are read beside the batch, before it says whether
    # they are needed (a round trip less per poll; the page is read again for a kind whose entries are not
    # items, and both are thrown away when the batch is not the caller's).
    chunks_ahead = asyncio.ensure_future(
        progress.read_ahead(batch_id) if progress else engine.store.claimed_chunk_progress(batch_id)
    )
    lines_ahead = asyncio.ensure_future(engine.store.result_lines(batch_id, offset, offset + limit))
    try:
        batch = await get_owned_batch(engine=engine, principal=principal, batch_id=batch_id)
    except BaseException:
        chunks_ahead.cancel()
        lines_ahead.cancel()
        await asyncio.gather(chunks_ahead, lines_ahead, return_exceptions=True)
        raise
    chunks, lines = await asyncio.gather(chunks_ahead, lines_ahead)
    if batch.finalized and progress:
        progress.seen_fanned_in(batch_id)
    kind = kind_of(engine, batch.kind)
    if kind.shapes_status:
        every = await results_page(engine=engine, batch=batch, offset=0, limit=batch.entries)
        view = await kind.status_view(batch, entries=every, ports=engine.ports)
        if view is not None:
            return view
    (totals, started), page = await asyncio.gather(
        current_totals(engine=engine, batch=batch, progress=progress, chunks=chunks),
        results_page(engine=engine, batch=batch, offset=offset, limit=limit, lines_read=lines),
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
        status=display_status(batch, totals, started=started),
        created_at=batch.created_at,
        finished_at=batch.finished_at,
        deadline_at=batch.deadline_at,
        stop_reason=batch.stop_reason,
        progress=_progress(batch, totals, summary),
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


def _progress(batch: BatchDoc, totals: ResultTotals, summary: dict[str, Any]) -> dict[str, int | float]:
    return {
        "total": batch.total,
        "finished": totals.finished,
        "successful": totals.successful,
        "failed": totals.failed,
        "pending": summary["pending"],
        "cancelled": summary["cancelled"],
        "percent": round(100.0 * totals.finished / batch.total, 2),
    }


MAX_JOBS_PAGE = 200  # jobs a page of GET /batch/jobs


async def jobs(
    *,
    engine: Engine,
    principal: Principal,
    kind: str | None,
    status: BatchStatus | None,
    limit: int,
    cursor: str | None,
    progress: ProgressCache | None = None,
) -> JobList:
    """The caller's jobs of every kind (an admin's: every tenant's), newest first, a page at a time; the
    cursor is the last job's id. `status` filters on the stored status (a queued job that started shows as
    running but is stored as queued)."""
    if cursor is not None and not _plausible_id(cursor):
        raise InvalidRequest(
            "invalid cursor", details=[{"field": "cursor", "problem": "a previous nextCursor"}]
        )
    owner = None if principal.is_admin else principal.tenant
    page = await engine.store.list_batches(
        owner=owner, kind=kind, status=status.value if status else None, limit=limit, after=cursor
    )
    totals = await asyncio.gather(
        *(current_totals(engine=engine, batch=batch, progress=progress) for batch in page)
    )
    listed = []
    for batch, (batch_totals, started) in zip(page, totals, strict=True):
        summary = summarize(batch, batch_totals)
        listed.append(
            JobListing(
                batch_id=batch.batch_id,
                kind=batch.kind,
                status=display_status(batch, batch_totals, started=started),
                owner=batch.owner,
                created_at=batch.created_at,
                finished_at=batch.finished_at,
                deadline_at=batch.deadline_at,
                stop_reason=batch.stop_reason,
                progress=_progress(batch, batch_totals, summary),
            )
        )
    return JobList(jobs=listed, next_cursor=page[-1].batch_id if len(page) == limit else None)


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


async def stats(*, engine: Engine, principal: Principal) -> BatchStats:
    """Batches by status, items, failures, tokens and throughput: in all and by kind."""
    owner = None if principal.is_admin else principal.tenant
    names = list(engine.kinds)
    sums = await asyncio.gather(*(_kind_sums(engine=engine, owner=owner, kind=name) for name in names))
    by_kind = {name: _stats_view(kind_sums) for name, kind_sums in zip(names, sums, strict=True)}
    everything: dict[str, float] = {}
    for kind_sums in sums:
        for key, value in kind_sums.items():
            everything[key] = everything.get(key, 0) + value
    in_all = _stats_view(everything)
    scope = "all tenants" if owner is None else owner
    return BatchStats(scope=scope, by_kind=by_kind, **in_all.model_dump(by_alias=False))


async def _kind_sums(*, engine: Engine, owner: str | None, kind: str) -> dict[str, float]:
    counts = await asyncio.gather(*(engine.store.count_batches(owner, kind, s.value) for s in BatchStatus))
    sums = await engine.store.finished_batch_sums(owner, kind)
    return {f"status:{s.value}": float(n) for s, n in zip(BatchStatus, counts, strict=True)} | sums


def _stats_view(sums: dict[str, float]) -> KindStats:
    items, failed, time_ms = sums.get("items", 0.0), sums.get("failed", 0.0), sums.get("time_ms", 0.0)
    return KindStats(
        batches={s: int(sums.get(f"status:{s.value}", 0)) for s in BatchStatus},
        finished_batches=int(sums.get("batches", 0)),
        items=int(items),
        failed_items=int(failed),
        failure_rate=round(failed / items, 4) if items else 0.0,
        total_tokens=int(sums.get("tokens", 0)),
        throughput_items_per_second=round(items / (time_ms / 1000), 2) if time_ms else 0.0,
    )
