"""The catalog's answers: the `data` of the seed's `{"success", "message", "data"}` envelope, one shape a
route, in the seed's own keys. shared/services/articulos.py builds the articles' answers through them; the
image queue's (shared/services/image_queue.py) still composes dicts. The contract tests check every real
answer against them."""

from __future__ import annotations

from pydantic import Field

from shared.models.articulos import QueueState
from shared.models.common import SeedAnswer


class ArticuloView(SeedAnswer):
    """An article as the API shows it: its image as a signed URL."""

    id: int
    nombre: str
    descripcion: str | None
    unidad: str | None
    categoria_id: int | None
    activo: bool
    imagen_url: str | None
    created_at: str
    updated_at: str


class ArticuloPage(SeedAnswer):
    articulos: list[ArticuloView]
    next_cursor: str | None = Field(alias="nextCursor")


class Added(SeedAnswer):
    articulo_id: int = Field(alias="articuloId")
    queue_id: str = Field(alias="queueId")


class Skipped(SeedAnswer):
    articulo_id: int = Field(alias="articuloId")
    motivo: str


class AddedDetails(SeedAnswer):
    agregados: list[Added]
    omitidos: list[Skipped]


class AddedToQueue(SeedAnswer):
    agregados: int
    omitidos: int
    detalles: AddedDetails


class QueueCounts(SeedAnswer):
    pendientes: int
    procesando: int
    completados: int
    fallidos: int
    total: int


class CurrentItem(SeedAnswer):
    """The seed's `articuloActual`: an item being processed."""

    id: str
    articulo_id: int
    articulo_nombre: str
    estado: QueueState
    started_at: str | None
    intentos: int
    segundos_procesando: float | None


class QueueStatus(SeedAnswer):
    stats: QueueCounts
    articulo_actual: CurrentItem | None = Field(alias="articuloActual")
    articulos_actuales: list[CurrentItem] = Field(alias="articulosActuales")


class HistoryRow(SeedAnswer):
    """The seed's history row."""

    id: str
    articulo_id: int
    articulo_nombre: str
    estado: QueueState
    prioridad: int
    intentos: int
    max_intentos: int
    error_message: str | None
    created_at: str
    started_at: str | None
    completed_at: str | None
    duracion_segundos: int | None  # whole seconds, as the seed's `15` (`segundos_procesando` keeps 15.5)


class HistoryPage(SeedAnswer):
    historial: list[HistoryRow]
    limit: int
    offset: int
    next_cursor: str | None = Field(alias="nextCursor")


class Cleaned(SeedAnswer):
    eliminados: int
    dias: int
    imagenes_huerfanas: int  # images older than `dias` no article showed (left by crashes), deleted
