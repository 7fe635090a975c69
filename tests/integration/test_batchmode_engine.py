"""The batchmode kind on the engine, with the deliveries played by the test (the real Firestore adapter, Cloud
Storage and the Gemini emulator; the queue records tasks instead of delivering them): duplicated submit and
poll tasks, deferral without a sleeping delivery, the platform's own expiry, and the ledger after each."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

import httpx
import pytest

from shared import runtime
from shared.app import platform
from shared.emulator_config import EmulatorConfig
from shared.models.auth import Principal, Role
from shared.models.batch import WorkMessage
from shared.ports import BatchRow, LedgerEntry
from shared.services import batchmode, status
from shared.services.batchmode import Batchmode
from shared.services.engine import Engine
from shared.services.finalizer import finalize
from shared.services.worker import process_chunk
from tests.conftest import wait_for


class Recorder:
    """Keeps the tasks the engine enqueues (with their schedule time) and the webhooks; names are unique."""

    def __init__(self) -> None:
        self.tasks: dict[str, dict[str, Any]] = {}

    async def enqueue(
        self,
        *,
        task_id: str,
        function_name: str,
        body: bytes,
        schedule_time: dt.datetime | None = None,
        **_: Any,
    ) -> bool:
        if task_id in self.tasks:
            return False
        self.tasks[task_id] = {"function": function_name, "body": json.loads(body), "at": schedule_time}
        return True

    async def enqueue_webhook(self, *, task_id: str, **request: Any) -> bool:
        if task_id in self.tasks:
            return False
        self.tasks[task_id] = request
        return True


@pytest.fixture
def harness(local_cloud: EmulatorConfig, gemini_control: httpx.Client) -> Any:
    def build(**settings: Any) -> tuple[Engine, Batchmode, Recorder]:
        wired = platform()
        changed = wired.settings.model_copy(update=settings)
        queue = Recorder()
        service = dataclasses.replace(wired.batchmode, settings=changed, webhooks=queue, engine=None)
        engine = dataclasses.replace(
            wired.engine,
            queue=queue,
            settings=changed,
            extras={**wired.engine.extras, "batchmode": service},
        )
        service.attach(engine)
        return engine, service, queue

    return build


def start_job(service: Batchmode, tenant: str, prompts: list[str], credits: int = 100) -> str:
    grant = LedgerEntry(
        entry_id=f"grant:{tenant}", tenant=tenant, units=credits * 100, kind="grant", reason="t", job_id=None,
        at=dt.datetime.now(dt.UTC),
    )  # fmt: skip
    runtime.run(service.credits.post(entries=[grant]))
    body = json.dumps({"type": "text", "requests": [{"prompt": p} for p in prompts]}).encode()
    created = runtime.run(
        batchmode.create(service=service, principal=Principal(tenant=tenant, role=Role.USER), body=body)
    )
    return created.id


def deliver(engine: Engine, job_id: str, chunk: int, segment: int = 0) -> dict[str, Any]:
    message = WorkMessage(batch_id=job_id, chunk=chunk, segment=segment)
    return runtime.run(process_chunk(engine=engine, message=message, retry_count=0))


def view(engine: Engine, tenant: str, job_id: str) -> dict[str, Any]:
    principal = Principal(tenant=tenant, role=Role.USER)
    shown = runtime.run(
        status.status(engine=engine, principal=principal, batch_id=job_id, offset=0, limit=100)
    )
    assert isinstance(shown, dict)
    return shown


def ledger(service: Batchmode, tenant: str) -> tuple[int, int]:
    balance, _ = runtime.run(service.credits.balance(tenant=tenant))
    return balance, runtime.run(service.credits.ledger_sum(tenant=tenant))


def gemini_jobs(service: Batchmode, job_id: str) -> list[str]:
    async def _names() -> list[str]:
        pager = await service.gemini._batches.list(config={"page_size": 100})  # type: ignore[attr-defined]
        return [job.name async for job in pager if f"[{job_id}]" in (job.display_name or "")]

    return runtime.run(_names())


def test_duplicated_submit_and_poll_tasks_create_one_gemini_job_and_refund_once(
    harness: Any, gemini_control: httpx.Client, unique: str
) -> None:
    gemini_control.post("/emulator/config", json={"batchPendingMs": 1500, "batchRunningMs": 0})
    engine, service, queue = harness(batchmode_poll_seconds=30.0)
    tenant = f"bm-dup-{unique}"
    job_id = start_job(service, tenant, ["one", "EMULATOR_FAIL_400 two", "three"])

    # A crashed first submit reached Gemini but did not record the job: the retry finds the orphan.
    runtime.run(service.jobs.merge(job_id=job_id, fields={"submitting_at": dt.datetime.now(dt.UTC)}))
    prompts = ["one", "EMULATOR_FAIL_400 two", "three"]
    rows = [BatchRow(key=str(i), prompt=p, image=None, mime_type=None) for i, p in enumerate(prompts)]
    orphan = runtime.run(
        service.gemini.create(model="gemini-2.5-flash-image", rows=rows, display_name=f"text [{job_id}]")
    )
    deliver(engine, job_id, 0)
    deliver(engine, job_id, 0)  # a duplicate of the submit task
    first_poll = deliver(engine, job_id, 1)
    duplicate_poll = deliver(engine, job_id, 1)  # the same poll task delivered twice

    assert gemini_jobs(service, job_id) == [orphan.name]
    assert first_poll["outcome"] == "deferred"
    scheduled = queue.tasks[f"{job_id}-c1-s1"]["at"]
    assert scheduled is not None and 25 < (scheduled - dt.datetime.now(dt.UTC)).total_seconds() <= 30
    assert duplicate_poll["outcome"] == "superseded by segment 1" and f"{job_id}-c1-s2" not in queue.tasks
    assert view(engine, tenant, job_id)["state"] == "JOB_STATE_PENDING"

    wait_for(
        lambda: runtime.run(service.gemini.get(name=orphan.name)).done,
        timeout=10,
        what="the Gemini job",
    )
    deliver(engine, job_id, 1, segment=1)
    deliver(engine, job_id, 1, segment=1)  # the scheduled poll, twice
    deliver(engine, job_id, 1, segment=0)  # and a late copy of the first
    deliver(engine, job_id, 2)
    runtime.run(finalize(engine=engine, batch_id=job_id))
    runtime.run(finalize(engine=engine, batch_id=job_id))

    final = view(engine, tenant, job_id)
    assert final["state"] == "JOB_STATE_SUCCEEDED" and final["successCount"] == 2
    assert [url is not None for url in final["results"]] == [True, False, True]
    assert final["creditsRefunded"] == 2.0
    balance, total = ledger(service, tenant)
    assert balance == total == (100 - 6 + 2) * 100


def test_the_platform_expires_a_job_after_batchmode_max_hours(
    harness: Any, gemini_control: httpx.Client, unique: str
) -> None:
    gemini_control.post("/emulator/config", json={"batchPendingMs": 600_000})
    engine, service, queue = harness(batchmode_max_hours=1e-6)
    tenant = f"bm-exp-{unique}"
    job_id = start_job(service, tenant, ["a", "b"], credits=4)

    deliver(engine, job_id, 0)
    poll = deliver(engine, job_id, 1)
    deliver(engine, job_id, 2)
    runtime.run(finalize(engine=engine, batch_id=job_id))

    final = view(engine, tenant, job_id)
    record = runtime.run(service.jobs.get(job_id=job_id))
    assert record is not None
    gemini_job = runtime.run(service.gemini.get(name=record["gemini_job"]))
    assert poll["outcome"] == "done"
    assert final["state"] == "JOB_STATE_EXPIRED" and final["status"] == "failed"
    assert gemini_job is not None and gemini_job.state == "JOB_STATE_CANCELLED"
    assert final["creditsRefunded"] == 4.0 and final["failCount"] == 2
    assert ledger(service, tenant) == (400, 400)
    assert f"{job_id}-webhook" not in queue.tasks  # no notify URL given
