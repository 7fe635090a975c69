"""Metric runs of the marketplace as a kind of the engine: one run is one batch, each metric one item.

A run's items come in four stages (the engine finishes a stage before it starts the next):
  1. `extraer`: one item per time slice of the read range streams the slice's requests, offers and ratings
     once and writes them, compacted, to Cloud Storage;
  2. `consolidar`: joins the slices and reads the creation time of requests answered in the range but created
     before it (each once), into one snapshot;
  3. `metrica`: one item per metric reads the snapshot, computes the metric and replaces its documents (ids
     derived from metric, period and dimension, so a repeated run never duplicates them);
  4. `cierre`: sums up the outcomes into the run document and logs the run's end.
The cleanup job is one item, `limpieza`. A metric that raises fails alone (`metric_failed`, its error in the
run); a transient store error is retried by the engine with backoff.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import math
import sys
import time
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, TypeAdapter
from pydantic_core import from_json, to_json

from shared.errors import NotFound, PlatformError
from shared.kinds.base import ItemContext, ItemFailed, Kind, KindRequest, Plan, Ports
from shared.metrics.definitions import DEFINITIONS, SUMMARY_NOUN, MetricValue
from shared.metrics.snapshot import SOURCES, compact, load_datos
from shared.ports import MetricsStore

METRICS_TENANT = "platform-metrics"
KIND_NAME = "metrics"
MAX_SLICES = 16
log = logging.getLogger("metrics")
if not log.handlers:
    # One JSON object per line on stdout, which Cloud Logging parses (severity, message, fields).
    _handler = logging.StreamHandler(sys.stdout)
    _handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(_handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def log_event(severity: str, message: str, **fields: Any) -> None:
    """A structured log line, as Cloud Logging reads it (JSON with `severity`)."""
    line = {"severity": severity, "message": message, "time": dt.datetime.now(dt.UTC).isoformat(), **fields}
    log.log(getattr(logging, severity), json.dumps(line, default=str, ensure_ascii=False))


def run_key(run_id: str) -> str:
    """A run's document id: its id with the slash Firestore ids cannot hold."""
    return run_id.replace("/", "__")


def metric_doc_id(nombre: str, periodo: str, clave: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(clave, sort_keys=True, default=str).encode()).hexdigest()[:20]
    return f"{nombre}__{periodo}__{digest}"


class MetricsRunRequest(KindRequest):
    """A run as the dashboards service submits it (never a client: see `plan`)."""

    run_id: str = Field(max_length=100)
    job_id: str = Field(max_length=60)
    tipo: Literal["diario", "semanal", "limpieza"]
    periodo_inicio: dt.datetime
    periodo_fin: dt.datetime
    lectura_inicio: dt.datetime
    metricas: list[str] = Field(default_factory=list, max_length=20)
    zona: str
    ttl_dias: int = Field(ge=1)
    fallar: list[str] = Field(default_factory=list, max_length=20)  # local fault injection (tests)


class Tarea(BaseModel):
    tarea: Literal["extraer", "consolidar", "metrica", "cierre", "limpieza"]
    parte: int = 0
    desde: dt.datetime | None = None
    hasta: dt.datetime | None = None
    metrica: str | None = None


class Metrics(Kind[MetricsRunRequest, Tarea]):
    name: ClassVar[str] = KIND_NAME
    request_model: ClassVar[type[KindRequest]] = MetricsRunRequest
    item_adapter: ClassVar[TypeAdapter[Any]] = TypeAdapter(list[Tarea])
    public: ClassVar[bool] = False  # runs are started by the dashboards function only

    async def plan(
        self, request: MetricsRunRequest, *, tenant: str, batch_id: str, ports: Ports
    ) -> Plan[Tarea]:
        if tenant != METRICS_TENANT:  # a second guard: the kind is not public (only the dashboards submit it)
            raise NotFound(f"no kind of batch {KIND_NAME!r}")
        params = request.model_dump(mode="json")
        if request.tipo == "limpieza":
            return Plan(
                items=[Tarea(tarea="limpieza")],
                custom_ids=["limpieza"],
                params=params,
                deadline=dt.timedelta(minutes=ports.settings.metrics_run_deadline_minutes),
            )
        # Slices of METRICS_PARTITION_HOURS, at most MAX_SLICES of them (the weekly job reads 14 days): every
        # slice costs a query per source collection.
        hours = math.ceil((request.periodo_fin - request.lectura_inicio).total_seconds() / 3600)
        step = dt.timedelta(hours=max(ports.settings.metrics_partition_hours, math.ceil(hours / MAX_SLICES)))
        slices: list[Tarea] = []
        start = request.lectura_inicio
        while start < request.periodo_fin:
            end = min(start + step, request.periodo_fin)
            slices.append(Tarea(tarea="extraer", parte=len(slices), desde=start, hasta=end))
            start = end
        metricas = [Tarea(tarea="metrica", metrica=name) for name in request.metricas]
        items = [*slices, Tarea(tarea="consolidar"), *metricas, Tarea(tarea="cierre")]
        custom_ids: list[str | None] = [f"parte-{t.parte}" for t in slices]
        custom_ids += ["consolidar", *request.metricas, "cierre"]
        params["partes"] = len(slices)
        n = len(slices)
        return Plan(
            items=items,
            custom_ids=custom_ids,
            params=params,
            stage_starts=[0, n, n + 1, n + 1 + len(metricas)],
            deadline=dt.timedelta(minutes=ports.settings.metrics_run_deadline_minutes),
        )

    async def run(self, item: Tarea, ctx: ItemContext) -> dict[str, Any]:
        store = ctx.ports.metrics
        assert store is not None, "the metrics kind needs Ports.metrics"
        started = time.monotonic()
        if item.tarea == "extraer":
            return await self._extract(item, ctx, store, started)
        if item.tarea == "consolidar":
            return await self._consolidate(ctx, store, started)
        if item.tarea == "metrica":
            return await self._metric(item, ctx, store, started)
        if item.tarea == "cierre":
            return await self._close(ctx, store)
        return await self._cleanup(ctx, store, started)

    def _object(self, ctx: ItemContext, name: str) -> str:
        return f"metrics/{ctx.job_id}/{name}.json"

    async def _extract(
        self, item: Tarea, ctx: ItemContext, store: MetricsStore, started: float
    ) -> dict[str, Any]:
        assert item.desde is not None and item.hasta is not None
        rows: dict[str, list[list[Any]]] = {}
        for collection in SOURCES:
            rows[collection] = [
                compact(collection, doc_id, data)
                async for doc_id, data in store.stream_range(
                    collection=collection, start=item.desde, end=item.hasta
                )
            ]
        await ctx.ports.blobs.put(
            object_name=self._object(ctx, f"parte-{item.parte}"),
            data=to_json(rows),
            content_type="application/json",
        )
        read = sum(len(r) for r in rows.values())
        await self._outcome(ctx, store, f"parte-{item.parte:03d}", registros=read, started=started)
        return {"tarea": "extraer", "parte": item.parte, "registros": read}

    async def _consolidate(self, ctx: ItemContext, store: MetricsStore, started: float) -> dict[str, Any]:
        merged: dict[str, list[Any]] = {name: [] for name in SOURCES}
        for part in range(int(ctx.params["partes"])):
            raw = await ctx.ports.blobs.get(object_name=self._object(ctx, f"parte-{part}"))
            for name, rows in from_json(raw).items():
                merged[name].extend(rows)
        created = {row[0]: row[3] for row in merged["solicitudes"]}
        # Offers answer requests created before the read range too: their creation time is read once here.
        missing = sorted({row[1] for row in merged["ofertas"]} - created.keys())
        found = await store.created_at(collection="solicitudes", ids=missing)
        created.update({doc_id: value.timestamp() for doc_id, value in found.items()})
        snapshot = to_json({**merged, "solicitud_creada": created})
        await ctx.ports.blobs.put(
            object_name=self._object(ctx, "datos"), data=snapshot, content_type="application/json"
        )
        await self._outcome(ctx, store, "consolidar", registros=len(found), started=started)
        return {"tarea": "consolidar", "registros": len(found)}

    async def _metric(
        self, item: Tarea, ctx: ItemContext, store: MetricsStore, started: float
    ) -> dict[str, Any]:
        nombre = str(item.metrica)
        params = ctx.params
        try:
            raw = await ctx.ports.blobs.get(object_name=self._object(ctx, "datos"))
            values = await asyncio.to_thread(self._compute, nombre, raw, params, ctx.ports.settings.is_local)
            now = ctx.ports.clock()
            docs = self._documents(values, params, now)
            await store.replace_metrics(
                nombre=nombre, periodo_inicio=dt.datetime.fromisoformat(params["periodo_inicio"]), docs=docs
            )
        except PlatformError as exc:
            if exc.transient:
                raise  # retried by the engine with backoff
            await self._fail(ctx, store, nombre, exc, started)
        except Exception as exc:  # noqa: BLE001 - a metric's own bug fails that metric alone, with its error
            await self._fail(ctx, store, nombre, exc, started)
        entities = (
            len({v.clave.get("asesor_id") for v in values})
            if nombre == "especializacion_repuesto"
            else len(values)
        )
        log_event(
            "INFO",
            SUMMARY_NOUN[nombre].format(n=entities),
            run_id=params["run_id"],
            metrica=nombre,
            registros=len(values),
            duracion_s=round(time.monotonic() - started, 3),
        )
        await self._outcome(ctx, store, nombre, registros=len(values), started=started, metrica=nombre)
        return {"tarea": "metrica", "metrica": nombre, "registros": len(values)}

    @staticmethod
    def _compute(nombre: str, raw: bytes, params: dict[str, Any], local: bool) -> list[MetricValue]:
        if local and nombre in params.get("fallar", []):
            raise RuntimeError(f"fallo simulado en {nombre}")
        datos = load_datos(
            raw,
            inicio=dt.datetime.fromisoformat(params["periodo_inicio"]).timestamp(),
            fin=dt.datetime.fromisoformat(params["periodo_fin"]).timestamp(),
            zona=params["zona"],
        )
        return DEFINITIONS[nombre](datos)

    @staticmethod
    def _documents(values: list[MetricValue], params: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
        inicio = dt.datetime.fromisoformat(params["periodo_inicio"])
        fin = dt.datetime.fromisoformat(params["periodo_fin"])
        periodo = params["run_id"].partition("/")[2]
        expira = now + dt.timedelta(days=int(params["ttl_dias"]))
        return {
            metric_doc_id(v.nombre, periodo, v.clave): {
                "nombre": v.nombre,
                "tipo": params["tipo"],
                "valor": v.valor,
                "descripcion": v.descripcion,
                "unidad": v.unidad,
                "dimensiones": v.dimensiones,
                "periodo_inicio": inicio,
                "periodo_fin": fin,
                "calculado_en": now,
                "expira_en": expira,
            }
            for v in values
        }

    async def _fail(
        self, ctx: ItemContext, store: MetricsStore, nombre: str, exc: Exception, started: float
    ) -> None:
        message = f"{type(exc).__name__}: {exc}"[:1000]
        log_event(
            "ERROR", f"Error calculando {nombre}: {message}", run_id=ctx.params["run_id"], metrica=nombre
        )
        await self._outcome(ctx, store, nombre, registros=0, started=started, metrica=nombre, error=message)
        raise ItemFailed(message, code="metric_failed") from exc

    async def _outcome(
        self,
        ctx: ItemContext,
        store: MetricsStore,
        tarea: str,
        *,
        registros: int,
        started: float,
        metrica: str | None = None,
        error: str | None = None,
    ) -> None:
        await store.put_outcome(
            run_key(ctx.params["run_id"]),
            f"{ctx.job_id}__{tarea}",
            {
                "batch_id": ctx.job_id,
                "tarea": tarea,
                "metrica": metrica,
                "estado": "fallida" if error else "completada",
                "registros": registros,
                "duracion_ms": int((time.monotonic() - started) * 1000),
                "error": error,
                "intento": ctx.attempt,
            },
        )

    async def _close(self, ctx: ItemContext, store: MetricsStore) -> dict[str, Any]:
        params = ctx.params
        key = run_key(params["run_id"])
        run = await store.get_run(key)
        if run is None or run.get("batch_id") != ctx.job_id:
            return {"tarea": "cierre", "estado": "reemplazado"}  # a newer attempt owns the run now
        outcomes = await store.outcomes(key, ctx.job_id)
        summary = summarize_outcomes(outcomes, params["metricas"])
        now = ctx.ports.clock()
        started_at = run["iniciado_en"]
        duration = (now - started_at).total_seconds()
        await store.update_run(key, {**summary, "finalizado_en": now, "duracion_s": round(duration, 3)})
        label = {"diario": "diario", "semanal": "semanal"}.get(params["tipo"], "de limpieza")
        log_event(
            "INFO" if summary["estado"] == "completado" else "WARNING",
            f"Job {label} completado en {duration:.2f}s",
            run_id=params["run_id"],
            estado=summary["estado"],
            registros_leidos=summary["registros_leidos"],
        )
        return {"tarea": "cierre", "estado": summary["estado"]}

    async def _cleanup(self, ctx: ItemContext, store: MetricsStore, started: float) -> dict[str, Any]:
        now = ctx.ports.clock()
        deleted: dict[str, int] = {}
        retention = dt.timedelta(days=ctx.ports.settings.analytics_retention_days)
        # Usage events by their time (`at` is indexed; their TTL field is not, and Firestore's TTL policy
        # deletes them too); calculated metrics and run records by their expiry.
        for collection, field_name, cutoff in (
            ("metricas_calculadas", "expira_en", now),
            ("metricas_runs", "expira_en", now),
            ("usage_events", "at", now - retention),
        ):
            total = 0
            while count := await store.delete_expired(
                collection=collection, field_name=field_name, now=cutoff, limit=500
            ):
                total += count
            deleted[collection] = total
        await self._outcome(ctx, store, "limpieza", registros=sum(deleted.values()), started=started)
        key = run_key(ctx.params["run_id"])
        run = await store.get_run(key)
        if run is not None and run.get("batch_id") == ctx.job_id:
            duration = (now - run["iniciado_en"]).total_seconds()
            await store.update_run(
                key,
                {
                    "estado": "completado",
                    "finalizado_en": now,
                    "duracion_s": round(duration, 3),
                    "registros_leidos": 0,
                    "borrados": deleted,
                    "metricas": {},
                },
            )
        log_event("INFO", f"Limpieza completada: {deleted}", run_id=ctx.params["run_id"], borrados=deleted)
        return {"tarea": "limpieza", "borrados": deleted}


def summarize_outcomes(outcomes: list[dict[str, Any]], metricas: list[str]) -> dict[str, Any]:
    """A run's state from its tasks' outcomes: `completado` when every metric completed, `fallido` when none
    did, `parcial` otherwise; records read are the extraction slices' and the consolidation's."""
    by_metric = {o["metrica"]: o for o in outcomes if o.get("metrica")}
    per_metric: dict[str, Any] = {}
    for nombre in metricas:
        outcome = by_metric.get(nombre)
        if outcome is None:
            per_metric[nombre] = {
                "estado": "sin_resultado",
                "registros": 0,
                "duracion_ms": None,
                "error": None,
            }
        else:
            per_metric[nombre] = {k: outcome.get(k) for k in ("estado", "registros", "duracion_ms", "error")}
    ok = sum(1 for v in per_metric.values() if v["estado"] == "completada")
    estado = "completado" if ok == len(metricas) else ("fallido" if ok == 0 else "parcial")
    read = sum(
        int(o.get("registros") or 0)
        for o in outcomes
        if not o.get("metrica") and o.get("tarea") != "limpieza"
    )
    return {"estado": estado, "metricas": per_metric, "registros_leidos": read}
