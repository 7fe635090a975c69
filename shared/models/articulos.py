"""Catalog articles and the image-processing queue: what clients send, what is stored, what is answered.

The seed's keys are kept exactly (Spanish, snake_case in documents and answers; `articuloIds`, `queueId`,
`articuloActual` where the seed writes camelCase), so these models do not use the platform's camelCase
aliases.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

ArticuloId = Annotated[int, Field(ge=1, le=2**53)]
CategoriaId = Annotated[int, Field(ge=0, le=2**63 - 1)]  # Firestore's 64-bit integers


class QueueState(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        return self in (QueueState.COMPLETED, QueueState.FAILED)


class Dispatch(StrEnum):
    """Where a queue item is on its way to a slot (not shown to clients): `waiting` for a slot, holding one
    (`dispatched`, its engine batch started), or `done` (final, its slot free)."""

    WAITING = "waiting"
    DISPATCHED = "dispatched"
    DONE = "done"


class SpanishClientModel(BaseModel):
    """A client's body with the seed's keys: unknown fields are rejected (no server-owned field is
    settable)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ArticuloIn(SpanishClientModel):
    nombre: str = Field(min_length=1, max_length=255)
    descripcion: str | None = Field(default=None, max_length=5000)
    unidad: str | None = Field(default=None, max_length=50)
    categoria_id: CategoriaId | None = None
    activo: bool = True


class BatchProcessIn(SpanishClientModel):
    articuloIds: list[ArticuloId] = Field(min_length=1)  # noqa: N815 - the seed's key
    prioridad: int = Field(default=0, ge=-1000, le=1000)


class Articulo(BaseModel):
    """An article as stored (`tenants/{tenant}/articulos/{id}`)."""

    tenant: str
    id: int
    nombre: str
    descripcion: str | None = None
    unidad: str | None = None
    categoria_id: int | None = None
    activo: bool = True
    imagen_object: str | None = None  # the object in Cloud Storage; the API shows a signed URL
    imagen_content_type: str | None = None
    created_at: dt.datetime
    updated_at: dt.datetime


class QueueItem(BaseModel):
    """An item of the image queue as stored (`image_queue/{queueId}`): the seed's table, plus the tenant,
    where it is on its way to a slot, and the engine batch that runs it."""

    id: str
    tenant: str
    articulo_id: int
    articulo_nombre: str
    articulo_descripcion: str | None = None
    articulo_unidad: str | None = None
    estado: QueueState
    prioridad: int
    intentos: int = 0
    max_intentos: int
    imagen_url_original: str | None = None  # object names (the bucket is the platform's)
    imagen_url_procesada: str | None = None
    error_message: str | None = None
    error_stack: str | None = None
    created_at: dt.datetime
    started_at: dt.datetime | None = None
    completed_at: dt.datetime | None = None
    updated_at: dt.datetime
    despacho: Dispatch = Dispatch.WAITING
    slot: int | None = None
    run: int = 0  # bumped by each retry: the engine batch of a run is `{id}r{run}`

    @property
    def batch_id(self) -> str:
        return f"{self.id}r{self.run}"

    def history_entry(self) -> dict[str, object]:
        """The seed's history row; `duracion_segundos` in whole seconds, as the seed shows it (`15`)."""
        duration = None
        if self.started_at and self.completed_at:
            duration = round((self.completed_at - self.started_at).total_seconds())
        return {
            "id": self.id,
            "articulo_id": self.articulo_id,
            "articulo_nombre": self.articulo_nombre,
            "estado": self.estado.value,
            "prioridad": self.prioridad,
            "intentos": self.intentos,
            "max_intentos": self.max_intentos,
            "error_message": self.error_message,
            "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at),
            "completed_at": _iso(self.completed_at),
            "duracion_segundos": duration,
        }

    def current_entry(self, now: dt.datetime) -> dict[str, object]:
        """The seed's `articuloActual`."""
        seconds = round((now - self.started_at).total_seconds(), 1) if self.started_at else None
        return {
            "id": self.id,
            "articulo_id": self.articulo_id,
            "articulo_nombre": self.articulo_nombre,
            "estado": self.estado.value,
            "started_at": _iso(self.started_at),
            "intentos": self.intentos,
            "segundos_procesando": seconds,
        }


def _iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ImageWork(BaseModel):
    """One item of the engine's `images` kind: the queue item it runs, and its article (read beside the
    item's start, not after it)."""

    queue_id: str
    tenant: str
    articulo_id: int
