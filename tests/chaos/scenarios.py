"""The named fault scenarios. Each starts its jobs, injects its fault in a bounded loop that stops by itself,
puts the cloud back as it was, and hands the jobs to the checker with the bound they must be final within.

A scenario is a function `(cloud, tag) -> Verdict` in SCENARIOS; `tag` is unique to the run and scenario, so
request markers, tenants and collections never collide. A new workload (Gemini Batch Mode, issue 14) joins
by adding its submit to `tests/chaos/workloads.py` and to `mixed()` below, and its ground truth (credits
debited and refunded once) to `tests/chaos/checker.py`.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from google.cloud.firestore_v1.base_query import FieldFilter

from infra.emulators.oidc import TokenMinter
from shared.kinds.metrics import run_key
from shared.models.auth import Role
from tests.chaos import workloads
from tests.chaos.checker import Verdict, check, race, sweep, tasks_evidence
from tests.chaos.cloud import CLOUD_ENV, ChaosCloud, UploadWatch
from tests.chaos.workloads import Job
from tests.conftest import wait_for
from tests.e2e.delivery import Gateway, call_internal, free_port

# How long a scenario's jobs may take from submit to final (the run fails past it). Generous for 2 busy
# cores; the measured times are in the table.
BOUND_S = 90.0
SLOW_BOUND_S = 150.0
KILLS = 3  # SIGKILLs of the gateway in the kill scenario


@dataclass(frozen=True)
class Scenario:
    name: str
    fault: str  # what is done, as the README's table says it
    run: Callable[[ChaosCloud, str], Verdict]


def mixed(cloud: ChaosCloud, tag: str, *, prompt: str = "", size: int = 12) -> list[Job]:
    """One job of every workload the engine runs for clients: generate, analyze, embeddings, a report, two
    image-queue items and a Batch Mode job paid with credits."""
    tenant = f"chaos-{tag}"
    api = cloud.api(tenant)
    base = random.randrange(10_000_000)
    with cloud.api(f"chaos-admin-{tag}", Role.ADMIN) as admin:
        paid = workloads.batchmode(api, admin, tenant, f"{tag}b", rows=4)
    jobs = [
        paid,
        workloads.generate(api, f"{tag}g", size, prompt=prompt),
        workloads.analyze(api, f"{tag}a", max(2, size // 2), prompt=prompt),
        workloads.embeddings(api, f"{tag}e", max(2, size // 3), prompt=prompt),
        workloads.report(api),
        *workloads.images(api, f"{tag}i", [base + 1, base + 2]),
    ]
    api.close()
    return jobs


def _watch(cloud: ChaosCloud, jobs: list[Job]) -> UploadWatch:
    watch = UploadWatch(cloud)
    for job in jobs:
        for bucket, name in job.objects:
            watch.watch(bucket, name)
    watch.watch(cloud.settings.results_bucket, "articulos/")
    return watch


def _markers(tag: str) -> str:
    return tag  # every job's markers start with EMULATOR_MARK_{tag}


def _finished(cloud: ChaosCloud, jobs: list[Job]) -> int:
    """Items with a result so far, read from the chunk documents' published progress."""
    done = 0
    for job in jobs:
        for chunk in cloud.db.collection("batches").document(job.batch_id).collection("chunks").stream():
            progress = chunk.to_dict().get("progress") or {}
            done += int(progress.get("finished", 0))
    return done


def _run_checked(
    cloud: ChaosCloud,
    tag: str,
    name: str,
    submit: Callable[[], list[Job]],
    fault: Callable[[list[Job]], dict[str, object] | None] | None = None,
    *,
    reruns_allowed: bool = False,
    bound_s: float = BOUND_S,
) -> Verdict:
    verdict = Verdict(scenario=name)
    jobs = submit()
    with _watch(cloud, jobs) as watch:
        if fault is not None:
            verdict.fault_evidence |= fault(jobs) or {}
        check(
            cloud,
            verdict=verdict,
            jobs=jobs,
            tag=_markers(tag),
            uploads=watch,
            reruns_allowed=reruns_allowed,
            bound_s=bound_s,
        )
    verdict.fault_evidence |= tasks_evidence(cloud, jobs)
    return verdict


# --- the scenarios ---------------------------------------------------------------------------------------


def duplicate_delivery(cloud: ChaosCloud, tag: str) -> Verdict:
    """The Tasks emulator delivers every attempt of every task twice, at once."""
    cloud.restart("tasks", extra_args=("--duplicate-deliveries",))
    try:
        verdict = _run_checked(cloud, tag, "duplicate_delivery", lambda: mixed(cloud, tag))
    finally:
        cloud.restart("tasks")
    if not verdict.fault_evidence.get("duplicateDeliveries"):
        verdict.problems.append("the fault did not happen: no duplicate delivery in the Tasks log")
    return verdict


def worker_race(cloud: ChaosCloud, tag: str) -> Verdict:
    """Two more workers race the delivery Cloud Tasks makes, on the first chunk of each batch."""

    def fault(jobs: list[Job]) -> dict[str, object]:
        answers = [
            answer
            for job in jobs
            if job.kind in ("generate", "analyze", "embeddings")
            for answer in race(cloud, job)
        ]
        if not {answer.split()[0] for answer in answers} <= {"200", "409"}:
            raise AssertionError(f"racing deliveries answered {answers}")
        return {"racingDeliveries": dict(Counter(answers))}

    return _run_checked(
        cloud, tag, "worker_race", lambda: mixed(cloud, tag, prompt="EMULATOR_SLEEP_1000"), fault
    )


def gateway_sigkill(cloud: ChaosCloud, tag: str) -> Verdict:
    """The functions gateway (every instance at once) is SIGKILLed mid-chunk, three times, and restarted;
    the sweeper takes the expired leases back."""

    def fault(jobs: list[Job]) -> dict[str, object]:
        down = []
        for kill in range(KILLS):
            floor = _finished(cloud, jobs)
            wait_for(
                lambda floor=floor: _finished(cloud, jobs) > floor,  # type: ignore[misc]
                timeout=60,
                what=f"progress before kill {kill}",
            )
            down.append(round(cloud.restart("functions"), 1))
        return {"gatewayKills": KILLS, "gatewayDownS": down}

    return _run_checked(
        cloud,
        tag,
        "gateway_sigkill",
        lambda: mixed(cloud, tag, prompt="EMULATOR_SLEEP_300", size=20),
        fault,
        reruns_allowed=True,
        bound_s=SLOW_BOUND_S,
    )


def firestore_restart(cloud: ChaosCloud, tag: str) -> Verdict:
    """The Firestore emulator is killed mid-batch and started again on its data (no acknowledged write
    lost, as with Google's)."""

    def fault(jobs: list[Job]) -> dict[str, object]:
        wait_for(lambda: _finished(cloud, jobs) > 3, timeout=60, what="progress before the restart")
        return {"firestoreDownS": round(cloud.restart_firestore_keeping_data(), 1)}

    return _run_checked(
        cloud,
        tag,
        "firestore_restart",
        lambda: mixed(cloud, tag, prompt="EMULATOR_SLEEP_300", size=20),
        fault,
        reruns_allowed=True,
        bound_s=SLOW_BOUND_S,
    )


def tasks_restart(cloud: ChaosCloud, tag: str) -> Verdict:
    """The Tasks emulator is killed mid-batch and started again, empty (it keeps tasks in memory): tasks
    waiting in it are gone, handlers already running finish."""

    def fault(jobs: list[Job]) -> dict[str, object]:
        wait_for(lambda: _finished(cloud, jobs) > 3, timeout=60, what="progress before the restart")
        return {"tasksDownS": round(cloud.restart("tasks"), 1)}

    return _run_checked(
        cloud,
        tag,
        "tasks_restart",
        lambda: mixed(cloud, tag, prompt="EMULATOR_SLEEP_300", size=20),
        fault,
        reruns_allowed=True,
        bound_s=SLOW_BOUND_S,
    )


def dispatch_deadline(cloud: ChaosCloud, tag: str) -> Verdict:
    """A delivery outlives its 15 s dispatch deadline (the time budget set past it): Cloud Tasks counts the
    attempt failed and delivers again while the first handler still runs."""
    cloud.restart(
        "functions", env={"BATCH_DISPATCH_DEADLINE_SECONDS": "15", "BATCH_TASK_BUDGET_SECONDS": "60"}
    )
    try:

        def submit() -> list[Job]:
            api = cloud.api(f"chaos-{tag}")
            # One chunk of 5 items, one at a time, 4 s each: 20 s in one delivery.
            job = workloads.generate(api, f"{tag}g", 5, prompt="EMULATOR_SLEEP_4000", concurrency=1)
            api.close()
            return [job]

        verdict = _run_checked(cloud, tag, "dispatch_deadline", submit, bound_s=SLOW_BOUND_S)
    finally:
        cloud.restart("functions")
    if not verdict.fault_evidence.get("deadlineExceeded"):
        verdict.problems.append("the fault did not happen: no attempt passed its dispatch deadline")
    return verdict


def poison_item(cloud: ChaosCloud, tag: str) -> Verdict:
    """One item of each batch always fails (500, retried with backoff, then failed for good); one image of
    the queue too."""

    def submit() -> list[Job]:
        api = cloud.api(f"chaos-{tag}")
        jobs = [workloads.generate(api, f"{tag}g", 10, poison=lambda i: i == 3)]
        jobs.append(workloads.analyze(api, f"{tag}a", 4))
        base = random.randrange(10_000_000)
        images = workloads.images(api, f"{tag}i", [base + 1, base + 2], poison=frozenset({base + 2}))
        api.close()
        return jobs + images

    return _run_checked(cloud, tag, "poison_item", submit)


def scheduler_twice(cloud: ChaosCloud, tag: str) -> Verdict:
    """Cloud Scheduler fires the daily and the weekly metrics jobs twice at once (at-least-once), and the
    sweeper twice at once."""

    def submit() -> list[Job]:
        day = dt.date(2001, 1, 1) + dt.timedelta(days=random.randrange(7300))
        fired_at = dt.datetime.combine(day, dt.time(12), dt.UTC)
        answers: list[dict[str, object]] = []

        def fire(job_id: str) -> None:
            answers.append(workloads.fire_metrics_schedule(cloud.functions_url, job_id, fired_at))

        threads = [
            threading.Thread(target=fire, args=(job_id,)) for job_id in workloads.METRIC_JOBS for _ in (0, 1)
        ]
        threads += [threading.Thread(target=sweep, args=(cloud,)) for _ in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        fired.update(
            schedulerFirings=len(answers),
            actions=dict(Counter(r["action"] for a in answers for r in a["runs"])),  # type: ignore[attr-defined]
        )
        run_ids = {run["run"]["runId"] for answer in answers for run in answer["runs"]}  # type: ignore[index, attr-defined]
        jobs = []
        for run_id in sorted(run_ids):
            run = cloud.db.collection("metricas_runs").document(run_key(run_id)).get()
            batch_id = run.get("batch_id")
            total = cloud.db.collection("batches").document(batch_id).get().get("total")
            jobs.append(
                Job(
                    kind="metrics",
                    batch_id=batch_id,
                    items=int(total),
                    run_id=run_id,
                    objects=[(cloud.settings.results_bucket, f"batches/{batch_id}/results.jsonl")],
                )
            )
        return jobs

    fired: dict[str, object] = {}
    verdict = _run_checked(cloud, tag, "scheduler_twice", submit)
    verdict.fault_evidence |= fired
    return verdict


def rate_limit_storm(cloud: ChaosCloud, tag: str) -> Verdict:
    """Half the model calls answer 429 RESOURCE_EXHAUSTED with a RetryInfo retryDelay of 300 ms."""
    cloud.configure_gemini(errorRate=0.5, errorStatus=429, retryDelayMs=300)
    try:
        verdict = _run_checked(cloud, tag, "rate_limit_storm", lambda: mixed(cloud, tag))
    finally:
        cloud.configure_gemini()
    if not verdict.fault_evidence["modelCalls"].get("429"):
        verdict.problems.append("the fault did not happen: no call answered 429")
    return verdict


def slow_model(cloud: ChaosCloud, tag: str) -> Verdict:
    """Every model call takes 1,000 ms instead of about 100 ms (x10): the leases are renewed by the commits
    while calls are slow, so no chunk is taken over and nothing runs twice."""
    cloud.configure_gemini(latencyMs=1000)
    try:
        verdict = _run_checked(cloud, tag, "slow_model", lambda: mixed(cloud, tag), bound_s=SLOW_BOUND_S)
        verdict.fault_evidence["latencyMs"] = 1000
        return verdict
    finally:
        cloud.configure_gemini()


def _skewed(cloud: ChaosCloud, tag: str, name: str, offset_s: float, *, reruns_allowed: bool) -> Verdict:
    """A second instance whose clock runs `offset_s` ahead races every running chunk and sweeps, twice a
    second, while the batches run on the cloud's own gateway."""
    queue = cloud.create_queue(f"chaos-skew-{tag}")
    skewed = Gateway(port=free_port(), queue=queue, lease_seconds=float(CLOUD_ENV["BATCH_LEASE_SECONDS"]))
    skewed.env["CLOCK_OFFSET_SECONDS"] = str(offset_s)
    skewed.start()
    # Warm it up (its first call builds the clients), so it races from the first second.
    call_internal(skewed.url, "batch_worker", {"batch_id": f"warm-up-{tag}", "chunk": 0, "segment": 0})
    stop = threading.Event()
    answers: Counter[str] = Counter()

    def race_once(jobs: list[Job]) -> None:
        for job in jobs:
            chunks = cloud.db.collection("batches").document(job.batch_id).collection("chunks")
            for chunk in chunks.where(filter=FieldFilter("state", "==", "running")).stream():
                message = {
                    "batch_id": job.batch_id,
                    "chunk": chunk.get("index"),
                    "segment": chunk.get("segment"),
                }
                answer = call_internal(skewed.url, "batch_worker", message)
                outcome = answer.json().get("outcome", "") if answer.status_code == 200 else ""
                answers[f"{answer.status_code} {outcome}".strip()] += 1
        url = f"{skewed.url}/batch_sweeper"
        token = TokenMinter().mint(
            service_account_email=cloud.settings.scheduler_service_account, audience=url
        )
        swept = httpx.post(url, headers={"Authorization": f"Bearer {token}"}, timeout=30).json()
        answers["skewed sweeper requeued"] += int(swept.get("requeuedChunks", 0))

    def fault(jobs: list[Job]) -> None:
        def racing() -> None:
            while not stop.is_set():
                try:
                    race_once(jobs)
                except httpx.HTTPError:
                    if not stop.is_set():
                        answers["transport error"] += 1
                stop.wait(0.5)

        threading.Thread(target=racing, daemon=True).start()

    try:
        verdict = _run_checked(
            cloud,
            tag,
            name,
            lambda: mixed(cloud, tag, prompt="EMULATOR_SLEEP_1000", size=40),
            fault,
            reruns_allowed=reruns_allowed,
            bound_s=SLOW_BOUND_S,
        )
    finally:
        stop.set()
        skewed.kill()
    verdict.fault_evidence["skewedInstance"] = dict(answers)
    if not sum(answers.values()):
        verdict.problems.append("the fault did not happen: the skewed instance raced nothing")
    return verdict


def clock_skew(cloud: ChaosCloud, tag: str) -> Verdict:
    """An instance whose clock runs 2 s ahead (half the 4 s lease) races every running chunk and sweeps."""
    return _skewed(cloud, tag, "clock_skew", 2.0, reruns_allowed=False)


def clock_skew_past_lease(cloud: ChaosCloud, tag: str) -> Verdict:
    """The same with the clock 10 s ahead, past the lease: it takes live leases over. Results and usage
    must stay exactly once; model calls of the taken-over items may run again (reruns)."""
    return _skewed(cloud, tag, "clock_skew_past_lease", 10.0, reruns_allowed=True)


SCENARIOS = [
    Scenario("duplicate_delivery", "every task delivered twice", duplicate_delivery),
    Scenario("worker_race", "two more workers race on each first chunk", worker_race),
    Scenario("gateway_sigkill", f"gateway SIGKILLed mid-chunk {KILLS} times", gateway_sigkill),
    Scenario("firestore_restart", "Firestore emulator killed and restarted mid-batch", firestore_restart),
    Scenario("tasks_restart", "Tasks emulator killed and restarted (empty) mid-batch", tasks_restart),
    Scenario("dispatch_deadline", "a delivery outlives its dispatch deadline", dispatch_deadline),
    Scenario("poison_item", "an item that always fails", poison_item),
    Scenario("scheduler_twice", "metrics jobs and the sweeper fired twice at once", scheduler_twice),
    Scenario("rate_limit_storm", "50% of model calls 429 with RetryInfo", rate_limit_storm),
    Scenario("slow_model", "every model call 1,000 ms (x10)", slow_model),
    Scenario("clock_skew", "an instance's clock 2 s ahead (lease 4 s)", clock_skew),
    Scenario("clock_skew_past_lease", "an instance's clock 10 s ahead (lease 4 s)", clock_skew_past_lease),
]
