"""A run's snapshot of the marketplace: source documents compacted to rows (lists, in the order of the
definitions' dataclasses) for Cloud Storage, and read back as the definitions' `Datos`."""

from __future__ import annotations

from typing import Any

from pydantic_core import from_json

from shared.metrics.definitions import Calificacion, Datos, Oferta, Solicitud

SOURCES = ("solicitudes", "ofertas", "calificaciones")


def _ts(value: Any) -> float:
    return float(value.timestamp())


def compact(collection: str, doc_id: str, data: dict[str, Any]) -> list[Any]:
    if collection == "solicitudes":
        return [doc_id, str(data["ciudad"]), str(data["categoria_repuesto"]), _ts(data["creada_en"])]
    if collection == "ofertas":
        return [
            doc_id,
            str(data["solicitud_id"]),
            str(data["asesor_id"]),
            str(data["categoria_repuesto"]),
            str(data["ciudad"]),
            float(data["precio"]),
            _ts(data["creada_en"]),
            str(data["estado"]),
        ]
    return [
        doc_id,
        str(data["solicitud_id"]),
        str(data["asesor_id"]),
        int(data["puntaje"]),
        _ts(data["creada_en"]),
    ]


def load_datos(raw: bytes, *, inicio: float, fin: float, zona: str) -> Datos:
    data = from_json(raw)
    return Datos(
        inicio=inicio,
        fin=fin,
        solicitudes=[Solicitud(*row) for row in data["solicitudes"]],
        ofertas=[Oferta(*row) for row in data["ofertas"]],
        calificaciones=[Calificacion(*row) for row in data["calificaciones"]],
        solicitud_creada=dict(data["solicitud_creada"]),
        zona=zona,
    )
