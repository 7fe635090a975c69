"""Scheduled metric batches through the gateway: runs on the engine, idempotent results, fault isolation,
catch-up, backfill, the Cloud Scheduler firing end to end, and the API's security and validation.

Each test writes its hand-made marketplace on a day of the past (2001-2020) that no other test has, with
unique ids, so tests never see each other's data."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from google.cloud import scheduler_v1
from google.cloud.firestore_v1.base_query import FieldFilter
from google.cloud.scheduler_v1.services.cloud_scheduler.transports import CloudSchedulerGrpcTransport

from infra.emulators.oidc import TokenMinter
from shared import runtime
from shared.app import platform
from shared.emulator_config import EmulatorConfig
from shared.metrics.jobs import DAILY, JOBS, local_midnight, local_today
from shared.models.auth import Role
from shared.services import metric_runs
from shared.settings import get_settings
from tests.conftest import claim_past_day, wait_for
from tests.e2e.conftest import new_api_key

ZONE = "America/Bogota"


@pytest.fixture
def admin(gateway_url: str, unique: str) -> Iterator[httpx.Client]:
    key = new_api_key(f"metrics-admin-{unique}", Role.ADMIN)
    with httpx.Client(base_url=gateway_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        yield client


@pytest.fixture
def reader(gateway_url: str, unique: str) -> Iterator[httpx.Client]:
    key = new_api_key(f"metrics-reader-{unique}")
    with httpx.Client(base_url=gateway_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        yield client


@pytest.fixture
def day(firestore_db: Any) -> dt.date:
    return claim_past_day(firestore_db)


def _dashboards() -> metric_runs.Dashboards:
    wired = platform()
    return metric_runs.Dashboards(engine=wired.engine, store=wired.metrics, scheduler=wired.scheduler)


def write_day(db: Any, day: dt.date, u: str) -> None:
    """The unit tests' daily dataset (tests/unit/test_metric_definitions.py) on `day`, ids prefixed `u`."""
    start = local_midnight(day, ZONE)

    def t(hours: float, minutes: float = 0) -> dt.datetime:
        return start + dt.timedelta(hours=hours, minutes=minutes)

    requests = [("s1", "Bogotá", "frenos", t(1)), ("s2", "Bogotá", "motor", t(2)),
                ("s3", "Medellín", "frenos", t(3)), ("s0", "Cali", "frenos", t(-1))]  # fmt: skip
    docs: list[tuple[str, str, dict[str, Any]]] = [
        ("solicitudes", sol, {"cliente_id": "c", "ciudad": city, "categoria_repuesto": cat, "creada_en": at})
        for sol, city, cat, at in requests
    ]
    offers = [
        ("o1", "s1", "a1", "frenos", "Bogotá", 100, t(1, 30), "ganadora"),
        ("o2", "s1", "a2", "frenos", "Bogotá", 120, t(1, 10), "rechazada"),
        ("o3", "s2", "a1", "motor", "Bogotá", 200, t(3), "rechazada"),
        ("o4", "s2", "a2", "motor", "Bogotá", 300, t(2, 20), "ganadora"),
        ("o5", "s3", "a2", "frenos", "Medellín", 50, t(3, 40), "pendiente"),
        ("o6", "s0", "a3", "frenos", "Cali", 80, t(0), "ganadora"),
        ("o7", "s3", "a1", "frenos", "Medellín", 999, t(25), "ganadora"),
    ]
    for of_id, sol, asesor, categoria, ciudad, precio, at, estado in offers:
        docs.append(
            (
                "ofertas",
                of_id,
                {
                    "solicitud_id": f"{u}-{sol}",
                    "asesor_id": f"{u}-{asesor}",
                    "categoria_repuesto": categoria,
                    "ciudad": ciudad,
                    "precio": float(precio),
                    "creada_en": at,
                    "estado": estado,
                },
            )
        )
    docs.append(
        (
            "calificaciones",
            "c1",
            {"solicitud_id": f"{u}-s1", "asesor_id": f"{u}-a1", "puntaje": 5, "creada_en": t(5)},
        )
    )
    batch = db.batch()
    for collection, doc_id, data in docs:
        batch.set(db.collection(collection).document(f"{u}-{doc_id}"), data)
    batch.commit()


def wait_run(client: httpx.Client, run_id: str, *, attempt: int = 1, timeout: float = 120) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        response = client.get(f"/dashboards/batch-jobs/runs/{run_id}")
        if response.status_code != 200:
            return None
        run: dict[str, Any] = response.json()
        return run if run["attempt"] >= attempt and run["status"] != "running" else None

    return wait_for(finished, timeout=timeout, interval=0.2, what=f"run {run_id}")


def metric_docs(db: Any, nombre: str, day: dt.date) -> dict[str, dict[str, Any]]:
    query = (
        db.collection("metricas_calculadas")
        .where(filter=FieldFilter("nombre", "==", nombre))
        .where(filter=FieldFilter("periodo_inicio", "==", local_midnight(day, ZONE)))
    )
    return {snap.id: snap.to_dict() for snap in query.stream()}


def test_daily_run_computes_the_definitions_and_a_rerun_replaces_them(
    admin: httpx.Client, reader: httpx.Client, firestore_db: Any, day: dt.date, unique: str
) -> None:
    write_day(firestore_db, day, unique)

    started = admin.post("/dashboards/batch-jobs/daily", params={"fecha": day.isoformat()})
    assert started.status_code == 202, started.text
    run_id = f"{DAILY}/{day.isoformat()}"
    run = wait_run(reader, run_id)

    assert run["status"] == "completed"
    assert run["period"] == day.isoformat()
    batch = firestore_db.collection("batches").document(run["batchId"]).get().to_dict()
    assert batch["deadline_at"] - batch["created_at"] == dt.timedelta(minutes=30)  # the run's deadline
    assert (
        run["recordsRead"] == 3 + 7 - 1 + 1 + 1
    )  # 3 requests, 6 offers and a rating of the day, s0 looked up
    assert {name: m["status"] for name, m in run["metrics"].items()} == dict.fromkeys(
        JOBS[DAILY].metricas, "completed"
    )
    ranking = {
        d["dimensiones"]["asesor_id"]: d
        for d in metric_docs(firestore_db, "ranking_asesores_diario", day).values()
    }
    assert ranking[f"{unique}-a3"]["valor"] == pytest.approx(0.778333, abs=1e-6)
    assert ranking[f"{unique}-a3"]["dimensiones"]["posicion"] == 1
    assert ranking[f"{unique}-a1"]["valor"] == pytest.approx(0.560417, abs=1e-6)
    first = ranking[f"{unique}-a1"]
    assert set(first) == {
        "nombre", "tipo", "valor", "descripcion", "unidad", "dimensiones",
        "periodo_inicio", "periodo_fin", "calculado_en", "expira_en",
    }  # fmt: skip
    assert first["tipo"] == "diario"
    assert first["expira_en"] - first["calculado_en"] == dt.timedelta(days=90)
    conversion = metric_docs(firestore_db, "conversion_ciudad", day)
    assert sorted(d["valor"] for d in conversion.values()) == [0.0, 1.0]

    # A manual re-run replaces the period's documents: same ids, no duplicates.
    before = {name: set(metric_docs(firestore_db, name, day)) for name in JOBS[DAILY].metricas}
    again = admin.post("/dashboards/batch-jobs/daily", params={"fecha": day.isoformat()})
    assert again.json()["action"] == "started" and again.json()["run"]["attempt"] == 2
    assert wait_run(reader, run_id, attempt=2)["status"] == "completed"
    after = {name: set(metric_docs(firestore_db, name, day)) for name in JOBS[DAILY].metricas}
    assert after == before

    window = {"nombre_metrica": "ranking_asesores_diario", "desde": day.isoformat(), "hasta": day.isoformat()}
    listed = reader.get("/dashboards/metrics/calculated", params={**window, "limit": "2"}).json()
    assert listed["count"] == 2 and listed["nextCursor"]
    rest = reader.get(
        "/dashboards/metrics/calculated", params={**window, "cursor": listed["nextCursor"]}
    ).json()
    assert {m["id"] for m in listed["metricas"] + rest["metricas"]} == before["ranking_asesores_diario"]
    by_dimension = reader.get(
        "/dashboards/metrics/calculated", params={"dimension": f"asesor_id:{unique}-a2", "tipo": "diario"}
    ).json()
    assert {m["nombre"] for m in by_dimension["metricas"]} == {
        "ranking_asesores_diario", "especializacion_repuesto", "tiempo_respuesta_asesor"
    }  # fmt: skip


def test_a_double_firing_joins_the_run_in_progress(
    admin: httpx.Client, reader: httpx.Client, firestore_db: Any, day: dt.date, unique: str
) -> None:
    write_day(firestore_db, day, unique)
    answers: list[dict[str, Any]] = []

    def fire() -> None:
        answers.append(admin.post("/dashboards/batch-jobs/daily", params={"fecha": day.isoformat()}).json())

    threads = [threading.Thread(target=fire) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert sorted(a["action"] for a in answers) == ["joined", "started"]
    assert len({a["run"]["batchId"] for a in answers}) == 1
    run = wait_run(reader, f"{DAILY}/{day.isoformat()}")
    assert run["attempt"] == 1 and run["status"] == "completed"
    assert len(metric_docs(firestore_db, "ranking_asesores_diario", day)) == 3


def test_a_failing_metric_leaves_the_others_completed(
    reader: httpx.Client, firestore_db: Any, day: dt.date, unique: str
) -> None:
    write_day(firestore_db, day, unique)

    runtime.run(
        metric_runs.run_for_day(dash=_dashboards(), job_id=DAILY, last=day, fallar=["conversion_ciudad"])
    )
    run = wait_run(reader, f"{DAILY}/{day.isoformat()}")

    assert run["status"] == "partial"
    failed = run["metrics"]["conversion_ciudad"]
    assert failed["status"] == "failed" and "fallo simulado en conversion_ciudad" in failed["error"]
    others = {name: m["status"] for name, m in run["metrics"].items() if name != "conversion_ciudad"}
    assert set(others.values()) == {"completed"} and len(others) == 3
    assert metric_docs(firestore_db, "conversion_ciudad", day) == {}
    assert len(metric_docs(firestore_db, "ranking_asesores_diario", day)) == 3


def test_catch_up_runs_the_missing_days_once(reader: httpx.Client, day: dt.date) -> None:
    dash = _dashboards()
    fired_at = local_midnight(day + dt.timedelta(days=1), ZONE) + dt.timedelta(hours=2)

    first = runtime.run(metric_runs.fire(dash=dash, job_id=DAILY, fired_at=fired_at))
    second = runtime.run(metric_runs.fire(dash=dash, job_id=DAILY, fired_at=fired_at))

    days = [(day - dt.timedelta(days=back)).isoformat() for back in range(4)]
    assert sorted(r.run.period for r in first.runs) == sorted(days)
    assert {r.action for r in first.runs} == {"started"}
    assert {r.run.origin for r in first.runs[1:]} == {"catchup"}
    # The second firing joins or leaves alone every run: no new attempt.
    assert {r.action for r in second.runs} <= {"joined", "already_completed"}
    for period in days:
        assert wait_run(reader, f"{DAILY}/{period}")["attempt"] == 1


def test_backfill_runs_each_period(admin: httpx.Client, reader: httpx.Client, day: dt.date) -> None:
    desde = day - dt.timedelta(days=2)
    answer = admin.post(
        "/dashboards/batch-jobs/backfill",
        params={"job_id": DAILY, "desde": desde.isoformat(), "hasta": day.isoformat()},
    )
    assert answer.status_code == 202
    assert answer.json()["periods"] == 3
    for back in range(3):
        assert (
            wait_run(reader, f"{DAILY}/{(day - dt.timedelta(days=back)).isoformat()}")["status"]
            == "completed"
        )
    weeks = admin.post(
        "/dashboards/batch-jobs/backfill",
        params={
            "job_id": "weekly_metrics_batch",
            "desde": desde.isoformat(),
            "hasta": (desde + dt.timedelta(days=13)).isoformat(),
        },
    )
    assert weeks.json()["periods"] == 2  # two Sundays in 14 days
    too_many = admin.post(
        "/dashboards/batch-jobs/backfill",
        params={
            "job_id": DAILY,
            "desde": (day - dt.timedelta(days=400)).isoformat(),
            "hasta": day.isoformat(),
        },
    )
    assert too_many.status_code == 400 and too_many.json()["error"]["details"][0]["field"] == "hasta"


def test_the_scheduler_fires_the_daily_job_end_to_end(
    local_cloud: EmulatorConfig, reader: httpx.Client
) -> None:
    settings = get_settings()
    client = scheduler_v1.CloudSchedulerClient(
        transport=CloudSchedulerGrpcTransport(
            channel=grpc.insecure_channel(local_cloud.emulators.scheduler.address)
        )
    )
    name = f"projects/{settings.project_id}/locations/{settings.region}/jobs/{DAILY}"
    job = client.get_job(name=name)
    assert job.schedule == "0 2 * * *" and job.time_zone == ZONE
    before = job.last_attempt_time

    client.run_job(name=name)

    wait_for(
        lambda: (
            client.get_job(name=name).last_attempt_time != before
            and client.get_job(name=name).status.code == 0
        ),
        timeout=30,
        what="the scheduler's attempt",
    )
    yesterday = local_today(dt.datetime.now(dt.UTC), ZONE) - dt.timedelta(days=1)
    run = wait_run(reader, f"{DAILY}/{yesterday.isoformat()}", timeout=120)
    assert run["status"] in ("completed", "partial")
    status = reader.get("/dashboards/batch-jobs/status").json()
    daily = next(j for j in status["jobs"] if j["id"] == DAILY)
    assert daily["schedulerState"] == "ENABLED" and daily["lastRun"] is not None
    health = reader.get("/dashboards/health").json()
    assert health == {
        "status": "healthy",
        "components": {"scheduler": "running", "batch_jobs": 3, "firestore": "ok"},
    }


def test_security_and_validation(
    gateway_url: str, admin: httpx.Client, reader: httpx.Client, local_cloud: EmulatorConfig
) -> None:
    assert httpx.get(f"{gateway_url}/dashboards/batch-jobs/status").status_code == 401
    assert reader.post(f"/dashboards/batch-jobs/trigger/{DAILY}").status_code == 403
    assert reader.post("/dashboards/batch-jobs/daily", params={"fecha": "2024-01-15"}).status_code == 403
    assert admin.post("/dashboards/batch-jobs/trigger/nope").status_code == 404
    assert reader.get("/dashboards/batch-jobs/runs/nope/2024-01-01").status_code == 404
    for params, field in (
        ({"fecha": "2024-02-30"}, "fecha"),
        ({"fecha": "2999-01-01"}, "fecha"),
        ({}, "fecha"),
    ):
        bad = admin.post("/dashboards/batch-jobs/daily", params=params)
        assert bad.status_code == 400 and bad.json()["error"]["details"][0]["field"] == field
    bad_week = admin.post("/dashboards/batch-jobs/weekly", params={"fecha_fin": "15-01-2024"})
    assert bad_week.json()["error"]["details"][0]["field"] == "fecha_fin"
    assert reader.get("/dashboards/metrics/calculated", params={"limit": 0}).status_code == 400
    assert reader.get("/dashboards/metrics/calculated", params={"cursor": "zz"}).status_code == 400
    # The scheduler's endpoint takes only the scheduler's OIDC token, minted for the function.
    url = f"{gateway_url}/dashboards/batch-jobs/scheduled/{DAILY}"
    assert httpx.post(url).status_code == 401
    settings = get_settings()
    foreign = TokenMinter().mint(
        service_account_email="intruder@example.iam.gserviceaccount.com",
        audience=settings.function_url("dashboards"),
    )
    assert httpx.post(url, headers={"Authorization": f"Bearer {foreign}"}).status_code in (401, 403)


def test_weekly_run_computes_the_weekly_definitions(
    admin: httpx.Client, reader: httpx.Client, firestore_db: Any, day: dt.date, unique: str
) -> None:
    """The unit tests' weekly dataset: the 7 days ending `day`, and the week before."""
    u = unique
    start = local_midnight(day - dt.timedelta(days=6), ZONE)

    def w(days: float, hours: float = 0, minutes: float = 0) -> dt.datetime:
        return start + dt.timedelta(days=days, hours=hours, minutes=minutes)

    requests = [("w1", "frenos", w(0, 10, 15)), ("w2", "frenos", w(0, 10, 45)), ("w3", "motor", w(2, 18, 5)),
                ("p1", "frenos", w(-3)), ("p2", "luces", w(-2))]  # fmt: skip
    offers = [("x1", "w1", "a1", 100, w(0, 10, 45), "ganadora"),
              ("x2", "w2", "a2", 200, w(0, 11, 45), "rechazada"),
              ("x3", "p1", "a1", 100, w(-3, 2), "rechazada")]  # fmt: skip
    ratings = [("c1", "a1", 5, w(1)), ("c2", "a1", 4, w(1)), ("c3", "a2", 2, w(1)), ("c4", "a2", 5, w(-1))]
    batch = firestore_db.batch()
    for sol, cat, at in requests:
        batch.set(
            firestore_db.collection("solicitudes").document(f"{u}-{sol}"),
            {"cliente_id": "c", "ciudad": "Bogotá", "categoria_repuesto": cat, "creada_en": at},
        )
    for of_id, sol, asesor, price, at, estado in offers:
        batch.set(
            firestore_db.collection("ofertas").document(f"{u}-{of_id}"),
            {"solicitud_id": f"{u}-{sol}", "asesor_id": f"{u}-{asesor}", "categoria_repuesto": "frenos",
             "ciudad": "Bogotá", "precio": float(price), "creada_en": at, "estado": estado},
        )  # fmt: skip
    for cal, asesor, score, at in ratings:
        batch.set(
            firestore_db.collection("calificaciones").document(f"{u}-{cal}"),
            {"solicitud_id": f"{u}-w1", "asesor_id": f"{u}-{asesor}", "puntaje": score, "creada_en": at},
        )
    batch.commit()

    assert (
        admin.post("/dashboards/batch-jobs/weekly", params={"fecha_fin": day.isoformat()}).status_code == 202
    )
    run = wait_run(reader, f"weekly_metrics_batch/{day.isoformat()}", timeout=150)

    assert run["status"] == "completed", run
    first_day = day - dt.timedelta(days=6)

    def values(nombre: str) -> list[dict[str, Any]]:
        return list(metric_docs(firestore_db, nombre, first_day).values())

    trend = {
        (d["dimensiones"]["alcance"], d["dimensiones"].get("categoria_repuesto")): d
        for d in values("tendencia_solicitudes")
    }
    assert trend[("total", None)]["valor"] == 50.0
    assert trend[("categoria", "luces")]["valor"] == -100.0
    assert trend[("total", None)]["tipo"] == "semanal"
    assert trend[("total", None)]["expira_en"] - trend[("total", None)]["calculado_en"] == dt.timedelta(
        days=365
    )
    evolution = {d["dimensiones"]["asesor_id"]: d["valor"] for d in values("evolucion_asesores")}
    assert evolution == {
        f"{u}-a1": pytest.approx(0.8125, abs=1e-6),
        f"{u}-a2": pytest.approx(0.225, abs=1e-6),
    }
    patterns = {
        (d["dimensiones"]["categoria_repuesto"], d["dimensiones"]["hora"]): d["valor"]
        for d in values("patrones_demanda")
    }
    assert patterns == {("frenos", 10): 2.0, ("motor", 18): 1.0}
    total = next(d for d in values("satisfaccion") if d["dimensiones"]["alcance"] == "total")
    assert total["valor"] == pytest.approx(11 / 3, abs=1e-6)
    assert total["dimensiones"]["proporcion_satisfechos"] == pytest.approx(2 / 3, abs=1e-6)


def test_cleanup_deletes_what_expired_and_never_the_marketplace(
    admin: httpx.Client, reader: httpx.Client, firestore_db: Any, unique: str
) -> None:
    past = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    metric = firestore_db.collection("metricas_calculadas").document(f"old-{unique}")
    metric.set({"nombre": "ranking_asesores_diario", "expira_en": past, "periodo_inicio": past})
    run = firestore_db.collection("metricas_runs").document(f"old-{unique}")
    run.set({"job_id": "old", "expira_en": past})
    run.collection("resultados").document("x").set({"batch_id": "x"})
    event = firestore_db.collection("usage_events").document(f"old-{unique}")
    event.set({"at": past, "expire_at": past})
    source = firestore_db.collection("solicitudes").document(f"old-{unique}")
    source.set({"cliente_id": "c", "ciudad": "Cali", "categoria_repuesto": "frenos", "creada_en": past})

    answer = admin.post("/dashboards/batch-jobs/trigger/cleanup_metrics").json()
    finished = wait_run(reader, answer["run"]["runId"], attempt=answer["run"]["attempt"])

    assert finished["status"] == "completed"
    assert finished["deleted"]["metricas_calculadas"] >= 1
    assert not metric.get().exists and not run.get().exists and not event.get().exists
    assert not run.collection("resultados").document("x").get().exists
    assert source.get().exists


def test_health_is_degraded_while_a_job_is_paused(local_cloud: EmulatorConfig, reader: httpx.Client) -> None:
    settings = get_settings()
    client = scheduler_v1.CloudSchedulerClient(
        transport=CloudSchedulerGrpcTransport(
            channel=grpc.insecure_channel(local_cloud.emulators.scheduler.address)
        )
    )
    name = f"projects/{settings.project_id}/locations/{settings.region}/jobs/cleanup_metrics"
    client.pause_job(name=name)
    try:
        health = reader.get("/dashboards/health").json()
    finally:
        client.resume_job(name=name)
    assert health["status"] == "degraded"
    assert health["reasons"] == ["scheduler job cleanup_metrics is PAUSED"]
    assert reader.get("/dashboards/health").json()["status"] == "healthy"
