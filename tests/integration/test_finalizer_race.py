"""Two finalizers racing (found by `make chaos`: every task delivered twice) upload the results file once;
two lanes ending together run the fan-in once; a fan-in that fails at the end of a lane is run again by the
delivery's retry. Against the real Firestore and Cloud Storage adapters; the test plays the deliveries
itself."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from shared import runtime
from shared.app import platform
from shared.emulator_config import EmulatorConfig
from shared.errors import BlobUnavailable
from shared.models.batch import WorkMessage
from shared.services.engine import Engine, results_object
from shared.services.finalizer import NotReady, finalize
from shared.services.worker import process_chunk
from tests.integration.engine_harness import RecordingQueue, submit


class CountingBlobs:
    """The real blob store, counting the uploads that really wrote an object, and every attempt of one
    (`failures`: how many attempts fail first, as if Cloud Storage were down)."""

    def __init__(self, blobs: Any, failures: int = 0) -> None:
        self._blobs = blobs
        self.uploads = 0
        self.attempts = 0
        self.failures = failures

    def __getattr__(self, name: str) -> Any:
        return getattr(self._blobs, name)

    async def put(self, **kwargs: Any) -> None:
        await self._blobs.put(**kwargs)
        self.uploads += 1

    async def put_parts(self, **kwargs: Any) -> bool:
        self.attempts += 1
        if self.failures:
            self.failures -= 1
            raise BlobUnavailable("injected outage")
        created: bool = await self._blobs.put_parts(**kwargs)
        self.uploads += created
        return created


@pytest.fixture
def engine(local_cloud: EmulatorConfig) -> Engine:
    real = platform().engine
    return dataclasses.replace(real, queue=RecordingQueue(), blobs=CountingBlobs(real.blobs))  # type: ignore[arg-type]


def _submitted(engine: Engine, tenant: str) -> str:
    return submit(engine, tenant, [{"prompt": f"p{i}", "customId": f"c{i}"} for i in range(3)])


def _run(engine: Engine, batch_id: str) -> None:
    """The batch's one chunk; the end of its lane runs the fan-in itself."""
    runtime.run(process_chunk(engine=engine, message=WorkMessage(batch_id=batch_id, chunk=0), retry_count=0))


def test_two_finalizers_at_once_upload_the_results_once(engine: Engine, unique: str) -> None:
    batch_id = _submitted(engine, f"fan-in-{unique}")
    chunk = WorkMessage(batch_id=batch_id, chunk=0)

    async def racing() -> list[Any]:
        # The lane's end fans in itself while two deliveries of the finalize task arrive (those that come
        # while the chunk still runs answer NotReady, as Cloud Tasks would be told).
        return list(
            await asyncio.gather(
                process_chunk(engine=engine, message=chunk, retry_count=0),
                *(finalize(engine=engine, batch_id=batch_id) for _ in range(2)),
                return_exceptions=True,
            )
        )

    outcomes = [o for o in runtime.run(racing())[1:] if not isinstance(o, NotReady)]
    late = runtime.run(finalize(engine=engine, batch_id=batch_id))

    assert {o["outcome"] for o in outcomes} <= {"completed", "already final"}
    assert late["outcome"] == "already final"
    assert isinstance(engine.blobs, CountingBlobs) and engine.blobs.uploads == 1
    lines = runtime.run(engine.blobs.get(object_name=results_object(batch_id))).decode().splitlines()
    assert [line.count('"customId":"c') for line in lines] == [1, 1, 1]


def test_a_stale_file_of_the_same_name_is_replaced(engine: Engine, unique: str) -> None:
    batch_id = _submitted(engine, f"stale-{unique}")
    runtime.run(
        engine.blobs.put(object_name=results_object(batch_id), data=b"stale\n", content_type="text/plain")
    )

    _run(engine, batch_id)
    runtime.run(finalize(engine=engine, batch_id=batch_id))

    text = runtime.run(engine.blobs.get(object_name=results_object(batch_id))).decode()
    assert "stale" not in text and len(text.splitlines()) == 3


def test_two_lanes_ending_together_fan_in_once(engine: Engine, unique: str) -> None:
    """Both lanes' deliveries run at once and end together, often each seeing the other finished: only the
    one whose release committed last runs the fan-in, and nothing enqueues a finalize task."""

    async def both_lanes(batch_id: str) -> None:
        await asyncio.gather(
            *(
                process_chunk(
                    engine=engine, message=WorkMessage(batch_id=batch_id, chunk=chunk), retry_count=0
                )
                for chunk in (0, 1)
            )
        )

    blobs, queue = engine.blobs, engine.queue
    assert isinstance(blobs, CountingBlobs) and isinstance(queue, RecordingQueue)
    for attempt in range(6):
        requests = [{"prompt": f"p{i}", "customId": f"c{i}"} for i in range(40)]
        batch_id = submit(engine, f"lanes-{unique}-{attempt}", requests, concurrency=50)  # two lanes of 20
        blobs.attempts = 0

        runtime.run(both_lanes(batch_id))

        batch = runtime.run(engine.store.get_batch(batch_id))
        assert batch is not None and batch.finalized and batch.status.value == "completed"
        assert blobs.attempts == 1
        assert not [name for name in queue.tasks if name.startswith(f"{batch_id}-final")]


def test_a_fan_in_that_fails_at_the_lane_end_fails_the_delivery_and_its_retry_fans_in(
    local_cloud: EmulatorConfig, unique: str
) -> None:
    real = platform().engine
    blobs = CountingBlobs(real.blobs, failures=1)
    engine = dataclasses.replace(real, queue=RecordingQueue(), blobs=blobs)  # type: ignore[arg-type]
    batch_id = _submitted(engine, f"fan-in-{unique}")

    # Cloud Tasks is told the delivery failed; the chunk's work is recorded and released all the same.
    with pytest.raises(BlobUnavailable):
        _run(engine, batch_id)
    batch = runtime.run(engine.store.get_batch(batch_id))
    assert batch is not None and not batch.finalized
    assert [c.state.value for c in runtime.run(engine.store.chunk_progress(batch_id))] == ["done"]

    # Its retry finds the chunk finished and runs the fan-in, without running a request again.
    retried = runtime.run(
        process_chunk(engine=engine, message=WorkMessage(batch_id=batch_id, chunk=0), retry_count=1)
    )

    assert retried["outcome"] == "chunk already done"
    batch = runtime.run(engine.store.get_batch(batch_id))
    assert batch is not None and batch.finalized and batch.status.value == "completed"
    assert (blobs.attempts, blobs.uploads) == (2, 1)
    lines = runtime.run(engine.blobs.get(object_name=results_object(batch_id))).decode().splitlines()
    assert [line.count('"attempts":1') for line in lines] == [1, 1, 1]
