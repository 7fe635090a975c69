"""The image queue (the seed's `image_processing_queue`) on the job engine.

Every queue item runs as a one-item batch of the engine's `images` kind, so leases, retries with backoff
(honouring RetryInfo), usage events and the sweeper's recovery are the engine's. What the queue adds:
- order and concurrency across instances: IMAGE_QUEUE_CONCURRENCY slot documents; `dispatch` gives each free
  slot the waiting item with the highest `prioridad`, then the oldest (one compare-and-set commit on the slot
  and the item), and only then creates and enqueues the item's engine batch (a named Cloud Task). It runs when
  items are added or retried and whenever an item ends, so work is pushed as slots free, with no poll loop
  (a scheduled run every minute only repairs what a crash left);
- the pace of the model: IMAGE_MODEL_RPM calls a minute, counted in one Firestore document per minute;
- attempts that survive a crash: `intentos` is counted in the item's document when an attempt starts;
- the crash-safe image swap: the new image is written under a name derived from the item (a repeat overwrites
  it, never a second image), the article is pointed at it in the same commit that completes the item (only
  if it still shows the image that was processed), and only then the previous image is deleted.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from pydantic import ValidationError

from shared.adapters.catalog_store import FirestoreCatalogStore, Slot
from shared.errors import InvalidRequest, ModelError, NotFound, PlatformError
from shared.images import NotAnImage, check_decodes, sniff
from shared.kinds.base import ItemContext, ItemFailed, Plan
from shared.models.articulos import BatchProcessIn, Dispatch, ImageWork, QueueItem, QueueState
from shared.models.auth import Principal
from shared.models.batch import ResolvedOptions
from shared.ports import ImageCall, ImageObjects
from shared.services.batches import start_planned, validation_details
from shared.services.engine import Engine
from shared.settings import Settings

KIND = "images"
MAX_IDS = 1000
HISTORY_MAX = 200
ADD_CONCURRENCY = 32
# A slot's item not started this long after its dispatch is started again (its task name makes that a no-op
# when the first start got through): a dispatcher may have stopped between the slot's commit and the enqueue.
RESTART_AFTER = dt.timedelta(seconds=10)


class InvalidImage(PlatformError):
    """The model answered without an image that decodes; retried like a transient model error."""

    code = "invalid_model_output"
    http_status = 502
    transient = True


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


def processed_object(item: QueueItem) -> str:
    """Where an item's new image goes: one name per item, so a repeated attempt overwrites it."""
    return f"articulos/{quote(item.tenant, safe='')}/{item.articulo_id}/q-{item.id}.png"


def _scope(principal: Principal) -> str | None:
    return None if principal.is_admin else principal.tenant


# --- adding, status, history, retry, clean --------------------------------------------------------------


async def add_batch(*, queue: ImageQueue, principal: Principal, body: bytes) -> dict[str, Any]:
    """The seed's bulk add: only articles with an image, never one already pending or processing."""
    try:
        request = BatchProcessIn.model_validate_json(body or b"{}")
    except ValidationError as exc:
        raise InvalidRequest("the request body is not valid", details=validation_details(exc)) from exc
    if len(request.articuloIds) > MAX_IDS:
        raise InvalidRequest(
            f"at most {MAX_IDS} articuloIds a call",
            details=[{"field": "articuloIds", "problem": f"at most {MAX_IDS} ids"}],
        )
    tenant = principal.tenant
    unique_ids = list(dict.fromkeys(request.articuloIds))
    articles = await queue.store.get_articles(tenant, unique_ids)
    now = queue.now()
    agregados: list[dict[str, Any]] = []
    omitidos: list[dict[str, Any]] = []
    seen: set[int] = set()
    to_add: list[QueueItem] = []
    for position, articulo_id in enumerate(request.articuloIds):
        article = articles.get(articulo_id)
        if articulo_id in seen:
            omitidos.append({"articuloId": articulo_id, "motivo": "repetido en la solicitud"})
        elif article is None:
            omitidos.append({"articuloId": articulo_id, "motivo": "el artículo no existe"})
        elif not article.imagen_object:
            omitidos.append({"articuloId": articulo_id, "motivo": "el artículo no tiene imagen"})
        else:
            to_add.append(
                QueueItem(
                    id=uuid.uuid4().hex[:20],
                    tenant=tenant,
                    articulo_id=articulo_id,
                    articulo_nombre=article.nombre,
                    articulo_descripcion=article.descripcion,
                    articulo_unidad=article.unidad,
                    estado=QueueState.PENDING,
                    prioridad=request.prioridad,
                    max_intentos=queue.settings.image_max_attempts,
                    imagen_url_original=article.imagen_object,
                    # The request's order breaks ties of one add: oldest first means first listed first.
                    created_at=now + dt.timedelta(microseconds=position),
                    updated_at=now,
                )
            )
        seen.add(articulo_id)
    limit = asyncio.Semaphore(ADD_CONCURRENCY)

    async def _add(item: QueueItem) -> str | None:
        async with limit:
            return await queue.store.add_item(item)

    outcomes = await asyncio.gather(*(_add(item) for item in to_add))
    for item, existing in zip(to_add, outcomes, strict=True):
        if existing is None:
            agregados.append({"articuloId": item.articulo_id, "queueId": item.id})
        else:
            omitidos.append({"articuloId": item.articulo_id, "motivo": f"ya está en la cola ({existing})"})
    if agregados:
        await dispatch(queue=queue)
    return {
        "success": True,
        "message": f"{len(agregados)} artículo(s) agregado(s) a la cola de procesamiento",
        "data": {
            "agregados": len(agregados),
            "omitidos": len(omitidos),
            "detalles": {"agregados": agregados, "omitidos": omitidos},
        },
    }


async def queue_status(*, queue: ImageQueue, principal: Principal) -> dict[str, Any]:
    tenant = _scope(principal)
    counts = await asyncio.gather(*(queue.store.count_items(tenant, state) for state in QueueState))
    by_state = dict(zip(QueueState, counts, strict=True))
    running = await queue.store.items_in(tenant, QueueState.PROCESSING, 200)
    running.sort(key=lambda item: item.started_at or item.created_at)
    now = queue.now()
    current = [item.current_entry(now) for item in running]
    return {
        "success": True,
        "message": "estado de la cola",
        "data": {
            "stats": {
                "pendientes": by_state[QueueState.PENDING],
                "procesando": by_state[QueueState.PROCESSING],
                "completados": by_state[QueueState.COMPLETED],
                "fallidos": by_state[QueueState.FAILED],
                "total": sum(counts),
            },
            "articuloActual": current[0] if current else None,
            "articulosActuales": current,
        },
    }


def _bounded_int(raw: str | None, *, name: str, default: int, low: int, high: int) -> int:
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise InvalidRequest(
            f"{name} must be an integer from {low} to {high}",
            details=[{"field": name, "problem": f"an integer from {low} to {high}"}],
        )
    return value


async def history(*, queue: ImageQueue, principal: Principal, args: dict[str, str]) -> dict[str, Any]:
    limit = _bounded_int(args.get("limit"), name="limit", default=50, low=1, high=HISTORY_MAX)
    offset = _bounded_int(args.get("offset"), name="offset", default=0, low=0, high=10_000)
    estado_raw = args.get("estado")
    try:
        estado = QueueState(estado_raw) if estado_raw else None
    except ValueError as exc:
        states = ", ".join(s.value for s in QueueState)
        raise InvalidRequest(
            "unknown estado", details=[{"field": "estado", "problem": f"one of {states}"}]
        ) from exc
    cursor = args.get("cursor") or None
    if cursor is not None and not (cursor.isalnum() and len(cursor) <= 40):
        raise InvalidRequest("invalid cursor", details=[{"field": "cursor", "problem": "not a cursor"}])
    if cursor is not None:
        owned = await queue.store.get_item(cursor)
        if owned is None or (not principal.is_admin and owned.tenant != principal.tenant):
            raise NotFound(f"no queue item {cursor}")
    items = await queue.store.history(
        _scope(principal), estado=estado, limit=limit, offset=offset, after=cursor
    )
    return {
        "success": True,
        "message": f"{len(items)} registro(s)",
        "data": {
            "historial": [item.history_entry() for item in items],
            "limit": limit,
            "offset": offset,
            "nextCursor": items[-1].id if len(items) == limit else None,
        },
    }


async def _owned_item(*, queue: ImageQueue, principal: Principal, queue_id: str) -> QueueItem:
    item = await queue.store.get_item(queue_id) if queue_id.isalnum() and len(queue_id) <= 40 else None
    if item is None or (not principal.is_admin and item.tenant != principal.tenant):
        raise NotFound(f"no queue item {queue_id}")
    return item


async def retry(*, queue: ImageQueue, principal: Principal, queue_id: str) -> dict[str, Any]:
    """A failed item back to `pending` with fresh attempts (409 for any other state)."""
    owned = await _owned_item(queue=queue, principal=principal, queue_id=queue_id)
    article = await queue.store.get_article(owned.tenant, owned.articulo_id)
    now = queue.now()

    def _fresh(item: QueueItem) -> dict[str, Any]:
        # The new run works on the article as it is now (its name may have been corrected).
        described = (
            {
                "articulo_nombre": article.nombre,
                "articulo_descripcion": article.descripcion,
                "articulo_unidad": article.unidad,
            }
            if article is not None
            else {}
        )
        return described | {
            "estado": QueueState.PENDING.value,
            "intentos": 0,
            "error_message": None,
            "error_stack": None,
            "started_at": None,
            "completed_at": None,
            "despacho": Dispatch.WAITING.value,
            "slot": None,
            "run": item.run + 1,
            "updated_at": now,
        }

    item = await queue.store.retry_item(queue_id, _fresh)
    await dispatch(queue=queue)
    return {"success": True, "message": "artículo devuelto a la cola", "data": item.history_entry()}


async def clean(*, queue: ImageQueue, principal: Principal, dias_raw: str | None) -> dict[str, Any]:
    """Delete completed and failed items older than `dias`, and the images no article uses any more."""
    dias = _bounded_int(dias_raw, name="dias", default=7, low=1, high=365)
    before = queue.now() - dt.timedelta(days=dias)
    tenant = _scope(principal)
    deleted = 0
    while True:
        page = await queue.store.finished_before(tenant, before, 200)
        for item in page:
            if await queue.store.delete_finished(item.id):
                deleted += 1
                await _delete_unused_images(queue=queue, item=item)
        if len(page) < 200:
            break
    return {
        "success": True,
        "message": f"{deleted} trabajo(s) eliminado(s)",
        "data": {"eliminados": deleted, "dias": dias},
    }


async def _delete_unused_images(*, queue: ImageQueue, item: QueueItem) -> None:
    """The item's original and processed images, unless its article shows one of them."""
    article = await queue.store.get_article(item.tenant, item.articulo_id)
    in_use = article.imagen_object if article else None
    for name in {item.imagen_url_original, processed_object(item)}:
        if name and name != in_use:
            await queue.objects.delete(object_name=name)


# --- dispatch: slots to the highest-priority waiting items ----------------------------------------------


async def dispatch(*, queue: ImageQueue) -> int:
    """Fill free slots with waiting items, highest `prioridad` then oldest; start their engine batches.
    Safe to run any number of times, at once: a slot and an item change hands only by compare-and-set."""
    started = 0
    for _ in range(5):
        count, contended = await _dispatch_pass(queue)
        started += count
        if not contended:
            break
    return started


async def _dispatch_pass(queue: ImageQueue) -> tuple[int, bool]:
    store = queue.store
    concurrency = queue.settings.image_queue_concurrency

    async def _holders() -> tuple[list[Slot], dict[str, QueueItem]]:
        slots = await store.slots(concurrency)
        held = [slot.queue_id for slot in slots if slot.queue_id]
        return slots, (await store.get_items(held) if held else {})

    # The slots and the head of the queue are read at once (one round trip less per item).
    (slots, holders), head = await asyncio.gather(_holders(), store.waiting(concurrency))
    free: list[Slot] = []
    for slot in slots:
        holder = holders.get(slot.queue_id) if slot.queue_id else None
        if holder is None or holder.despacho is Dispatch.DONE or holder.slot != slot.index:
            free.append(slot)
        elif holder.estado is QueueState.PENDING and queue.now() - holder.updated_at > RESTART_AFTER:
            await _start(queue, holder)  # a dispatch that stopped before starting it; a no-op otherwise
    if not free:
        return 0, False
    candidates = head[: len(free)]
    started = 0
    contended = False
    for slot, candidate in zip(free, candidates, strict=False):
        assigned = await store.assign(slot, candidate.id, queue.now())
        if assigned is None:
            contended = True
            continue
        await _start(queue, assigned)
        started += 1
    return started, contended


async def _start(queue: ImageQueue, item: QueueItem) -> None:
    settings = queue.settings
    await start_planned(
        engine=queue.running_engine,
        tenant=item.tenant,
        kind_name=KIND,
        batch_id=item.batch_id,
        plan=Plan(items=[ImageWork(queue_id=item.id)], custom_ids=[item.id]),
        options=ResolvedOptions(
            concurrency=1,
            fail_fast=False,
            timeout_ms=int(settings.image_timeout_seconds * 1000),
            # The item's own `intentos` decides when it has failed (it counts attempts across crashes too);
            # the engine only has to retry at least as often.
            max_retries=settings.image_max_attempts,
            base_delay_ms=settings.image_retry_base_delay_ms,
            max_delay_ms=60_000,
            backoff_multiplier=2.0,
        ),
    )


# --- processing one item (the `images` kind's run) -------------------------------------------------------


def build_prompt(item: QueueItem) -> str:
    parts = [f"Genera una imagen de catálogo profesional del producto «{item.articulo_nombre}»"]
    if item.articulo_descripcion:
        parts.append(f"Descripción: {item.articulo_descripcion}")
    if item.articulo_unidad:
        parts.append(f"Unidad de venta: {item.articulo_unidad}")
    parts.append(
        "Fondo blanco, iluminación de estudio, el producto centrado y fiel a la foto original adjunta."
    )
    return ". ".join(parts)


async def process(*, queue: ImageQueue, queue_id: str, ctx: ItemContext) -> dict[str, Any]:
    """One attempt at one item. Raises a transient error to have the engine retry it with backoff, or
    ItemFailed once the item has failed for good."""
    now = queue.now()
    decision = ""

    def _begin(item: QueueItem) -> dict[str, Any] | None:
        nonlocal decision
        if item.estado.is_final:
            decision = "final"
            return None
        if item.intentos >= item.max_intentos:
            decision = "exhausted"
            return _failed_changes(now, item.error_message or "se agotaron los intentos", item.error_stack)
        decision = "run"
        return {
            "estado": QueueState.PROCESSING.value,
            "intentos": item.intentos + 1,
            "started_at": now,
            "updated_at": now,
        }

    item = await queue.store.update_item(queue_id, _begin)
    if item is None:
        raise ItemFailed(f"queue item {queue_id} no longer exists", code="not_found")
    if decision == "final":
        await _after_final(queue, item)
        return {"queueId": item.id, "estado": item.estado.value}
    if decision == "exhausted":
        await _after_final(queue, item)
        raise ItemFailed(f"queue item {queue_id} used its {item.max_intentos} attempts", code="image_failed")
    try:
        return await _attempt(queue=queue, item=item, ctx=ctx)
    except (ModelError, InvalidImage, NotFound) as exc:
        await _attempt_failed(queue=queue, item=item, error=exc)
        raise


async def _attempt(*, queue: ImageQueue, item: QueueItem, ctx: ItemContext) -> dict[str, Any]:
    settings = queue.settings
    article = await queue.store.get_article(item.tenant, item.articulo_id)
    if article is None or not article.imagen_object:
        raise NotFound(f"articulo {item.articulo_id} or its image no longer exists")
    original = article.imagen_object
    data, _ = await asyncio.gather(queue.objects.get(object_name=original), _pace(queue))
    reply = await ctx.edit_image(
        ImageCall(
            model=settings.image_model,
            prompt=build_prompt(item),
            image=data,
            mime_type=sniff(data) or "image/png",
            timeout_s=ctx.timeout_s,
        )
    )
    if reply.image is None:
        raise InvalidImage("the model answered without an image")
    try:
        mime = check_decodes(reply.image)
    except NotAnImage as exc:
        raise InvalidImage(f"the model's image does not decode: {exc}") from exc
    target = processed_object(item)
    await queue.objects.put(object_name=target, data=reply.image, content_type=mime)
    now = queue.now()
    outcome = await queue.store.complete_swap(
        item,
        expected_object=original,
        new_object=target,
        content_type=mime,
        changes={
            "estado": QueueState.COMPLETED.value,
            "completed_at": now,
            "updated_at": now,
            "despacho": Dispatch.DONE.value,
            "imagen_url_original": original,
            "imagen_url_procesada": target,
            "error_message": None,
            "error_stack": None,
        },
        now=now,
    )
    if outcome == "changed":
        # The article was given another image (or removed) while this one was processed: keep the user's.
        await queue.objects.delete(object_name=target)
        failed = await queue.store.update_item(
            item.id,
            lambda current: (
                _failed_changes(now, "la imagen del artículo cambió durante el procesamiento", None)
                if current.estado is QueueState.PROCESSING
                else None
            ),
        )
        if failed is not None:
            await _after_final(queue, failed)
        raise ItemFailed("the article's image changed while it was processed", code="image_changed")
    # The slot is free: the next item first, then the previous image (a crash between leaves it to the
    # clean-up, which deletes the originals of the items it removes).
    await dispatch(queue=queue)
    if outcome == QueueState.COMPLETED.value and original != target:
        await queue.objects.delete(object_name=original)
    return {"queueId": item.id, "estado": outcome, "articuloId": item.articulo_id}


def _failed_changes(now: dt.datetime, message: str, stack: str | None) -> dict[str, Any]:
    return {
        "estado": QueueState.FAILED.value,
        "error_message": message[:500],
        "error_stack": stack,
        "completed_at": now,
        "updated_at": now,
        "despacho": Dispatch.DONE.value,
    }


def _short_stack(error: PlatformError, item: QueueItem) -> str:
    """What went wrong, where: no prompt, no key, no response body."""
    status = getattr(error, "status", None) or error.http_status
    where = f"attempt {item.intentos} of {item.max_intentos}"
    return f"{type(error).__name__} {error.code} (status {status}) in {where}"


async def _attempt_failed(*, queue: ImageQueue, item: QueueItem, error: PlatformError) -> None:
    """Record a failed attempt; after the last one (or a permanent error) the item is `failed`."""
    transient = error.is_transient if isinstance(error, ModelError) else error.transient
    message, stack = error.message[:500], _short_stack(error, item)
    now = queue.now()
    if transient and item.intentos < item.max_intentos:
        await queue.store.update_item(
            item.id,
            lambda current: (
                {"error_message": message, "error_stack": stack, "updated_at": now}
                if current.estado is QueueState.PROCESSING
                else None
            ),
        )
        return
    failed = await queue.store.update_item(
        item.id,
        lambda current: (
            _failed_changes(now, message, stack) if current.estado is QueueState.PROCESSING else None
        ),
    )
    if failed is not None:
        await _after_final(queue, failed)
    raise ItemFailed(message, code="image_failed") from error


async def _after_final(queue: ImageQueue, item: QueueItem) -> None:
    """What follows an item's end, also when it is seen again: no orphan image, and its slot to the next."""
    if item.estado is QueueState.FAILED:
        await queue.objects.delete(object_name=processed_object(item))
    elif item.imagen_url_original and item.imagen_url_original != item.imagen_url_procesada:
        await queue.objects.delete(object_name=item.imagen_url_original)
    await dispatch(queue=queue)


async def _pace(queue: ImageQueue) -> None:
    """Wait until the model may be called within IMAGE_MODEL_RPM calls a minute, across instances."""
    while True:
        now = queue.now()
        minute = now.replace(second=0, microsecond=0)
        if await queue.store.count_model_call(minute) <= queue.settings.image_model_rpm:
            return
        await asyncio.sleep((minute + dt.timedelta(minutes=1) - now).total_seconds() + 0.05)


def _abandoned(now: dt.datetime) -> Callable[[QueueItem], dict[str, Any] | None]:
    def _decide(current: QueueItem) -> dict[str, Any] | None:
        if current.despacho is Dispatch.DISPATCHED and not current.estado.is_final:
            return _failed_changes(now, "el trabajo terminó sin completar el artículo", None)
        return None

    return _decide


async def repair(*, queue: ImageQueue) -> dict[str, int]:
    """After a crash: an item holding a slot whose engine batch is over without the item being over (its
    delivery attempts ran out) is failed; then free slots are filled. Safe to run at any time."""
    store = queue.store
    slots = await store.slots(queue.settings.image_queue_concurrency)
    held = [slot.queue_id for slot in slots if slot.queue_id]
    repaired = 0
    for holder in (await store.get_items(held) if held else {}).values():
        if holder.despacho is not Dispatch.DISPATCHED:
            continue
        batch = await queue.running_engine.store.get_batch(holder.batch_id)
        if batch is None or not batch.finalized:
            continue
        failed = await store.update_item(holder.id, _abandoned(queue.now()))
        if failed is not None and failed.estado is QueueState.FAILED:
            repaired += 1
            await _after_final(queue, failed)
    return {"repaired": repaired, "started": await dispatch(queue=queue)}
