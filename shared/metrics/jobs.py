"""The scheduled metric jobs (the seed's ids) and their periods, in the marketplace's local time zone.

A run is keyed by job and period: `daily_metrics_batch/2024-01-14` (the local day), `weekly_metrics_batch/
2024-01-14` (the 7 local days ending that day), `cleanup_metrics/2024-01-14` (the day it ran for).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum
from zoneinfo import ZoneInfo

from shared.errors import InvalidRequest, NotFound


class Tipo(StrEnum):
    DIARIO = "diario"
    SEMANAL = "semanal"
    LIMPIEZA = "limpieza"


@dataclass(frozen=True)
class JobSpec:
    job_id: str
    schedule: str  # unix-cron, in the metrics time zone
    tipo: Tipo
    days: int  # the period's length in local days
    metricas: tuple[str, ...]
    description: str


DAILY = "daily_metrics_batch"
WEEKLY = "weekly_metrics_batch"
CLEANUP = "cleanup_metrics"

JOBS: dict[str, JobSpec] = {
    DAILY: JobSpec(
        DAILY,
        "0 2 * * *",
        Tipo.DIARIO,
        1,
        (
            "ranking_asesores_diario",
            "especializacion_repuesto",
            "conversion_ciudad",
            "tiempo_respuesta_asesor",
        ),
        "Métricas diarias del marketplace, para el día local anterior.",
    ),
    WEEKLY: JobSpec(
        WEEKLY,
        "0 3 * * 1",
        Tipo.SEMANAL,
        7,
        ("tendencia_solicitudes", "evolucion_asesores", "patrones_demanda", "satisfaccion"),
        "Métricas semanales del marketplace, para los 7 días locales que terminan el domingo.",
    ),
    CLEANUP: JobSpec(
        CLEANUP,
        "0 4 * * 0",
        Tipo.LIMPIEZA,
        1,
        (),
        "Borra métricas expiradas, registros de runs y eventos de uso pasada su retención.",
    ),
}


def job_spec(job_id: str) -> JobSpec:
    spec = JOBS.get(job_id)
    if spec is None:
        raise NotFound(f"no batch job {job_id!r}")
    return spec


@dataclass(frozen=True)
class Period:
    """Local days [first, last] of a run, and their bounds in UTC."""

    job_id: str
    last: dt.date  # the period's key
    days: int
    zone: str

    @property
    def first(self) -> dt.date:
        return self.last - dt.timedelta(days=self.days - 1)

    @property
    def start(self) -> dt.datetime:
        return local_midnight(self.first, self.zone)

    @property
    def end(self) -> dt.datetime:
        return local_midnight(self.last + dt.timedelta(days=1), self.zone)

    @property
    def run_id(self) -> str:
        return f"{self.job_id}/{self.last.isoformat()}"


def local_midnight(day: dt.date, zone: str) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), ZoneInfo(zone)).astimezone(dt.UTC)


def local_today(now: dt.datetime, zone: str) -> dt.date:
    return now.astimezone(ZoneInfo(zone)).date()


def period_for(spec: JobSpec, last: dt.date, zone: str) -> Period:
    return Period(job_id=spec.job_id, last=last, days=spec.days, zone=zone)


def default_period(spec: JobSpec, fired_at: dt.datetime, zone: str) -> Period:
    """The period a firing at `fired_at` covers: the daily and weekly jobs the local days ending yesterday,
    the cleanup its own day."""
    today = local_today(fired_at, zone)
    last = today if spec.tipo is Tipo.LIMPIEZA else today - dt.timedelta(days=1)
    return period_for(spec, last, zone)


def parse_run_id(run_id: str, zone: str) -> Period:
    job_id, _, day = run_id.partition("/")
    spec = job_spec(job_id)
    try:
        last = dt.date.fromisoformat(day)
    except ValueError as exc:
        raise NotFound(f"no run {run_id!r}") from exc
    return period_for(spec, last, zone)


def parse_day(value: str | None, *, name: str, today: dt.date) -> dt.date:
    """A query parameter as a local date: 400 naming the parameter when missing, malformed or future."""
    if not value:
        raise InvalidRequest(
            f"{name} is required", details=[{"field": name, "problem": "required (YYYY-MM-DD)"}]
        )
    try:
        day = dt.date.fromisoformat(value)
    except ValueError as exc:
        raise InvalidRequest(
            f"{name} is not a date", details=[{"field": name, "problem": "expected YYYY-MM-DD"}]
        ) from exc
    if day > today:
        raise InvalidRequest(
            f"{name} is in the future", details=[{"field": name, "problem": f"must be {today} or earlier"}]
        )
    return day
