"""The image queue's Firestore adapter against the emulator: the model-call counter and the slots hold when
many callers race (what keeps IMAGE_MODEL_RPM and IMAGE_QUEUE_CONCURRENCY across instances); a slot's
assignment is committed with the item's engine batch (the engine's real adapter; the test plays Cloud
Tasks)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import random
from typing import Any

from google.cloud import firestore

from shared import runtime
from shared.adapters.catalog_store import FirestoreCatalogStore
from shared.app import platform
from shared.emulator_config import EmulatorConfig
from shared.kinds.base import Plan
from shared.models.articulos import Dispatch, ImageWork, QueueItem, QueueState
from shared.ports import GuardedWrite, PreconditionFailed
from shared.services import batches
from shared.services.engine import Engine
from tests.integration.engine_harness import ONE_AT_A_TIME, RecordingQueue


def _run(project_id: str, work: Any) -> Any:
    async def _with_client() -> Any:
        client = firestore.AsyncClient(project=project_id)
        try:
            return await work(FirestoreCatalogStore(client))
        finally:
            client.close()

    return asyncio.run(_with_client())


def test_racing_model_calls_get_distinct_counts(local_cloud: EmulatorConfig) -> None:
    minute = dt.datetime(2001, 1, 1, random.randrange(24), random.randrange(60), tzinfo=dt.UTC)

    async def _race(store: FirestoreCatalogStore) -> list[int]:
        return list(await asyncio.gather(*(store.count_model_call(minute) for _ in range(30))))

    counts = _run(local_cloud.project_id, _race)

    assert sorted(counts) == list(range(1, 31))


def test_two_dispatchers_never_give_one_slot_to_two_items(
    local_cloud: EmulatorConfig, unique: str, firestore_db: Any
) -> None:
    """Each dispatcher commits its assignment with the item's engine batch: of two racing for one slot,
    exactly one item gets the slot and a batch; the other gets neither."""
    now = dt.datetime.now(dt.UTC)
    items = [
        QueueItem(
            id=f"{unique}{n}",
            tenant=f"t-{unique}",
            articulo_id=n + 1,
            articulo_nombre="x",
            estado=QueueState.PENDING,
            prioridad=0,
            max_intentos=3,
            created_at=now,
            updated_at=now,
        )
        for n in range(2)
    ]
    engine: Engine = dataclasses.replace(platform().engine, queue=RecordingQueue())  # type: ignore[arg-type]

    async def _start(item: QueueItem, writes: list[GuardedWrite]) -> bool:
        try:
            return await batches.start_planned(
                engine=engine,
                tenant=item.tenant,
                kind_name="images",
                batch_id=item.batch_id,
                plan=Plan(
                    items=[ImageWork(queue_id=item.id, tenant=item.tenant, articulo_id=item.articulo_id)],
                    custom_ids=[item.id],
                ),
                options=ONE_AT_A_TIME,
                writes=writes,
            )
        except PreconditionFailed:
            return False

    async def _race() -> list[tuple[bool, QueueItem]]:
        store = FirestoreCatalogStore(firestore.AsyncClient(project=local_cloud.project_id))
        for item in items:
            assert await store.add_item(item) is None
        await store.create_slots([999])  # a slot index no other test uses
        slot = (await store.slots(1000))[999]
        waiting = [w for w in await store.waiting(1000) if w.item.id in {item.id for item in items}]
        assert len(waiting) == len(items)
        assignments = [store.assignment(slot, w, now) for w in waiting]
        started = await asyncio.gather(*(_start(item, writes) for writes, item in assignments))
        return [(ok, item) for ok, (_, item) in zip(started, assignments, strict=True)]

    # Cleanup first: the item left waiting must not reach the real dispatcher.
    def _cleanup() -> None:
        for item in items:
            firestore_db.collection("image_queue").document(item.id).delete()
        firestore_db.collection("image_slots").document("999").delete()

    try:
        raced = runtime.run(_race())
        stored = {
            item.id: firestore_db.collection("image_queue").document(item.id).get().to_dict()
            for item in items
        }
        batches_created = {
            item.id: runtime.run(engine.store.get_batch(item.batch_id)) is not None for item in items
        }
    finally:
        _cleanup()

    winners = [item for ok, item in raced if ok]
    assert len(winners) == 1 and winners[0].slot == 999
    winner = winners[0].id
    assert stored[winner]["despacho"] == Dispatch.DISPATCHED.value and stored[winner]["slot"] == 999
    assert batches_created == {item.id: item.id == winner for item in items}
    (loser,) = [item.id for item in items if item.id != winner]
    assert stored[loser]["despacho"] == Dispatch.WAITING.value and stored[loser].get("slot") is None
