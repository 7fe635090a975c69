"""The image queue's API (the seed's `image_processing_queue`): bulk add, status, history, retry, clean.
The dispatcher is `shared/services/image_dispatch.py`, one item's processing `image_processing.py`.

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
from typing import Any
from urllib.parse import quote, unquote

from pydantic import ValidationError

from shared.errors import InvalidRequest, NotFound
from shared.models.articulos import BatchProcessIn, Dispatch, QueueItem, QueueState
from shared.models.auth import Principal
from shared.services.batches import validation_details
from shared.services.image_dispatch import ImageQueue, dispatch

MAX_IDS = 1000
HISTORY_MAX = 200
ADD_CONCURRENCY = 32


def _scope(principal: Principal, requested: str | None = None) -> str | None:
    """Whose items a call is about: the caller's own; an admin's, every tenant's or the one it names (as an
    admin's `?tenant=` of the articles' reads)."""
    if principal.is_admin:
        return requested or None
    return principal.tenant


async def add_batch(*, queue: ImageQueue, principal: Principal, body: bytes) -> dict[str, Any]:
    """The seed's bulk add: only articles with an image, never one already pending or processing."""
    try:
        request = BatchProcessIn.model_validate_json(body or b"{}", strict=True)
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


async def queue_status(
    *, queue: ImageQueue, principal: Principal, tenant: str | None = None
) -> dict[str, Any]:
    """The counts by state and the items in progress: the caller's; an admin's, every tenant's or
    `tenant`'s."""
    by_state, running = await queue.store.queue_snapshot(_scope(principal, tenant), running_limit=200)
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
                "total": sum(by_state.values()),
            },
            "articuloActual": current[0] if current else None,
            "articulosActuales": current,
        },
    }


async def history(
    *,
    queue: ImageQueue,
    principal: Principal,
    limit: int,
    offset: int,
    estado: QueueState | None,
    cursor: str | None,
    tenant: str | None = None,
) -> dict[str, Any]:
    """The caller's items (an admin's: every tenant's, or `tenant`'s), newest first; `cursor` is the last
    item's id of the previous page (404 when it is not the caller's)."""
    if cursor is not None:
        owned = await queue.store.get_item(cursor)
        if owned is None or (not principal.is_admin and owned.tenant != principal.tenant):
            raise NotFound(f"no queue item {cursor}")
    items = await queue.store.history(
        _scope(principal, tenant), estado=estado, limit=limit, offset=offset, after=cursor
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


async def clean(*, queue: ImageQueue, principal: Principal, dias: int, tenant: str | None) -> dict[str, Any]:
    """Delete completed and failed items older than `dias`, and the images older than that no article uses
    any more: the caller's; an admin's, every tenant's, or only `tenant`'s."""
    before = queue.now() - dt.timedelta(days=dias)
    scope = _scope(principal, tenant)
    deleted = 0
    while True:
        page = await queue.store.finished_before(scope, before, 200)
        for item in page:
            if await queue.store.delete_finished(item.id):
                deleted += 1
        if len(page) < 200:
            break
    orphans = await _delete_orphan_images(queue=queue, scope=scope, before=before)
    return {
        "success": True,
        "message": f"{deleted} trabajo(s) eliminado(s), {orphans} imagen(es) huérfana(s)",
        "data": {"eliminados": deleted, "dias": dias, "imagenes_huerfanas": orphans},
    }


async def _delete_orphan_images(*, queue: ImageQueue, scope: str | None, before: dt.datetime) -> int:
    """Images no article shows, last written before `before`, of articles with no item in flight: what a
    crash left (an upload written but its article not updated; an original or a processed image an item's
    attempt did not delete). One pass over the scope's objects, so an item's images need no reads of their
    own. Returns how many were deleted."""
    prefix = "articulos/" if scope is None else f"articulos/{quote(scope, safe='')}/"
    shown: dict[tuple[str, int], str | None] = {}  # the image each article shows
    busy: set[tuple[str, int]] = set()  # articles with an item in flight, which may still read its original
    deleted = 0
    for name in await queue.objects.names_older_than(prefix=prefix, before=before):
        parts = name.split("/")  # articulos/{tenant}/{articulo_id}/{file}
        if len(parts) != 4 or not parts[2].isdigit():
            continue
        key = (unquote(parts[1]), int(parts[2]))
        if key not in shown and key not in busy:
            if await queue.store.has_active_item(*key):
                busy.add(key)
            else:
                article = await queue.store.get_article(*key)
                shown[key] = article.imagen_object if article else None
        if key not in busy and shown[key] != name:
            await queue.objects.delete(object_name=name)
            deleted += 1
    return deleted
