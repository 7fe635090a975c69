"""The image swap, crashed at each step and run again (as the engine's re-delivery would): the article always
shows a valid image, the item gets exactly one new image, and no image is left that nothing deletes.

The attempt is played here through the queue's service with the real adapters (Firestore, Cloud Storage,
the Gemini emulator); a "crash" is a store or object store that raises at one step.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from infra.emulators.gemini.content import png
from shared import runtime
from shared.app import platform
from shared.emulator_config import EmulatorConfig
from shared.kinds.base import ItemContext
from shared.models.articulos import Dispatch, ImageWork, QueueItem, QueueState
from shared.services import image_processing
from shared.services.image_dispatch import ImageQueue, processed_object
from tests.integration.engine_harness import WrappedStore


class Crash(Exception):
    """The process died here."""


class CrashingStore(WrappedStore):
    """The real catalog store, except that `complete_swap` dies once before it commits."""

    def __init__(self, store: Any) -> None:
        super().__init__(store)
        self.crashed = False

    async def complete_swap(self, item: QueueItem, **rest: Any) -> Any:
        if not self.crashed:
            self.crashed = True
            raise Crash("killed before the swap's commit")
        return await self._store.complete_swap(item, **rest)


class CrashingObjects:
    """The real object store, except that deleting the previous image dies once (after the swap's commit)."""

    def __init__(self, objects: Any) -> None:
        self._objects = objects
        self.crashed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._objects, name)

    async def delete(self, *, object_name: str) -> None:
        if not self.crashed and "/q-" not in object_name:
            self.crashed = True
            raise Crash("killed before the previous image was deleted")
        await self._objects.delete(object_name=object_name)


def _item(queue: ImageQueue, unique: str) -> tuple[QueueItem, str]:
    """An article with an image and its queue item, held out of the dispatcher's reach (not waiting)."""
    tenant = f"swap-{unique}"
    store, objects = queue.store, queue.objects
    original = f"articulos/{tenant}/1/original.png"
    now = queue.now()
    runtime.run(store.put_article(tenant, 1, {"nombre": "Bisagra", "activo": True}, now))
    runtime.run(objects.put(object_name=original, data=png(seed=5), content_type="image/png"))
    runtime.run(store.set_article_image(tenant, 1, object_name=original, content_type="image/png", now=now))
    item = QueueItem(
        id=f"swap{unique}",
        tenant=tenant,
        articulo_id=1,
        articulo_nombre="Bisagra",
        estado=QueueState.PENDING,
        prioridad=0,
        max_intentos=3,
        imagen_url_original=original,
        created_at=now,
        updated_at=now,
        despacho=Dispatch.DISPATCHED,
    )
    assert runtime.run(store.add_item(item)) is None
    return item, original


def _attempt(queue: ImageQueue, item: QueueItem, attempt: int) -> dict[str, Any]:
    ctx = ItemContext(
        kind="images",
        tenant=item.tenant,
        job_id=item.batch_id,
        index=0,
        attempt=attempt,
        timeout_s=10,
        params={},
        ports=queue.running_engine.ports,
    )
    work = ImageWork(queue_id=item.id, tenant=item.tenant, articulo_id=item.articulo_id)
    result: dict[str, Any] = runtime.run(image_processing.process(queue=queue, work=work, ctx=ctx))
    return result


def _objects(queue: ImageQueue, tenant: str) -> list[str]:
    bucket = queue.objects._bucket  # type: ignore[attr-defined]
    return sorted(blob.name for blob in bucket.client.list_blobs(bucket, prefix=f"articulos/{tenant}/"))


def test_a_crash_before_the_swap_leaves_the_original_and_the_retry_makes_one_image(
    local_cloud: EmulatorConfig, unique: str
) -> None:
    real = platform().image_queue
    store = CrashingStore(real.store)
    queue = dataclasses.replace(real, store=store)  # type: ignore[arg-type]
    item, original = _item(queue, unique)

    with pytest.raises(Crash):
        _attempt(queue, item, 1)
    # Died after writing the new image, before pointing the article at it: the article still shows its
    # original, which is intact.
    article = runtime.run(queue.store.get_article(item.tenant, 1))
    assert article is not None and article.imagen_object == original
    assert runtime.run(queue.objects.get(object_name=original)) == png(seed=5)

    result = _attempt(queue, item, 2)

    assert result["estado"] == "completed"
    done = runtime.run(queue.store.get_item(item.id))
    assert done is not None and (done.estado, done.intentos) == (QueueState.COMPLETED, 2)
    new_image = processed_object(item, "image/png")  # the emulator's image model answers a PNG
    assert _objects(queue, item.tenant) == [new_image]  # one new image, the original deleted
    article = runtime.run(queue.store.get_article(item.tenant, 1))
    assert article is not None and article.imagen_object == new_image


def test_a_crash_after_the_swap_is_finished_by_the_next_delivery(
    local_cloud: EmulatorConfig, unique: str
) -> None:
    real = platform().image_queue
    objects = CrashingObjects(real.objects)
    queue = dataclasses.replace(real, objects=objects)  # type: ignore[arg-type]
    item, original = _item(queue, unique)

    with pytest.raises(Crash):
        _attempt(queue, item, 1)
    # Died after the commit: the article shows the new image, the original is still there.
    assert _objects(queue, item.tenant) == sorted([original, processed_object(item, "image/png")])

    result = _attempt(queue, item, 2)  # the engine delivers the item again

    assert result["estado"] == "completed"
    done = runtime.run(queue.store.get_item(item.id))
    assert done is not None and done.intentos == 1  # the item was done: no new attempt, no model call
    assert _objects(queue, item.tenant) == [processed_object(item, "image/png")]
