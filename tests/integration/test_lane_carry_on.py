"""A delivery carries on to its lane's next chunks: the real Firestore adapter and the Gemini emulator.

The tasks are not delivered by Cloud Tasks here: the test plays each delivery itself and reads what the engine
enqueued, so it can show which chunks run in which delivery, and what a failure leaves behind.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from shared import runtime
from shared.app import platform
from shared.emulator_config import EmulatorConfig
from shared.errors import StoreUnavailable
from shared.models.batch import ChunkState, ItemResult, WorkMessage
from shared.services.engine import Engine, results_object
from shared.services.finalizer import finalize
from shared.services.worker import process_chunk
from tests.integration.engine_harness import RecordingQueue, WrappedStore, submit

REQUESTS = 30  # three chunks of 10 in one lane


class FailingOnceStore(WrappedStore):
    """The real store, except that the first commit of one chunk's results fails as if Firestore were down."""

    def __init__(self, store: Any, chunk: int) -> None:
        super().__init__(store)
        self._chunk = chunk
        self.failed = False

    async def record_results(self, batch_id: str, chunk: int, **rest: Any) -> Any | None:
        if chunk == self._chunk and not self.failed:
            self.failed = True
            raise StoreUnavailable("injected outage")
        return await self._store.record_results(batch_id, chunk, **rest)


@pytest.fixture
def engine(local_cloud: EmulatorConfig) -> Engine:
    real = platform().engine
    settings = real.settings.model_copy(update={"batch_chunk_size": 10})
    return dataclasses.replace(real, settings=settings, queue=RecordingQueue())  # type: ignore[arg-type]


def _submit(engine: Engine, tenant: str) -> str:
    requests = [{"prompt": f"p{i}", "customId": f"c{i}"} for i in range(REQUESTS)]
    return submit(engine, tenant, requests, concurrency=2)


def _deliver(engine: Engine, batch_id: str, chunk: int, retry_count: int = 0) -> dict[str, Any]:
    message = WorkMessage(batch_id=batch_id, chunk=chunk)
    return runtime.run(process_chunk(engine=engine, message=message, retry_count=retry_count))


def _enqueued(engine: Engine) -> set[str]:
    queue = engine.queue
    assert isinstance(queue, RecordingQueue)
    return set(queue.tasks)


def _results(engine: Engine, batch_id: str) -> list[ItemResult]:
    lines = runtime.run(engine.store.result_lines(batch_id, 0, REQUESTS))
    return [ItemResult.model_validate_json(lines[i]) for i in sorted(lines)]


def test_one_delivery_runs_its_whole_lane(engine: Engine, unique: str) -> None:
    batch_id = _submit(engine, f"carry-{unique}")

    outcome = _deliver(engine, batch_id, 0)

    assert [(c["chunk"], c["outcome"]) for c in outcome["chunks"]] == [(0, "done"), (1, "done"), (2, "done")]
    # No task for the chunks it carried on to, nor for the fan-in: the end of the lane ran it.
    assert _enqueued(engine) == {f"{batch_id}-c0-s0"}
    batch = runtime.run(engine.store.get_batch(batch_id))
    assert batch is not None and batch.finalized
    results = _results(engine, batch_id)
    assert [r.custom_id for r in results] == [f"c{i}" for i in range(REQUESTS)]
    assert all(r.status == "succeeded" and r.attempts == 1 for r in results)
    chunks = runtime.run(engine.store.chunk_progress(batch_id))
    assert [(c.state, c.claims, c.progress.successful) for c in chunks] == [(ChunkState.DONE, 1, 10)] * 3


def test_a_repeated_delivery_after_the_lane_ran_records_nothing_twice(engine: Engine, unique: str) -> None:
    batch_id = _submit(engine, f"carry-{unique}")
    _deliver(engine, batch_id, 0)

    again = _deliver(engine, batch_id, 0)

    # The end of the lane ran the fan-in itself: the repeated delivery finds the batch completed.
    assert again["outcome"] == "batch completed"
    assert runtime.run(engine.store.get_batch(batch_id)).finalized  # type: ignore[union-attr]
    assert len(_results(engine, batch_id)) == REQUESTS
    chunks = runtime.run(engine.store.chunk_progress(batch_id))
    assert sum(c.progress.finished for c in chunks) == REQUESTS


def test_the_lane_end_fans_in_at_once_and_a_later_finalize_changes_nothing(
    engine: Engine, unique: str
) -> None:
    batch_id = _submit(engine, f"carry-{unique}")
    _deliver(engine, batch_id, 0)
    fanned_in = runtime.run(engine.store.get_batch(batch_id))
    assert fanned_in is not None and fanned_in.finalized and fanned_in.status.value == "completed"
    results_file = runtime.run(engine.blobs.get(object_name=results_object(batch_id)))

    # A finalize task delivered later (or twice: the sweeper's, a duplicate) finds the batch final and writes
    # nothing.
    again = [runtime.run(finalize(engine=engine, batch_id=batch_id)) for _ in range(2)]

    assert again == [{"outcome": "already final"}] * 2
    assert runtime.run(engine.store.get_batch(batch_id)) == fanned_in
    assert runtime.run(engine.blobs.get(object_name=results_object(batch_id))) == results_file
    assert len(results_file.splitlines()) == REQUESTS


def test_a_failure_in_a_carried_chunk_hands_it_back_and_the_retry_chains_to_it(
    engine: Engine, unique: str
) -> None:
    store = FailingOnceStore(engine.store, chunk=1)
    failing = dataclasses.replace(engine, store=store)  # type: ignore[arg-type]
    batch_id = _submit(failing, f"carry-{unique}")

    # The delivery fails as a whole (Cloud Tasks retries it); the carried chunk is handed back, not stranded.
    with pytest.raises(StoreUnavailable):
        _deliver(failing, batch_id, 0)
    chunks = runtime.run(engine.store.chunk_progress(batch_id))
    assert [c.state for c in chunks] == [ChunkState.DONE, ChunkState.PENDING, ChunkState.PENDING]

    # The retry finds its chunk done and enqueues the next one, whose delivery runs the rest of the lane.
    assert _deliver(failing, batch_id, 0, retry_count=1)["outcome"] == "chunk already done"
    assert f"{batch_id}-c1-s0" in _enqueued(engine)
    _deliver(failing, batch_id, 1)

    assert [r.status for r in _results(engine, batch_id)] == ["succeeded"] * REQUESTS
    chunks = runtime.run(engine.store.chunk_progress(batch_id))
    assert [c.state for c in chunks] == [ChunkState.DONE] * 3
    assert sum(c.progress.finished for c in chunks) == REQUESTS


class LaneEndReads(WrappedStore):
    """The real store, noting in order each read of the chunks' progress and each chunk's release as done."""

    async def chunk_progress(self, batch_id: str) -> Any:
        self.events.append("progress read")
        return await self._store.chunk_progress(batch_id)

    async def record_results(self, batch_id: str, chunk: int, **rest: Any) -> Any | None:
        written = await self._store.record_results(batch_id, chunk, **rest)
        if rest["changes"].get("state") == ChunkState.DONE.value:
            self.events.append(f"chunk {chunk} released")
        return written


def test_the_lane_ending_last_fans_in_on_the_progress_read_beside_its_release(
    engine: Engine, unique: str
) -> None:
    requests = [{"prompt": f"p{i}", "customId": f"c{i}"} for i in range(40)]
    batch_id = submit(engine, f"ends-{unique}", requests, concurrency=50)  # two lanes of two chunks each
    noting = LaneEndReads(engine.store)
    # Under 10 s of budget a delivery does not carry on: each chunk is a delivery of its own, so the order of
    # the releases and the reads is the test's (a carried chunk may end before the chunk it ran beside).
    settings = engine.settings.model_copy(update={"batch_task_budget_seconds": 5.0})
    noted = dataclasses.replace(engine, store=noting, settings=settings)

    _deliver(noted, batch_id, 1)
    _deliver(noted, batch_id, 3)  # the end of lane 1; lane 0 has not run: read again, no fan-in

    assert noting.events == ["chunk 1 released", "progress read", "chunk 3 released", "progress read"]
    running = runtime.run(engine.store.get_batch(batch_id))
    assert running is not None and not running.finalized
    noting.events.clear()

    _deliver(noted, batch_id, 0)
    _deliver(noted, batch_id, 2)  # the end of lane 0; lane 1 is done: the read beside the release stands

    assert noting.events == ["chunk 0 released", "progress read", "chunk 2 released"]
    final = runtime.run(engine.store.get_batch(batch_id))
    assert final is not None and final.finalized and final.status.value == "completed"
    assert final.totals is not None and final.totals.finished == 40
    results_file = runtime.run(engine.blobs.get(object_name=results_object(batch_id)))
    custom_ids = [json.loads(line)["customId"] for line in results_file.splitlines()]
    assert custom_ids == [f"c{i}" for i in range(40)]
