"""The metrics kind's plan and its failure rules, on in-memory ports (no emulator)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

import pytest
from pydantic_core import to_json

from shared.errors import NotFound, StoreUnavailable
from shared.kinds.base import ItemContext, ItemFailed, Ports
from shared.kinds.metrics import METRICS_TENANT, Metrics, MetricsRunRequest, Tarea, summarize_outcomes
from shared.settings import Settings

START = dt.datetime(2024, 1, 14, 5, tzinfo=dt.UTC)


class Blobs:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    async def put(self, *, object_name: str, data: bytes, content_type: str) -> None:
        self.objects[object_name] = data

    async def get(self, *, object_name: str) -> bytes:
        return self.objects[object_name]


class Store:
    def __init__(self, *, fail_writes: bool = False) -> None:
        self.fail_writes = fail_writes
        self.outcomes: dict[str, dict[str, Any]] = {}
        self.metrics: dict[str, Any] = {}

    async def replace_metrics(self, *, nombre: str, periodo_inicio: dt.datetime, docs: dict[str, Any]) -> int:
        if self.fail_writes:
            raise StoreUnavailable("Firestore is busy")
        self.metrics.update(docs)
        return 0

    async def put_outcome(self, run_key: str, outcome_id: str, data: dict[str, Any]) -> None:
        self.outcomes[outcome_id] = data


def request(tipo: str = "diario", **extra: Any) -> MetricsRunRequest:
    days = 7 if tipo == "semanal" else 1
    body = {
        "runId": "daily_metrics_batch/2024-01-14",
        "jobId": "daily_metrics_batch",
        "tipo": tipo,
        "periodoInicio": START.isoformat(),
        "periodoFin": (START + dt.timedelta(days=days)).isoformat(),
        "lecturaInicio": (START - dt.timedelta(days=7 if tipo == "semanal" else 0)).isoformat(),
        "metricas": ["ranking_asesores_diario", "conversion_ciudad"],
        "zona": "America/Bogota",
        "ttlDias": 90,
        **extra,
    }
    return MetricsRunRequest.model_validate_json(json.dumps(body))


def ports(store: Store, blobs: Blobs) -> Ports:
    return Ports(
        model=None,  # type: ignore[arg-type]
        embedder=None,  # type: ignore[arg-type]
        vectors=None,  # type: ignore[arg-type]
        blobs=blobs,  # type: ignore[arg-type]
        settings=Settings(),
        clock=lambda: dt.datetime(2024, 1, 15, 7, tzinfo=dt.UTC),
        metrics=store,  # type: ignore[arg-type]
    )


def context(store: Store, blobs: Blobs, params: dict[str, Any]) -> ItemContext:
    return ItemContext(
        kind="metrics", tenant=METRICS_TENANT, job_id="b1", index=0, attempt=1, timeout_s=60,
        params=params, ports=ports(store, blobs),
    )  # fmt: skip


async def _test_a_daily_run_is_slices_then_consolidation_then_one_item_per_metric_then_the_close() -> None:
    plan = await Metrics().plan(
        request(), tenant=METRICS_TENANT, batch_id="b1", ports=ports(Store(), Blobs())
    )
    kinds = [item.tarea for item in plan.items]
    assert kinds == ["extraer"] * 4 + ["consolidar", "metrica", "metrica", "cierre"]  # 6-hour slices
    assert plan.stage_starts == [0, 4, 5, 7]
    assert plan.items[0].desde == START and plan.items[3].hasta == START + dt.timedelta(days=1)
    assert plan.custom_ids[5:7] == ["ranking_asesores_diario", "conversion_ciudad"]
    assert plan.deadline == dt.timedelta(minutes=30)  # the seed's job timeout, enforced by the sweeper


async def _test_a_weekly_run_reads_the_week_before_too() -> None:
    plan = await Metrics().plan(
        request("semanal"), tenant=METRICS_TENANT, batch_id="b1", ports=ports(Store(), Blobs())
    )
    slices = [item for item in plan.items if item.tarea == "extraer"]
    # 14 days in at most 16 slices: 21 hours each.
    assert len(slices) == 16 and slices[0].desde == START - dt.timedelta(days=7)
    assert slices[0].hasta == slices[0].desde + dt.timedelta(hours=21)
    assert slices[-1].hasta == START + dt.timedelta(days=7)


async def _test_no_tenant_but_the_platform_may_start_a_run() -> None:
    with pytest.raises(NotFound):
        await Metrics().plan(request(), tenant="acme", batch_id="b1", ports=ports(Store(), Blobs()))


def snapshot() -> bytes:
    at = START.timestamp() + 3600
    return to_json(
        {
            "solicitudes": [["s1", "Cali", "frenos", at]],
            "ofertas": [["o1", "s1", "a1", "frenos", "Cali", 100.0, at + 600, "ganadora"]],
            "calificaciones": [],
            "solicitud_creada": {"s1": at},
        }
    )


async def _test_a_transient_store_error_is_raised_for_the_engine_to_retry() -> None:
    store, blobs = Store(fail_writes=True), Blobs()
    blobs.objects["metrics/b1/datos.json"] = snapshot()
    params = request().model_dump(mode="json")
    with pytest.raises(StoreUnavailable):
        await Metrics().run(
            Tarea(tarea="metrica", metrica="conversion_ciudad"), context(store, blobs, params)
        )
    assert store.outcomes == {}


async def _test_a_metric_that_raises_fails_alone_with_its_error_recorded() -> None:
    store, blobs = Store(), Blobs()
    blobs.objects["metrics/b1/datos.json"] = snapshot()
    params = request(fallar=["conversion_ciudad"]).model_dump(mode="json")
    with pytest.raises(ItemFailed) as caught:
        await Metrics().run(
            Tarea(tarea="metrica", metrica="conversion_ciudad"), context(store, blobs, params)
        )
    assert caught.value.item_code == "metric_failed"
    assert store.outcomes["b1__conversion_ciudad"]["estado"] == "fallida"
    done = await Metrics().run(
        Tarea(tarea="metrica", metrica="ranking_asesores_diario"), context(store, blobs, params)
    )
    assert done["registros"] == 1 and len(store.metrics) == 1
    summary = summarize_outcomes(
        list(store.outcomes.values()), ["ranking_asesores_diario", "conversion_ciudad"]
    )
    assert summary["estado"] == "parcial"


def test_a_daily_run_is_slices_then_consolidation_then_one_item_per_metric_then_the_close() -> None:
    asyncio.run(_test_a_daily_run_is_slices_then_consolidation_then_one_item_per_metric_then_the_close())


def test_a_weekly_run_reads_the_week_before_too() -> None:
    asyncio.run(_test_a_weekly_run_reads_the_week_before_too())


def test_no_tenant_but_the_platform_may_start_a_run() -> None:
    asyncio.run(_test_no_tenant_but_the_platform_may_start_a_run())


def test_a_transient_store_error_is_raised_for_the_engine_to_retry() -> None:
    asyncio.run(_test_a_transient_store_error_is_raised_for_the_engine_to_retry())


def test_a_metric_that_raises_fails_alone_with_its_error_recorded() -> None:
    asyncio.run(_test_a_metric_that_raises_fails_alone_with_its_error_recorded())
