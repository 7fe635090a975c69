"""The stall sweeper (run every minute by Cloud Scheduler): re-enqueue chunks whose lease expired, stop
batches past their deadline (keeping partial results). Safe to run twice: task names carry the claim count or
the minute, so a double fire enqueues nothing new.
"""

from __future__ import annotations

from typing import Any

from shared.models.batch import BatchDoc, BatchStatus
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
    return {"requeuedChunks": requeued, "expiredBatches": expired}
