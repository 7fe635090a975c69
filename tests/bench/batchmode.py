"""Bench section `batchmode` (`make bench BENCH_ARGS="--only batchmode"`): Gemini Batch Mode jobs end to end.

J jobs of R rows are created through a gateway of the bench's own (BATCHMODE_POLL_SECONDS=P), against Gemini
batch jobs that take G (half PENDING, half RUNNING, in the emulator). Measured: the create call's latency (the
debit, the record and the batch in one commit), each job's turnaround from create until its status shows it
finished, the overhead over G (what polling and the rows' stage add), the polls each job took (scheduled
tasks: no delivery waits while Gemini works), a status read's latency, and the ledger (balance == sum of
entries). The seed polls every 30 s inside a queue worker that stays busy for the whole of G.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

import httpx
from google.cloud import firestore

from infra.seed_data import api_key
from shared import runtime
from shared.app import platform
from shared.emulator_config import REPO_ROOT, EmulatorConfig
from shared.ports import LedgerEntry
from tests.bench.gateway import start_gateway

RESULTS_FILE = REPO_ROOT / ".bench" / "batchmode.json"
SEED_POLL_S = 30.0


def _gateway(*, poll_seconds: float) -> tuple[subprocess.Popen[bytes], str]:
    return start_gateway(
        settings={"BATCHMODE_POLL_SECONDS": str(poll_seconds)},
        log_path=REPO_ROOT / ".bench" / "batchmode-gateway.log",
    )


def run(
    *, config: EmulatorConfig, jobs: int, rows: int, gemini_ms: int, poll_seconds: float
) -> dict[str, Any]:
    gemini = httpx.Client(base_url=config.emulators.gemini.url, timeout=10)
    process, url = _gateway(poll_seconds=poll_seconds)
    tenant = f"bench-bm-{uuid.uuid4().hex[:8]}"
    wired = platform()
    grant = LedgerEntry(
        entry_id=f"grant:{tenant}", tenant=tenant, units=jobs * rows * 250, kind="grant", reason="bench",
        job_id=None, at=wired.engine.clock(),
    )  # fmt: skip
    runtime.run(wired.batchmode.credits.post(entries=[grant]))
    api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {api_key(tenant)}"}, timeout=120)
    body = {"type": "product", "requests": [{"prompt": f"product shot {i}"} for i in range(rows)]}
    try:
        gemini.post(
            "/emulator/config",
            json={"batchPendingMs": gemini_ms // 2, "batchRunningMs": gemini_ms - gemini_ms // 2},
        ).raise_for_status()
        api.get("/batch/credits").raise_for_status()  # warm up: the gateway builds its clients
        created: dict[str, float] = {}
        create_ms: list[float] = []
        for _ in range(jobs):
            started = time.perf_counter()
            response = api.post("/batch/create", json=body)
            response.raise_for_status()
            create_ms.append((time.perf_counter() - started) * 1000)
            created[response.json()["id"]] = started
        turnaround: dict[str, float] = {}
        status_ms: list[float] = []
        while len(turnaround) < jobs:
            for job_id, started in created.items():
                if job_id in turnaround:
                    continue
                asked = time.perf_counter()
                shown = api.get(f"/batch/status/{job_id}").json()
                status_ms.append((time.perf_counter() - asked) * 1000)
                if shown.get("finishedAt"):
                    assert shown["successCount"] == rows, shown
                    turnaround[job_id] = time.perf_counter() - started
            time.sleep(0.25)  # the status poll's interval
        credits = api.get("/batch/credits").json()
    finally:
        gemini.post("/emulator/reset").raise_for_status()
        api.close()
        os.killpg(process.pid, signal.SIGKILL)  # the gateway and its worker processes (own session)
        process.wait(10)
    db = firestore.Client(project=config.project_id)
    polls = [
        1
        + int(
            db.collection("batches")
            .document(job_id)
            .collection("chunks")
            .document("000001")
            .get()
            .get("deferrals")
        )
        for job_id in created
    ]
    ledger = db.collection("credit_balances").document(tenant).collection("ledger").stream()
    ledger_sum = sum(entry.get("units") for entry in ledger) / 100
    db.close()
    gemini_s = gemini_ms / 1000
    times = sorted(turnaround.values())
    report = {
        "jobs": jobs,
        "rows": rows,
        "gemini_job_s": gemini_s,
        "poll_seconds": poll_seconds,
        "create_ms_median": round(statistics.median(create_ms), 1),
        "create_ms_max": round(max(create_ms), 1),
        "turnaround_s_median": round(statistics.median(times), 2),
        "turnaround_s_max": round(times[-1], 2),
        "overhead_s_median": round(statistics.median(times) - gemini_s, 2),
        "polls_per_job_median": statistics.median(polls),
        "status_ms_median": round(statistics.median(status_ms), 1),
        "balance": credits["balance"],
        "ledger_sum": ledger_sum,
        "load_average_1m": round(os.getloadavg()[0], 1),
    }
    RESULTS_FILE.parent.mkdir(exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(report, indent=2) + "\n")
    return report


def print_report(report: dict[str, Any]) -> None:
    sys.stdout.write(
        f"batchmode: {report['jobs']} jobs of {report['rows']} rows, "
        f"Gemini jobs of {report['gemini_job_s']} s, "
        f"polls from {report['poll_seconds']} s: create {report['create_ms_median']} ms median "
        f"({report['create_ms_max']} max); turnaround {report['turnaround_s_median']} s median "
        f"({report['turnaround_s_max']} max), {report['overhead_s_median']} s over Gemini's; "
        f"{report['polls_per_job_median']} polls a job; status {report['status_ms_median']} ms; "
        f"balance {report['balance']} = ledger {report['ledger_sum']}; the seed's poll alone adds up to "
        f"{SEED_POLL_S:g} s and holds a worker for the whole job (load average {report['load_average_1m']} "
        f"on {os.cpu_count()} cores)\n"
    )
