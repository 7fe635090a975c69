"""Every metric definition on a hand-made dataset whose answers are worked out by hand in the comments."""

from __future__ import annotations

import datetime as dt

import pytest

from shared.metrics.definitions import (
    Calificacion,
    Datos,
    MetricValue,
    Oferta,
    Solicitud,
    conversion_ciudad,
    especializacion_repuesto,
    evolucion_asesores,
    patrones_demanda,
    percentile_nearest_rank,
    ranking_asesores,
    satisfaccion,
    tendencia_solicitudes,
    tiempo_respuesta_asesor,
)
from shared.metrics.jobs import DAILY, JOBS, WEEKLY, default_period, parse_day, period_for

ZONE = "America/Bogota"
# Local day 2024-01-14 in Bogotá (UTC-5) starts at 05:00 UTC.
DAY = dt.datetime(2024, 1, 14, 5, tzinfo=dt.UTC).timestamp()


def t(hours: float, minutes: float = 0) -> float:
    return DAY + hours * 3600 + minutes * 60


def by(values: list[MetricValue], key: str) -> dict[object, MetricValue]:
    return {v.clave[key]: v for v in values}


@pytest.fixture
def daily() -> Datos:
    solicitudes = [
        Solicitud("s1", "Bogotá", "frenos", t(1)),
        Solicitud("s2", "Bogotá", "motor", t(2)),
        Solicitud("s3", "Medellín", "frenos", t(3)),
    ]
    ofertas = [
        Oferta("o1", "s1", "a1", "frenos", "Bogotá", 100, t(1, 30), "ganadora"),  # 30 min
        Oferta("o2", "s1", "a2", "frenos", "Bogotá", 120, t(1, 10), "rechazada"),  # 10 min
        Oferta("o3", "s2", "a1", "motor", "Bogotá", 200, t(3), "rechazada"),  # 60 min
        Oferta("o4", "s2", "a2", "motor", "Bogotá", 300, t(2, 20), "ganadora"),  # 20 min
        Oferta("o5", "s3", "a2", "frenos", "Medellín", 50, t(3, 40), "pendiente"),  # 40 min
        # Answers a request of the day before (its time comes from solicitud_creada): 60 min.
        Oferta("o6", "s0", "a3", "frenos", "Cali", 80, t(0), "ganadora"),
        # After the period: left out everywhere.
        Oferta("o7", "s3", "a1", "frenos", "Medellín", 999, t(25), "ganadora"),
    ]
    created = {s.id: s.creada for s in solicitudes} | {"s0": t(-1)}
    return Datos(inicio=t(0), fin=t(24), solicitudes=solicitudes, ofertas=ofertas, solicitud_creada=created)


def test_ranking(daily: Datos) -> None:
    ranking = by(ranking_asesores(daily), "asesor_id")
    assert set(ranking) == {"a1", "a2", "a3"}
    # a1: 2 offers, 1 win at 100, mean 45 min: 0.5*0.5 + 0.3*(1 - 45/240) + 0.2*(100/300)
    # a2: 3 offers, 1 win at 300, mean 23.33 min: 0.5/3 + 0.3*(1 - 23.333/240) + 0.2*1
    # a3: 1 offer, 1 win at 80, 60 min: 0.5 + 0.3*0.75 + 0.2*(80/300)
    assert ranking["a1"].valor == pytest.approx(0.560417, abs=1e-6)
    assert ranking["a2"].valor == pytest.approx(0.6375, abs=1e-6)
    assert ranking["a3"].valor == pytest.approx(0.778333, abs=1e-6)
    assert [ranking[a].dimensiones["posicion"] for a in ("a3", "a2", "a1")] == [1, 2, 3]
    a2 = ranking["a2"].dimensiones
    assert a2["tasa_exito"] == pytest.approx(1 / 3, abs=1e-6)
    assert a2["tiempo_respuesta_min"] == pytest.approx(23.333333, abs=1e-6)
    assert a2["valor_promedio"] == 300
    assert (a2["ofertas"], a2["ofertas_ganadoras"]) == (3, 1)


def test_ranking_ties_go_to_more_wins_then_id() -> None:
    # All answer at once and win at the same price: b and d score 0.5*0.5 + 0.3 + 0.2 = 0.75 with one win;
    # c scores the same with two wins, so it comes first; b before d by id.
    ofertas = [
        Oferta("1", "s", "d", "x", "y", 100, t(1), "ganadora"),
        Oferta("2", "s", "d", "x", "y", 100, t(1), "rechazada"),
        Oferta("3", "s", "b", "x", "y", 100, t(1), "ganadora"),
        Oferta("4", "s", "b", "x", "y", 100, t(1), "rechazada"),
        *(
            Oferta(f"c{i}", "s", "c", "x", "y", 100, t(1), "ganadora" if i < 2 else "rechazada")
            for i in range(4)
        ),
    ]
    datos = Datos(inicio=t(0), fin=t(24), ofertas=ofertas, solicitud_creada={"s": t(1)})
    ranking = ranking_asesores(datos)
    assert [(v.clave["asesor_id"], v.valor) for v in ranking] == [("c", 0.75), ("b", 0.75), ("d", 0.75)]


def test_especializacion(daily: Datos) -> None:
    cells = {
        (v.clave["asesor_id"], v.clave["categoria_repuesto"]): v for v in especializacion_repuesto(daily)
    }
    assert {k: v.valor for k, v in cells.items()} == {
        ("a1", "frenos"): 0.5,
        ("a1", "motor"): 0.5,
        ("a2", "frenos"): pytest.approx(2 / 3, abs=1e-6),
        ("a2", "motor"): pytest.approx(1 / 3, abs=1e-6),
        ("a3", "frenos"): 1.0,
    }
    assert cells[("a2", "motor")].dimensiones["ofertas_ganadoras"] == 1
    assert cells[("a2", "motor")].dimensiones["tasa_exito"] == 1.0
    assert cells[("a2", "frenos")].dimensiones["tasa_exito"] == 0.0


def test_conversion(daily: Datos) -> None:
    cities = by(conversion_ciudad(daily), "ciudad")
    assert set(cities) == {"Bogotá", "Medellín"}  # Cali's request is of the day before
    assert cities["Bogotá"].valor == 1.0
    assert cities["Bogotá"].dimensiones == {
        "ciudad": "Bogotá",
        "solicitudes": 2,
        "solicitudes_convertidas": 2,
        "precio_ganador_promedio": 200.0,
    }
    # s3's winning offer o7 comes after the period's end.
    assert cities["Medellín"].valor == 0.0
    assert cities["Medellín"].dimensiones["precio_ganador_promedio"] is None


def test_response_time(daily: Datos) -> None:
    times = by(tiempo_respuesta_asesor(daily), "asesor_id")
    assert times["a1"].valor == 45.0 and times["a1"].dimensiones["p90"] == 60.0
    assert times["a2"].valor == 20.0 and times["a2"].dimensiones["p90"] == 40.0
    assert times["a2"].dimensiones["promedio"] == pytest.approx(23.333333, abs=1e-6)
    assert times["a3"].valor == 60.0 and times["a3"].dimensiones["ofertas"] == 1


def test_percentile_nearest_rank() -> None:
    assert percentile_nearest_rank([float(v) for v in range(1, 11)], 90) == 9.0
    assert percentile_nearest_rank([5.0], 90) == 5.0


# Weekly: the 7 local days 2024-01-08 (Monday) .. 2024-01-14; the week before starts 2024-01-01.
WEEK = dt.datetime(2024, 1, 8, 5, tzinfo=dt.UTC).timestamp()


def w(days: float, hours: float = 0, minutes: float = 0) -> float:
    return WEEK + days * 86400 + hours * 3600 + minutes * 60


@pytest.fixture
def weekly() -> Datos:
    solicitudes = [
        Solicitud("w1", "Bogotá", "frenos", w(0, 10, 15)),  # Monday 10:15 local
        Solicitud("w2", "Bogotá", "frenos", w(0, 10, 45)),  # Monday 10:45
        Solicitud("w3", "Cali", "motor", w(2, 18, 5)),  # Wednesday 18:05
        Solicitud("p1", "Bogotá", "frenos", w(-3)),  # the week before
        Solicitud("p2", "Bogotá", "luces", w(-2)),
    ]
    ofertas = [
        Oferta("x1", "w1", "a1", "frenos", "Bogotá", 100, w(0, 10, 45), "ganadora"),  # 30 min
        Oferta("x2", "w2", "a2", "frenos", "Bogotá", 200, w(0, 11, 45), "rechazada"),  # 60 min
        Oferta("x3", "p1", "a1", "frenos", "Bogotá", 100, w(-3, 2), "rechazada"),  # 120 min, the week before
    ]
    calificaciones = [
        Calificacion("c1", "w1", "a1", 5, w(1)),
        Calificacion("c2", "w1", "a1", 4, w(1)),
        Calificacion("c3", "w2", "a2", 2, w(1)),
        Calificacion("c4", "p1", "a2", 5, w(-1)),  # the week before: left out
    ]
    return Datos(
        inicio=w(0),
        fin=w(7),
        solicitudes=solicitudes,
        ofertas=ofertas,
        calificaciones=calificaciones,
        solicitud_creada={s.id: s.creada for s in solicitudes},
        zona=ZONE,
    )


def test_trend(weekly: Datos) -> None:
    trend = {
        (v.clave["alcance"], v.clave.get("categoria_repuesto")): v for v in tendencia_solicitudes(weekly)
    }
    assert {k: v.valor for k, v in trend.items()} == {
        ("total", None): 50.0,  # 3 against 2
        ("categoria", "frenos"): 100.0,  # 2 against 1
        ("categoria", "luces"): -100.0,  # 0 against 1
        ("categoria", "motor"): 100.0,  # 1 against 0: +100 % by definition
    }
    assert trend[("total", None)].dimensiones["solicitudes_semana_anterior"] == 2


def test_evolution(weekly: Datos) -> None:
    evolution = by(evolucion_asesores(weekly), "asesor_id")
    # a1 this week: 0.5*1 + 0.3*(1 - 30/240) + 0.2*1 = 0.9625; last week 0.3*(1 - 120/240) = 0.15.
    assert evolution["a1"].valor == pytest.approx(0.8125, abs=1e-6)
    assert evolution["a1"].dimensiones["puntaje_anterior"] == pytest.approx(0.15, abs=1e-6)
    assert evolution["a1"].dimensiones["posicion_anterior"] == 1
    # a2 had no offers last week: compared with 0 (0.3*(1 - 60/240) = 0.225).
    assert evolution["a2"].valor == pytest.approx(0.225, abs=1e-6)
    assert evolution["a2"].dimensiones["puntaje_anterior"] is None


def test_demand_patterns(weekly: Datos) -> None:
    cells = {tuple(v.clave.values()): v.valor for v in patrones_demanda(weekly)}
    assert cells == {("frenos", 1, 10): 2.0, ("motor", 3, 18): 1.0}


def test_satisfaction(weekly: Datos) -> None:
    values = {(v.clave["alcance"], v.clave.get("asesor_id")): v for v in satisfaccion(weekly)}
    assert values[("total", None)].valor == pytest.approx(11 / 3, abs=1e-6)
    assert values[("total", None)].dimensiones["proporcion_satisfechos"] == pytest.approx(2 / 3, abs=1e-6)
    assert values[("asesor", "a1")].valor == 4.5
    assert values[("asesor", "a1")].dimensiones["proporcion_satisfechos"] == 1.0
    assert values[("asesor", "a2")].valor == 2.0
    assert values[("asesor", "a2")].dimensiones["calificaciones"] == 1


def test_periods_are_local_days() -> None:
    daily = period_for(JOBS[DAILY], dt.date(2024, 1, 15), ZONE)
    assert daily.run_id == "daily_metrics_batch/2024-01-15"
    assert daily.start == dt.datetime(2024, 1, 15, 5, tzinfo=dt.UTC)
    assert daily.end == dt.datetime(2024, 1, 16, 5, tzinfo=dt.UTC)
    weekly = period_for(JOBS[WEEKLY], dt.date(2024, 1, 15), ZONE)
    assert weekly.start == dt.datetime(2024, 1, 9, 5, tzinfo=dt.UTC)  # 7 days ending with fecha_fin
    # The daily job firing at 02:00 local on the 15th covers the 14th; a late firing still does.
    fired = dt.datetime(2024, 1, 15, 7, 0, tzinfo=dt.UTC)
    assert default_period(JOBS[DAILY], fired, ZONE).last == dt.date(2024, 1, 14)
    # Monday 03:00 local: the 7 days ending Sunday.
    monday = dt.datetime(2024, 1, 15, 8, 0, tzinfo=dt.UTC)
    assert default_period(JOBS[WEEKLY], monday, ZONE).first == dt.date(2024, 1, 8)


def test_bad_dates_name_the_parameter() -> None:
    from shared.errors import InvalidRequest

    today = dt.date(2024, 1, 20)
    for value in ("2024-13-01", "yesterday", None, "2024-01-21"):
        with pytest.raises(InvalidRequest) as caught:
            parse_day(value, name="fecha", today=today)
        assert caught.value.details[0]["field"] == "fecha"
    assert parse_day("2024-01-20", name="fecha", today=today) == today


def test_an_unknown_time_zone_stops_the_start() -> None:
    from pydantic import ValidationError

    from shared.settings import Settings

    with pytest.raises(ValidationError, match="METRICS_TIME_ZONE"):
        Settings(metrics_time_zone="Mars/Olympus")
