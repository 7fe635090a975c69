"""A batch whose next task was lost (found by `make chaos`: the Tasks emulator restarted mid-batch) is
resumed by the sweeper once it has stalled, against the real Firestore adapter; the test plays the
deliveries itself and keeps the enqueued tasks, so it can lose one."""

from __future__ import annotations

import datetime as dt

import pytest

from shared import runtime
from shared.emulator_config import EmulatorConfig
from shared.models.batch import WorkMessage
from shared.services.engine import Engine
from shared.services.finalizer import finalize
from shared.services.sweeper import sweep
from shared.services.worker import process_chunk
from tests.integration.engine_harness import STALL_S, Clock, RecordingQueue, played_engine, submit


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def engine(local_cloud: EmulatorConfig, clock: Clock) -> Engine:
    return played_engine(clock=clock)


def _tasks(engine: Engine) -> dict[str, object]:
    assert isinstance(engine.queue, RecordingQueue)
    return engine.queue.tasks


def _own(engine: Engine, batch_id: str) -> list[str]:
    """The tasks enqueued for this batch (the sweep also sees other tests' batches)."""
    return [name for name in _tasks(engine) if name.startswith(batch_id)]


def _deliver(engine: Engine, batch_id: str, chunk: int) -> None:
    message = WorkMessage(batch_id=batch_id, chunk=chunk)
    runtime.run(process_chunk(engine=engine, message=message, retry_count=0))


def test_a_lost_chunk_task_is_enqueued_again_once_the_batch_stalls(
    engine: Engine, clock: Clock, unique: str
) -> None:
    requests = [{"prompt": f"p{i}", "customId": f"c{i}"} for i in range(4)]
    batch_id = submit(engine, f"lost-{unique}", requests, concurrency=1)  # one lane of two chunks
    assert _own(engine, batch_id) == [f"{batch_id}-c0-s0"]
    _tasks(engine).clear()  # the first chunk's task is lost

    # Not stalled yet: nothing is enqueued.
    runtime.run(sweep(engine=engine))
    assert _own(engine, batch_id) == []

    clock.offset = dt.timedelta(seconds=STALL_S + 1)
    runtime.run(sweep(engine=engine))
    runtime.run(sweep(engine=engine))  # the scheduler firing twice enqueues nothing new

    assert _own(engine, batch_id) == [f"{batch_id}-c0-s0-w1"]

    _deliver(engine, batch_id, 0)  # runs the lane (it carries on to chunk 1); its end fans in itself
    fanned_in = runtime.run(engine.store.get_batch(batch_id))
    assert fanned_in is not None and fanned_in.finalized
    assert not [name for name in _own(engine, batch_id) if "-final" in name]
    _tasks(engine).clear()
    clock.offset = dt.timedelta(seconds=2 * (STALL_S + 1))

    runtime.run(sweep(engine=engine))

    assert _own(engine, batch_id) == []
    assert runtime.run(finalize(engine=engine, batch_id=batch_id))["outcome"] == "already final"


def test_a_batch_with_a_chunk_under_a_live_lease_is_left_alone(
    engine: Engine, clock: Clock, unique: str
) -> None:
    requests = [{"prompt": f"p{i}", "customId": f"c{i}"} for i in range(2)]
    batch_id = submit(engine, f"live-{unique}", requests, concurrency=1)
    _tasks(engine).clear()  # the submit's own task
    clock.offset = dt.timedelta(seconds=STALL_S + 1)
    snapshot = runtime.run(engine.store.get_chunk(batch_id, 0))
    assert snapshot is not None
    runtime.run(
        engine.store.update_chunk_if_unchanged(
            batch_id,
            0,
            version=snapshot.version,
            changes={
                "state": "running",
                "lease_owner": "someone",
                "lease_expires_at": clock() + dt.timedelta(seconds=60),
            },
        )
    )

    runtime.run(sweep(engine=engine))

    assert _own(engine, batch_id) == []
