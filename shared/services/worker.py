"""The engine's worker side: one delivery of a chunk task runs the chunk under a lease, then chains on.

Delivery is at-least-once, so everything here is safe to run twice: the chunk is claimed with a lease
(compare-and-set on its document), items that already have a result are skipped, and results are recorded in
commits that also compare-and-set the chunk document, so only the lease holder records anything and no
result is recorded twice. The next step (the lane's next chunk, the next stage, the fan-in) is enqueued under
a deterministic task name.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from shared.errors import LeaseHeld, PlatformError
from shared.kinds.base import Handover
from shared.models.batch import (
    BatchDoc,
    BatchStatus,
    ChunkDoc,
    ChunkProgress,
    ChunkState,
    ErrorInfo,
    ResultTotals,
    WorkMessage,
)
from shared.ports import BatchSnapshot, ChunkSnapshot
from shared.services.chaining import (
    after_chunk,
    continue_later,
    defer,
    lane_end_after_release,
    read_lane_end,
)
from shared.services.engine import Engine, enqueue_chunk, kind_of
from shared.services.items import run_items
from shared.services.leases import (
    ChunkRun,
    ClaimedAsWritten,
    Outcome,
    Superseded,
    claim,
    claim_as_written,
    hand_back,
    release,
    result_page,
    set_chunk_state,
)
from shared.services.results import result_line

log = logging.getLogger(__name__)

# A delivery carries on to its lane's next chunk only with this much of its time budget left.
CARRY_ON_MIN_BUDGET_S = 10.0

# Chunk deliveries running on this instance. One running beside others hands its lane's next chunk to the
# queue instead of carrying on to it, so that the next delivery can land on a less busy instance.
_deliveries_running = 0


@dataclass
class _Delivery:
    """One delivery of a chunk task: its time budget, shared by the runs its items handed over to it
    (`ItemContext.handover`), and those runs, which it awaits before it answers."""

    deadline: float  # loop time when it stops starting items
    handed_over: list[asyncio.Future[dict[str, Any]]] = field(default_factory=list)


_current_delivery: ContextVar[_Delivery | None] = ContextVar("current_delivery", default=None)


async def process_chunk(
    *, engine: Engine, message: WorkMessage, retry_count: int, worker_id: str | None = None
) -> dict[str, Any]:
    """Handle one delivery of a chunk task. Raises only for failures the whole chunk should be retried for."""
    if _current_delivery.get() is not None:  # a run handed over inside a delivery, which awaits it
        return await _process(engine=engine, message=message, retry_count=retry_count, worker_id=worker_id)
    delivery = _Delivery(
        deadline=asyncio.get_running_loop().time() + engine.settings.batch_task_budget_seconds
    )
    token = _current_delivery.set(delivery)
    try:
        outcome = await _process(engine=engine, message=message, retry_count=retry_count, worker_id=worker_id)
    finally:
        handed_over = await _await_handed_over(delivery)
        _current_delivery.reset(token)
    return outcome | ({"handedOver": handed_over} if handed_over else {})


async def _await_handed_over(delivery: _Delivery) -> list[dict[str, Any]]:
    """Await the runs handed over to this delivery (and those they handed over in turn). A run that fails
    is left to its own delayed task, which Cloud Tasks retries as any other."""
    outcomes = []
    while delivery.handed_over:
        try:
            outcomes.append(await delivery.handed_over.pop(0))
        except Exception as exc:
            log.warning("a handed-over run is left to its task, which waits BATCH_LEASE_SECONDS: %r", exc)
            outcomes.append({"outcome": "left to its task", "reason": str(exc)})
    return outcomes


def _handover(engine: Engine, delivery: _Delivery) -> Handover | None:
    """What lets a claimed chunk's items hand another batch's first chunk over to this delivery: None once
    its budget is nearly spent (the batch is then enqueued at once, as usual). Unlike carrying on, a handover
    is allowed beside other deliveries: it replaces the item that handed it over, it adds no concurrency."""
    if delivery.deadline - asyncio.get_running_loop().time() < CARRY_ON_MIN_BUDGET_S:
        return None

    def _run(batch_id: str) -> None:
        message = WorkMessage(batch_id=batch_id, chunk=0, segment=0)
        delivery.handed_over.append(
            asyncio.ensure_future(process_chunk(engine=engine, message=message, retry_count=0))
        )

    return Handover(fallback_delay=dt.timedelta(seconds=engine.settings.batch_lease_seconds), run=_run)


async def _process(
    *, engine: Engine, message: WorkMessage, retry_count: int, worker_id: str | None
) -> dict[str, Any]:
    worker_id = worker_id or uuid.uuid4().hex
    # The batch and the chunk are read at once: the claim decides on this read of the chunk. A first delivery
    # that knows the chunk's version as written claims it beside these reads (a round trip less).
    reads = asyncio.gather(
        engine.store.read_batch(message.batch_id), engine.store.get_chunk(message.batch_id, message.chunk)
    )
    claimed: ClaimedAsWritten | None = None
    if message.version is None:
        read, chunk_read = await reads
    else:
        claiming = claim_as_written(
            engine=engine,
            batch_id=message.batch_id,
            index=message.chunk,
            worker_id=worker_id,
            written=message.version,
        )
        (read, chunk_read), claimed = await asyncio.gather(reads, claiming)
    if read is None:
        return {"outcome": "unknown batch"}
    batch = read.batch
    last_attempt = retry_count + 1 >= engine.settings.batch_task_max_attempts
    global _deliveries_running
    _deliveries_running += 1
    try:
        return await _run_delivery(
            engine=engine,
            read=read,
            chunk_read=chunk_read,
            claimed=claimed,
            message=message,
            worker_id=worker_id,
        )
    except LeaseHeld:
        raise  # the holder finishes the chunk, or the sweeper recovers it once the lease expires
    except Exception as exc:
        retry = not isinstance(exc, PlatformError) or exc.transient
        if retry and not last_attempt:
            raise
        # A permanent failure, or the last attempt (Cloud Tasks has no dead-letter queue): record the chunk's
        # open items as failed rather than lose them.
        log.error("chunk %s/%s failed for good: %r", batch.batch_id, message.chunk, exc)
        await _fail_chunk(engine=engine, batch=batch, chunk_index=message.chunk, reason=str(exc))
        return {"outcome": "chunk failed", "reason": str(exc)}
    finally:
        _deliveries_running -= 1


async def _run_delivery(
    *,
    engine: Engine,
    read: BatchSnapshot,
    chunk_read: ChunkSnapshot | None,
    claimed: ClaimedAsWritten | None,
    message: WorkMessage,
    worker_id: str,
) -> dict[str, Any]:
    batch = read.batch
    if batch.status.is_final:
        if chunk_read is None:
            return {"outcome": "unknown chunk"}
        await set_chunk_state(
            engine=engine, batch_id=batch.batch_id, index=message.chunk, state=ChunkState.CANCELLED
        )
        await after_chunk(engine=engine, batch=batch, chunk_index=message.chunk)
        return {"outcome": f"batch {batch.status.value}"}
    try:
        chunk, version = await claim(
            engine=engine,
            batch_id=batch.batch_id,
            index=message.chunk,
            worker_id=worker_id,
            segment=message.segment,
            read=chunk_read,
            claimed=claimed,
        )
    except Superseded as superseded:
        # The later segment's task may be missing (its enqueue crashed): enqueue it again (a no-op by name).
        waiting = superseded.chunk
        await enqueue_chunk(
            engine=engine,
            batch_id=batch.batch_id,
            chunk=waiting.index,
            segment=waiting.segment,
            kind=batch.kind,
            schedule_time=waiting.deferred_until,
        )
        return {"outcome": f"superseded by segment {waiting.segment}"}
    if chunk.state.is_terminal:
        await after_chunk(engine=engine, batch=batch, chunk_index=chunk.index)
        return {"outcome": f"chunk already {chunk.state.value}"}
    # The batch is marked running beside its first requests, not before them: the status shows `running`
    # from the chunks' claims already, and the first result comes a round trip sooner.
    marking = (
        asyncio.create_task(_mark_running(engine=engine, read=read))
        if batch.status is BatchStatus.QUEUED
        else None
    )
    try:
        return await _run_claimed(
            engine=engine, batch=batch, chunk=chunk, version=version, worker_id=worker_id
        )
    finally:
        if marking is not None:
            try:
                await marking
            except PlatformError as exc:  # only the batch document's status lags: its chunks show it running
                log.warning("could not mark batch %s running: %r", batch.batch_id, exc)


async def _run_claimed(
    *, engine: Engine, batch: BatchDoc, chunk: ChunkDoc, version: Any, worker_id: str
) -> dict[str, Any]:
    """Run a claimed chunk, and carry on to its lane's next chunks while that saves time."""
    delivery = _current_delivery.get()
    assert delivery is not None, "a chunk runs inside process_chunk"
    run = ChunkRun(
        engine=engine,
        kind=kind_of(engine, batch.kind),
        batch=batch,
        chunk=chunk,
        worker_id=worker_id,
        version=version,
        deadline=delivery.deadline,  # a run handed over to a delivery shares its budget
        handover=_handover(engine, delivery),
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
                    await hand_back(following)  # in case it was cancelled before it started
            raise
        if following is None or following_task is None:
            break
        run, running = following, following_task
    return outcomes[0] if len(outcomes) == 1 else {"outcome": outcomes[-1]["outcome"], "chunks": outcomes}


async def _run_chunk(run: ChunkRun, lane: asyncio.Semaphore) -> dict[str, Any]:
    """Run a claimed chunk's open items, record them and release the chunk, then chain on."""
    engine, batch, chunk = run.engine, run.batch, run.chunk
    done: set[int] = set()
    if chunk.claims > 1:
        # Resuming a chunk: skip what earlier deliveries recorded, and count it exactly.
        for page in await engine.store.chunk_results(batch.batch_id, chunk.index):
            done.update(page.indices)
            run.progress = run.progress.plus(page.totals)
    todo = [i for i in range(chunk.start, chunk.end) if i not in done]
    try:
        await run_items(run, todo, lane)
        run.drained.set()
        if run.lease_lost:
            return {"chunk": chunk.index, "outcome": "lease lost; another worker owns the chunk"}
        if run.deferred is not None and run.stopped is None:
            until = await defer(engine=engine, run=run, after=run.deferred)
            return {"chunk": chunk.index, "outcome": "deferred", "until": until.isoformat()}
        if run.out_of_time and run.stopped is None:
            await continue_later(engine=engine, run=run)
            return {"chunk": chunk.index, "outcome": "continued in a new segment", "recorded": run.recorded}
        final_state = ChunkState.CANCELLED if run.stopped else ChunkState.DONE
        # At the end of a lane the batch and the chunks' progress are read beside the release commit.
        lane_end = run.stopped is None and batch.following_in_lane(chunk.index) is None
        read_beside = asyncio.ensure_future(read_lane_end(engine, batch.batch_id)) if lane_end else None
        try:
            released = await release(run=run, changes={"state": final_state.value})
        except BaseException:
            if read_beside is not None:
                read_beside.cancel()
                await asyncio.gather(read_beside, return_exceptions=True)
            raise
    except BaseException:
        # Hand the chunk back at once (what was not recorded runs again), so the retry of this delivery need
        # not wait for the lease to expire.
        with contextlib.suppress(Exception):
            await hand_back(run)
        raise
    if not released and read_beside is not None:
        await asyncio.gather(read_beside, return_exceptions=True)
    if released:
        # A stopped run knows its batch's final status; otherwise the batch may have stopped meanwhile. At
        # the end of a lane the stage check and the fan-in decide on the batch and the chunks' progress.
        read: BatchSnapshot | None = None
        chunks: list[ChunkProgress] | None = None
        released_at = None
        if run.stopped is not None:
            latest = batch.model_copy(update={"status": run.stopped.status})
        elif read_beside is not None:
            read, chunks = await lane_end_after_release(run, read_beside)
            latest = read.batch if read is not None else batch
            released_at = run.version
        else:
            latest = await engine.store.get_batch(batch.batch_id) or batch
        await run.carry_on_decided.wait()  # chain on to the next chunk only if this delivery does not run it
        await after_chunk(
            engine=engine,
            batch=latest,
            chunk_index=chunk.index,
            carried_on=run.carried_on,
            read=read,
            chunks=chunks,
            released_at=released_at,
        )
    return {"chunk": chunk.index, "outcome": final_state.value, "recorded": run.recorded}


async def _carry_on(run: ChunkRun, running: asyncio.Task[dict[str, Any]]) -> ChunkRun | None:
    """Once every item of the chunk has started, claim the lane's next chunk: its items take the slots the
    chunk's last items free, instead of waiting for the chunk to end and a new delivery to start. The claim
    is a lease like any other, so a crash is recovered as any other (the sweeper re-enqueues it)."""
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
        or run.batch.following_in_lane(run.chunk.index) is None
        or budget_left < CARRY_ON_MIN_BUDGET_S
        or _deliveries_running > 1
    )


async def _claim_following(run: ChunkRun) -> ChunkRun | None:
    following = run.batch.following_in_lane(run.chunk.index)
    assert following is not None
    try:
        chunk, version = await claim(
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
        kind=run.kind,
        batch=run.batch,
        chunk=chunk,
        worker_id=run.worker_id,
        version=version,
        deadline=run.deadline,
        handover=run.handover,
    )


async def _mark_running(*, engine: Engine, read: BatchSnapshot) -> BatchDoc | None:
    def _running(batch: BatchDoc) -> dict[str, Any] | None:
        return {"status": BatchStatus.RUNNING.value} if batch.status is BatchStatus.QUEUED else None

    return await engine.store.update_batch(read.batch.batch_id, _running, read=read)


async def _fail_chunk(*, engine: Engine, batch: BatchDoc, chunk_index: int, reason: str) -> None:
    """Record every open item of the chunk as failed and mark the chunk failed (one compare-and-set commit,
    retried on a concurrent change), then chain on. This takes the chunk over as a claim would, and counts
    as one: status sums the progress of claimed chunks only."""
    error = ErrorInfo(code="chunk_failed", message=f"the chunk exhausted its delivery attempts: {reason}")
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
        outcomes = [
            Outcome(
                index=index,
                line=result_line(
                    index=index,
                    custom_id=chunk.custom_ids[index - chunk.start],
                    fields={},
                    error=error,
                    input_tokens=0,
                    output_tokens=0,
                    cached_tokens=0,
                    processing_ms=0,
                    attempts=0,
                ),
                totals=ResultTotals(finished=1, failed=1),
                events=[],
            )
            for index in range(chunk.start, chunk.end)
            if index not in done
        ]
        page = result_page(chunk, outcomes) if outcomes else None
        recorded = await engine.store.record_results(
            batch.batch_id,
            chunk_index,
            version=snapshot.version,
            page=page,
            usage=None,
            changes={
                "state": ChunkState.FAILED.value,
                "claims": chunk.claims + 1,
                "lease_owner": None,
                "lease_expires_at": None,
                "finished_at": engine.clock(),
                "progress": (progress.plus(page.totals) if page else progress).model_dump(),
            },
        )
        if recorded is not None:
            break
    await after_chunk(engine=engine, batch=batch, chunk_index=chunk_index)
