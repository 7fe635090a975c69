"""One attempt at one image-queue item (the `images` kind's run) and the repair of items a crash left behind.

The prompt is built from the article with its original image inline; the model's image is checked, written
under a name derived from the item (a repeat overwrites it, never a second image), and the article is pointed
at it in the commit that completes the item (only if it still shows the image that was processed); only then
is the previous image deleted. `intentos` is counted in the item's document when an attempt starts, so an
attempt a killed worker never finished counts too.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from shared.errors import ModelError, NotFound, PlatformError
from shared.images import NotAnImage, check_decodes, sniff
from shared.kinds.base import ItemContext, ItemFailed
from shared.models.articulos import Dispatch, ImageWork, QueueItem, QueueState
from shared.ports import ImageCall
from shared.services.image_dispatch import ImageQueue, dispatch, processed_object, processed_objects

# What the item handed over to this delivery needs, read beside its dispatch: queue id -> the reads.
_prepared_ahead: ContextVar[dict[str, asyncio.Future[tuple[str, bytes]]]] = ContextVar("image_prepared_ahead")


class InvalidImage(PlatformError):
    """The model answered without an image that decodes; retried like a transient model error."""

    code = "invalid_model_output"
    http_status = 502
    transient = True


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


async def process(*, queue: ImageQueue, work: ImageWork, ctx: ItemContext) -> dict[str, Any]:
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

    # The original image and the model's pace do not depend on the start's commit: they run beside it, so
    # the model is called as soon as the start is written; for an item handed over to this delivery they
    # were started beside its dispatch (`_prepare_ahead`). (A call counted for an item that turns out not to
    # run is one the pace gives away: it never lets more calls through.)
    ahead = _prepared_ahead.get(None)
    preparing = (ahead.pop(work.queue_id, None) if ahead else None) or asyncio.ensure_future(
        _prepare(queue, work)
    )
    try:
        item = await queue.store.update_item(work.queue_id, _begin)
    except BaseException:
        await _abandon(preparing)
        raise
    if item is None or decision != "run":
        await _abandon(preparing)
    if item is None:
        raise ItemFailed(f"queue item {work.queue_id} no longer exists", code="not_found")
    if decision == "final":
        await _after_final(queue, item)
        return {"queueId": item.id, "estado": item.estado.value}
    if decision == "exhausted":
        await _after_final(queue, item)
        raise ItemFailed(
            f"queue item {work.queue_id} used its {item.max_intentos} attempts", code="image_failed"
        )
    try:
        original, data = await preparing
        return await _attempt(queue=queue, item=item, ctx=ctx, original=original, data=data)
    except (ModelError, InvalidImage, NotFound) as exc:
        await _attempt_failed(queue=queue, item=item, error=exc)
        raise


async def _abandon(reading: asyncio.Future[Any]) -> None:
    reading.cancel()
    await asyncio.gather(reading, return_exceptions=True)


def _prepare_ahead(queue: ImageQueue, item: QueueItem) -> asyncio.Future[tuple[str, bytes]]:
    """Start reading the article and image of an item about to be handed over to this delivery, beside the
    commit that dispatches it. The handed-over run's task copies this context, so its `process` finds them;
    a run elsewhere (the fallback task) reads them itself."""
    preparing = asyncio.ensure_future(
        _prepare(queue, ImageWork(queue_id=item.id, tenant=item.tenant, articulo_id=item.articulo_id))
    )
    # Retrieved here too, so one no run takes (its dispatch lost the race) is never reported as unretrieved.
    preparing.add_done_callback(lambda done: done.cancelled() or done.exception())
    _prepared_ahead.set({item.id: preparing})
    return preparing


async def _prepare(queue: ImageQueue, work: ImageWork) -> tuple[str, bytes]:
    """The article's image (its object name and bytes), once the model may be called."""
    pacing = asyncio.ensure_future(_pace(queue))
    try:
        article = await queue.store.get_article(work.tenant, work.articulo_id)
        if article is None or not article.imagen_object:
            raise NotFound(f"articulo {work.articulo_id} or its image no longer exists")
        data = await queue.objects.get(object_name=article.imagen_object)
        await pacing
    finally:
        pacing.cancel()  # a no-op once it is done
    return article.imagen_object, data


async def _attempt(
    *, queue: ImageQueue, item: QueueItem, ctx: ItemContext, original: str, data: bytes
) -> dict[str, Any]:
    settings = queue.settings
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
    target = processed_object(item, mime)
    now = queue.now()
    # The swap's reads overlap the upload; its commit waits for it (the article never shows a missing object).
    # The head of the queue is read beside them too, for the one slot the swap's commit frees: its first item
    # only (a query's cost here is mostly decoding what it returns).
    uploading = asyncio.ensure_future(
        queue.objects.put(object_name=target, data=reply.image, content_type=mime)
    )
    head = asyncio.ensure_future(queue.store.waiting(1))
    try:
        swapped = await queue.store.complete_swap(
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
            uploaded=uploading,
            now=now,
        )
    except BaseException:
        await _abandon(head)
        raise
    finally:
        await asyncio.gather(uploading, return_exceptions=True)
    outcome = swapped.outcome
    if outcome == "changed":
        await _abandon(head)
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
    # The slot is free: the next item first (run in this delivery, beside this item's bookkeeping), then the
    # previous image (a crash between leaves it to the clean-up, which deletes the originals of the items it
    # removes).
    waiting = await head
    await dispatch(
        queue=queue,
        handover=ctx.handover,
        prepare=lambda next_item: _prepare_ahead(queue, next_item),
        freed=(swapped.freed_slot, waiting) if swapped.freed_slot is not None else None,
    )
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
        # Which type an attempt that died after its upload wrote is not known: every name it may have.
        await asyncio.gather(*(queue.objects.delete(object_name=name) for name in processed_objects(item)))
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
    return {"repaired": repaired, "started": await dispatch(queue=queue, thorough=True)}
