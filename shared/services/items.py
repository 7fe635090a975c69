"""Running a chunk's items: each in one of the lane's slots, through its kind, with retries and backoff, while
watching for a stop (cancel, another chunk's failFast) and feeding results to the chunk's commits."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from shared.errors import ModelError, PlatformError
from shared.kinds.base import ItemContext, ItemDeferred, ItemFailed
from shared.models.batch import BatchDoc, BatchStatus, ErrorInfo, ResolvedOptions, ResultTotals
from shared.models.usage import UsageEvent
from shared.ports import BatchStop
from shared.services.leases import ChunkRun, Outcome, add_pending, committer
from shared.services.results import result_line

# How often a running chunk reads whether its batch stopped: soon after the start, when every slot has just
# started an item and a cancel that follows the submit closely would otherwise let a second wave start, then
# at doubling intervals up to STOP_POLL_INTERVAL_S.
STOP_FIRST_POLL_S = 0.05
STOP_POLL_INTERVAL_S = 0.2


async def run_items(run: ChunkRun, todo: list[int], lane: asyncio.Semaphore) -> None:
    """Run the chunk's open items, each holding one of the lane's slots, while watching for a stop."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in todo:
        queue.put_nowait(index)

    async def slot() -> None:
        loop = asyncio.get_running_loop()
        while not run.stopping:
            if loop.time() > run.deadline:
                run.out_of_time = True
                return
            if queue.empty():  # before waiting for a slot of the lane, which the next chunk may be using
                run.drained.set()
                return
            async with lane:
                try:
                    index = queue.get_nowait()
                except asyncio.QueueEmpty:
                    continue
                await run_one(run, index)

    slots = min(run.chunk.concurrency or run.batch.options.concurrency, max(len(todo), 1))
    watcher = asyncio.create_task(_watch_stop(run))
    committing = asyncio.create_task(committer(run))
    try:
        await asyncio.gather(*(slot() for _ in range(slots)))
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        run.closing = True
        run.commit_wanted.set()
    # The committer ends (what is left is recorded with the chunk's release); its error fails this delivery.
    await committing


async def run_one(run: ChunkRun, index: int) -> None:
    """Run one item through its kind, retrying transient failures with backoff, and add its result."""
    engine, batch = run.engine, run.batch
    options = batch.options
    item = run.item(index)
    started = time.monotonic()
    attempt = 0
    events: list[UsageEvent] = []
    while True:
        attempt += 1
        ctx = ItemContext(
            kind=batch.kind,
            tenant=batch.owner,
            job_id=batch.batch_id,
            index=index,
            attempt=attempt,
            timeout_s=options.timeout_ms / 1000,
            params=batch.params,
            ports=engine.ports,
            deferrals=run.chunk.deferrals,
            handover=run.handover,
            stopping=lambda: run.stopping,
        )
        error: PlatformError | None = None
        fields: dict[str, Any] = {}
        try:
            fields = await run.kind.run(item, ctx)
        except ItemDeferred as exc:
            # Nothing is recorded: the chunk is handed back and its task enqueued for later (the worker).
            run.deferred = exc.after if run.deferred is None else min(run.deferred, exc.after)
            return
        except PlatformError as exc:
            error = exc
        events.extend(ctx.events)
        retry = error is not None and _transient(error)
        if not retry or attempt > options.max_retries or run.stopping:
            break
        assert error is not None
        await _backoff(run, options, attempt, error)
        if run.stopping:
            break
    succeeded = error is None
    input_tokens = ctx.input_tokens if succeeded else 0
    output_tokens = ctx.output_tokens if succeeded else 0
    cached = ctx.cached_tokens if succeeded else 0
    line = result_line(
        index=index,
        custom_id=run.chunk.custom_ids[index - run.chunk.start],
        fields=fields,
        error=None if error is None else error_info(error),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_tokens=cached,
        processing_ms=int((time.monotonic() - started) * 1000),
        attempts=attempt,
    )
    totals = ResultTotals(
        finished=1,
        failed=0 if succeeded else 1,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_tokens=cached,
        cost_usd=ctx.cost_usd if succeeded else 0.0,
    )
    add_pending(run, Outcome(index=index, line=line, totals=totals, events=events))
    if error is not None and options.fail_fast and run.stopped is None:
        await _fail_fast(run, index, error)


def _transient(error: PlatformError) -> bool:
    return error.is_transient if isinstance(error, ModelError) else error.transient


def error_info(error: PlatformError) -> ErrorInfo:
    """How an item's failure shows in its result."""
    if isinstance(error, ItemFailed):
        return ErrorInfo(code=error.item_code, message=error.message[:2000])
    if isinstance(error, ModelError):
        return ErrorInfo(code="model_error", message=error.message[:2000], status=error.status)
    return ErrorInfo(code=error.code, message=error.message[:2000], status=error.http_status)


async def _backoff(run: ChunkRun, options: ResolvedOptions, attempt: int, error: PlatformError) -> None:
    """Exponential backoff per the batch's retry policy, never shorter than the server's retryDelay."""
    delay_ms = min(options.max_delay_ms, options.base_delay_ms * options.backoff_multiplier ** (attempt - 1))
    delay_s = delay_ms / 1000 * random.uniform(0.8, 1.0)  # noqa: S311 - jitter, not security
    retry_after_s = getattr(error, "retry_after_s", None)
    if retry_after_s is not None:
        delay_s = max(delay_s, retry_after_s)
    loop = asyncio.get_running_loop()
    wake_at = loop.time() + delay_s
    # Wake early when the batch stops, so a cancel is not held up by a long backoff.
    while not run.stopping and (remaining := wake_at - loop.time()) > 0:
        await asyncio.sleep(min(remaining, STOP_POLL_INTERVAL_S))


async def _fail_fast(run: ChunkRun, index: int, error: PlatformError) -> None:
    reason = f"failFast: request {index} failed: {error.message[:200]}"
    run.stopped = BatchStop(status=BatchStatus.FAILED, stop_reason=reason)
    now = run.engine.clock()

    def _fail(batch: BatchDoc) -> dict[str, Any] | None:
        if batch.status.is_final:
            return None
        return {"status": BatchStatus.FAILED.value, "stop_reason": reason, "finished_at": now}

    await run.engine.store.update_batch(run.batch.batch_id, _fail)


async def _watch_stop(run: ChunkRun) -> None:
    """Notice a cancel (or another chunk's failFast) between items: every item started after it is work the
    caller no longer wants, so the batch's status is read often, as a two-field projection."""
    interval = STOP_FIRST_POLL_S
    while True:
        await asyncio.sleep(interval)
        interval = min(interval * 2, STOP_POLL_INTERVAL_S)
        stop = await run.engine.store.get_stop(run.batch.batch_id)
        if stop is not None and stop.status.is_final and run.stopped is None:
            run.stopped = stop
