"""The reports section of the bench (`make bench`, or alone: `make bench BENCH_ARGS="--only reports"`).

For each input size (50 MB and 500 MB by default) a synthetic FacturacionMasiva dataset goes end to end as a
client would send it: an upload session, the file PUT straight to Cloud Storage, POST /reports/queue, status
polled until Completed, the zip downloaded through its token. Reported: wall time, MB/s of input, the job's
own processing time and its peak memory (`memoryUsageMB`, measured by the job). On the first size, the same
run also times a pandas baseline in a process of its own (`read_json`, then `to_excel` and `to_csv`) with its
peak memory. A benchmark, not a test.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from infra.report_data import write_dataset
from shared import runtime
from shared.app import platform
from shared.emulator_config import REPO_ROOT
from shared.models.auth import Role
from shared.services.auth import create_api_key

DATA_DIR = REPO_ROOT / ".bench"
MB = 1024 * 1024

PANDAS_BASELINE = """
import json, resource, sys, time
import pandas as pd
source, out = sys.argv[1], sys.argv[2]
started = time.monotonic()
frame = pd.read_json(source)
frame.to_excel(out + ".xlsx", index=False)
frame.to_csv(out + ".csv", index=False)
elapsed = time.monotonic() - started
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": elapsed, "peakMB": peak_mb, "rows": len(frame)}))
"""


def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def dataset(size_mb: float) -> Path:
    """The dataset of `size_mb`, written once and kept in .bench/ for later runs."""
    path = DATA_DIR / f"facturas-{size_mb:g}mb.json"
    if not path.exists():
        DATA_DIR.mkdir(exist_ok=True)
        partial = path.with_suffix(".partial")
        with partial.open("wb") as out:
            write_dataset(
                out, size_bytes=int(size_mb * 1_000_000), invalid_every=1000
            )  # MB as uploads count them
        partial.rename(path)
    return path


def _end_to_end(api: httpx.Client, path: Path) -> dict[str, Any]:
    size = path.stat().st_size
    started = time.monotonic()
    session = api.post(
        "/reports/uploads", json={"fileName": path.name, "sizeBytes": size, "reportType": "FacturacionMasiva"}
    )
    session.raise_for_status()
    opened = session.json()
    with path.open("rb") as data:
        httpx.put(opened["uploadUrl"], content=data, timeout=1800).raise_for_status()
    uploaded = time.monotonic()
    queued = api.post(
        "/reports/queue",
        json={"reportType": "FacturacionMasiva", "userName": "bench", "uploadId": opened["uploadId"]},
    )
    queued.raise_for_status()
    job_id = queued.json()["jobId"]
    deadline = time.monotonic() + 3600
    while True:
        current = api.get(f"/reports/status/{job_id}").json()
        if current["status"] in ("Completed", "Failed") or time.monotonic() > deadline:
            break
        time.sleep(0.5)  # polling interval, as a client polls
    processed = time.monotonic()
    if current["status"] != "Completed":
        raise RuntimeError(f"the report did not complete: {current}")
    downloaded = 0
    redirect = api.get(current["downloadUrl"], follow_redirects=False)
    with httpx.stream("GET", redirect.headers["Location"], timeout=600) as response:
        for block in response.iter_bytes(MB):
            downloaded += len(block)
    finished = time.monotonic()
    wall = finished - started
    metrics = current["performanceMetrics"]
    return {
        "inputMB": round(size / MB, 1),
        "records": metrics["recordsProcessed"],
        "wallSeconds": round(wall, 1),
        "uploadSeconds": round(uploaded - started, 1),
        "queueToCompletedSeconds": round(processed - uploaded, 1),
        "downloadSeconds": round(finished - processed, 1),
        "processingSeconds": round(metrics["processingTimeMs"] / 1000, 1),
        "mbPerSecond": round(size / MB / wall, 2),
        "processingMBPerSecond": round(size / MB / (metrics["processingTimeMs"] / 1000), 2),
        "jobPeakMemoryMB": metrics["memoryUsageMB"],
        "reportMB": round(downloaded / MB, 1),
    }


def _pandas(path: Path) -> dict[str, Any]:
    out = DATA_DIR / f"pandas-{uuid.uuid4().hex[:6]}"
    try:
        done = subprocess.run(
            [sys.executable, "-c", PANDAS_BASELINE, str(path), str(out)],
            capture_output=True,
            text=True,
            timeout=3600,
            check=True,
        )
    finally:
        for suffix in (".xlsx", ".csv"):
            Path(f"{out}{suffix}").unlink(missing_ok=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "seconds": round(result["seconds"], 1),
        "peakMB": round(result["peakMB"], 1),
        "rows": result["rows"],
    }


def run(*, functions_url: str, sizes_mb: list[float], results_file: Path) -> int:
    wired = platform()
    key = runtime.run(
        create_api_key(
            keys=wired.keys,
            tenant=f"bench-reports-{uuid.uuid4().hex[:8]}",
            role=Role.USER,
            now=wired.engine.clock(),
            rate_limit_per_minute=1_000_000,
        )
    )
    api = httpx.Client(base_url=functions_url, headers={"Authorization": f"Bearer {key}"}, timeout=120)
    rows = []
    baseline: dict[str, Any] | None = None
    for index, size_mb in enumerate(sizes_mb):
        path = dataset(size_mb)
        row = _end_to_end(api, path)
        if index == 0:
            baseline = _pandas(path)
            row["pandasSeconds"] = baseline["seconds"]
            row["pandasPeakMB"] = baseline["peakMB"]
            row["speedupVsPandas"] = round(baseline["seconds"] / max(row["processingSeconds"], 0.001), 2)
        rows.append(row)
        _out(json.dumps(row))
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    results["reports"] = {"rows": rows, "pandasBaseline": baseline}
    results_file.parent.mkdir(exist_ok=True)
    results_file.write_text(json.dumps(results, indent=2) + "\n")
    _out("")
    _out("input MB | wall s | MB/s | job s | job peak MB | pandas s | pandas peak MB | speed-up")
    for row in rows:
        pandas = f"{row.get('pandasSeconds', '-'):>8} | {row.get('pandasPeakMB', '-'):>14}"
        _out(
            f"{row['inputMB']:>8} | {row['wallSeconds']:>6} | {row['mbPerSecond']:>4} | "
            f"{row['processingSeconds']:>5} | {row['jobPeakMemoryMB']:>11} | {pandas} | "
            f"{row.get('speedupVsPandas', '-')}"
        )
    return 0
