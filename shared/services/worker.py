"""Batch generation, the worker side: run one chunk under a lease, record each result once, chain on.

Delivery is at-least-once, so everything here is safe to run twice: the chunk is claimed with a lease
(compare-and-set on its document), requests that already have a result are skipped, and results are recorded
in commits that also compare-and-set the chunk document, so only the lease holder records anything and no
result is recorded twice. The next step is enqueued under a deterministic task name.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from shared.errors import LeaseHeld, ModelError, PlatformError
from shared.models.batch import (
    BatchDoc,
    BatchStatus,
    ChunkDoc,
    ChunkState,
    ErrorInfo,
    ResolvedOptions,
    ResultDoc,
    ResultTotals,
    StoredRequest,
    WorkMessage,
)
from shared.models.usage import UsageEvent, UsageRecord
from shared.ports import BatchSnapshot, BatchStop, ModelCall, ModelReply, ResultPage
from shared.services.batches import item_result
from shared.services.engine import Engine, enqueue_chunk, enqueue_finalize, response_object
from shared.services.pricing import estimate_cost_usd

log = logging.getLogger(__name__)

# Results are recorded together with a write of the chunk document (lease and progress), and Firestore
# sustains about one write per second per document: one commit a second, the first as soon as the chunk's
# first result is in, so progress shows early. A full page is written at once.
COMMIT_INTERVAL_S = 1.0
PAGE_MAX_RESULTS = 500
PAGE_MAX_BYTES = 512 * 1024  # of JSON lines, so a page stays well under Firestore's 1 MiB per document
# How often a running chunk reads whether its batch stopped: soon after the start, when every slot has just
# started a request and a cancel that follows the submit closely would otherwise let a second wave start,
# then at doubling intervals up to STOP_POLL_INTERVAL_S.
STOP_FIRST_POLL_S = 0.05
STOP_POLL_INTERVAL_S = 0.2
# A delivery carries on to its lane's next chunk only with this much of its time budget left.
CARRY_ON_MIN_BUDGET_S = 10.0

# Chunk deliveries running on this instance. One running beside others hands its lane's next chunk to the
# queue instead of carrying on to it, so that the next delivery can land on a less busy instance.
_deliveries_running = 0


@dataclass(frozen=True)
class Outcome:
    """A finished request: its result, the result as the API shows it (a JSON line), its model calls."""

    result: ResultDoc
    line: str
    events: list[UsageEvent]


@dataclass
class ChunkRun:
    """The state of one worker's run of one chunk."""

    engine: Engine
    batch: BatchDoc
    chunk: ChunkDoc
    worker_id: str
    version: Any  # the chunk document's version as this worker last wrote it (compare-and-set)
    deadline: float  # loop time when this delivery stops starting requests (time budget)
    pending: list[Outcome] = field(default_factory=list)  # finished, not yet recorded
    pending_bytes: int = 0
    first_result_in: bool = False  # the run has had a result (the first is recorded at once)
    stopped: BatchStop | None = None  # set when the batch was cancelled or failed fast (its final status)
    lease_lost: bool = False
    out_of_time: bool = False
    commit_wanted: asyncio.Event = field(default_factory=asyncio.Event)
    closing: bool = False
    progress: ResultTotals = field(default_factory=ResultTotals)
    recorded: int = 0
    drained: asyncio.Event = field(default_factory=asyncio.Event)  # no more requests of the chunk will start
    carried_on: bool = False  # this delivery claimed the lane's next chunk and runs it
    carry_on_decided: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def stopping(self) -> bool:
        return self.stopped is not None or self.lease_lost


async def process_chunk(
    *, engine: Engine, message: WorkMessage, retry_count: int, worker_id: str | None = None
) -> dict[str, Any]:
    """Handle one delivery of a chunk task. Raises only for failures the whole chunk should be retried for."""
    worker_id = worker_id or uuid.uuid4().hex
    store = engine.store
    read = await store.read_batch(message.batch_id)
    if read is None:
        return {"outcome": "unknown batch"}
    batch = read.batch
    last_attempt = retry_count + 1 >= engine.settings.batch_task_max_attempts
    global _deliveries_running
    _deliveries_running += 1
    try:
        return await _run_delivery(engine=engine, read=read, message=message, worker_id=worker_id)
    except LeaseHeld:
        raise  # the holder finishes the chunk, or the sweeper recovers it once the lease expires
    except Exception as exc:
        retry = not isinstance(exc, PlatformError) or exc.transient
        if retry and not last_attempt:
            raise
        # A permanent failure, or the last attempt (Cloud Tasks has no dead-letter queue): record the chunk's
        # open requests as failed rather than lose them.
        log.error("chunk %s/%s failed for good: %r", batch.batch_id, message.chunk, exc)
        await _fail_chunk(engine=engine, batch=batch, chunk_index=message.chunk, reason=str(exc))
        return {"outcome": "chunk failed", "reason": str(exc)}
    finally:
        _deliveries_running -= 1


async def _run_delivery(
    *, engine: Engine, read: BatchSnapshot, message: WorkMessage, worker_id: str
) -> dict[str, Any]:
    batch = read.batch
    if batch.status.is_final:
        snapshot = await engine.store.get_chunk(batch.batch_id, message.chunk)
        if snapshot is None:
            return {"outcome": "unknown chunk"}
        await _set_chunk_state(
            engine=engine, batch_id=batch.batch_id, index=message.chunk, state=ChunkState.CANCELLED
        )
        await _after_chunk(engine=engine, batch=batch, chunk=snapshot.chunk)
        return {"outcome": f"batch {batch.status.value}"}
    chunk, version = await _claim(
        engine=engine, batch_id=batch.batch_id, index=message.chunk, worker_id=worker_id
    )
    if chunk.state.is_terminal:
        await _after_chunk(engine=engine, batch=batch, chunk=chunk)
        return {"outcome": f"chunk already {chunk.state.value}"}
    if batch.status is BatchStatus.QUEUED:
        batch = await _mark_running(engine=engine, read=read) or batch
    loop = asyncio.get_running_loop()
    run = ChunkRun(
        engine=engine,
        batch=batch,
        chunk=chunk,
        worker_id=worker_id,
        version=version,
        deadline=loop.time() + engine.settings.batch_task_budget_seconds,
    )
    # The lane's share of the batch's concurrency: for this chunk and every chunk the delivery carries on to.
    lane = asyncio.Semaphore(chunk.concurrency or batch.options.concurrency)
    outcomes = []
    running = asyncio.create_task(_run_chunk(run, lane))
    while True:
        following = await _carry_on(run, running)
        following_task = asyncio.create_task(_run_chunk(following, lane)) if following else None
        try:
            outcomes.append(await running)
        except BaseException:
            if following is not None and following_task is not None:
                following_task.cancel()
                await asyncio.gather(following_task, return_exceptions=True)
                with contextlib.suppress(Exception):
                    await _hand_back(following)  # in case it was cancelled before it started
            raise
        if following is None or following_task is None:
            break
        run, running = following, following_task
    return outcomes[0] if len(outcomes) == 1 else {"outcome": outcomes[-1]["outcome"], "chunks": outcomes}


async def _run_chunk(run: ChunkRun, lane: asyncio.Semaphore) -> dict[str, Any]:
    """Run a claimed chunk's open requests, record them and release the chunk, then chain on."""
    engine, batch, chunk = run.engine, run.batch, run.chunk
    done: set[int] = set()
    if chunk.claims > 1:
        # Resuming a chunk: skip what earlier deliveries recorded, and count it exactly.
        for page in await engine.store.chunk_results(batch.batch_id, chunk.index):
            done.update(page.indices)
            run.progress = run.progress.plus(page.totals)
    todo = [i for i in range(chunk.start, chunk.end) if i not in done]
    try:
        await _run_requests(run, todo, lane)
        run.drained.set()
        if run.lease_lost:
            return {"chunk": chunk.index, "outcome": "lease lost; another worker owns the chunk"}
        if run.out_of_time and run.stopped is None:
            await _continue_later(engine=engine, run=run)
            return {"chunk": chunk.index, "outcome": "continued in a new segment", "recorded": run.recorded}
        final_state = ChunkState.CANCELLED if run.stopped else ChunkState.DONE
        released = await _release(run=run, changes={"state": final_state.value})
    except BaseException:
        # Hand the chunk back at once (what was not recorded runs again), so the retry of this delivery need
        # not wait for the lease to expire.
        with contextlib.suppress(Exception):
            await _hand_back(run)
        raise
    if released:
        # A stopped run knows its batch's final status; otherwise the batch may have stopped meanwhile.
        if run.stopped is not None:
            latest = batch.model_copy(update={"status": run.stopped.status})
        else:
            latest = await engine.store.get_batch(batch.batch_id) or batch
        await run.carry_on_decided.wait()  # chain on to the next chunk only if this delivery does not run it
        await _after_chunk(engine=engine, batch=latest, chunk=chunk, carried_on=run.carried_on)
    return {"chunk": chunk.index, "outcome": final_state.value, "recorded": run.recorded}


async def _carry_on(run: ChunkRun, running: asyncio.Task[dict[str, Any]]) -> ChunkRun | None:
    """Once every request of the chunk has started, claim the lane's next chunk: its requests take the slots
    the chunk's last requests free, instead of waiting for the chunk to end and a new delivery to start. The
    claim is a lease like any other, so a crash is recovered as any other (the sweeper re-enqueues it)."""
    try:
        drained = asyncio.ensure_future(run.drained.wait())
        try:
            await asyncio.wait({running, drained}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            drained.cancel()
        following = await _claim_following(run) if _may_carry_on(run, running) else None
        run.carried_on = following is not None
        return following
    finally:
        run.carry_on_decided.set()


def _may_carry_on(run: ChunkRun, running: asyncio.Task[dict[str, Any]]) -> bool:
    budget_left = run.deadline - asyncio.get_running_loop().time()
    return not (
        running.done()
        or run.stopping
        or run.chunk.index + run.batch.lanes >= run.batch.chunk_count
        or budget_left < CARRY_ON_MIN_BUDGET_S
        or _deliveries_running > 1
    )


async def _claim_following(run: ChunkRun) -> ChunkRun | None:
    following = run.chunk.index + run.batch.lanes
    try:
        chunk, version = await _claim(
            engine=run.engine, batch_id=run.batch.batch_id, index=following, worker_id=run.worker_id
        )
    except Exception as exc:
        # Carrying on only saves time: whatever stops it (another delivery holds the chunk, a busy store),
        # the chunk's own task runs it, chained as usual.
        log.info("not carrying on to chunk %s/%s: %r", run.batch.batch_id, following, exc)
        return None
    if chunk.state.is_terminal:
        return None
    return ChunkRun(
        engine=run.engine,
        batch=run.batch,
        chunk=chunk,
        worker_id=run.worker_id,
        version=version,
        deadline=run.deadline,
    )


async def _claim(*, engine: Engine, batch_id: str, index: int, worker_id: str) -> tuple[ChunkDoc, Any]:
    """Take the chunk's lease: the chunk as claimed and its version (a finished chunk is returned as is)."""
    lease = dt.timedelta(seconds=engine.settings.batch_lease_seconds)
    for _ in range(5):
        snapshot = await engine.store.get_chunk(batch_id, index)
        if snapshot is None:
            raise LeaseHeld("chunk vanished", retry_after_s=1)
        chunk = snapshot.chunk
        now = engine.clock()
        held_by_other = (
            chunk.state is ChunkState.RUNNING
            and chunk.lease_owner not in (None, worker_id)
            and chunk.lease_expires_at is not None
            and chunk.lease_expires_at > now
        )
        if held_by_other:
            assert chunk.lease_expires_at is not None
            remaining = (chunk.lease_expires_at - now).total_seconds()
            raise LeaseHeld(
                f"chunk {index} of {batch_id} is leased by another worker",
                retry_after_s=max(1, int(remaining) + 1),
            )
        if chunk.state.is_terminal:
            return chunk, snapshot.version
        changes = {
            "state": ChunkState.RUNNING.value,
            "lease_owner": worker_id,
            "lease_expires_at": now + lease,
            "claims": chunk.claims + 1,
            "started_at": chunk.started_at or now,
        }
        version = await engine.store.update_chunk_if_unchanged(
            batch_id, index, version=snapshot.version, changes=changes
        )
        if version is not None:
            return chunk.model_copy(update=changes | {"state": ChunkState.RUNNING}), version
    raise LeaseHeld(f"chunk {index} of {batch_id} is contended", retry_after_s=1)


async def _mark_running(*, engine: Engine, read: BatchSnapshot) -> BatchDoc | None:
    def _running(batch: BatchDoc) -> dict[str, Any] | None:
        return {"status": BatchStatus.RUNNING.value} if batch.status is BatchStatus.QUEUED else None

    return await engine.store.update_batch(read.batch.batch_id, _running, read=read)


async def _run_requests(run: ChunkRun, todo: list[int], lane: asyncio.Semaphore) -> None:
    """Run the chunk's open requests, each holding one of the lane's slots, while watching for a stop."""
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
                await _run_one(run, index)

    slots = min(run.chunk.concurrency or run.batch.options.concurrency, max(len(todo), 1))
    watcher = asyncio.create_task(_watch_stop(run))
    committer = asyncio.create_task(_committer(run))
    try:
        await asyncio.gather(*(slot() for _ in range(slots)))
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        run.closing = True
        run.commit_wanted.set()
    # The committer ends (what is left is recorded with the chunk's release); its error fails this delivery.
    await committer


async def _run_one(run: ChunkRun, index: int) -> None:
    engine, batch = run.engine, run.batch
    options = batch.options
    stored = run.chunk.requests[index - run.chunk.start]
    try:
        prompt, system_instruction = await _load_request(engine, stored)
    except PlatformError as exc:
        if exc.transient:
            raise
        unavailable = ModelError(f"the request's payload is unavailable: {exc.message}", transient=False)
        _add_pending(
            run,
            await _result_doc(run, index, stored, None, unavailable, attempts=0, started=time.monotonic()),
            [],
        )
        return
    call = ModelCall(
        model=stored.model,
        prompt=prompt,
        system_instruction=system_instruction,
        temperature=stored.temperature,
        max_tokens=stored.max_tokens,
        timeout_s=options.timeout_ms / 1000,
    )
    started = time.monotonic()
    events: list[UsageEvent] = []
    reply: ModelReply | None = None
    error: ModelError | None = None
    attempt = 0
    while True:
        attempt += 1
        call_started = time.monotonic()
        try:
            reply = await engine.model.generate(call)
            error = None
        except ModelError as exc:
            error = exc
        events.append(_usage_event(run, index, attempt, call, reply, error, time.monotonic() - call_started))
        if error is None or not error.is_transient or attempt > options.max_retries or run.stopping:
            break
        await _backoff(run, options, attempt, error)
        if run.stopping:
            break
    result = await _result_doc(run, index, stored, reply, error, attempts=attempt, started=started)
    _add_pending(run, result, events)
    if error is not None and options.fail_fast and run.stopped is None:
        await _fail_fast(run, index, error)


async def _backoff(run: ChunkRun, options: ResolvedOptions, attempt: int, error: ModelError) -> None:
    """Exponential backoff per the batch's retry policy, never shorter than the server's retryDelay."""
    delay_ms = min(options.max_delay_ms, options.base_delay_ms * options.backoff_multiplier ** (attempt - 1))
    delay_s = delay_ms / 1000 * random.uniform(0.8, 1.0)  # noqa: S311 - jitter, not security
    if error.retry_after_s is not None:
        delay_s = max(delay_s, error.retry_after_s)
    loop = asyncio.get_running_loop()
    wake_at = loop.time() + delay_s
    # Wake early when the batch stops, so a cancel is not held up by a long backoff.
    while not run.stopping and (remaining := wake_at - loop.time()) > 0:
        await asyncio.sleep(min(remaining, STOP_POLL_INTERVAL_S))


async def _load_request(engine: Engine, stored: StoredRequest) -> tuple[str, str | None]:
    if stored.ref is None:
        return stored.prompt or "", stored.system_instruction
    payload = json.loads(await engine.blobs.get(object_name=stored.ref))
    return str(payload["prompt"]), payload.get("systemInstruction")


def _usage_event(
    run: ChunkRun,
    index: int,
    attempt: int,
    call: ModelCall,
    reply: ModelReply | None,
    error: ModelError | None,
    latency_s: float,
) -> UsageEvent:
    now = run.engine.clock()
    input_tokens = reply.input_tokens if reply else 0
    output_tokens = reply.output_tokens if reply else 0
    cached = reply.cached_tokens if reply else 0
    # Built from trusted values on the hot path: construct without re-validating.
    return UsageEvent.model_construct(
        event_id=f"{run.batch.batch_id}-{index}-{attempt}",
        tenant=run.batch.owner,
        model=call.model,
        endpoint="generateContent",
        source="batch:generate",
        job_id=run.batch.batch_id,
        latency_ms=int(latency_s * 1000),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_tokens=cached,
        total_tokens=reply.total_tokens if reply else 0,
        cost_usd=estimate_cost_usd(
            model=call.model, input_tokens=input_tokens, output_tokens=output_tokens, cached_tokens=cached
        ),
        cache_hit=cached > 0,
        outcome="ok" if error is None else f"error:{error.status or 'unknown'}",
        at=now,
    )


def _retention(engine: Engine) -> dt.timedelta:
    return dt.timedelta(days=engine.settings.analytics_retention_days)


async def _result_doc(
    run: ChunkRun,
    index: int,
    stored: StoredRequest,
    reply: ModelReply | None,
    error: ModelError | None,
    *,
    attempts: int,
    started: float,
) -> ResultDoc:
    engine = run.engine
    response = reply.text if reply and error is None else None
    response_ref = None
    if response is not None and len(response.encode()) > engine.settings.batch_inline_limit_bytes:
        response_ref = response_object(run.batch.batch_id, index)
        await engine.blobs.put(object_name=response_ref, data=response.encode(), content_type="text/plain")
        response = None
    input_tokens = reply.input_tokens if reply and error is None else 0
    output_tokens = reply.output_tokens if reply and error is None else 0
    cached = reply.cached_tokens if reply and error is None else 0
    return ResultDoc.model_construct(
        batch_id=run.batch.batch_id,
        index=index,
        chunk=run.chunk.index,
        custom_id=stored.custom_id,
        success=error is None,
        response=response,
        response_ref=response_ref,
        error=None
        if error is None
        else ErrorInfo(code="model_error", message=error.message[:2000], status=error.status),
        model=stored.model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_tokens=cached,
        total_tokens=input_tokens + output_tokens,
        cost_usd=estimate_cost_usd(
            model=stored.model, input_tokens=input_tokens, output_tokens=output_tokens, cached_tokens=cached
        ),
        processing_ms=int((time.monotonic() - started) * 1000),
        attempts=attempts,
        finished_at=engine.clock(),
    )


async def _fail_fast(run: ChunkRun, index: int, error: ModelError) -> None:
    reason = f"failFast: request {index} failed: {error.message[:200]}"
    run.stopped = BatchStop(status=BatchStatus.FAILED, stop_reason=reason)
    now = run.engine.clock()

    def _fail(batch: BatchDoc) -> dict[str, Any] | None:
        if batch.status.is_final:
            return None
        return {"status": BatchStatus.FAILED.value, "stop_reason": reason, "finished_at": now}

    await run.engine.store.update_batch(run.batch.batch_id, _fail)


def _add_pending(run: ChunkRun, result: ResultDoc, events: list[UsageEvent]) -> None:
    line = item_result(result).model_dump_json(by_alias=True)
    run.pending.append(Outcome(result=result, line=line, events=events))
    run.pending_bytes += len(line)
    # The first result is recorded at once, so progress shows early; not for a stopped run, whose release
    # records what is pending as soon as its requests in flight are done.
    first, run.first_result_in = not run.first_result_in and not run.stopping, True
    if first or len(run.pending) >= PAGE_MAX_RESULTS or run.pending_bytes >= PAGE_MAX_BYTES:
        run.commit_wanted.set()


def _result_page(chunk: ChunkDoc, outcomes: list[Outcome]) -> ResultPage:
    results = [outcome.result for outcome in outcomes]
    return ResultPage(
        chunk=chunk.index,
        indices=[result.index for result in results],
        lines=[outcome.line for outcome in outcomes],
        totals=ResultTotals.of(results),
    )


def _usage_record(outcomes: list[Outcome], retention: dt.timedelta) -> UsageRecord | None:
    """The model calls of one commit's results, as one usage record (one document, not one per call)."""
    events = [event for outcome in outcomes for event in outcome.events]
    if not events:
        return None
    at = max(event.at for event in events)
    first = events[0]
    return UsageRecord(
        job_id=first.job_id,
        tenant=first.tenant,
        source=first.source,
        calls=len(events),
        events=events,
        at=at,
        expire_at=at + retention,
    )


async def _commit(run: ChunkRun, changes: dict[str, Any] | None = None) -> bool:
    """Record the pending results, extend the lease and publish progress, in one compare-and-set commit
    (with `changes` to the chunk, if any). False when the lease was lost: nothing was recorded, and the new
    holder runs the pending requests again."""
    engine = run.engine
    pending, run.pending, run.pending_bytes = run.pending, [], 0
    page = _result_page(run.chunk, pending) if pending else None
    progress = run.progress.plus(page.totals) if page else run.progress
    lease = dt.timedelta(seconds=engine.settings.batch_lease_seconds)
    update = {"lease_expires_at": engine.clock() + lease, "progress": progress.model_dump()} | (changes or {})
    try:
        version = await engine.store.record_results(
            run.batch.batch_id,
            run.chunk.index,
            version=run.version,
            page=page,
            usage=_usage_record(pending, _retention(engine)),
            changes=update,
        )
    except BaseException:
        run.pending = pending + run.pending
        run.pending_bytes += sum(len(outcome.line) for outcome in pending)
        raise
    if version is None:
        run.lease_lost = True
        return False
    run.version = version
    run.progress = progress
    run.recorded += len(pending)
    return True


async def _committer(run: ChunkRun) -> None:
    """While the chunk runs: commit its results once a second (at once for the first result and when a page
    is full), and extend the lease at least as often when no result comes in. A lost lease stops the run."""
    loop = asyncio.get_running_loop()
    wait = COMMIT_INTERVAL_S
    while not run.closing and not run.lease_lost:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await run.commit_wanted.wait()
        run.commit_wanted.clear()
        if run.closing:
            return
        started = loop.time()
        await _commit(run)
        wait = max(0.0, COMMIT_INTERVAL_S - (loop.time() - started))


async def _watch_stop(run: ChunkRun) -> None:
    """Notice a cancel (or another chunk's failFast) between requests: every request started after it is
    work the caller no longer wants, so the batch's status is read often, as a two-field projection."""
    interval = STOP_FIRST_POLL_S
    while True:
        await asyncio.sleep(interval)
        interval = min(interval * 2, STOP_POLL_INTERVAL_S)
        stop = await run.engine.store.get_stop(run.batch.batch_id)
        if stop is not None and stop.status.is_final and run.stopped is None:
            run.stopped = stop


async def _release(*, run: ChunkRun, changes: dict[str, Any]) -> bool:
    """Record what is pending and give the chunk up with `changes`, if this worker still holds its lease."""
    update = {"lease_owner": None, "lease_expires_at": None} | changes
    if changes.get("state") in (ChunkState.DONE.value, ChunkState.CANCELLED.value, ChunkState.FAILED.value):
        update["finished_at"] = run.engine.clock()
    return not run.lease_lost and await _commit(run, update)


async def _hand_back(run: ChunkRun) -> None:
    """Give the lease up without recording anything, if this worker still holds it."""
    if not run.lease_lost:
        await run.engine.store.update_chunk_if_unchanged(
            run.batch.batch_id,
            run.chunk.index,
            version=run.version,
            changes={"state": ChunkState.PENDING.value, "lease_owner": None, "lease_expires_at": None},
        )


async def _continue_later(*, engine: Engine, run: ChunkRun) -> None:
    """The time budget of this delivery is spent: hand the rest of the chunk to a new task."""
    segment = run.chunk.segment + 1
    if await _release(run=run, changes={"state": ChunkState.PENDING.value, "segment": segment}):
        await enqueue_chunk(
            engine=engine, batch_id=run.batch.batch_id, chunk=run.chunk.index, segment=segment
        )


async def _after_chunk(*, engine: Engine, batch: BatchDoc, chunk: ChunkDoc, carried_on: bool = False) -> None:
    """Chain on: the lane's next chunk (unless this delivery carried on to it); at the end of a lane, the
    finalizer once every chunk is finished (at once after a stop). Idempotent by task name.

    This chunk's state was written before this runs, so of two lanes ending together the later one always
    sees both finished: the finalizer is never left out.
    """
    following = chunk.index + batch.lanes
    if batch.status.is_final:
        await enqueue_finalize(engine=engine, batch_id=batch.batch_id)
    elif following < batch.chunk_count:
        if not carried_on:
            await enqueue_chunk(engine=engine, batch_id=batch.batch_id, chunk=following, segment=0)
    elif all(c.state.is_terminal for c in await engine.store.chunk_progress(batch.batch_id)):
        await enqueue_finalize(engine=engine, batch_id=batch.batch_id)


async def _set_chunk_state(*, engine: Engine, batch_id: str, index: int, state: ChunkState) -> None:
    lease_view = await engine.store.get_lease(batch_id, index)
    if lease_view is None or lease_view.state.is_terminal:
        return
    await engine.store.update_chunk_if_unchanged(
        batch_id,
        index,
        version=lease_view.version,
        changes={
            "state": state.value,
            "lease_owner": None,
            "lease_expires_at": None,
            "finished_at": engine.clock(),
        },
    )


async def _fail_chunk(*, engine: Engine, batch: BatchDoc, chunk_index: int, reason: str) -> None:
    """Record every open request of the chunk as failed and mark the chunk failed (one compare-and-set
    commit, retried on a concurrent change), then chain on."""
    for _ in range(5):
        snapshot = await engine.store.get_chunk(batch.batch_id, chunk_index)
        if snapshot is None:
            return
        chunk = snapshot.chunk
        if chunk.state.is_terminal:
            break
        done: set[int] = set()
        progress = ResultTotals()
        for earlier in await engine.store.chunk_results(batch.batch_id, chunk_index):
            done.update(earlier.indices)
            progress = progress.plus(earlier.totals)
        now = engine.clock()
        failures = [
            ResultDoc(
                batch_id=batch.batch_id,
                index=i,
                chunk=chunk.index,
                custom_id=chunk.requests[i - chunk.start].custom_id,
                success=False,
                error=ErrorInfo(
                    code="chunk_failed", message=f"the chunk exhausted its delivery attempts: {reason}"
                ),
                model=chunk.requests[i - chunk.start].model,
                processing_ms=0,
                attempts=0,
                finished_at=now,
            )
            for i in range(chunk.start, chunk.end)
            if i not in done
        ]
        outcomes = [
            Outcome(result=failure, line=item_result(failure).model_dump_json(by_alias=True), events=[])
            for failure in failures
        ]
        page = _result_page(chunk, outcomes) if outcomes else None
        recorded = await engine.store.record_results(
            batch.batch_id,
            chunk_index,
            version=snapshot.version,
            page=page,
            usage=None,
            changes={
                "state": ChunkState.FAILED.value,
                "lease_owner": None,
                "lease_expires_at": None,
                "finished_at": now,
                "progress": (progress.plus(page.totals) if page else progress).model_dump(),
            },
        )
        if recorded is not None:
            break
    await _after_chunk(engine=engine, batch=batch, chunk=chunk)
