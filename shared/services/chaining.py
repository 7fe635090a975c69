"""What a chunk's delivery does once it stops running items: hand the rest of the chunk on to a new segment
(its time budget spent, or an item deferred), or chain on to the lane's next chunk, the next stage or the
fan-in. Every step is enqueued under a deterministic task name, so running it twice is harmless.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from shared.models.batch import BatchDoc, ChunkProgress, ChunkState
from shared.ports import BatchSnapshot
from shared.services.engine import Engine, enqueue_chunk, enqueue_finalize, enqueue_stage
from shared.services.finalizer import finalize
from shared.services.leases import ChunkRun, release


async def continue_later(*, engine: Engine, run: ChunkRun) -> None:
    """The time budget of this delivery is spent: hand the rest of the chunk to a new task."""
    await _hand_on(engine=engine, run=run)


async def defer(*, engine: Engine, run: ChunkRun, after: dt.timedelta) -> dt.datetime:
    """An item asked to run later (ItemDeferred): record what finished, hand the chunk on to a new segment
    and enqueue that segment's task scheduled for then. No delivery waits, and no attempt is counted."""
    until = engine.clock() + after
    await _hand_on(
        engine=engine,
        run=run,
        changes={"deferrals": run.chunk.deferrals + 1, "deferred_until": until},
        schedule_time=until,
    )
    return until


async def _hand_on(
    *,
    engine: Engine,
    run: ChunkRun,
    changes: dict[str, Any] | None = None,
    schedule_time: dt.datetime | None = None,
) -> None:
    """Release the chunk to its next segment (with `changes`) and enqueue that segment's task."""
    segment = run.chunk.segment + 1
    released = {"state": ChunkState.PENDING.value, "segment": segment, **(changes or {})}
    if await release(run=run, changes=released):
        await enqueue_chunk(
            engine=engine,
            batch_id=run.batch.batch_id,
            chunk=run.chunk.index,
            segment=segment,
            kind=run.batch.kind,
            schedule_time=schedule_time,
        )


LaneEnd = tuple[BatchSnapshot | None, list[ChunkProgress]]


async def read_lane_end(engine: Engine, batch_id: str) -> LaneEnd:
    """The batch and its chunks' progress: what the end of a lane decides on (stage check, fan-in)."""
    read, chunks = await asyncio.gather(
        engine.store.read_batch(batch_id), engine.store.chunk_progress(batch_id)
    )
    return read, chunks


async def lane_end_after_release(run: ChunkRun, read_beside: asyncio.Future[LaneEnd]) -> LaneEnd:
    """The batch and the chunks' progress at the end of a lane, its chunk just released as done. Read beside
    the release: when every other chunk of the stage was finished then, this lane ends the stage and that read
    stands (a finished chunk stays finished; this chunk's own entry is set to what it just released), a round
    trip less before the fan-in. Otherwise they are read again now, after the release, so that of two lanes
    ending together the later one always sees both finished."""
    read, chunks = await read_beside
    chunk = run.chunk
    stage = run.batch.stage_of(chunk.index)
    others = [c for c in chunks if stage.first <= c.index < stage.end and c.index != chunk.index]
    if len(others) == stage.count - 1 and all(c.state.is_terminal for c in others):
        released = {
            "state": ChunkState.DONE,
            "progress": run.progress,
            "lease_expires_at": None,
            "version": run.version,
        }
        return read, [c.model_copy(update=released) if c.index == chunk.index else c for c in chunks]
    return await read_lane_end(run.engine, run.batch.batch_id)


async def after_chunk(
    *,
    engine: Engine,
    batch: BatchDoc,
    chunk_index: int,
    carried_on: bool = False,
    read: BatchSnapshot | None = None,
    chunks: list[ChunkProgress] | None = None,
    released_at: dt.datetime | None = None,
) -> None:
    """Chain on: the lane's next chunk (unless this delivery carried on to it); at the end of a lane, once
    every chunk of the stage is written and finished, the next stage, or after the last stage the fan-in (at
    once after a stop). Idempotent by task name. `read` and `chunks`: the batch and the chunks' progress as
    just read after this chunk's release, if the caller read them; `released_at`: the commit time of this
    delivery's release of the chunk, if it just released it.

    This chunk's state was written before this runs, so of two lanes ending together the later one always
    sees both finished: the next step is never left out. When both see both finished, only the lane whose
    release committed last (`released_at`, then the chunk's index) chains on: the fan-in runs once, not twice
    at once. A chunk the submit has not written yet is not finished: its own task runs it once it is there,
    and chains on from it.
    """
    if batch.status.is_final:
        await enqueue_finalize(engine=engine, batch_id=batch.batch_id)
        return
    following = batch.following_in_lane(chunk_index)
    if following is not None:
        if not carried_on:
            await enqueue_chunk(
                engine=engine, batch_id=batch.batch_id, chunk=following, segment=0, kind=batch.kind
            )
        return
    stage = batch.stage_of(chunk_index)
    if chunks is None:
        chunks = await engine.store.chunk_progress(batch.batch_id)
    in_stage = [c for c in chunks if stage.first <= c.index < stage.end]
    if len(in_stage) < stage.count or not all(c.state.is_terminal for c in in_stage):
        return  # another lane of the stage is still running (or not written yet): its end chains on
    if released_at is not None and _released_later(in_stage, than=(released_at, chunk_index)):
        return  # another lane's release committed after this one's: that lane saw every chunk finished too
    later = [s for s in batch.stages if s.first >= stage.end]
    if later:
        await enqueue_stage(engine=engine, batch=batch, stage=later[0])
    else:
        await _fan_in(engine=engine, batch_id=batch.batch_id, read=read, chunks=chunks)


def _released_later(chunks: list[ChunkProgress], *, than: tuple[dt.datetime, int]) -> bool:
    """Whether a chunk's last commit (a finished chunk's release) came after `than` (a commit time and its
    chunk's index, the index deciding between equal times)."""
    return any(c.version is not None and (c.version, c.index) > than for c in chunks)


async def _fan_in(
    *,
    engine: Engine,
    batch_id: str,
    read: BatchSnapshot | None = None,
    chunks: list[ChunkProgress] | None = None,
) -> None:
    """Run the fan-in here, at once: a task hop and a round trip less before the batch shows completed. Should
    it fail, or this delivery die, this delivery fails: Cloud Tasks delivers it again, and the delivery of a
    finished chunk chains on as its first did (the stall sweeper is the last resort). The fan-in acts once
    however often it runs (the results file is written only if absent, the batch by compare-and-set)."""
    await finalize(engine=engine, batch_id=batch_id, read=read, chunks=chunks)
