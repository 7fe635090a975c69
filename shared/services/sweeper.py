"""The stall sweeper (run every minute by Cloud Scheduler): re-enqueue chunks whose lease expired, enqueue
again the next step of a batch whose task was lost, stop batches past their deadline (keeping partial
results). Safe to run twice: task names carry the claim count, the stall window or the minute, so a double
fire enqueues nothing new.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from shared.models.batch import BatchDoc, BatchStatus, ChunkState
from shared.services.engine import Engine, enqueue_chunk, enqueue_finalize

SWEEP_LIMIT = 200


async def sweep(*, engine: Engine) -> dict[str, Any]:
    now = engine.clock()
    requeued = 0
    kinds: dict[str, str | None] = {}  # batch -> kind, read once per batch with an expired lease
    for lease in await engine.store.expired_leases(now, SWEEP_LIMIT):
        if lease.batch_id not in kinds:
            stalled = await engine.store.get_batch(lease.batch_id)
            kinds[lease.batch_id] = stalled.kind if stalled else None
        # One re-enqueue per claim: a second sweep of the same stall finds the name taken.
        requeued += await enqueue_chunk(
            engine=engine,
            batch_id=lease.batch_id,
            chunk=lease.chunk,
            segment=lease.segment,
            suffix=f"-r{lease.claims}",
            kind=kinds[lease.batch_id],
        )
    stall = dt.timedelta(seconds=engine.settings.batch_stall_seconds)
    unwritten = 0
    for stalled_batch in await engine.store.unfinished_batches(now - stall, SWEEP_LIMIT):
        if stalled_batch.plan_written:
            requeued += await _resume_stalled(engine=engine, batch=stalled_batch, now=now, stall=stall)
        else:
            unwritten += await _stop_unwritten(engine=engine, batch=stalled_batch, now=now)
    expired = 0
    for batch in await engine.store.overdue_batches(now, SWEEP_LIMIT):

        def _expire(current: BatchDoc) -> dict[str, Any] | None:
            if current.status.is_final:
                return None
            return {
                "status": BatchStatus.FAILED.value,
                "stop_reason": "deadline exceeded",
                "finished_at": now,
            }

        await engine.store.update_batch(batch.batch_id, _expire)
        expired += await enqueue_finalize(engine=engine, batch_id=batch.batch_id, suffix=f"-{now:%Y%m%d%H%M}")
    return {"requeuedChunks": requeued, "expiredBatches": expired, "unwrittenBatches": unwritten}


async def _stop_unwritten(*, engine: Engine, batch: BatchDoc, now: dt.datetime) -> int:
    """A batch whose submit ended before it wrote every chunk (its work started on the first chunk of each
    lane, `plan_written` never came): stop it as failed, keeping what ran, and fan it in. The chunks that were
    never written show as never run."""

    def _stop(current: BatchDoc) -> dict[str, Any] | None:
        if current.status.is_final or current.plan_written:
            return None
        return {
            "status": BatchStatus.FAILED.value,
            "stop_reason": "the submit ended before every chunk of the batch was written",
            "finished_at": now,
        }

    stopped = await engine.store.update_batch(batch.batch_id, _stop)
    if stopped is None or not stopped.status.is_final:
        return 0
    return int(await enqueue_finalize(engine=engine, batch_id=batch.batch_id, suffix=f"-{now:%Y%m%d%H%M}"))


async def _resume_stalled(*, engine: Engine, batch: BatchDoc, now: dt.datetime, stall: dt.timedelta) -> int:
    """A batch whose chain of tasks broke: no chunk is running and none finished for `stall`, yet it is not
    fanned in. Each chunk is enqueued by the end of the one before it, so a task lost for good (deleted
    after its last attempt, or gone with the queue) would stop its lane until the deadline: enqueue again
    the chunks due to run (the first open chunk of each lane of the current stage), or the fan-in when every
    chunk is finished. One task per stall window, so repeated sweeps enqueue nothing new; a surplus task
    finds its chunk leased or finished and does nothing."""
    chunks = sorted(await engine.store.chunk_progress(batch.batch_id), key=lambda c: c.index)
    if any(chunk.state is ChunkState.RUNNING for chunk in chunks):
        return 0  # working under a live lease, or an expired one the sweep above has re-enqueued
    last_change = max((c.finished_at for c in chunks if c.finished_at), default=batch.created_at)
    if now - last_change < stall:
        return 0
    suffix = f"-w{int((now - last_change) / stall)}"
    open_chunks = [chunk for chunk in chunks if not chunk.state.is_terminal]
    if batch.status.is_final or not open_chunks:
        return int(await enqueue_finalize(engine=engine, batch_id=batch.batch_id, suffix=suffix))
    stage = batch.stage_of(open_chunks[0].index)
    requeued = 0
    for lane in range(stage.first, stage.first + stage.lanes):
        due = next((c for c in open_chunks if c.index >= lane and (c.index - lane) % stage.lanes == 0), None)
        if due is not None and due.index < stage.end:
            requeued += await enqueue_chunk(
                engine=engine,
                batch_id=batch.batch_id,
                chunk=due.index,
                segment=due.segment,
                suffix=suffix,
                kind=batch.kind,
            )
    return requeued
