"""The image queue's dispatcher: IMAGE_QUEUE_CONCURRENCY slots (`image_slots/{k}`) given to the waiting
items with the highest `prioridad`, then the oldest, over every tenant; each item then runs as a one-item
batch of the engine's `images` kind (`shared/services/image_processing.py`). See the README's "How it runs".
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from shared.adapters.catalog_store import FirestoreCatalogStore, Slot, Waiting
from shared.images import EXTENSIONS
from shared.kinds.base import Handover, Plan
from shared.models.articulos import Dispatch, ImageWork, QueueItem, QueueState
from shared.models.batch import ResolvedOptions
from shared.ports import GuardedWrite, ImageObjects, PreconditionFailed
from shared.services.batches import start_planned
from shared.services.engine import Engine
from shared.settings import Settings

KIND = "images"
# A slot's item not started this long after its dispatch is started again (its task name makes that a no-op
# when the first start got through): a dispatcher may have stopped between the slot's commit and the enqueue.
RESTART_AFTER = dt.timedelta(seconds=10)

# Starts reading what an item handed over to this delivery needs, beside the commit that dispatches it.
Prepare = Callable[[QueueItem], "asyncio.Future[Any]"]


@dataclass
class ImageQueue:
    """The queue's ports and settings, wired once by the composition root. The engine is attached after it is
    built (the engine hands this object to the `images` kind, and the queue starts the engine's batches)."""

    store: FirestoreCatalogStore
    objects: ImageObjects
    settings: Settings
    engine: Engine | None = field(default=None)

    def attach(self, engine: Engine) -> None:
        self.engine = engine

    @property
    def running_engine(self) -> Engine:
        assert self.engine is not None, "ImageQueue.attach(engine) was not called"
        return self.engine

    def now(self) -> dt.datetime:
        return self.running_engine.clock()


def processed_object(item: QueueItem, mime: str) -> str:
    """Where an item's new image goes: one name per item and image type (its extension the type the model
    answered), so a repeated attempt overwrites it."""
    return f"articulos/{quote(item.tenant, safe='')}/{item.articulo_id}/q-{item.id}.{EXTENSIONS[mime]}"


def processed_objects(item: QueueItem) -> list[str]:
    """Every name an item's new image may have (an attempt that died after its upload left one of them)."""
    return [processed_object(item, mime) for mime in EXTENSIONS]


async def dispatch(
    *,
    queue: ImageQueue,
    handover: Handover | None = None,
    prepare: Prepare | None = None,
    freed: tuple[Slot, list[Waiting]] | None = None,
    thorough: bool = False,
) -> int:
    """Fill free slots with waiting items, highest `prioridad` then oldest; start their engine batches.
    Safe to run any number of times, at once: a slot and an item change hands only by compare-and-set, in
    the commit that creates the item's engine batch (so an item holds a slot exactly when its batch exists).
    With a `handover` (an item that just freed its slot), the first item started runs in that item's
    delivery, with no task hop between the two, and `prepare` starts reading what it needs beside that
    commit; the others are enqueued. `freed`: the slot the caller's commit just freed, as that commit left
    it, and the head of the queue as read beside that commit: the slot is offered to the head's first item
    with no read in between (a stale head costs at most a contended commit, after which everything is read
    again; an empty one is read again at once, so an item added meanwhile is never left waiting).

    The commit that ends an item frees its slot, so a dispatch that finds a free slot reads only the slots and
    the head of the queue. One that finds none, or a `thorough` one (the scheduled repair), also reads the
    items holding slots: it takes a slot whose item is over without having freed it (a slot written before
    items freed their slots), and starts an item a dispatch stopped before starting."""
    started = 0
    known = ([freed[0]], freed[1]) if freed is not None and freed[1] else None
    for _ in range(5):
        count, contended, handover = await _dispatch_pass(
            queue, handover, prepare, known=known, thorough=thorough
        )
        known = None
        started += count
        if not contended:
            break
    return started


async def _dispatch_pass(
    queue: ImageQueue,
    handover: Handover | None,
    prepare: Prepare | None,
    *,
    known: tuple[list[Slot], list[Waiting]] | None,
    thorough: bool,
) -> tuple[int, bool, Handover | None]:
    free, head = known if known is not None else await _read_free(queue, thorough=thorough)
    if not free:
        return 0, False, handover
    started = 0
    contended = False
    for slot, candidate in zip(free, head, strict=False):
        if await _assign(queue, slot, candidate, handover, prepare if handover is not None else None):
            handover = None
            started += 1
        else:
            contended = True
    return started, contended, handover


async def _read_free(queue: ImageQueue, *, thorough: bool) -> tuple[list[Slot], list[Waiting]]:
    """The free slots and the head of the queue."""
    store = queue.store
    concurrency = queue.settings.image_queue_concurrency
    # The slots and the head of the queue are read at once (one round trip less per item).
    slots, head = await asyncio.gather(store.slots(concurrency), store.waiting(concurrency))
    missing = [slot.index for slot in slots if slot.version is None]
    if missing:  # once per slot: an assignment is a compare-and-set on the slot as read
        await store.create_slots(missing)
        slots = await store.slots(concurrency)
    free = [slot for slot in slots if slot.queue_id is None]
    if thorough or not free:  # every slot shows an item: one may be over without having freed it
        free = await _held_slots_checked(queue, slots)
    return free, head


async def _assign(
    queue: ImageQueue, slot: Slot, candidate: Waiting, handover: Handover | None, prepare: Prepare | None
) -> bool:
    """Give `slot` to `candidate` and start its engine batch, in one commit; False when either changed
    since they were read."""
    writes, item = queue.store.assignment(slot, candidate, queue.now())
    preparing = prepare(item) if prepare is not None else None
    try:
        created = await _start(queue, item, handover, writes=writes)
    except BaseException:
        if preparing is not None:
            preparing.cancel()
        raise
    if not created and preparing is not None:
        preparing.cancel()
    return created


async def _held_slots_checked(queue: ImageQueue, slots: list[Slot]) -> list[Slot]:
    """The free slots, counting those whose item is over or gone; an item holding a slot that was never
    started is started (its task name makes that a no-op when the first start got through)."""
    held = [slot.queue_id for slot in slots if slot.queue_id]
    holders = await queue.store.get_items(held) if held else {}
    free: list[Slot] = []
    for slot in slots:
        holder = holders.get(slot.queue_id) if slot.queue_id else None
        if holder is None or holder.despacho is Dispatch.DONE or holder.slot != slot.index:
            free.append(slot)
        elif holder.estado is QueueState.PENDING and queue.now() - holder.updated_at > RESTART_AFTER:
            await _start(queue, holder)
    return free


def item_options(settings: Settings) -> ResolvedOptions:
    """The options of an item's engine batch: one request, retried by the engine at least as often as the
    item's own `intentos` allows (which decides when it has failed: it counts attempts across crashes too)."""
    return ResolvedOptions(
        concurrency=1,
        fail_fast=False,
        timeout_ms=int(settings.image_timeout_seconds * 1000),
        max_retries=settings.image_max_attempts,
        base_delay_ms=settings.image_retry_base_delay_ms,
        max_delay_ms=60_000,
        backoff_multiplier=2.0,
    )


async def _start(
    queue: ImageQueue,
    item: QueueItem,
    handover: Handover | None = None,
    *,
    writes: Sequence[GuardedWrite] = (),
) -> bool:
    """Start the item's engine batch (with `writes`, its slot's assignment, in the same commit); whether
    this call created it. False with `writes`: nothing was written (the slot or the item changed)."""
    try:
        return await start_planned(
            engine=queue.running_engine,
            tenant=item.tenant,
            kind_name=KIND,
            batch_id=item.batch_id,
            plan=Plan(
                items=[ImageWork(queue_id=item.id, tenant=item.tenant, articulo_id=item.articulo_id)],
                custom_ids=[item.id],
            ),
            options=item_options(queue.settings),
            writes=writes,
            handover=handover,
        )
    except PreconditionFailed:
        return False
