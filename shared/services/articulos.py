"""Catalog articles of a tenant: create or update, image upload (recognised by its bytes), read, list."""

from __future__ import annotations

import datetime as dt
import uuid
from urllib.parse import quote

from pydantic import ValidationError

from shared.errors import InvalidRequest, NotFound, PayloadTooLarge
from shared.images import EXTENSIONS, sniff
from shared.models.api import SeedEnvelope
from shared.models.articulos import Articulo, ArticuloIn
from shared.models.articulos_answers import ArticuloPage, ArticuloView
from shared.models.auth import Principal
from shared.services.batches import validation_details
from shared.services.image_dispatch import ImageQueue

LIST_MAX = 200
MAX_ID = 2**53


def parse_id(raw: str) -> int:
    """An article id of the path: a positive integer (404 otherwise, as for a missing article)."""
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_ID:
        raise NotFound(f"no articulo {raw[:40]}")
    return int(raw)


def _tenant_of(principal: Principal, requested: str | None) -> str:
    """Whose articles a read is about: the caller's own; an admin may name another tenant."""
    if requested and principal.is_admin:
        return requested
    return principal.tenant


async def public(queue: ImageQueue, article: Articulo) -> ArticuloView:
    """An article as the API shows it: its image as a signed URL."""
    url = None
    if article.imagen_object:
        url = await queue.objects.signed_url(
            object_name=article.imagen_object,
            ttl=dt.timedelta(seconds=queue.settings.results_url_ttl_seconds),
        )
    return ArticuloView(
        id=article.id,
        nombre=article.nombre,
        descripcion=article.descripcion,
        unidad=article.unidad,
        categoria_id=article.categoria_id,
        activo=article.activo,
        imagen_url=url,
        created_at=article.created_at.isoformat(),
        updated_at=article.updated_at.isoformat(),
    )


def _article(*, message: str, data: ArticuloView) -> SeedEnvelope[ArticuloView]:
    return SeedEnvelope[ArticuloView](success=True, message=message, data=data)


async def put_article(
    *, queue: ImageQueue, principal: Principal, articulo_id: int, body: bytes
) -> SeedEnvelope[ArticuloView]:
    try:
        request = ArticuloIn.model_validate_json(body or b"{}", strict=True)
    except ValidationError as exc:
        raise InvalidRequest("the request body is not valid", details=validation_details(exc)) from exc
    article = await queue.store.put_article(principal.tenant, articulo_id, request.model_dump(), queue.now())
    return _article(message="artículo guardado", data=await public(queue, article))


async def upload_image(
    *, queue: ImageQueue, principal: Principal, articulo_id: int, data: bytes
) -> SeedEnvelope[ArticuloView]:
    """Store an image (PNG, JPEG or WebP by its bytes) and point the article at it; the previous image is
    deleted only once the article no longer shows it."""
    limit = queue.settings.image_max_bytes
    if len(data) > limit:
        raise PayloadTooLarge(
            f"the image is larger than {limit} bytes",
            details=[{"field": "imagen", "problem": f"at most {limit} bytes (IMAGE_MAX_BYTES)"}],
        )
    mime = sniff(data)
    if mime is None:
        raise InvalidRequest(
            "the upload is not an image",
            details=[
                {"field": "imagen", "problem": "must be a PNG, JPEG or WebP image (read from its bytes)"}
            ],
        )
    if await queue.store.get_article(principal.tenant, articulo_id) is None:
        raise NotFound(f"no articulo {articulo_id}")
    object_name = (
        f"articulos/{quote(principal.tenant, safe='')}/{articulo_id}/{uuid.uuid4().hex}.{EXTENSIONS[mime]}"
    )
    await queue.objects.put(object_name=object_name, data=data, content_type=mime)
    try:
        previous = await queue.store.set_article_image(
            principal.tenant, articulo_id, object_name=object_name, content_type=mime, now=queue.now()
        )
    except NotFound:
        await queue.objects.delete(object_name=object_name)
        raise
    if previous and previous != object_name:
        await queue.objects.delete(object_name=previous)
    article = await queue.store.get_article(principal.tenant, articulo_id)
    if article is None:
        raise NotFound(f"no articulo {articulo_id}")
    return _article(message="imagen guardada", data=await public(queue, article))


async def get_article(
    *, queue: ImageQueue, principal: Principal, articulo_id: int, tenant: str | None
) -> SeedEnvelope[ArticuloView]:
    article = await queue.store.get_article(_tenant_of(principal, tenant), articulo_id)
    if article is None:
        raise NotFound(f"no articulo {articulo_id}")
    return _article(message="artículo", data=await public(queue, article))


async def list_articles(
    *,
    queue: ImageQueue,
    principal: Principal,
    tenant: str | None,
    activo: bool | None,
    categoria_id: int | None,
    limit: int,
    after_id: int | None,
) -> SeedEnvelope[ArticuloPage]:
    """A page of a tenant's articles in id order (`tenant`: an admin's choice of another tenant's)."""
    articles = await queue.store.list_articles(
        _tenant_of(principal, tenant),
        activo=activo,
        categoria_id=categoria_id,
        limit=limit,
        after_id=after_id,
    )
    page = ArticuloPage(
        articulos=[await public(queue, article) for article in articles],
        nextCursor=str(articles[-1].id) if len(articles) == limit else None,
    )
    return SeedEnvelope[ArticuloPage](success=True, message=f"{len(articles)} artículo(s)", data=page)
