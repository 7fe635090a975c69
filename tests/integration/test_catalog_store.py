"""The image queue's Firestore adapter against the emulator: the model-call counter and the slots hold when
many callers race (what keeps IMAGE_MODEL_RPM and IMAGE_QUEUE_CONCURRENCY across instances)."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from typing import Any

from google.cloud import firestore

from shared.adapters.catalog_store import FirestoreCatalogStore
from shared.emulator_config import EmulatorConfig
from shared.models.articulos import Dispatch, QueueItem, QueueState


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

    async def _race(store: FirestoreCatalogStore) -> list[Any]:
        for item in items:
            assert await store.add_item(item) is None
        slot = (await store.slots(1000))[999]  # a slot index no other test uses
        waiting = [w for w in await store.waiting(1000) if w.item.id in {item.id for item in items}]
        assert len(waiting) == len(items)
        return list(await asyncio.gather(*(store.assign(slot, w, now) for w in waiting)))

    # Cleanup first: the item left waiting must not reach the real dispatcher.
    def _cleanup() -> None:
        for item in items:
            firestore_db.collection("image_queue").document(item.id).delete()
        firestore_db.collection("image_slots").document("999").delete()

    try:
        assigned = [a for a in _run(local_cloud.project_id, _race) if a is not None]
    finally:
        _cleanup()

    assert len(assigned) == 1 and assigned[0].despacho is Dispatch.DISPATCHED and assigned[0].slot == 999
