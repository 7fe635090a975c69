"""Scheduled metric batches: runs keyed by job and period, started on the engine (kind `metrics`), joined when
one is already going, caught up after an outage, backfilled by hand; their status, results and health.

A run document (`metricas_runs/{job}__{periodo}`) records the run's current attempt and its batch. Starting a
run decides, in a transaction on that document, whether to join the attempt in progress (a second firing), to
leave a completed run alone (a scheduled firing of a period already done), or to start a new attempt (first
firing, a failed or stalled run, or a manual re-run). The batch of an attempt has a deterministic id (its
Idempotency-Key is the run id and attempt), so submitting it again is harmless.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from shared.errors import Conflict, InvalidRequest, NotFound, PlatformError
from shared.kinds.metrics import KIND_NAME, METRICS_TENANT, log_event, run_key, summarize_outcomes
from shared.metrics.jobs import (
    CLEANUP,
    DAILY,
    JOBS,
    WEEKLY,
    JobSpec,
    Period,
    Tipo,
    default_period,
    job_spec,
    local_today,
    parse_run_id,
    period_for,
)
from shared.models.auth import Principal, Role
from shared.models.dashboards import (
    Backfill,
    Firing,
    JobsStatus,
    JobView,
    MetricOutcome,
    MetricOutcomeStatus,
    RunStatus,
    RunView,
    StartedRun,
)
from shared.ports import MetricQuery, MetricsStore, SchedulerJobs
from shared.services import batches
from shared.services.engine import Engine

SYSTEM = Principal(tenant=METRICS_TENANT, role=Role.USER)
STATUS_EN: dict[str, RunStatus] = {
    "en_curso": "running",
    "completado": "completed",
    "parcial": "partial",
    "fallido": "failed",
}
OUTCOME_EN: dict[str, MetricOutcomeStatus] = {
    "completada": "completed",
    "fallida": "failed",
    "sin_resultado": "missing",
}
MAX_LIMIT = 500


@dataclass(frozen=True)
class Dashboards:
    engine: Engine
    store: MetricsStore
    scheduler: SchedulerJobs

    @property
    def zone(self) -> str:
        return self.engine.settings.metrics_time_zone

    def today(self) -> dt.date:
        return local_today(self.engine.clock(), self.zone)


def _request_body(*, run: dict[str, Any], period: Period, spec: JobSpec, dash: Dashboards) -> bytes:
    settings = dash.engine.settings
    read_from = period.start - (dt.timedelta(days=7) if spec.tipo is Tipo.SEMANAL else dt.timedelta())
    ttl = settings.metrics_weekly_ttl_days if spec.tipo is Tipo.SEMANAL else settings.metrics_daily_ttl_days
    body = {
        "runId": period.run_id,
        "jobId": spec.job_id,
        "tipo": spec.tipo.value,
        "periodoInicio": period.start.isoformat(),
        "periodoFin": period.end.isoformat(),
        "lecturaInicio": read_from.isoformat(),
        "metricas": list(spec.metricas),
        "zona": period.zone,
        "ttlDias": ttl,
        "fallar": run.get("fallar", []),
        "options": {
            "wait": False,
            "concurrency": 8,
            "timeout": 300_000,
            "retryPolicy": {"maxRetries": 3, "baseDelay": 2000, "maxDelay": 60_000, "backoffMultiplier": 2},
        },
    }
    return json.dumps(body, sort_keys=True).encode()


async def start_run(
    *, dash: Dashboards, period: Period, origin: str, force: bool, fallar: list[str] | None = None
) -> StartedRun:
    """Start the period's run, or join the one in progress; a completed run is re-run only when `force`."""
    spec = job_spec(period.job_id)
    now = dash.engine.clock()
    deadline = dt.timedelta(minutes=dash.engine.settings.metrics_run_deadline_minutes)
    retention = dt.timedelta(days=dash.engine.settings.metrics_run_retention_days)
    replaced: list[str] = []

    def decide(current: dict[str, Any] | None) -> dict[str, Any] | None:
        replaced.clear()
        if current is not None:
            if current["estado"] == "en_curso" and current["deadline"] > now:
                return None  # join the attempt in progress
            if current["estado"] == "completado" and not force:
                return None
            if current["estado"] == "en_curso" and current.get("batch_id"):
                replaced.append(current["batch_id"])  # stalled past its deadline
        return {
            "run_id": period.run_id,
            "job_id": spec.job_id,
            "tipo": spec.tipo.value,
            "periodo": period.last.isoformat(),
            "periodo_inicio": period.start,
            "periodo_fin": period.end,
            "intento": (current or {}).get("intento", 0) + 1,
            "origen": origin,
            "estado": "en_curso",
            "iniciado_en": now,
            "deadline": now + deadline,
            "expira_en": now + retention,
            "batch_id": None,
            "fallar": list(fallar or []),
        }

    run, written = await dash.store.begin_run(run_key(period.run_id), decide)
    if run["estado"] != "en_curso":
        return StartedRun(action="already_completed", run=await run_view(dash=dash, run=run))
    for batch_id in replaced:
        await _stop_batch(dash=dash, batch_id=batch_id)
    body = _request_body(run=run, period=period, spec=spec, dash=dash)
    accepted, _ = await batches.submit(
        engine=dash.engine,
        principal=SYSTEM,
        kind_name=KIND_NAME,
        body=body,
        idempotency_key=f"{period.run_id}#{run['intento']}",
        caller=batches.CallerInfo(remote_addr="internal", user_agent=f"dashboards/{origin}"),
        private=True,
    )
    if run.get("batch_id") != accepted.batch_id:
        await dash.store.update_run(run_key(period.run_id), {"batch_id": accepted.batch_id})
        run["batch_id"] = accepted.batch_id
    if written:
        kind = {"diario": "diario", "semanal": "semanal"}.get(spec.tipo.value, "de limpieza")
        log_event(
            "INFO",
            f"Iniciando job {kind} de métricas para {period.last.isoformat()}",
            run_id=period.run_id,
            intento=run["intento"],
            origen=origin,
            batch_id=accepted.batch_id,
        )
    return StartedRun(action="started" if written else "joined", run=await run_view(dash=dash, run=run))


async def _stop_batch(*, dash: Dashboards, batch_id: str) -> None:
    try:
        await batches.cancel(
            engine=dash.engine,
            principal=SYSTEM,
            batch_id=batch_id,
            caller=batches.CallerInfo(remote_addr="internal", user_agent="dashboards/deadline"),
        )
    except (Conflict, NotFound):
        return


async def fire(*, dash: Dashboards, job_id: str, fired_at: dt.datetime) -> Firing:
    """A Cloud Scheduler firing: the period its schedule time covers and, for the daily job, any of the
    `METRICS_CATCHUP_DAYS` days before it without a completed run. Safe to fire twice."""
    spec = job_spec(job_id)
    period = default_period(spec, fired_at, dash.zone)
    started = [await start_run(dash=dash, period=period, origin="scheduler", force=False)]
    if spec.job_id == DAILY:
        for back in range(dash.engine.settings.metrics_catchup_days, 0, -1):
            earlier = period_for(spec, period.last - dt.timedelta(days=back), dash.zone)
            existing = await dash.store.get_run(run_key(earlier.run_id))
            if (
                existing is None
                or existing["estado"] in ("fallido", "parcial")
                or (existing["estado"] == "en_curso" and existing["deadline"] <= dash.engine.clock())
            ):
                started.append(await start_run(dash=dash, period=earlier, origin="catchup", force=False))
    return Firing(job_id=job_id, runs=started)


async def trigger(*, dash: Dashboards, job_id: str) -> StartedRun:
    """Run a job now, by hand, for its default period (re-running it if it already completed)."""
    period = default_period(job_spec(job_id), dash.engine.clock(), dash.zone)
    return await start_run(dash=dash, period=period, origin="manual", force=True)


async def run_for_day(
    *, dash: Dashboards, job_id: str, last: dt.date, fallar: list[str] | None = None
) -> StartedRun:
    period = period_for(job_spec(job_id), last, dash.zone)
    return await start_run(dash=dash, period=period, origin="manual", force=True, fallar=fallar)


async def backfill(*, dash: Dashboards, job_id: str, desde: dt.date, hasta: dt.date) -> Backfill:
    """Each period of `job_id` whose key day is in [desde, hasta] as its own run: every day for the daily
    job, every Sunday (the end of a scheduled week) for the weekly one."""
    spec = job_spec(job_id)
    if spec.job_id == CLEANUP:
        raise InvalidRequest(
            "cleanup_metrics has no periods to backfill",
            details=[{"field": "job_id", "problem": "daily_metrics_batch or weekly_metrics_batch"}],
        )
    if desde > hasta:
        raise InvalidRequest(
            "desde is after hasta", details=[{"field": "desde", "problem": "must be <= hasta"}]
        )
    days = [desde + dt.timedelta(days=n) for n in range((hasta - desde).days + 1)]
    if spec.job_id == WEEKLY:
        days = [day for day in days if day.isoweekday() == 7]
    limit = dash.engine.settings.metrics_backfill_max_periods
    if len(days) > limit:
        raise InvalidRequest(
            f"{len(days)} periods; at most {limit} per backfill",
            details=[
                {"field": "hasta", "problem": f"at most {limit} periods (METRICS_BACKFILL_MAX_PERIODS)"}
            ],
        )
    runs = [
        await start_run(dash=dash, period=period_for(spec, day, dash.zone), origin="backfill", force=True)
        for day in days
    ]
    return Backfill(job_id=job_id, periods=len(runs), runs=runs)


async def run_view(*, dash: Dashboards, run: dict[str, Any]) -> RunView:
    """A run as the API shows it; a run in progress shows the metrics finished so far."""
    estado = run["estado"]
    metrics = run.get("metricas")
    records = run.get("registros_leidos")
    if estado == "en_curso":
        spec = JOBS[run["job_id"]]
        batch_id = run.get("batch_id")
        outcomes = await dash.store.outcomes(run_key(run["run_id"]), batch_id) if batch_id else []
        summary = summarize_outcomes(outcomes, list(spec.metricas))
        metrics = {k: v for k, v in summary["metricas"].items() if v["estado"] != "sin_resultado"}
        records = summary["registros_leidos"]
        batch = await dash.engine.store.get_batch(batch_id) if batch_id else None
        if run["deadline"] <= dash.engine.clock() or (
            batch is not None and batch.finalized and batch.status.value != "completed"
        ):
            estado = "fallido"
    return RunView(
        run_id=run["run_id"],
        job_id=run["job_id"],
        period=run["periodo"],
        period_start=run["periodo_inicio"].isoformat(),
        period_end=run["periodo_fin"].isoformat(),
        attempt=run["intento"],
        origin=run["origen"],
        status=STATUS_EN[estado],
        started_at=run["iniciado_en"].isoformat(),
        finished_at=run["finalizado_en"].isoformat() if run.get("finalizado_en") else None,
        duration_s=run.get("duracion_s"),
        records_read=records,
        metrics={
            name: MetricOutcome(
                status=OUTCOME_EN[v["estado"]],
                records=v["registros"],
                duration_ms=v["duracion_ms"],
                error=v["error"],
            )
            for name, v in (metrics or {}).items()
        },
        deleted=run.get("borrados"),
        batch_id=run.get("batch_id"),
    )


async def get_run(*, dash: Dashboards, run_id: str) -> RunView:
    parse_run_id(run_id, dash.zone)
    run = await dash.store.get_run(run_key(run_id))
    if run is None:
        raise NotFound(f"no run {run_id!r}")
    return await run_view(dash=dash, run=run)


async def jobs_status(*, dash: Dashboards) -> JobsStatus:
    async def one(spec: JobSpec) -> JobView:
        job, last = await asyncio.gather(
            dash.scheduler.get_job(spec.job_id), dash.store.last_run(spec.job_id)
        )
        return JobView(
            id=spec.job_id,
            description=spec.description,
            schedule=spec.schedule,
            time_zone=dash.zone,
            metrics=list(spec.metricas),
            scheduler_state=job.state if job else "NOT_FOUND",
            next_run=job.next_run.isoformat() if job and job.next_run else None,
            last_attempt=job.last_attempt.isoformat() if job and job.last_attempt else None,
            last_run=await run_view(dash=dash, run=last) if last else None,
        )

    return JobsStatus(jobs=list(await asyncio.gather(*(one(spec) for spec in JOBS.values()))))


async def health(*, dash: Dashboards) -> dict[str, Any]:
    """`healthy` when Firestore answers and every job is ENABLED on Cloud Scheduler, `degraded` with the
    reasons otherwise."""
    reasons: list[str] = []
    components: dict[str, Any] = {}
    try:
        jobs = await asyncio.gather(*(dash.scheduler.get_job(job_id) for job_id in JOBS))
        found = [job for job in jobs if job is not None]
        enabled = [job for job in found if job.state == "ENABLED"]
        components["scheduler"] = "running" if len(enabled) == len(JOBS) else "degraded"
        components["batch_jobs"] = len(found)
        for job_id, job in zip(JOBS, jobs, strict=True):
            if job is None:
                reasons.append(f"scheduler job {job_id} does not exist")
            elif job.state != "ENABLED":
                reasons.append(f"scheduler job {job_id} is {job.state}")
    except PlatformError as exc:
        components["scheduler"] = "unreachable"
        components["batch_jobs"] = 0
        reasons.append(exc.message)
    try:
        await dash.store.ping()
        components["firestore"] = "ok"
    except PlatformError as exc:
        components["firestore"] = "unreachable"
        reasons.append(exc.message)
    body: dict[str, Any] = {"status": "degraded" if reasons else "healthy", "components": components}
    if reasons:
        body["reasons"] = reasons
    return body


def _cursor_encode(periodo: dt.datetime, doc_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([periodo.isoformat(), doc_id]).encode()).decode()


def _cursor_decode(cursor: str) -> tuple[dt.datetime, str]:
    try:
        periodo, doc_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return dt.datetime.fromisoformat(periodo), str(doc_id)
    except (ValueError, TypeError) as exc:
        raise InvalidRequest(
            "cursor is not valid", details=[{"field": "cursor", "problem": "not a cursor"}]
        ) from exc


async def calculated(
    *,
    dash: Dashboards,
    nombre: str | None,
    tipo: str | None,
    desde: dt.date | None,
    hasta: dt.date | None,
    dimension: str | None,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    """Calculated metrics, newest period first, `limit` a page, `nextCursor` for the next one."""
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequest(
            "limit out of range", details=[{"field": "limit", "problem": f"1 to {MAX_LIMIT}"}]
        )
    if tipo is not None and tipo not in ("diario", "semanal"):
        raise InvalidRequest("unknown tipo", details=[{"field": "tipo", "problem": "diario or semanal"}])
    if nombre is not None and not (nombre.isidentifier() and len(nombre) <= 100):
        raise InvalidRequest(
            "invalid nombre_metrica", details=[{"field": "nombre_metrica", "problem": "a metric name"}]
        )
    dimension_filter: tuple[str, Any] | None = None
    if dimension is not None:
        key, sep, value = dimension.partition(":")
        if not sep or not key.isidentifier() or not value:
            raise InvalidRequest(
                "invalid dimension filter",
                details=[{"field": "dimension", "problem": "key:value, e.g. ciudad:Bogotá"}],
            )
        dimension_filter = (key, int(value) if value.isdigit() else value)
    query = MetricQuery(
        nombre=nombre,
        tipo=tipo,
        desde=period_for(JOBS[DAILY], desde, dash.zone).start if desde else None,
        hasta=period_for(JOBS[DAILY], hasta, dash.zone).end if hasta else None,
        dimension=dimension_filter,
    )
    after = _cursor_decode(cursor) if cursor else None
    rows = await dash.store.query_metrics(query=query, limit=limit + 1, after=after)
    page = rows[:limit]
    next_cursor = _cursor_encode(page[-1][1]["periodo_inicio"], page[-1][0]) if len(rows) > limit else None
    return {
        "metricas": [
            {"id": doc_id}
            | {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in data.items()}
            for doc_id, data in page
        ],
        "count": len(page),
        "nextCursor": next_cursor,
    }
