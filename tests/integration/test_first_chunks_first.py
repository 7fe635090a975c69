"""A batch of more chunks than lanes starts on the first chunk of each lane while its submit writes the rest
(issue 16: the first result of a 50,000-request batch); a submit that dies midway leaves a batch the sweeper
stops, with nothing run twice and nothing counted as finished that never ran. Against the real Firestore
adapter; the test plays the deliveries itself and keeps the enqueued tasks."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest

from shared import runtime
from shared.emulator_config import EmulatorConfig
from shared.errors import LeaseHeld, StoreUnavailable
from shared.models.batch import BatchStatus, ChunkDoc, ChunkState, WorkMessage
from shared.services.engine import Engine
from shared.services.finalizer import NotReady, finalize
from shared.services.sweeper import sweep
from shared.services.worker import process_chunk
from tests.integration.engine_harness import (
    STALL_S,
    Clock,
    RecordingQueue,
    WrappedStore,
    played_engine,
    submit,
)


class SubmitDiesWritingLaterChunks(WrappedStore):
    """The real store, except that writing chunks behind a created batch fails as a dying instance would."""

    async def add_later_chunks(self, *, batch_id: str, chunks: list[ChunkDoc]) -> None:
        raise StoreUnavailable("the instance died")


class LaterChunksAfterTheTasks(WrappedStore):
    """The real store, noting which of the batch's tasks were enqueued when its later chunks start."""

    def __init__(self, store: Any, queue: RecordingQueue) -> None:
        super().__init__(store)
        self._queue = queue
        self.enqueued_before: list[str] | None = None

    async def add_later_chunks(self, *, batch_id: str, chunks: list[ChunkDoc]) -> None:
        self.enqueued_before = [name for name in self._queue.tasks if name.startswith(batch_id)]
        await self._store.add_later_chunks(batch_id=batch_id, chunks=chunks)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def engine(local_cloud: EmulatorConfig, clock: Clock) -> Engine:
    return played_engine(clock=clock)


def _own(engine: Engine, batch_id: str) -> list[str]:
    assert isinstance(engine.queue, RecordingQueue)
    return [name for name in engine.queue.tasks if name.startswith(batch_id)]


def _deliver(engine: Engine, batch_id: str, chunk: int) -> dict[str, Any]:
    message = WorkMessage(batch_id=batch_id, chunk=chunk)
    return runtime.run(process_chunk(engine=engine, message=message, retry_count=0))


def _requests(count: int) -> list[dict[str, Any]]:
    return [{"prompt": f"p{i}", "customId": f"c{i}"} for i in range(count)]


def test_the_submit_writes_the_later_chunks_and_marks_the_plan_written(engine: Engine, unique: str) -> None:
    batch_id = submit(engine, f"later-{unique}", _requests(6), concurrency=1)  # one lane of three chunks

    batch = runtime.run(engine.store.get_batch(batch_id))
    assert batch is not None and batch.plan_written and batch.chunk_count == 3
    chunks = runtime.run(engine.store.chunk_progress(batch_id))
    assert sorted(c.index for c in chunks) == [0, 1, 2]
    assert _own(engine, batch_id) == [f"{batch_id}-c0-s0"]

    _deliver(engine, batch_id, 0)  # the lane carries on through chunks 1 and 2, and fans in

    finished = runtime.run(engine.store.get_batch(batch_id))
    assert finished is not None and finished.finalized and finished.status is BatchStatus.COMPLETED
    assert finished.totals is not None and finished.totals.finished == 6


def test_the_first_chunks_are_enqueued_before_the_later_chunks_are_written(
    engine: Engine, unique: str
) -> None:
    assert isinstance(engine.queue, RecordingQueue)
    watching = LaterChunksAfterTheTasks(engine.store, engine.queue)

    batch_id = submit(
        dataclasses.replace(engine, store=watching), f"order-{unique}", _requests(6), concurrency=1
    )

    assert watching.enqueued_before == [f"{batch_id}-c0-s0"], "the first chunk's work starts first"


def test_a_submit_that_dies_after_the_first_chunks_leaves_a_batch_the_sweeper_stops(
    engine: Engine, clock: Clock, unique: str
) -> None:
    dying = dataclasses.replace(engine, store=SubmitDiesWritingLaterChunks(engine.store))
    with pytest.raises(StoreUnavailable):
        submit(dying, f"dies-{unique}", _requests(6), concurrency=1)
    [batch] = runtime.run(engine.store.active_batches(f"dies-{unique}", 10))
    batch_id = batch.batch_id
    assert not batch.plan_written
    assert [c.index for c in runtime.run(engine.store.chunk_progress(batch_id))] == [0]
    assert _own(engine, batch_id) == [f"{batch_id}-c0-s0"]  # work started before the rest was written

    _deliver(engine, batch_id, 0)  # its lane's next chunk is missing: no carry on, its task enqueued

    assert f"{batch_id}-c1-s0" in _own(engine, batch_id)
    with pytest.raises(LeaseHeld):  # Cloud Tasks retries the delivery of a chunk not written yet
        _deliver(engine, batch_id, 1)
    with pytest.raises(NotReady):  # a missing chunk is not finished: no fan-in
        runtime.run(finalize(engine=engine, batch_id=batch_id))

    runtime.run(sweep(engine=engine))  # not stalled yet
    running = runtime.run(engine.store.get_batch(batch_id))
    assert running is not None and not running.status.is_final

    clock.offset = dt.timedelta(seconds=STALL_S + 1)
    runtime.run(sweep(engine=engine))
    runtime.run(sweep(engine=engine))  # the scheduler firing twice changes nothing more

    stopped = runtime.run(engine.store.get_batch(batch_id))
    assert stopped is not None and stopped.status is BatchStatus.FAILED
    assert stopped.stop_reason == "the submit ended before every chunk of the batch was written"
    fan_ins = [name for name in _own(engine, batch_id) if "-final-" in name]
    assert len(fan_ins) == 1
    runtime.run(finalize(engine=engine, batch_id=batch_id))
    final = runtime.run(engine.store.get_batch(batch_id))
    assert final is not None and final.finalized and final.status is BatchStatus.FAILED
    assert final.totals is not None and final.totals.finished == 2  # chunk 0 ran once; 1 and 2 never ran
    assert final.summary is not None and final.summary["cancelled"] == 4
    snapshot = runtime.run(engine.store.get_chunk(batch_id, 0))
    assert snapshot is not None and snapshot.chunk.state is ChunkState.DONE and snapshot.chunk.claims == 1
