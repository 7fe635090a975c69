"""Bench section `images` (`make bench BENCH_ARGS="--only images"`): the image queue against its limit.

N articles with images are queued in one bulk add through the local cloud's functions gateway, restarted for
the section with IMAGE_QUEUE_CONCURRENCY=C (and an RPM limit that does not bind; every caller, Cloud Tasks
and Cloud Scheduler too, reaches functions configured alike; its log in .bench/images-gateway.log), at a
model latency of L; the wall time runs
from the add until the status shows every item completed, polled every 250 ms. Compared in the same run with
the physical limit N x L / C (goal: within 1.2x) and, for scale, with the seed's design of one article at a
time with a 2 s pause: N x (L + 2 s) (computed, not run).

Two causes of the distance to the limit are measured directly: the CPU seconds per item of the gateway and of
the Firestore emulator over the timed run, and the slot gap, the time from an item's end (`completed_at`) to
the start of the next item in the same slot (`started_at`, written just before its article is read and the
model called), p50 and p95 over every slot's consecutive items. What the gaps cannot see is reported beside
them: the idle slot-seconds, each slot's first start, the slowest item, each item's closing (the model's
answer to the commit that frees its slot), the items started twice, and the warnings in the gateway's log.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from infra import localcloud
from infra.seed_data import api_key, seed_catalog
from shared.emulator_config import REPO_ROOT, STATE_DIR, EmulatorConfig

SEED_PAUSE_S = 2.0
RESULTS_FILE = REPO_ROOT / ".bench" / "images.json"
GATEWAY_LOG = REPO_ROOT / ".bench" / "images-gateway.log"


def _functions_settings(*, concurrency: int) -> dict[str, str]:
    """The settings of every function of the local cloud for the section: IMAGE_QUEUE_CONCURRENCY=C and an
    RPM limit that does not bind. Every function, the scheduled ones too: the queue's repair (Cloud Scheduler,
    every minute) is a dispatcher like any other, and the items it starts must run under the same limits.
    (With the local cloud's defaults there, RPM 60, an item it started waited for a minute with fewer than 60
    model calls, after all the others: the 3.14x outlier of session 7.)"""
    return {"IMAGE_QUEUE_CONCURRENCY": str(concurrency), "IMAGE_MODEL_RPM": "100000"}


def _wait_all(api: httpx.Client, count: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        stats = api.get("/articulos/processing-queue/status").json()["data"]["stats"]
        if stats["completados"] + stats["fallidos"] >= count:
            return
        time.sleep(0.25)  # the status poll's interval
    raise RuntimeError(f"the warm-up of {count} items did not finish within 120 s")


@dataclass
class _Timeline:
    """What the timed items' own timestamps say about the run."""

    gaps: list[float]  # seconds from an item's end to the start of the next one in its slot
    durations: list[float]  # seconds from an item's start to its end (its model call and the work around it)
    # seconds from an item's end (`completed_at`, stamped when the model answered) to the commit that ends it
    # (the upload of its image and the swap), which frees its slot
    closings: list[float]
    # slot-seconds from the add to the last commit when a slot held no item in progress: the gaps within the
    # slots, plus each slot's wait for its first item and its idle tail (which the gaps do not show)
    idle_slot_s: float
    # the items that were started more than once (`intentos` > 1): a retried attempt or a lost delivery
    retried: int
    # seconds from the add (its items' creation) to the last item's end, by the items' own timestamps: the
    # queue's own time, which the wall time (by the status polls) exceeds only by what the observation adds
    span_s: float
    # seconds from the add to the latest of the slots' first starts (a slot whose first item of the add
    # started late: no gap within the slot shows it)
    last_first_start_s: float


def _timeline(*, config: EmulatorConfig, tenant: str, items: int, concurrency: int) -> _Timeline:
    os.environ["FIRESTORE_EMULATOR_HOST"] = config.emulators.firestore.address
    db = firestore.Client(project=config.project_id)
    query = db.collection("image_queue").where(filter=FieldFilter("tenant", "==", tenant))
    by_slot: dict[int, list[dict[str, Any]]] = defaultdict(list)
    retried = 0
    for snapshot in query.stream():
        item = snapshot.to_dict() or {}
        if item["articulo_id"] <= items and item.get("started_at") and item.get("completed_at"):
            item["ended_at"] = snapshot.update_time  # the commit that ended it (nothing writes it after)
            by_slot[item["slot"]].append(item)
            retried += item["intentos"] > 1
    timed = [item for slot_items in by_slot.values() for item in slot_items]
    durations = [(item["completed_at"] - item["started_at"]).total_seconds() for item in timed]
    closings = [(item["ended_at"] - item["completed_at"]).total_seconds() for item in timed]
    gaps = []
    added_at = min((item["created_at"] for item in timed), default=None)
    last_first_start_s = 0.0
    for slot_items in by_slot.values():
        slot_items.sort(key=lambda item: item["started_at"])
        if added_at is not None:
            first_start_s = (slot_items[0]["started_at"] - added_at).total_seconds()
            last_first_start_s = max(last_first_start_s, first_start_s)
        for ended, following in zip(slot_items, slot_items[1:], strict=False):
            gaps.append((following["started_at"] - ended["completed_at"]).total_seconds())
    idle_slot_s = span_s = 0.0
    if added_at is not None:
        span_s = (max(item["ended_at"] for item in timed) - added_at).total_seconds()
        idle_slot_s = concurrency * span_s - sum(durations)
    return _Timeline(
        gaps=gaps,
        durations=durations,
        closings=closings,
        idle_slot_s=idle_slot_s,
        span_s=span_s,
        retried=retried,
        last_first_start_s=last_first_start_s,
    )


def _logged_problems() -> int:
    """The gateway's log lines at WARNING or above over the whole section (warm-up included)."""
    problems = 0
    for line in GATEWAY_LOG.read_text(errors="replace").splitlines():
        try:
            severity = json.loads(line).get("severity", "") if line.startswith("{") else ""
        except json.JSONDecodeError:
            severity = ""
        problems += severity in ("WARNING", "ERROR", "CRITICAL") or line.startswith("Traceback")
    return problems


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def run(
    *,
    config: EmulatorConfig,
    items: int,
    latency_ms: int,
    concurrency: int,
    cpu_seconds: Callable[[dict[str, int]], dict[str, float]],
) -> dict[str, Any]:
    """`cpu_seconds` reads the CPU seconds used so far by each named process group (by its leader's id)."""
    gemini = httpx.Client(base_url=config.emulators.gemini.url, timeout=10)
    gateway_pid = localcloud.restart_piece(
        "functions",
        config=config,
        settings=_functions_settings(concurrency=concurrency),
        log_path=GATEWAY_LOG,
    )
    url = config.emulators.functions.url
    local_cloud: dict[str, int] = json.loads((STATE_DIR / "pids.json").read_text())
    groups = {"gateway": gateway_pid, "firestore": local_cloud["firestore"], "tasks": local_cloud["tasks"]}
    tenant = f"bench-img-{uuid.uuid4().hex[:8]}"
    api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {api_key(tenant)}"}, timeout=120)
    try:
        seed_catalog(api, range(1, items + concurrency + 1))
        gemini.post("/emulator/config", json={"latencyMs": latency_ms}).raise_for_status()
        # Warm up: the gateway's first calls build its clients (per process and loop): one wave first.
        warm_up = list(range(items + 1, items + concurrency + 1))
        api.post("/articulos/batch-process-images", json={"articuloIds": warm_up}).raise_for_status()
        _wait_all(api, concurrency)
        cpu_before = cpu_seconds(groups)
        started = time.perf_counter()
        added = api.post("/articulos/batch-process-images", json={"articuloIds": list(range(1, items + 1))})
        added.raise_for_status()
        add_s = time.perf_counter() - started
        first_s: float | None = None
        peak = 0
        while True:
            stats = api.get("/articulos/processing-queue/status").json()["data"]["stats"]
            peak = max(peak, stats["procesando"])
            if first_s is None and stats["completados"] > concurrency:  # beyond the warm-up's items
                first_s = time.perf_counter() - started
            if stats["completados"] + stats["fallidos"] >= items + concurrency:
                break
            time.sleep(0.25)  # the status poll's interval (a poll is five queries: it loads the store too)
        wall_s = time.perf_counter() - started
        cpu_after = cpu_seconds(groups)
    finally:
        gemini.post("/emulator/reset").raise_for_status()
        api.close()
        localcloud.restart_piece("functions", config=config)  # the local cloud's own functions again
    latency_s = latency_ms / 1000
    ideal_s = items * latency_s / concurrency
    timeline = _timeline(config=config, tenant=tenant, items=items, concurrency=concurrency)
    gaps, durations = timeline.gaps, timeline.durations
    cpu_per_item_ms = {name: round((cpu_after[name] - cpu_before[name]) * 1000 / items, 1) for name in groups}
    report = {
        "items": items,
        "latency_ms": latency_ms,
        "concurrency": concurrency,
        "ideal_s": round(ideal_s, 2),
        "wall_s": round(wall_s, 2),
        "ratio_vs_ideal": round(wall_s / ideal_s, 3),
        "add_s": round(add_s, 2),
        "span_s": round(timeline.span_s, 2),
        "first_completed_s": round(first_s or wall_s, 2),
        "peak_processing": peak,
        "cpu_ms_per_item": cpu_per_item_ms,
        "slot_gap_ms": {
            "p50": round(_percentile(gaps, 0.5) * 1000),
            "p95": round(_percentile(gaps, 0.95) * 1000),
            "mean": round(statistics.fmean(gaps) * 1000) if gaps else 0,
            "max": round(max(gaps, default=0.0) * 1000),
        },
        "idle_slot_s": round(timeline.idle_slot_s, 2),
        "slot_gaps_s": round(sum(gaps), 2),
        "retried_items": timeline.retried,
        "last_first_start_s": round(timeline.last_first_start_s, 2),
        "gateway_log_problems": _logged_problems(),
        "item_ms": {
            "p50": round(_percentile(durations, 0.5) * 1000),
            "p95": round(_percentile(durations, 0.95) * 1000),
            "max": round(max(durations, default=0.0) * 1000),
        },
        "closing_ms": {
            "p50": round(_percentile(timeline.closings, 0.5) * 1000),
            "p95": round(_percentile(timeline.closings, 0.95) * 1000),
            "max": round(max(timeline.closings, default=0.0) * 1000),
        },
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
        f"goal 1.2); the add answered in {report['add_s']} s; by the items' timestamps the last ended "
        f"{report['span_s']} s after the add; first completed {report['first_completed_s']} s; at most "
        f"{report['peak_processing']} "
        f"processing at once; {report['failed']} failed; CPU ms per item {report['cpu_ms_per_item']}; "
        f"slot gap ms {report['slot_gap_ms']}; item ms {report['item_ms']}; from its end to its commit ms "
        f"{report['closing_ms']}; idle slot-seconds "
        f"{report['idle_slot_s']} ({report['slot_gaps_s']} of them in gaps within a slot); "
        f"{report['retried_items']} items started more than once; every slot's first item started within "
        f"{report['last_first_start_s']} s of the add; {report['gateway_log_problems']} warnings or errors "
        f"in {GATEWAY_LOG}; the seed's design: {report['seed_s']} s "
        f"(load average {report['load_average_1m']} on {os.cpu_count()} cores)\n"
    )
