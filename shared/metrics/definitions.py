"""The marketplace's metric definitions: pure functions from one period's rows to metric values.

Every function takes the rows a run extracted (`Datos`) and returns `MetricValue`s; nothing here reads a store
or the clock, so each definition is tested exactly on a hand-made dataset
(tests/unit/test_metric_definitions.py).
Times are epoch seconds (UTC); local weekday and hour use the run's time zone.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

RESPONSE_CAP_MIN = 240.0  # the ranking's response-time term reaches 0 at 4 hours
W_SUCCESS, W_RESPONSE, W_VALUE = 0.5, 0.3, 0.2
SATISFIED_FROM = 4
DECIMALS = 6


@dataclass(frozen=True)
class Solicitud:
    id: str
    ciudad: str
    categoria: str
    creada: float


@dataclass(frozen=True)
class Oferta:
    id: str
    solicitud_id: str
    asesor_id: str
    categoria: str
    ciudad: str
    precio: float
    creada: float
    estado: str  # ganadora | rechazada | pendiente


@dataclass(frozen=True)
class Calificacion:
    id: str
    solicitud_id: str
    asesor_id: str
    puntaje: int
    creada: float


@dataclass
class Datos:
    """What a run read: rows created in [lectura_inicio, fin), and the creation time of every request an offer
    of the run answers (also those created before the read range)."""

    inicio: float  # the period's start
    fin: float  # the period's end (exclusive)
    solicitudes: list[Solicitud] = field(default_factory=list)
    ofertas: list[Oferta] = field(default_factory=list)
    calificaciones: list[Calificacion] = field(default_factory=list)
    solicitud_creada: dict[str, float] = field(default_factory=dict)
    zona: str = "America/Bogota"


@dataclass(frozen=True)
class MetricValue:
    """One calculated metric: `clave` are the dimensions that identify it (its document id derives from them),
    `dimensiones` all its dimensions and details (a superset of `clave`)."""

    nombre: str
    valor: float
    descripcion: str
    unidad: str
    clave: dict[str, Any]
    dimensiones: dict[str, Any]


def _r(value: float) -> float:
    return round(value, DECIMALS)


def _in(start: float, end: float, rows: Iterable[Any]) -> list[Any]:
    return [row for row in rows if start <= row.creada < end]


def _minutes(oferta: Oferta, created: dict[str, float]) -> float | None:
    requested = created.get(oferta.solicitud_id)
    return None if requested is None else max(0.0, (oferta.creada - requested) / 60.0)


@dataclass(frozen=True)
class Puntaje:
    asesor_id: str
    ofertas: int
    ganadas: int
    tasa_exito: float
    tiempo_respuesta_min: float
    valor_promedio: float
    valor: float


def puntajes(ofertas: list[Oferta], created: dict[str, float]) -> list[Puntaje]:
    """The ranking score of each advisor with offers, best first (ties: more winning offers, then id).

    valor = 0.5 x tasa_exito + 0.3 x (1 - min(tiempo_respuesta_min, 240) / 240)
            + 0.2 x (valor_promedio / the highest valor_promedio among them)
    An advisor none of whose offers has a known request gets the capped response time (240 min).
    """
    by_advisor: dict[str, list[Oferta]] = defaultdict(list)
    for oferta in ofertas:
        by_advisor[oferta.asesor_id].append(oferta)
    raw: list[tuple[str, int, int, float, float]] = []
    for asesor_id, own in by_advisor.items():
        wins = [o.precio for o in own if o.estado == "ganadora"]
        minutes = [m for o in own if (m := _minutes(o, created)) is not None]
        response = statistics.fmean(minutes) if minutes else RESPONSE_CAP_MIN
        raw.append((asesor_id, len(own), len(wins), response, statistics.fmean(wins) if wins else 0.0))
    top_value = max((r[4] for r in raw), default=0.0)
    scores = []
    for asesor_id, offers, won, response, mean_value in raw:
        rate = won / offers
        value_term = mean_value / top_value if top_value > 0 else 0.0
        score = W_SUCCESS * rate + W_RESPONSE * (1 - min(response, RESPONSE_CAP_MIN) / RESPONSE_CAP_MIN)
        score += W_VALUE * value_term
        scores.append(Puntaje(asesor_id, offers, won, rate, response, mean_value, score))
    scores.sort(key=lambda p: (-_r(p.valor), -p.ganadas, p.asesor_id))
    return scores


def ranking_asesores(datos: Datos, *, nombre: str = "ranking_asesores_diario") -> list[MetricValue]:
    ofertas = _in(datos.inicio, datos.fin, datos.ofertas)
    return [
        MetricValue(
            nombre=nombre,
            valor=_r(p.valor),
            descripcion="Puntaje de desempeño del asesor (0..1): éxito, tiempo de respuesta y valor promedio",
            unidad="score",
            clave={"asesor_id": p.asesor_id},
            dimensiones={
                "asesor_id": p.asesor_id,
                "posicion": position,
                "ofertas": p.ofertas,
                "ofertas_ganadoras": p.ganadas,
                "tasa_exito": _r(p.tasa_exito),
                "tiempo_respuesta_min": _r(p.tiempo_respuesta_min),
                "valor_promedio": _r(p.valor_promedio),
            },
        )
        for position, p in enumerate(puntajes(ofertas, datos.solicitud_creada), start=1)
    ]


def especializacion_repuesto(datos: Datos) -> list[MetricValue]:
    ofertas = _in(datos.inicio, datos.fin, datos.ofertas)
    totals: Counter[str] = Counter(o.asesor_id for o in ofertas)
    cells: Counter[tuple[str, str]] = Counter((o.asesor_id, o.categoria) for o in ofertas)
    wins: Counter[tuple[str, str]] = Counter(
        (o.asesor_id, o.categoria) for o in ofertas if o.estado == "ganadora"
    )
    return [
        MetricValue(
            nombre="especializacion_repuesto",
            valor=_r(count / totals[asesor_id]),
            descripcion="Proporción de las ofertas del asesor en la categoría de repuesto",
            unidad="ratio",
            clave={"asesor_id": asesor_id, "categoria_repuesto": categoria},
            dimensiones={
                "asesor_id": asesor_id,
                "categoria_repuesto": categoria,
                "ofertas": count,
                "ofertas_ganadoras": wins[(asesor_id, categoria)],
                "tasa_exito": _r(wins[(asesor_id, categoria)] / count),
            },
        )
        for (asesor_id, categoria), count in sorted(cells.items())
    ]


def conversion_ciudad(datos: Datos) -> list[MetricValue]:
    """Requests created in the period that have a winning offer created before its end, per city."""
    solicitudes = _in(datos.inicio, datos.fin, datos.solicitudes)
    winning: dict[str, list[float]] = defaultdict(list)
    for oferta in _in(datos.inicio, datos.fin, datos.ofertas):
        if oferta.estado == "ganadora":
            winning[oferta.solicitud_id].append(oferta.precio)
    by_city: dict[str, list[Solicitud]] = defaultdict(list)
    for solicitud in solicitudes:
        by_city[solicitud.ciudad].append(solicitud)
    values = []
    for ciudad, own in sorted(by_city.items()):
        prices = [price for s in own for price in winning.get(s.id, [])]
        converted = sum(1 for s in own if s.id in winning)
        values.append(
            MetricValue(
                nombre="conversion_ciudad",
                valor=_r(converted / len(own)),
                descripcion="Solicitudes con oferta ganadora / solicitudes de la ciudad",
                unidad="ratio",
                clave={"ciudad": ciudad},
                dimensiones={
                    "ciudad": ciudad,
                    "solicitudes": len(own),
                    "solicitudes_convertidas": converted,
                    "precio_ganador_promedio": _r(statistics.fmean(prices)) if prices else None,
                },
            )
        )
    return values


def percentile_nearest_rank(values: list[float], percent: float) -> float:
    """The nearest-rank percentile: the smallest value with at least `percent` % of values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(percent / 100 * len(ordered)) - 1)]


def tiempo_respuesta_asesor(datos: Datos) -> list[MetricValue]:
    minutes: dict[str, list[float]] = defaultdict(list)
    for oferta in _in(datos.inicio, datos.fin, datos.ofertas):
        value = _minutes(oferta, datos.solicitud_creada)
        if value is not None:
            minutes[oferta.asesor_id].append(value)
    return [
        MetricValue(
            nombre="tiempo_respuesta_asesor",
            valor=_r(statistics.median(own)),
            descripcion="Mediana de minutos desde la solicitud hasta la oferta del asesor",
            unidad="minutos",
            clave={"asesor_id": asesor_id},
            dimensiones={
                "asesor_id": asesor_id,
                "p90": _r(percentile_nearest_rank(own, 90)),
                "promedio": _r(statistics.fmean(own)),
                "ofertas": len(own),
            },
        )
        for asesor_id, own in sorted(minutes.items())
    ]


def _change(current: int, previous: int) -> float:
    """Percent change; from 0 to something is +100 %, from 0 to 0 is 0 %."""
    if previous == 0:
        return 100.0 if current else 0.0
    return (current - previous) / previous * 100.0


def tendencia_solicitudes(datos: Datos) -> list[MetricValue]:
    """Requests of the period against the 7 days before it, overall and per category."""
    week = datos.fin - datos.inicio
    current = _in(datos.inicio, datos.fin, datos.solicitudes)
    previous = _in(datos.inicio - week, datos.inicio, datos.solicitudes)
    now_by: Counter[str] = Counter(s.categoria for s in current)
    before_by: Counter[str] = Counter(s.categoria for s in previous)

    def value(scope: dict[str, Any], now: int, before: int) -> MetricValue:
        return MetricValue(
            nombre="tendencia_solicitudes",
            valor=_r(_change(now, before)),
            descripcion="Cambio porcentual de solicitudes frente a los 7 días anteriores",
            unidad="porcentaje",
            clave=scope,
            dimensiones=scope | {"solicitudes": now, "solicitudes_semana_anterior": before},
        )

    values = [value({"alcance": "total"}, len(current), len(previous))]
    for categoria in sorted(set(now_by) | set(before_by)):
        scope = {"alcance": "categoria", "categoria_repuesto": categoria}
        values.append(value(scope, now_by[categoria], before_by[categoria]))
    return values


def evolucion_asesores(datos: Datos) -> list[MetricValue]:
    """Each advisor's weekly ranking score (the daily formula over the 7 days) minus last week's; an advisor
    without offers last week is compared with 0."""
    week = datos.fin - datos.inicio
    now = puntajes(_in(datos.inicio, datos.fin, datos.ofertas), datos.solicitud_creada)
    before = {
        p.asesor_id: (position, p)
        for position, p in enumerate(
            puntajes(_in(datos.inicio - week, datos.inicio, datos.ofertas), datos.solicitud_creada), start=1
        )
    }
    values = []
    for position, p in enumerate(now, start=1):
        previous = before.get(p.asesor_id)
        previous_score = previous[1].valor if previous else None
        values.append(
            MetricValue(
                nombre="evolucion_asesores",
                valor=_r(p.valor - (previous_score or 0.0)),
                descripcion="Cambio del puntaje semanal del asesor frente a la semana anterior",
                unidad="score",
                clave={"asesor_id": p.asesor_id},
                dimensiones={
                    "asesor_id": p.asesor_id,
                    "puntaje": _r(p.valor),
                    "puntaje_anterior": _r(previous_score) if previous_score is not None else None,
                    "posicion": position,
                    "posicion_anterior": previous[0] if previous else None,
                },
            )
        )
    return values


def patrones_demanda(datos: Datos) -> list[MetricValue]:
    """Requests per category x local weekday (1 Monday .. 7 Sunday) x local hour; only cells with requests."""
    zone = ZoneInfo(datos.zona)
    cells: Counter[tuple[str, int, int]] = Counter()
    for solicitud in _in(datos.inicio, datos.fin, datos.solicitudes):
        local = dt.datetime.fromtimestamp(solicitud.creada, zone)
        cells[(solicitud.categoria, local.isoweekday(), local.hour)] += 1
    return [
        MetricValue(
            nombre="patrones_demanda",
            valor=float(count),
            descripcion="Solicitudes por categoría, día de la semana y hora local",
            unidad="count",
            clave={"categoria_repuesto": categoria, "dia_semana": weekday, "hora": hour},
            dimensiones={"categoria_repuesto": categoria, "dia_semana": weekday, "hora": hour},
        )
        for (categoria, weekday, hour), count in sorted(cells.items())
    ]


def satisfaccion(datos: Datos) -> list[MetricValue]:
    """Mean score of the period's ratings and the share of scores >= 4, overall and per advisor."""
    ratings = _in(datos.inicio, datos.fin, datos.calificaciones)
    if not ratings:
        return []

    def value(scope: dict[str, Any], own: list[Calificacion]) -> MetricValue:
        scores = [c.puntaje for c in own]
        return MetricValue(
            nombre="satisfaccion",
            valor=_r(statistics.fmean(scores)),
            descripcion="Puntaje medio de las calificaciones (1..5)",
            unidad="puntaje",
            clave=scope,
            dimensiones=scope
            | {
                "calificaciones": len(scores),
                "proporcion_satisfechos": _r(sum(1 for s in scores if s >= SATISFIED_FROM) / len(scores)),
            },
        )

    by_advisor: dict[str, list[Calificacion]] = defaultdict(list)
    for rating in ratings:
        by_advisor[rating.asesor_id].append(rating)
    return [value({"alcance": "total"}, ratings)] + [
        value({"alcance": "asesor", "asesor_id": asesor_id}, own)
        for asesor_id, own in sorted(by_advisor.items())
    ]


DEFINITIONS: dict[str, Callable[[Datos], list[MetricValue]]] = {
    "ranking_asesores_diario": ranking_asesores,
    "especializacion_repuesto": especializacion_repuesto,
    "conversion_ciudad": conversion_ciudad,
    "tiempo_respuesta_asesor": tiempo_respuesta_asesor,
    "tendencia_solicitudes": tendencia_solicitudes,
    "evolucion_asesores": evolucion_asesores,
    "patrones_demanda": patrones_demanda,
    "satisfaccion": satisfaccion,
}

# Seed-style log lines: "Ranking calculado para 45 asesores".
SUMMARY_NOUN: dict[str, str] = {
    "ranking_asesores_diario": "Ranking calculado para {n} asesores",
    "especializacion_repuesto": "Especialización calculada para {n} asesores",
    "conversion_ciudad": "Conversión calculada para {n} ciudades",
    "tiempo_respuesta_asesor": "Tiempo de respuesta calculado para {n} asesores",
    "tendencia_solicitudes": "Tendencia calculada para {n} alcances",
    "evolucion_asesores": "Evolución calculada para {n} asesores",
    "patrones_demanda": "Patrones de demanda calculados en {n} celdas",
    "satisfaccion": "Satisfacción calculada para {n} alcances",
}
