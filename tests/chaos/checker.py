"""The history checker: what really happened, read from Firestore documents, Cloud Storage objects and the
emulators' own records, never from the platform's status API.

For every job a scenario started it checks:
- final: the engine batch is fanned in (`finalized`) within the scenario's bound; an image-queue item is
  `completed` or `failed`; a metric run left `en_curso`;
- lost: an item of the batch (0 .. total - 1) without a result line in the batch's pages;
- doubled: an item with a result line in more than one page; a usage event id recorded twice; more usage
  events for an item than calls the Gemini emulator answered for its marker; more calls answered than usage
  events recorded (a model call that ran again) where the scenario's fault does not allow it; an object
  uploaded more than once (more than one generation seen) or after its job was final; a metric run attempted
  more than once;
- reruns: calls the Gemini emulator answered whose result was never recorded (a worker killed, or a lease
  taken over, between a model answer and its commit: the guarantee allows these, and only these, to run
  again).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from google.cloud.firestore_v1.base_query import FieldFilter

from shared.kinds.metrics import run_key
from tests.chaos.cloud import ChaosCloud, UploadWatch, generation_time
from tests.chaos.workloads import Job
from tests.e2e.delivery import call_internal

SWEEP_EVERY_S = 2.0  # Cloud Scheduler fires the sweeper every minute; the run compresses that to 2 s
UPLOAD_SLACK = dt.timedelta(seconds=1)  # clocks of the storage and Firestore emulators, same machine


@dataclass
class Verdict:
    scenario: str
    jobs: int = 0
    items: int = 0
    lost: int = 0
    doubled: int = 0
    reruns: int = 0
    not_final: int = 0
    time_to_final_s: float = 0.0
    bound_s: float = 0.0
    fault_evidence: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not (self.lost or self.doubled or self.not_final or self.problems)

    def as_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "jobs": self.jobs,
            "items": self.items,
            "lost": self.lost,
            "doubled": self.doubled,
            "reruns": self.reruns,
            "notFinal": self.not_final,
            "timeToFinalS": round(self.time_to_final_s, 2),
            "boundS": self.bound_s,
            "passed": self.passed,
            "faultEvidence": self.fault_evidence,
            "problems": self.problems,
        }


def wait_final(cloud: ChaosCloud, jobs: list[Job], *, bound_s: float, verdict: Verdict) -> dict[str, float]:
    """Poll the ground truth until every job is final or its bound passed (running the sweeper as Cloud
    Scheduler would); the seconds each job took from its submit to final."""
    finished: dict[str, float] = {}
    last_sweep = 0.0
    while True:
        for job in jobs:
            if job.batch_id not in finished and _is_final(cloud, job):
                finished[job.batch_id] = time.monotonic() - job.submitted_at
        waiting = [job for job in jobs if job.batch_id not in finished]
        overdue = [job for job in waiting if time.monotonic() - job.submitted_at > bound_s]
        if not waiting or len(overdue) == len(waiting):
            break
        if time.monotonic() - last_sweep > SWEEP_EVERY_S:
            last_sweep = time.monotonic()
            sweep(cloud)
        time.sleep(0.2)  # polling interval of a bounded wait
    for job in jobs:
        if job.batch_id not in finished:
            verdict.not_final += 1
            verdict.problems.append(f"{job.kind} {job.batch_id}: not final within {bound_s:.0f} s")
    return finished


def sweep(cloud: ChaosCloud) -> None:
    """One run of the sweeper, as Cloud Scheduler fires it (its OIDC token); a failure is the fault's."""
    from infra.emulators.oidc import TokenMinter

    url = f"{cloud.functions_url}/batch_sweeper"
    token = TokenMinter().mint(service_account_email=cloud.settings.scheduler_service_account, audience=url)
    try:
        import httpx

        httpx.post(url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    except Exception:  # noqa: S110 - the gateway may be down in this very scenario; the next sweep runs
        pass


def _is_final(cloud: ChaosCloud, job: Job) -> bool:
    batch = cloud.db.collection("batches").document(job.batch_id).get()
    if not batch.exists or not batch.get("finalized"):
        return False
    if job.queue_item is not None:
        item = cloud.db.collection("image_queue").document(job.queue_item).get()
        return bool(item.exists and item.get("estado") in ("completed", "failed"))
    if job.run_id is not None:
        run = cloud.db.collection("metricas_runs").document(run_key(job.run_id)).get()
        return bool(run.exists and run.get("estado") != "en_curso")
    return True


def check(
    cloud: ChaosCloud,
    *,
    verdict: Verdict,
    jobs: list[Job],
    tag: str,
    uploads: UploadWatch,
    reruns_allowed: bool,
    bound_s: float,
) -> Verdict:
    """Wait for the jobs, then read what happened and count the lost and the doubled."""
    verdict.bound_s = bound_s
    verdict.jobs += len(jobs)
    finished = wait_final(cloud, jobs, bound_s=bound_s, verdict=verdict)
    verdict.time_to_final_s = max([verdict.time_to_final_s, *finished.values()])
    answered = cloud.model_calls(f"EMULATOR_MARK_{tag}")
    calls = Counter(
        marker for call in answered for marker in call["markers"] if marker.startswith(f"EMULATOR_MARK_{tag}")
    )
    statuses = Counter(str(call["status"]) for call in answered)
    verdict.fault_evidence["modelCalls"] = dict(sorted(statuses.items()))
    for job in jobs:
        _check_job(cloud, job, verdict=verdict, calls=calls, uploads=uploads, reruns_allowed=reruns_allowed)
    return verdict


def _check_job(
    cloud: ChaosCloud,
    job: Job,
    *,
    verdict: Verdict,
    calls: Counter[str],
    uploads: UploadWatch,
    reruns_allowed: bool,
) -> None:
    name = f"{job.kind} {job.batch_id}"
    batch_ref = cloud.db.collection("batches").document(job.batch_id)
    batch = batch_ref.get()
    if not batch.exists:
        verdict.lost += job.items
        verdict.problems.append(f"{name}: no batch document")
        return
    total = int(batch.get("total"))
    if job.kind not in ("metrics",) and total != job.items:
        verdict.problems.append(f"{name}: {total} items stored, {job.items} submitted")
    verdict.items += total
    # Results: each item's line on exactly one page.
    lines: dict[int, list[dict[str, Any]]] = {}
    for page in batch_ref.collection("pages").stream():
        indices = json.loads(bytes(page.get("indices")))
        text = bytes(page.get("lines")).decode()
        for index, line in zip(indices, text.split("\n") if text else [], strict=True):
            lines.setdefault(index, []).append(json.loads(line))
    final = bool(batch.get("finalized"))
    for index in range(total):
        recorded = lines.get(index, [])
        if not recorded and final:
            verdict.lost += 1
            verdict.problems.append(f"{name}: item {index} has no result")
        if len(recorded) > 1:
            verdict.doubled += 1
            verdict.problems.append(f"{name}: item {index} recorded {len(recorded)} times")
        if recorded and index in job.failing and recorded[0]["status"] != "failed":
            verdict.problems.append(f"{name}: poison item {index} is {recorded[0]['status']}")
        if recorded and index not in job.failing and job.kind != "images" and not recorded[0]["success"]:
            verdict.fault_evidence["itemsFailed"] = verdict.fault_evidence.get("itemsFailed", 0) + 1
    # Usage: each event once, and one per call the model really answered.
    query = cloud.db.collection("usage_events").where(filter=FieldFilter("job_id", "==", job.batch_id))
    events = [event for record in query.stream() for event in json.loads(record.get("events"))]
    for event_id, count in Counter(e["event_id"] for e in events).items():
        if count > 1:
            verdict.doubled += 1
            verdict.problems.append(f"{name}: usage event {event_id} recorded {count} times")
    per_item = Counter(int(e["event_id"][len(job.batch_id) + 1 :].split("-")[0]) for e in events)
    for index, mark in job.markers.items():
        answered, recorded_events = calls.get(mark, 0), per_item.get(index, 0)
        if recorded_events > answered:
            verdict.doubled += 1
            verdict.problems.append(
                f"{name}: item {index}: {recorded_events} usage events for {answered} model calls"
            )
        elif answered > recorded_events:
            if reruns_allowed:
                verdict.reruns += answered - recorded_events
            else:
                verdict.doubled += 1
                verdict.problems.append(
                    f"{name}: item {index}: {answered} model calls answered, {recorded_events} recorded"
                )
    # Uploads: once, and never after the job was final.
    finalized_at = batch.update_time
    objects = list(job.objects)
    if job.queue_item is not None:
        item = cloud.db.collection("image_queue").document(job.queue_item).get()
        if item.exists and item.get("imagen_url_procesada"):
            objects.append((cloud.settings.results_bucket, item.get("imagen_url_procesada")))
        if item.exists and item.get("estado") == "completed" and not item.get("imagen_url_procesada"):
            verdict.problems.append(f"{name}: completed without a processed image")
    for bucket, object_name in objects:
        blob = cloud.storage.bucket(bucket).get_blob(object_name)
        if blob is None:
            if final:
                verdict.lost += 1
                verdict.problems.append(f"{name}: {object_name} missing")
            continue
        seen = uploads.uploads(bucket, object_name)
        if seen > 1 and not reruns_allowed:
            verdict.doubled += 1
            verdict.problems.append(f"{name}: {object_name} uploaded {seen} times")
        elif seen > 1:
            verdict.reruns += seen - 1
        if object_name.endswith("results.jsonl") and generation_time(blob.generation) > (
            finalized_at + UPLOAD_SLACK
        ):
            verdict.doubled += 1
            verdict.problems.append(f"{name}: {object_name} uploaded again after the batch was final")
    if job.tenant is not None:
        _check_credits(cloud, job, verdict=verdict, final=final)
    if job.run_id is not None:
        run = cloud.db.collection("metricas_runs").document(run_key(job.run_id)).get()
        if run.exists and run.get("intento") != 1:
            verdict.doubled += 1
            verdict.problems.append(f"metric run {job.run_id}: {run.get('intento')} attempts")


def _check_credits(cloud: ChaosCloud, job: Job, *, verdict: Verdict, final: bool) -> None:
    """A Batch Mode job's credits: debited once, its failed rows refunded once each, and the tenant's balance
    the sum of its ledger."""
    name = f"{job.kind} {job.batch_id}"
    balance_ref = cloud.db.collection("credit_balances").document(str(job.tenant))
    ledger = [entry.to_dict() or {} for entry in balance_ref.collection("ledger").stream()]
    mine = [entry for entry in ledger if entry.get("job_id") == job.batch_id]
    debits = [entry for entry in mine if entry["kind"] == "debit"]
    refunds = Counter(entry["entry_id"] for entry in mine if entry["kind"] == "refund")
    if len(debits) != 1:
        verdict.doubled += max(0, len(debits) - 1)
        verdict.lost += 0 if debits else 1
        verdict.problems.append(f"{name}: {len(debits)} debits")
    failed_rows = len(job.failing)
    if final and len(refunds) != failed_rows:
        verdict.problems.append(f"{name}: {len(refunds)} rows refunded, {failed_rows} failed")
        verdict.lost += max(0, failed_rows - len(refunds))
        verdict.doubled += max(0, len(refunds) - failed_rows)
    balance = balance_ref.get()
    units = int((balance.to_dict() or {}).get("units", 0)) if balance.exists else 0
    if units != sum(int(entry["units"]) for entry in ledger):
        verdict.problems.append(f"{name}: balance {units} is not the sum of the ledger")
    verdict.fault_evidence["creditRefunds"] = verdict.fault_evidence.get("creditRefunds", 0) + len(refunds)


def tasks_evidence(cloud: ChaosCloud, jobs: list[Job]) -> dict[str, int]:
    """How the Tasks emulator really delivered these jobs' tasks (its log): attempts and duplicates."""
    records = cloud.deliveries(tuple(job.batch_id for job in jobs))
    return {
        "deliveries": len(records),
        "duplicateDeliveries": sum(1 for r in records if r.get("duplicate")),
        "deadlineExceeded": sum(1 for r in records if r.get("status") == "DEADLINE_EXCEEDED"),
        "conflicts": sum(1 for r in records if r.get("status") == 409),
    }


def race(cloud: ChaosCloud, job: Job, *, workers: int = 2) -> list[str]:
    """`workers` more deliveries of the job's first chunk at once, racing the one Cloud Tasks makes: each
    answer's status and outcome."""
    from concurrent.futures import ThreadPoolExecutor

    message = {"batch_id": job.batch_id, "chunk": 0, "segment": 0}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        responses = list(
            pool.map(lambda _: call_internal(cloud.functions_url, "batch_worker", message), range(workers))
        )
    return [f"{r.status_code} {r.json().get('outcome', '')}".strip() for r in responses]
