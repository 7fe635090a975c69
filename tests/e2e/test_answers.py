"""Every route of every function answers what its document says: one real call a route, through the gateway,
its answer validated strictly against the model its route table declares (tests/contract.py). The examples are
keyed by operation id and checked against the route tables, so a new route without one fails."""

from __future__ import annotations

import datetime as dt
import json
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from infra.emulators.gemini.content import png
from infra.emulators.oidc import TokenMinter
from shared.api import Route
from shared.metrics.jobs import DAILY, WEEKLY
from shared.models.analytics import Realtime
from shared.models.auth import Role
from shared.settings import get_settings
from tests.conftest import claim_past_day, wait_for
from tests.contract import check_answer
from tests.e2e.conftest import new_api_key
from tests.e2e.test_metric_batches import wait_run, write_day
from tests.fuzz.run import public_apis

OPERATIONS: dict[str, Route] = {
    f"{name}_{route.operation_id}": route for name, api in public_apis().items() for route in api.routes
}
FINAL_JOB_STATES = {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"}


@dataclass
class World:
    """A tenant with credits, its admin, and the objects the examples act on, created once."""

    gateway_url: str
    tenant: str
    api: httpx.Client
    admin: httpx.Client
    db: Any
    day: dt.date  # a day of metric runs no other test uses
    made: dict[str, str] = field(default_factory=dict)

    def once(self, name: str, make: Callable[[], str]) -> str:
        if name not in self.made:
            self.made[name] = make()
        return self.made[name]


@pytest.fixture(scope="module")
def world(gateway_url: str, firestore_db: Any) -> Iterator[World]:
    tenant = f"answers-{uuid.uuid4().hex[:10]}"
    admin_key = new_api_key(f"answers-ops-{uuid.uuid4().hex[:10]}", Role.ADMIN)
    with (
        httpx.Client(base_url=gateway_url, headers={"Authorization": f"Bearer {new_api_key(tenant)}"}) as api,
        httpx.Client(base_url=gateway_url, headers={"Authorization": f"Bearer {admin_key}"}) as admin,
    ):
        api.timeout = admin.timeout = httpx.Timeout(120)
        granted = admin.post(
            "/batch/credits/grant", json={"tenant": tenant, "amount": 100, "reason": "answers"}
        )
        assert granted.status_code == 200, granted.text
        yield World(
            gateway_url=gateway_url,
            tenant=tenant,
            api=api,
            admin=admin,
            db=firestore_db,
            day=claim_past_day(firestore_db),
        )


def _ok(response: httpx.Response) -> httpx.Response:
    assert response.status_code < 400, f"{response.request.method} {response.request.url}: {response.text}"
    return response


# --- batch ------------------------------------------------------------------------------------------------


def _batch(w: World, *, wait: bool, prompts: list[str] | None = None) -> str:
    body = {"requests": [{"prompt": p} for p in prompts or ["hola"]], "options": {"wait": wait}}
    return str(_ok(w.api.post("/batch/generate", json=body)).json()["batchId"])


def _collection(w: World) -> str:
    name = f"kb_{uuid.uuid4().hex[:10]}"
    operation = {"type": "index", "name": name, "documents": [{"text": "brake disc"}]}
    _ok(w.api.post("/batch/embeddings", json={"operations": [operation], "options": {"wait": True}}))
    return name


def _batchmode_job(w: World) -> str:
    body = {"type": "text", "requests": [{"prompt": "a red bolt"}], "mode": "auto"}
    return str(_ok(w.api.post("/batch/create", json=body)).json()["id"])


def _finished_batchmode_job(w: World) -> str:
    job_id = _batchmode_job(w)

    def final() -> bool:
        view = w.api.get(f"/batch/status/{job_id}").json()
        return bool(view["state"] in FINAL_JOB_STATES and view.get("finishedAt"))

    wait_for(final, timeout=90, interval=0.2, what="a finished Batch Mode job")
    return job_id


def _cancellable(w: World) -> str:
    return _batch(w, wait=False, prompts=[f"EMULATOR_SLEEP_200 slow {i}" for i in range(40)])


# --- catalog ----------------------------------------------------------------------------------------------


def _article(w: World, name: str = "Tornillo hexagonal") -> str:
    articulo_id = str(random.randrange(1, 10**9))
    _ok(w.api.put(f"/articulos/{articulo_id}", json={"nombre": name, "categoria_id": 1}))
    _ok(w.api.put(f"/articulos/{articulo_id}/imagen", content=png(seed=int(articulo_id) % 1000)))
    return articulo_id


def _queued(w: World, articulo_id: str) -> str:
    added = _ok(w.api.post("/articulos/batch-process-images", json={"articuloIds": [int(articulo_id)]}))
    return str(added.json()["data"]["detalles"]["agregados"][0]["queueId"])


def _failed_item(w: World) -> str:
    queue_id = _queued(w, _article(w, "EMULATOR_FAIL_400 sin arreglo"))

    def failed() -> bool:
        history = w.api.get("/articulos/processing-queue/history", params={"estado": "failed"}).json()
        return any(row["id"] == queue_id for row in history["data"]["historial"])

    wait_for(failed, timeout=90, interval=0.2, what="a failed queue item")
    return queue_id


# --- dashboards -------------------------------------------------------------------------------------------


def _daily(w: World) -> str:
    """A daily run over a day of marketplace data, finished: its metrics calculated."""
    write_day(w.db, w.day, uuid.uuid4().hex[:8])
    _ok(w.admin.post("/dashboards/batch-jobs/daily", params={"fecha": w.day.isoformat()}))
    run_id = f"{DAILY}/{w.day.isoformat()}"
    wait_run(w.api, run_id)
    return run_id


def _calculated(w: World) -> httpx.Response:
    w.once("run", lambda: _daily(w))
    day = w.day.isoformat()
    response = w.api.get("/dashboards/metrics/calculated", params={"desde": day, "hasta": day, "limit": 5})
    assert response.json()["metricas"], "the run calculated no metric"
    return response


def _scheduled(w: World) -> httpx.Response:
    settings = get_settings()
    token = TokenMinter().mint(
        service_account_email=settings.scheduler_service_account, audience=settings.function_url("dashboards")
    )
    return httpx.post(
        f"{w.gateway_url}/dashboards/batch-jobs/scheduled/{WEEKLY}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=120,
    )


# --- reports ----------------------------------------------------------------------------------------------

REPORT = {"reportType": "FacturacionMasiva", "userName": "ana@empresa.com"}
UPLOAD = {"fileName": "f.json", "reportType": "FacturacionMasiva"}


def _report(w: World) -> str:
    return str(_ok(w.api.post("/reports/queue-json", json=REPORT | {"jsonData": "[]"})).json()["jobId"])


def _uploaded(w: World) -> str:
    data = json.dumps([]).encode()
    session = _ok(w.api.post("/reports/uploads", json=UPLOAD | {"sizeBytes": len(data)})).json()
    _ok(httpx.put(session["uploadUrl"], content=data, timeout=60))
    return str(session["uploadId"])


def _completed_report(w: World) -> str:
    job_id = _report(w)

    def completed() -> bool:
        return bool(w.api.get(f"/reports/status/{job_id}").json()["status"] == "Completed")

    wait_for(completed, timeout=120, interval=0.2, what="a completed report")
    return job_id


def _download_url(w: World) -> str:
    job_id = w.once("report", lambda: _completed_report(w))
    return str(w.api.get(f"/reports/status/{job_id}").json()["downloadUrl"])


Example = Callable[[World], httpx.Response]

EXAMPLES: dict[str, Example] = {
    "batch_collections": lambda w: w.api.get("/batch/collections"),
    "batch_delete_collection": lambda w: w.api.delete(f"/batch/collections/{_collection(w)}"),
    "batch_bm_create": lambda w: w.api.post(
        "/batch/create", json={"type": "text", "requests": [{"prompt": "a"}] * 2, "mode": "auto"}
    ),
    "batch_bm_history": lambda w: w.api.get("/batch/history", params={"limit": 1}),
    "batch_bm_delete": lambda w: w.api.delete(f"/batch/history/{_finished_batchmode_job(w)}"),
    "batch_bm_credits": lambda w: w.api.get("/batch/credits"),
    "batch_bm_grant": lambda w: w.admin.post(
        "/batch/credits/grant", json={"tenant": w.tenant, "amount": 1.25, "reason": "answers"}
    ),
    "batch_bm_webhook_secret": lambda w: w.api.get("/batch/webhook-secret"),
    "batch_submit": lambda w: w.api.post("/batch/generate", json={"requests": [{"prompt": "hola"}]}),
    "batch_uploads": lambda w: w.api.post("/batch/uploads", json={"sizeBytes": 100}),
    "batch_status": lambda w: w.api.get(f"/batch/status/{w.once('batch', lambda: _batch(w, wait=True))}"),
    "batch_active": lambda w: w.api.get("/batch/active"),
    "batch_jobs": lambda w: w.api.get("/batch/jobs"),
    "batch_stats": lambda w: w.api.get("/batch/stats"),
    "batch_cancel": lambda w: w.api.delete(f"/batch/{_cancellable(w)}"),
    "analytics_metrics": lambda w: w.api.get("/analytics/metrics"),
    "analytics_realtime_view": lambda w: w.api.get("/analytics/realtime"),
    "analytics_insights": lambda w: w.api.get("/analytics/insights"),
    "analytics_export": lambda w: w.api.post("/analytics/export", json={"format": "csv"}),
    "analytics_reset": lambda w: w.admin.post("/analytics/reset", json={"tenant": w.tenant}),
    "articulos_list": lambda w: w.api.get("/articulos/", params={"limit": 2}),
    "articulos_add": lambda w: w.api.post(
        "/articulos/batch-process-images", json={"articuloIds": [int(_article(w)), 7]}
    ),
    "articulos_status": lambda w: w.api.get("/articulos/processing-queue/status"),
    "articulos_history": lambda w: w.api.get("/articulos/processing-queue/history"),
    "articulos_clean": lambda w: w.api.delete("/articulos/processing-queue/clean", params={"dias": 7}),
    "articulos_retry": lambda w: w.api.post(f"/articulos/processing-queue/{_failed_item(w)}/retry"),
    "articulos_put": lambda w: w.api.put(
        f"/articulos/{random.randrange(1, 10**9)}", json={"nombre": "Tuerca"}
    ),
    "articulos_get": lambda w: w.api.get(f"/articulos/{w.once('article', lambda: _article(w))}"),
    "articulos_upload": lambda w: w.api.put(
        f"/articulos/{w.once('article', lambda: _article(w))}/imagen", content=png(seed=11)
    ),
    "dashboards_status": lambda w: w.api.get("/dashboards/batch-jobs/status"),
    "dashboards_trigger": lambda w: w.admin.post(f"/dashboards/batch-jobs/trigger/{WEEKLY}"),
    "dashboards_daily": lambda w: w.admin.post(
        "/dashboards/batch-jobs/daily", params={"fecha": (w.day + dt.timedelta(days=1)).isoformat()}
    ),
    "dashboards_weekly": lambda w: w.admin.post(
        "/dashboards/batch-jobs/weekly", params={"fecha_fin": w.day.isoformat()}
    ),
    "dashboards_backfill": lambda w: w.admin.post(
        "/dashboards/batch-jobs/backfill",
        params={
            "job_id": DAILY,
            "desde": (w.day + dt.timedelta(days=2)).isoformat(),
            "hasta": (w.day + dt.timedelta(days=3)).isoformat(),
        },
    ),
    "dashboards_get_run": lambda w: w.api.get(
        f"/dashboards/batch-jobs/runs/{w.once('run', lambda: _daily(w))}"
    ),
    "dashboards_scheduled": _scheduled,
    "dashboards_calculated": _calculated,
    "dashboards_health": lambda w: w.api.get("/dashboards/health"),
    "reports_queue_multipart": lambda w: w.api.post(
        "/reports/queue-multipart",
        data=REPORT,
        files={"dataFile": ("datos.json", b"[]", "application/json")},
    ),
    "reports_queue_json": lambda w: w.api.post("/reports/queue-json", json=REPORT | {"jsonData": "[]"}),
    "reports_uploads": lambda w: w.api.post("/reports/uploads", json=UPLOAD | {"sizeBytes": 10}),
    "reports_queue": lambda w: w.api.post("/reports/queue", json=REPORT | {"uploadId": _uploaded(w)}),
    "reports_status": lambda w: w.api.get(
        f"/reports/status/{w.once('report', lambda: _completed_report(w))}"
    ),
    "reports_download": lambda w: w.api.get(_download_url(w)),
    "reports_active_jobs": lambda w: w.api.get("/reports/active-jobs"),
    "reports_cache_stats": lambda w: w.api.get("/reports/cache-stats"),
}
# Routes whose answer is not one JSON document, and where it is checked instead.
CHECKED_ELSEWHERE = {
    "analytics_stream": "server-sent events: test_each_stream_event_is_the_realtime_answer",
}


def test_every_route_has_an_example() -> None:
    assert set(EXAMPLES) | set(CHECKED_ELSEWHERE) == set(OPERATIONS)
    assert not set(EXAMPLES) & set(CHECKED_ELSEWHERE)


@pytest.mark.parametrize("operation", sorted(EXAMPLES))
def test_each_route_answers_as_its_document_says(world: World, operation: str) -> None:
    response = _ok(EXAMPLES[operation](world))

    check_answer(
        OPERATIONS[operation],
        status=response.status_code,
        media_type=response.headers.get("Content-Type", ""),
        body=response.content,
    )


def test_each_stream_event_is_the_realtime_answer(world: World) -> None:
    with world.api.stream("GET", "/analytics/stream") as response:
        assert response.status_code == 200
        data = next(line for line in response.iter_lines() if line.startswith("data: "))

    Realtime.model_validate_json(data.removeprefix("data: "), strict=True, by_alias=True, by_name=False)
