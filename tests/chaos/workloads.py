"""Every workload on the platform, submitted as a client (or Cloud Scheduler) would, each item carrying a
request marker the Gemini emulator's call log is keyed by; what was submitted is kept as a `Job`."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from infra.emulators.gemini.content import png
from infra.emulators.oidc import TokenMinter
from infra.report_data import invoices
from shared.metrics.jobs import DAILY, WEEKLY
from shared.settings import get_settings


@dataclass
class Job:
    """One engine batch a scenario started, and where its effects are."""

    kind: str
    batch_id: str
    items: int  # the engine items it must finish
    markers: dict[int, str] = field(default_factory=dict)  # item index -> its request marker
    submitted_at: float = field(default_factory=time.monotonic)
    failing: set[int] = field(default_factory=set)  # items meant to fail (a poison item)
    objects: list[tuple[str, str]] = field(default_factory=list)  # (bucket, name) its effect uploads
    queue_item: str | None = None  # an image-queue item: image_queue/{id}
    tenant: str | None = None  # a Batch Mode job: the tenant whose credits paid for it
    run_id: str | None = None  # a metric run: metricas_runs/{id}


def marker(tag: str, index: int) -> str:
    return f"EMULATOR_MARK_{tag}_{index}"


def generate(api: httpx.Client, tag: str, count: int, *, prompt: str = "", **options: Any) -> Job:
    """A generate batch of `count` prompts; `prompt` (a fault marker) is added to each, or to those a
    callable picks when `poison` is given in options."""
    poison: Callable[[int], bool] = options.pop("poison", lambda index: False)
    prompts = [
        f"{marker(tag, i)} {'EMULATOR_FAIL_500 ' if poison(i) else ''}{prompt} write about item {i}"
        for i in range(count)
    ]
    body = {
        "requests": [{"prompt": p, "customId": f"c-{i}"} for i, p in enumerate(prompts)],
        "options": {
            "wait": False,
            "concurrency": 4,
            "retryPolicy": {"maxRetries": 3, "baseDelay": 50, "maxDelay": 400},
        }
        | options,
    }
    batch_id = _submit(api, "/batch/generate", body)
    return Job(
        kind="generate",
        batch_id=batch_id,
        items=count,
        markers={i: marker(tag, i) for i in range(count)},
        failing={i for i in range(count) if poison(i)},
        objects=[(get_settings().results_bucket, f"batches/{batch_id}/results.jsonl")],
    )


def analyze(api: httpx.Client, tag: str, count: int, *, prompt: str = "") -> Job:
    texts = [
        f"{marker(tag, i)} {prompt} The brake pads are great but the delivery was slow." for i in range(count)
    ]
    body = {"texts": texts, "analysisType": "sentiment", "options": {"wait": False, "concurrency": 4}}
    batch_id = _submit(api, "/batch/analyze", body)
    return Job(
        kind="analyze",
        batch_id=batch_id,
        items=count,
        markers={i: marker(tag, i) for i in range(count)},
        objects=[(get_settings().results_bucket, f"batches/{batch_id}/results.jsonl")],
    )


def embeddings(api: httpx.Client, tag: str, count: int, *, prompt: str = "") -> Job:
    """`count` index operations, each into a collection of its own (one item, one embedding call each)."""
    operations = [
        {
            "type": "index",
            "name": f"chaos_{tag}_{i}",
            "documents": [
                {"text": f"{marker(tag, i)} {prompt} brake pads {i}", "metadata": {"id": f"d{i}a"}},
                {"text": f"{marker(tag, i)} {prompt} oil filter {i}", "metadata": {"id": f"d{i}b"}},
            ],
        }
        for i in range(count)
    ]
    body = {"operations": operations, "options": {"wait": False, "concurrency": 4}}
    batch_id = _submit(api, "/batch/embeddings", body)
    return Job(
        kind="embeddings",
        batch_id=batch_id,
        items=count,
        markers={i: marker(tag, i) for i in range(count)},
        objects=[(get_settings().results_bucket, f"batches/{batch_id}/results.jsonl")],
    )


def report(api: httpx.Client, records: int = 200) -> Job:
    stream = invoices(seed=7, invalid_every=0)
    data = json.dumps([next(stream) for _ in range(records)], ensure_ascii=False)
    response = api.post(
        "/reports/queue-json",
        json={"reportType": "VentasPorCiudad", "userName": "chaos@example.com", "jsonData": data},
    )
    assert response.status_code == 202, response.text
    batch_id = response.json()["jobId"]
    return Job(
        kind="report",
        batch_id=batch_id,
        items=1,
        objects=[(get_settings().results_bucket, f"batches/{batch_id}/results.jsonl")],
    )


def images(api: httpx.Client, tag: str, ids: list[int], *, poison: frozenset[int] = frozenset()) -> list[Job]:
    """Articles with an image each, queued for the image model in one add: one engine batch per item (the
    articles in `poison` always fail)."""
    for articulo_id in ids:
        fail = " EMULATOR_FAIL_500" if articulo_id in poison else ""
        response = api.put(
            f"/articulos/{articulo_id}",
            json={"nombre": f"{marker(tag, articulo_id)}{fail} pastillas", "descripcion": "d", "unidad": "u"},
        )
        assert response.status_code == 200, response.text
        uploaded = api.put(f"/articulos/{articulo_id}/imagen", content=png(seed=articulo_id))
        assert uploaded.status_code == 200, uploaded.text
    response = api.post("/articulos/batch-process-images", json={"articuloIds": ids, "prioridad": 0})
    assert response.status_code == 200, response.text
    added = response.json()["data"]["detalles"]["agregados"]
    assert len(added) == len(ids), response.text
    jobs = []
    for entry in added:
        queue_id = entry["queueId"]
        jobs.append(
            Job(
                kind="images",
                batch_id=f"{queue_id}r0",
                items=1,
                markers={0: marker(tag, entry["articuloId"])},
                queue_item=queue_id,
                failing={0} if entry["articuloId"] in poison else set(),
                objects=[(get_settings().results_bucket, f"batches/{queue_id}r0/results.jsonl")],
            )
        )
    return jobs


def fire_metrics_schedule(functions_url: str, job_id: str, fired_at: dt.datetime) -> dict[str, Any]:
    """What Cloud Scheduler sends when it fires a metrics job: the scheduler's OIDC token for the function,
    and the schedule time the firing was for."""
    settings = get_settings()
    audience = f"{functions_url}/dashboards"
    token = TokenMinter().mint(service_account_email=settings.scheduler_service_account, audience=audience)
    response = httpx.post(
        f"{audience}/batch-jobs/scheduled/{job_id}",
        headers={
            "Authorization": f"Bearer {token}",
            "X-CloudScheduler": "true",
            "X-CloudScheduler-JobName": job_id,
            "X-CloudScheduler-ScheduleTime": fired_at.isoformat().replace("+00:00", "Z"),
        },
        timeout=120,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


METRIC_JOBS = (DAILY, WEEKLY)


# The engine items of a Batch Mode job besides its rows: one submit, one poll.
BATCHMODE_STEPS = 2


def batchmode(api: httpx.Client, admin: httpx.Client, tenant: str, tag: str, rows: int) -> Job:
    """A Batch Mode job of `rows` product shots paid with credits granted for it; its last row fails (a
    refund). Its rows are answered inside the emulator's batch job, not as calls of the log."""
    granted = admin.post("/batch/credits/grant", json={"tenant": tenant, "amount": 100, "reason": "chaos"})
    assert granted.status_code == 200, granted.text
    prompts = [f"{marker(tag, i)} product shot {i}" for i in range(rows - 1)]
    prompts.append(f"{marker(tag, rows - 1)} EMULATOR_FAIL_400 product shot")
    response = api.post(
        "/batch/create", json={"type": "product", "requests": [{"prompt": p} for p in prompts]}
    )
    assert response.status_code == 202, response.text
    batch_id: str = response.json()["id"]
    return Job(
        kind="batchmode",
        batch_id=batch_id,
        items=BATCHMODE_STEPS + rows,
        failing={BATCHMODE_STEPS + rows - 1},
        objects=[(get_settings().results_bucket, f"batches/{batch_id}/results.jsonl")],
        tenant=tenant,
    )


def _submit(api: httpx.Client, path: str, body: dict[str, Any]) -> str:
    response = api.post(path, json=body)
    assert response.status_code in (200, 202), response.text
    batch_id: str = response.json()["batchId"]
    return batch_id
