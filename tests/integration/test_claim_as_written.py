"""A first delivery claims its chunk on the version the submit wrote, beside its reads (a round trip less
before the first model call), and a duplicate of that delivery claims nothing. Against the real Firestore
adapter; the test plays the deliveries itself from the tasks the engine enqueued."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from shared import runtime
from shared.emulator_config import EmulatorConfig
from shared.errors import LeaseHeld
from shared.models.batch import BatchStatus, ChunkState, WorkMessage
from shared.services.engine import Engine
from shared.services.leases import claim_as_written
from shared.services.worker import process_chunk
from tests.integration.engine_harness import Clock, RecordingQueue, WrappedStore, played_engine, submit


class ChunkReadsAndClaims(WrappedStore):
    """The real store, noting in order when a chunk read ends and what each compare-and-set on a chunk did."""

    async def get_chunk(self, batch_id: str, chunk: int) -> Any:
        snapshot = await self._store.get_chunk(batch_id, chunk)
        self.events.append(f"chunk {chunk} read")
        return snapshot

    async def update_chunk_if_unchanged(self, batch_id: str, chunk: int, **rest: Any) -> Any | None:
        self.events.append(f"chunk {chunk} compare-and-set")
        version = await self._store.update_chunk_if_unchanged(batch_id, chunk, **rest)
        self.events.append(f"chunk {chunk} {'set' if version is not None else 'changed since'}")
        return version


@pytest.fixture
def engine(local_cloud: EmulatorConfig) -> Engine:
    return played_engine(clock=Clock())


def _first_task(engine: Engine, batch_id: str) -> WorkMessage:
    assert isinstance(engine.queue, RecordingQueue)
    return WorkMessage.model_validate(engine.queue.tasks[f"{batch_id}-c0-s0"]["body"])


def test_the_first_delivery_claims_on_the_written_version_beside_its_reads(
    engine: Engine, unique: str
) -> None:
    batch_id = submit(engine, f"claim-{unique}", [{"prompt": "p0"}, {"prompt": "p1"}], concurrency=1)
    message = _first_task(engine, batch_id)
    assert message.version is not None, "the submit hands the chunk's version to its task"
    noting = ChunkReadsAndClaims(engine.store)

    outcome = runtime.run(
        process_chunk(engine=dataclasses.replace(engine, store=noting), message=message, retry_count=0)
    )

    assert outcome["outcome"] == "done"
    first_three = [event for event in noting.events if event.startswith("chunk 0")][:3]
    assert first_three[0] == "chunk 0 compare-and-set", "sent before the chunk's read came back"
    assert sorted(first_three[1:]) == ["chunk 0 read", "chunk 0 set"], "one compare-and-set claims it"
    snapshot = runtime.run(engine.store.get_chunk(batch_id, 0))
    assert snapshot is not None and snapshot.chunk.state is ChunkState.DONE and snapshot.chunk.claims == 1
    batch = runtime.run(engine.store.get_batch(batch_id))
    assert batch is not None and batch.finalized and batch.status is BatchStatus.COMPLETED


def test_a_duplicate_first_delivery_finds_the_lease_taken(engine: Engine, unique: str) -> None:
    batch_id = submit(engine, f"twice-{unique}", [{"prompt": "p0"}, {"prompt": "p1"}], concurrency=1)
    message = _first_task(engine, batch_id)
    assert message.version is not None
    first = claim_as_written(
        engine=engine, batch_id=batch_id, index=0, worker_id="first", written=message.version
    )
    assert runtime.run(first) is not None

    with pytest.raises(LeaseHeld):  # its compare-and-set on the written version fails; the lease is live
        runtime.run(process_chunk(engine=engine, message=message, retry_count=0))

    snapshot = runtime.run(engine.store.get_chunk(batch_id, 0))
    assert snapshot is not None and snapshot.chunk.lease_owner == "first" and snapshot.chunk.claims == 1
    again = claim_as_written(
        engine=engine, batch_id=batch_id, index=0, worker_id="third", written=message.version
    )
    assert runtime.run(again) is None
