"""Bench section `images` (`make bench BENCH_ARGS="--only images"`): the image queue against its limit.

N articles with images are queued in one bulk add through a gateway of the bench's own, started with
IMAGE_QUEUE_CONCURRENCY=C (and an RPM limit that does not bind), at a model latency of L; the wall time runs
from the add until the status shows every item completed, polled every 250 ms. Compared in the same run with
the physical limit N x L / C (goal: within 1.2x) and, for scale, with the seed's design of one article at a
time with a 2 s pause: N x (L + 2 s) (computed, not run).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from typing import Any

import httpx

from infra.seed_data import api_key, seed_catalog
from shared.emulator_config import REPO_ROOT, EmulatorConfig
from tests.bench.gateway import start_gateway

SEED_PAUSE_S = 2.0
RESULTS_FILE = REPO_ROOT / ".bench" / "images.json"


def _gateway(*, concurrency: int) -> tuple[subprocess.Popen[bytes], str]:
    return start_gateway(
        settings={
            "IMAGE_QUEUE_CONCURRENCY": str(concurrency),
            "IMAGE_MODEL_RPM": "100000",
        }
    )


def _wait_all(api: httpx.Client, count: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        stats = api.get("/articulos/processing-queue/status").json()["data"]["stats"]
        if stats["completados"] + stats["fallidos"] >= count:
            return
        time.sleep(0.25)  # the status poll's interval
    raise RuntimeError(f"the warm-up of {count} items did not finish within 120 s")


def run(*, config: EmulatorConfig, items: int, latency_ms: int, concurrency: int) -> dict[str, Any]:
    gemini = httpx.Client(base_url=config.emulators.gemini.url, timeout=10)
    process, url = _gateway(concurrency=concurrency)
    tenant = f"bench-img-{uuid.uuid4().hex[:8]}"
    api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {api_key(tenant)}"}, timeout=120)
    try:
        seed_catalog(api, range(1, items + concurrency + 1))
        gemini.post("/emulator/config", json={"latencyMs": latency_ms}).raise_for_status()
        # Warm up: the gateway's first calls build its clients (per process and loop): one wave first.
        warm_up = list(range(items + 1, items + concurrency + 1))
        api.post("/articulos/batch-process-images", json={"articuloIds": warm_up}).raise_for_status()
        _wait_all(api, concurrency)
        started = time.perf_counter()
        added = api.post("/articulos/batch-process-images", json={"articuloIds": list(range(1, items + 1))})
        added.raise_for_status()
        first_s: float | None = None
        peak = 0
        while True:
            stats = api.get("/articulos/processing-queue/status").json()["data"]["stats"]
            peak = max(peak, stats["procesando"])
            if first_s is None and stats["completados"]:
                first_s = time.perf_counter() - started
            if stats["completados"] + stats["fallidos"] >= items + concurrency:
                break
            time.sleep(0.25)  # the status poll's interval (a poll is five queries: it loads the store too)
        wall_s = time.perf_counter() - started
    finally:
        gemini.post("/emulator/reset").raise_for_status()
        api.close()
        os.killpg(process.pid, signal.SIGKILL)  # the gateway and its worker processes (own session)
        process.wait(10)
    latency_s = latency_ms / 1000
    ideal_s = items * latency_s / concurrency
    report = {
        "items": items,
        "latency_ms": latency_ms,
        "concurrency": concurrency,
        "ideal_s": round(ideal_s, 2),
        "wall_s": round(wall_s, 2),
        "ratio_vs_ideal": round(wall_s / ideal_s, 3),
        "first_completed_s": round(first_s or wall_s, 2),
        "peak_processing": peak,
        "failed": stats["fallidos"],
        "load_average_1m": round(os.getloadavg()[0], 1),
        "seed_s": round(items * (latency_s + SEED_PAUSE_S), 1),
    }
    RESULTS_FILE.parent.mkdir(exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(report, indent=2) + "\n")
    return report


def print_report(report: dict[str, Any]) -> None:
    sys.stdout.write(
        f"images: {report['items']} items, L = {report['latency_ms']} ms, C = {report['concurrency']}: "
        f"{report['wall_s']} s against the limit {report['ideal_s']} s (ratio {report['ratio_vs_ideal']}, "
        f"goal 1.2); first completed {report['first_completed_s']} s; at most {report['peak_processing']} "
        f"processing at once; {report['failed']} failed; the seed's design: {report['seed_s']} s "
        f"(load average {report['load_average_1m']} on {os.cpu_count()} cores)\n"
    )
