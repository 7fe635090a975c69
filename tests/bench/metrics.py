"""The `metrics` section of the benchmark (`make bench`, or alone: `BENCH_ARGS="--only metrics"`).

For one local day of R requests (20,000; about 5 offers each, so about 100,000 offers) written by the
marketplace's seed generator on a day of its own:
  floor_s     streaming that day's requests, offers and ratings once from the Firestore emulator (one process,
              the adapter's bounded pages): no run can read its data faster
  platform_s  POST /dashboards/batch-jobs/daily until the run is completed (slices read in parallel, one
              snapshot, the four metrics as items on the engine, results written)
  naive_s     the seed's design: each metric queries and loads its own data (every document of the collections
              it needs, as dicts), computes, writes its results; the four metrics one after another
with the peak resident memory of the gateway's worker during the platform's run and of the benchmark's own
process during the naive one (each measured from a reset of the kernel's high-water mark).
"""

from __future__ import annotations

import datetime as dt
import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from infra.seed_marketplace import advisors, day_documents, write
from shared import runtime
from shared.app import platform
from shared.kinds.metrics import Metrics
from shared.metrics.definitions import DEFINITIONS, Calificacion, Datos, Oferta, Solicitud
from shared.metrics.jobs import DAILY, JOBS, local_midnight
from shared.models.auth import Role
from shared.services.auth import create_api_key

ZONE = "America/Bogota"
SOURCES_OF: dict[str, tuple[str, ...]] = {
    "ranking_asesores_diario": ("ofertas", "solicitudes"),
    "especializacion_repuesto": ("ofertas",),
    "conversion_ciudad": ("solicitudes", "ofertas"),
    "tiempo_respuesta_asesor": ("ofertas", "solicitudes"),
}


def _reset_peak(pid: int) -> float:
    """Reset the process's peak RSS (VmHWM) to its current RSS; the current RSS in MB."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return _status_mb(pid, "VmRSS:")


def _status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return 0.0


async def _floor(store: Any, start: dt.datetime, end: dt.datetime) -> tuple[float, int]:
    started = time.monotonic()
    count = 0
    for collection in ("solicitudes", "ofertas", "calificaciones"):
        async for _ in store.stream_range(collection=collection, start=start, end=end):
            count += 1
    return time.monotonic() - started, count


async def _naive(
    store: Any, db: Any, day: dt.date, start: dt.datetime, end: dt.datetime
) -> tuple[float, int]:
    """Each metric loads whole query results of its own (as the seed's SQL jobs did), then computes."""
    from google.cloud.firestore_v1.base_query import FieldFilter

    started = time.monotonic()
    read = 0
    params = {
        "run_id": f"{DAILY}/{day.isoformat()}",
        "tipo": "diario",
        "periodo_inicio": start.isoformat(),
        "periodo_fin": end.isoformat(),
        "ttl_dias": 1,
    }
    for nombre in JOBS[DAILY].metricas:
        loaded: dict[str, list[Any]] = {}
        for collection in SOURCES_OF[nombre]:
            query = (
                db.collection(collection)
                .where(filter=FieldFilter("creada_en", ">=", start))
                .where(filter=FieldFilter("creada_en", "<", end))
            )
            loaded[collection] = [(snap.id, snap.to_dict()) for snap in await query.get()]
            read += len(loaded[collection])
        requests = loaded.get("solicitudes", [])
        offers = loaded.get("ofertas", [])
        created = {i: d["creada_en"].timestamp() for i, d in requests}
        missing = sorted({d["solicitud_id"] for _, d in offers} - created.keys()) if requests else []
        found = await store.created_at(collection="solicitudes", ids=missing)
        read += len(found)
        created.update({i: v.timestamp() for i, v in found.items()})
        datos = Datos(
            inicio=start.timestamp(),
            fin=end.timestamp(),
            solicitudes=[
                Solicitud(i, d["ciudad"], d["categoria_repuesto"], d["creada_en"].timestamp())
                for i, d in requests
            ],
            ofertas=[
                Oferta(
                    i,
                    d["solicitud_id"],
                    d["asesor_id"],
                    d["categoria_repuesto"],
                    d["ciudad"],
                    d["precio"],
                    d["creada_en"].timestamp(),
                    d["estado"],
                )
                for i, d in offers
            ],  # fmt: skip
            calificaciones=list[Calificacion](),
            solicitud_creada=created,
            zona=ZONE,
        )
        values = DEFINITIONS[nombre](datos)
        docs = Metrics._documents(values, params, dt.datetime.now(dt.UTC))
        await store.replace_metrics(nombre=nombre, periodo_inicio=start, docs=docs)
    return time.monotonic() - started, read


def run_section(
    *, config: Any, pids: dict[str, int], group: Callable[[int], list[int]], requests: int, rounds: int
) -> dict[str, Any]:
    wired = platform()
    store = wired.metrics
    db = store._db  # noqa: SLF001 - the naive version queries Firestore itself, as the seed's jobs did
    # A day of its own, far in the past, so the run reads only what the benchmark wrote.
    day = dt.date(1990, 1, 1) + dt.timedelta(days=random.randrange(3000))
    start, end = local_midnight(day, ZONE), local_midnight(day + dt.timedelta(days=1), ZONE)
    from google.cloud import firestore

    sync_db = firestore.Client(project=config.project_id)
    seeded_at = time.monotonic()
    counts = write(
        sync_db, day_documents(day, per_day=requests, seed=11, zone=ZONE, team=advisors(11)), parallel=8
    )
    seed_s = time.monotonic() - seeded_at
    key = runtime.run(
        create_api_key(
            keys=wired.keys, tenant="bench-metrics", role=Role.ADMIN, now=wired.engine.clock(),
            rate_limit_per_minute=1_000_000,
        )
    )  # fmt: skip
    api = httpx.Client(base_url=config.emulators.functions.url, headers={"Authorization": f"Bearer {key}"},
                       timeout=120)  # fmt: skip
    workers = group(pids["functions"])  # the gateway and its worker processes
    rows = []
    for _ in range(rounds):
        floor_s, streamed = runtime.run(_floor(store, start, end))
        before = {pid: _reset_peak(pid) for pid in workers}
        answer = api.post("/dashboards/batch-jobs/daily", params={"fecha": day.isoformat()}).json()
        run_id, attempt = answer["run"]["runId"], answer["run"]["attempt"]
        posted = time.monotonic()
        while True:
            run = api.get(f"/dashboards/batch-jobs/runs/{run_id}").json()
            if run["attempt"] == attempt and run["status"] != "running":
                break
            if time.monotonic() - posted > 1800:
                raise TimeoutError(f"run {run_id} did not finish in 30 min")
            time.sleep(0.1)
        platform_s = time.monotonic() - posted
        peaks = {pid: _status_mb(pid, "VmHWM:") for pid in workers}
        busiest = max(workers, key=lambda pid: peaks[pid] - before[pid])
        own = _reset_peak(_self_pid())
        naive_s, naive_read = runtime.run(_naive(store, db, day, start, end))
        rows.append(
            {
                "floor_s": round(floor_s, 3),
                "documents_streamed": streamed,
                "platform_s": round(platform_s, 3),
                "platform_status": run["status"],
                "platform_records_read": run["recordsRead"],
                "gateway_worker_peak_rss_mb": round(peaks[busiest], 1),
                "gateway_worker_rss_growth_mb": round(peaks[busiest] - before[busiest], 1),
                "naive_s": round(naive_s, 3),
                "naive_documents_read": naive_read,
                "naive_peak_rss_mb": round(_status_mb(_self_pid(), "VmHWM:"), 1),
                "naive_rss_growth_mb": round(_status_mb(_self_pid(), "VmHWM:") - own, 1),
            }
        )
    api.close()
    best = min(rows, key=lambda r: r["platform_s"])
    return {
        "day": day.isoformat(),
        "seeded": counts,
        "seed_s": round(seed_s, 2),
        "rounds": rows,
        "best": best,
    }


def _self_pid() -> int:
    import os

    return os.getpid()


def print_section(section: dict[str, Any], out: Callable[[str], None]) -> None:
    best = section["best"]
    out(
        f"metrics: daily job over {section['seeded']} ({section['day']}): platform {best['platform_s']} s "
        f"({best['platform_status']}, {best['platform_records_read']} records read once; gateway worker "
        f"peak RSS {best['gateway_worker_peak_rss_mb']} MB, +{best['gateway_worker_rss_growth_mb']} MB); "
        f"floor (stream the day once) {best['floor_s']} s; naive (each metric loads its own data) "
        f"{best['naive_s']} s, {best['naive_documents_read']} documents read, peak RSS "
        f"{best['naive_peak_rss_mb']} MB (+{best['naive_rss_growth_mb']} MB)"
    )
    ratios = {
        "metrics_platform_vs_floor": round(best["platform_s"] / best["floor_s"], 2),
        "metrics_naive_vs_platform": round(best["naive_s"] / best["platform_s"], 2),
    }
    out(json.dumps(ratios))
