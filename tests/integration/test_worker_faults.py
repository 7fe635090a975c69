"""The worker's failure policy, against the real Firestore adapter with an outage injected on top of it.

The chunk task is not delivered by Cloud Tasks here: the test plays the deliveries itself (with the retry
count Cloud Tasks would send), so it can reach the last attempt deterministically.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from shared import runtime
from shared.app import platform
from shared.emulator_config import EmulatorConfig
from shared.errors import StoreUnavailable
from shared.models.batch import ChunkState, ItemResult, WorkMessage
from shared.models.usage import UsageRecord
from shared.services.engine import Engine
from shared.services.worker import process_chunk
from tests.integration.engine_harness import RecordingQueue, WrappedStore, submit


class OutageStore(WrappedStore):
    """The real store, except that recording model outcomes fails as if Firestore were unavailable."""

    async def record_results(
        self, batch_id: str, chunk: int, *, usage: UsageRecord | None, **rest: Any
    ) -> Any | None:
        if usage is not None:
            raise StoreUnavailable("injected outage")
        return await self._store.record_results(batch_id, chunk, usage=usage, **rest)


@pytest.fixture
def engine(local_cloud: EmulatorConfig) -> Engine:
    real = platform().engine
    return dataclasses.replace(real, store=OutageStore(real.store), queue=RecordingQueue())  # type: ignore[arg-type]


def test_a_chunk_failing_on_its_last_attempt_is_recorded_as_failed(engine: Engine, unique: str) -> None:
    requests = [{"prompt": f"p{i}", "customId": f"c{i}"} for i in range(3)]
    batch_id = submit(engine, f"faults-{unique}", requests)
    message = WorkMessage(batch_id=batch_id, chunk=0)
    last = engine.settings.batch_task_max_attempts - 1

    # An early attempt fails as a whole, so Cloud Tasks retries it.
    with pytest.raises(StoreUnavailable):
        runtime.run(process_chunk(engine=engine, message=message, retry_count=0, worker_id="first"))
    # The last attempt records the chunk's requests as failed instead of losing them, and fans the batch in.
    outcome = runtime.run(process_chunk(engine=engine, message=message, retry_count=last, worker_id="last"))

    assert outcome["outcome"] == "chunk failed"
    snapshot = runtime.run(engine.store.get_chunk(batch_id, 0))
    assert snapshot is not None and snapshot.chunk.state is ChunkState.FAILED
    lines = runtime.run(engine.store.result_lines(batch_id, 0, 3))
    results = [ItemResult.model_validate_json(lines[i]) for i in range(3)]
    assert [(r.custom_id, r.status, r.error.code if r.error else None) for r in results] == [
        (f"c{i}", "failed", "chunk_failed") for i in range(3)
    ]
    fanned_in = runtime.run(engine.store.get_batch(batch_id))
    assert fanned_in is not None and fanned_in.finalized


class ClaimOutageStore(WrappedStore):
    """The real store, except that every compare-and-set on a chunk (its claim) fails as in an outage."""

    async def update_chunk_if_unchanged(self, batch_id: str, chunk: int, **rest: Any) -> Any | None:
        raise StoreUnavailable("injected outage")


def test_a_chunk_never_claimed_that_fails_for_good_shows_in_the_progress(engine: Engine, unique: str) -> None:
    requests = [{"prompt": f"p{i}", "customId": f"c{i}"} for i in range(3)]
    batch_id = submit(engine, f"unclaimed-{unique}", requests)
    no_claims = dataclasses.replace(engine, store=ClaimOutageStore(engine.store))
    message = WorkMessage(batch_id=batch_id, chunk=0)
    last = engine.settings.batch_task_max_attempts - 1

    outcome = runtime.run(process_chunk(engine=no_claims, message=message, retry_count=last))

    assert outcome["outcome"] == "chunk failed"
    # Recording its requests as failed took the chunk over as a claim would: status, which sums the progress
    # of the claimed chunks only, counts them.
    [progress] = runtime.run(engine.store.claimed_chunk_progress(batch_id))
    assert (progress.state, progress.claims) == (ChunkState.FAILED, 1)
    assert (progress.progress.finished, progress.progress.failed) == (3, 3)
