"""Benchmark: the engine against the physical limit, side by side in one run (`make bench`).

For each size N at model latency L and concurrency C:
  ideal_s     N x L / C, the physical limit
  baseline_s  one process calling the Gemini emulator directly with google-genai's async client
  platform_s  POST /batch/generate (no wait) until GET /batch/status reports completed with all results
  wait_s      the same batch, its status polled until the first result, then read with waitSeconds
              (answered at the end): what a client that waits sees (sizes below LARGE_SIZE)
  seed_s      the seed systems' design, sequential with a 2 s pause: N x (L + 2 s) (computed, not run)
Also submit latency (p50/p99 over 50 submits of 100 requests) and the platform's resources. Rounds (3 by
default) alternate baseline and platform at every size; each figure is the median over the rounds.

Embeddings: D documents (10,000) indexed through POST /batch/embeddings until the batch is completed, against
the same documents embedded by a bare google-genai loop (batchEmbedContents of 100 texts at concurrency C, no
storage), alternating in the same rounds; then search latency p50/p99 over the D-document collection, through
the API (a one-search batch, answered when finished) and of Firestore's vector search alone.
Analytics (tests/bench/analytics.py; `--only analytics` alone): runs last, writes .bench/analytics.json.
Writes .bench/results.json; the last line printed is the ratio at 1,000 items. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from google import genai
from google.cloud import firestore
from google.genai import types

from infra import localcloud
from shared import runtime
from shared.app import platform
from shared.emulator_config import REPO_ROOT, STATE_DIR, load_emulator_config
from shared.models.auth import Role
from shared.services.auth import create_api_key
from tests.bench import footprint, images
from tests.bench import metrics as metrics_bench

RESULTS_FILE = REPO_ROOT / ".bench" / "results.json"
# Sizes below LARGE_SIZE also run with the client waiting for the end: `GET /batch/status/{id}?waitSeconds=`.
STATUS_WAIT_S = 30.0
# Sizes from this many items run --large-rounds rounds (one by default): a round of 50,000 takes minutes.
LARGE_SIZE = 20_000
SEED_PAUSE_S = 2.0
MODEL = "gemini-2.5-flash"
EMBED_MODEL = "gemini-embedding-001"
EMBED_BATCH = 100
TOPICS = [
    "gearbox oil",
    "wiper blade",
    "cabin filter",
    "spark plug",
    "fuel pump",
    "door handle",
    "brake disc",
]


def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def _baseline(*, gemini_url: str, items: int, concurrency: int) -> float:
    client = genai.Client(api_key="bench", http_options=types.HttpOptions(base_url=gemini_url))
    semaphore = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with semaphore:
            await client.aio.models.generate_content(model=MODEL, contents=f"Describe item number {i}")

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(items)))
    return time.perf_counter() - started


def _run_batch(
    api: httpx.Client, *, kind: str, body: dict[str, Any], wait_seconds: float = 0.0
) -> tuple[float, float, dict[str, Any]]:
    """Submit a batch (no wait) and poll its status every 50 ms until it is completed with nothing pending:
    the wall time, the time to its first result, and its final status (the first result only). With
    `wait_seconds`, the polls after the first result are status reads that wait for the end (`waitSeconds`)
    instead: the figure a client that waits gets, reported beside the polled one."""
    payload = json.dumps(body).encode()
    started = time.perf_counter()
    response = api.post(f"/batch/{kind}", content=payload, headers={"Content-Type": "application/json"})
    response.raise_for_status()
    submit_s = time.perf_counter() - started
    batch_id = response.json()["batchId"]
    first_result_s = 0.0
    deadline = started + 900
    while time.perf_counter() < deadline:
        params: dict[str, Any] = {"limit": 1}
        if wait_seconds and first_result_s:
            params["waitSeconds"] = wait_seconds
        current = api.get(f"/batch/status/{batch_id}", params=params).json()
        if not first_result_s and current["progress"]["finished"] > 0:
            first_result_s = time.perf_counter() - started
        if current["status"] == "completed" and current["progress"]["pending"] == 0:
            return time.perf_counter() - started, first_result_s, current | {"submit_s": submit_s}
        if current["status"] in ("failed", "cancelled"):
            raise RuntimeError(f"batch {batch_id} ended {current['status']}: {current.get('stopReason')}")
        if "waitSeconds" not in params:
            time.sleep(0.05)  # status polling interval
    raise TimeoutError(f"batch {batch_id} did not finish")


def _platform_run(
    api: httpx.Client, *, items: int, concurrency: int, wait_seconds: float = 0.0
) -> dict[str, Any]:
    body = {
        "requests": [{"prompt": f"Describe item number {i}", "customId": str(i)} for i in range(items)],
        "options": {"concurrency": concurrency, "wait": False},
    }
    elapsed, first_result_s, final = _run_batch(api, kind="generate", body=body, wait_seconds=wait_seconds)
    if final["progress"]["successful"] != items:
        raise RuntimeError(f"{final['progress']['failed']} of {items} requests failed")
    return {
        "platform_s": elapsed,
        "first_result_s": first_result_s,
        "submit_s": final["submit_s"],
        "batch_id": final["batchId"],
    }


def _documents(count: int) -> list[dict[str, Any]]:
    return [
        {
            "text": f"catalog entry {i} {TOPICS[i % len(TOPICS)]} for model {i % 97}",
            "metadata": {"id": f"d{i}"},
        }
        for i in range(count)
    ]


async def _embed_baseline(*, gemini_url: str, documents: list[dict[str, Any]], concurrency: int) -> float:
    client = genai.Client(api_key="bench", http_options=types.HttpOptions(base_url=gemini_url))
    semaphore = asyncio.Semaphore(concurrency)
    texts = [document["text"] for document in documents]
    config = types.EmbedContentConfig(output_dimensionality=768, task_type="RETRIEVAL_DOCUMENT")

    async def one(start: int) -> None:
        async with semaphore:
            await client.aio.models.embed_content(
                model=EMBED_MODEL, contents=texts[start : start + EMBED_BATCH], config=config
            )

    started = time.perf_counter()
    await asyncio.gather(*(one(start) for start in range(0, len(texts), EMBED_BATCH)))
    return time.perf_counter() - started


def _embed_platform(
    api: httpx.Client, *, name: str, documents: list[dict[str, Any]], concurrency: int
) -> float:
    body = {
        "operations": [{"type": "index", "name": name, "documents": documents}],
        "options": {"concurrency": concurrency, "wait": False},
    }
    elapsed, _, final = _run_batch(api, kind="embeddings", body=body)
    if final["results"][0]["indexed"] != len(documents):
        raise RuntimeError(f"indexed {final['results'][0]['indexed']} of {len(documents)} documents")
    return elapsed


def _percentiles(timings: list[float]) -> dict[str, float]:
    timings = sorted(timings)
    return {
        "p50_ms": round(statistics.median(timings), 1),
        "p99_ms": round(timings[min(len(timings) - 1, int(len(timings) * 0.99))], 1),
    }


def _search_latency(api: httpx.Client, *, tenant: str, name: str, searches: int) -> dict[str, Any]:
    """Searches of the collection through the API (each a one-search batch answered when finished), and
    Firestore's vector search alone through the platform's adapter."""
    through_api = []
    for i in range(searches):
        body = {
            "operations": [
                {"type": "search", "name": name, "query": f"{TOPICS[i % 7]} model {i}", "topK": 10}
            ]
        }
        started = time.perf_counter()
        response = api.post("/batch/embeddings", json=body)
        through_api.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
        if len(response.json()["results"][0]["matches"]) != 10:
            raise RuntimeError(f"search {i} found {response.json()['results'][0]}")
    vectors = platform().engine.vectors
    query = [1.0 / 768**0.5] * 768
    alone = []
    for _ in range(searches):
        started = time.perf_counter()
        runtime.run(vectors.find_nearest(tenant=tenant, name=name, vector=query, top_k=10, where={}))
        alone.append((time.perf_counter() - started) * 1000)
    return {"api": _percentiles(through_api), "find_nearest": _percentiles(alone), "searches": searches}


def _submit_latency(api: httpx.Client, *, submits: int) -> dict[str, float]:
    body = json.dumps({"requests": [{"prompt": f"p{i}"} for i in range(100)], "options": {"wait": False}})
    timings = []
    for _ in range(submits):
        started = time.perf_counter()
        response = api.post("/batch/generate", content=body, headers={"Content-Type": "application/json"})
        timings.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
        api.delete(f"/batch/{response.json()['batchId']}")
    return _percentiles(timings)


def reset_firestore(config: Any) -> None:
    """Empty the Firestore emulator between sections: the emulator scans whole collections for a query, so one
    section's documents (a million usage events, a marketplace day, 30,000 vectors) would slow the next."""
    emulator = config.emulators.firestore
    httpx.delete(
        f"{emulator.url}/emulator/v1/projects/{config.project_id}/databases/(default)/documents", timeout=60
    ).raise_for_status()


def _group(leader: int) -> list[int]:
    """Every process in the session the local cloud started `leader` in (gunicorn workers, the JVM...)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == leader:  # pgrp
            members.append(int(stat.parent.name))
    return members


def _cpu_seconds(leaders: dict[str, int]) -> dict[str, float]:
    ticks = float(os.sysconf("SC_CLK_TCK"))
    result = {}
    for name, leader in leaders.items():
        total = 0.0
        for pid in _group(leader):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
        result[name] = round(total, 3)
    return result


def _peak_rss_mb(leader: int) -> float:
    """The largest peak resident set of the processes in the group (the gunicorn worker, for the gateway)."""
    peaks = [0.0]
    for pid in _group(leader):
        try:
            lines = Path(f"/proc/{pid}/status").read_text().splitlines()
        except OSError:
            continue
        peaks += [int(line.split()[1]) / 1024 for line in lines if line.startswith("VmHWM:")]
    return max(peaks)


def main() -> int:
    parser = argparse.ArgumentParser(description="Benchmark the batch engine.")
    parser.add_argument(
        "--sizes",
        default=os.environ.get("BENCH_SIZES") or "100,1000,5000,50000",
        help="batch sizes of the engine section (or the BENCH_SIZES variable)",
    )
    parser.add_argument("--latency-ms", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--submits", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; figures are medians")
    parser.add_argument(
        "--large-rounds",
        type=int,
        default=1,
        help=f"rounds of sizes from {LARGE_SIZE:,} items (each takes minutes), at most --rounds",
    )
    parser.add_argument("--embed-documents", type=int, default=10_000, help="0 leaves embeddings out")
    parser.add_argument("--searches", type=int, default=50)
    parser.add_argument(
        "--only",
        choices=["engine", "reports", "images", "metrics", "analytics", "batchmode"],
        help="run one section only",
    )
    parser.add_argument("--report-sizes-mb", default="50,500", help="the reports section's input sizes")
    parser.add_argument("--images-items", type=int, default=200)
    parser.add_argument("--batchmode-jobs", type=int, default=10)
    parser.add_argument("--batchmode-rows", type=int, default=20)
    parser.add_argument("--batchmode-gemini-ms", type=int, default=5000, help="a Gemini batch job's time")
    parser.add_argument("--batchmode-poll-seconds", type=float, default=1.0)
    parser.add_argument("--images-latency-ms", type=int, default=1000)
    parser.add_argument("--images-concurrency", type=int, default=10)
    parser.add_argument("--analytics-events", type=int, default=1_000_000, help="0 leaves analytics out")
    parser.add_argument("--analytics-days", type=int, default=30)
    parser.add_argument("--analytics-queries", type=int, default=50)
    parser.add_argument("--analytics-scans", type=int, default=2)
    parser.add_argument(
        "--metrics-requests", type=int, default=20_000, help="requests of the metrics day; 0: none"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    config = load_emulator_config()
    started_cloud = localcloud.start(config)
    try:
        code = 0
        if args.only in (None, "engine"):
            code = _bench(
                config=config,
                sizes=sizes,
                latency_ms=args.latency_ms,
                concurrency=args.concurrency,
                submits=args.submits,
                rounds=args.rounds,
                embed_documents=args.embed_documents,
                searches=args.searches,
                metrics_requests=args.metrics_requests,
                large_rounds=args.large_rounds,
            )
        if args.only == "metrics":
            code = _metrics_only(config=config, requests=args.metrics_requests, rounds=args.rounds)
        if args.only in (None, "images"):
            reset_firestore(config)
            images.print_report(
                images.run(
                    config=config,
                    items=args.images_items,
                    latency_ms=args.images_latency_ms,
                    concurrency=args.images_concurrency,
                    cpu_seconds=_cpu_seconds,
                )
            )
        if args.only in (None, "batchmode"):
            from tests.bench import batchmode

            reset_firestore(config)
            batchmode.print_report(
                batchmode.run(
                    config=config,
                    jobs=args.batchmode_jobs,
                    rows=args.batchmode_rows,
                    gemini_ms=args.batchmode_gemini_ms,
                    poll_seconds=args.batchmode_poll_seconds,
                )
            )
        if args.only in (None, "reports"):
            from tests.bench import reports

            reset_firestore(config)
            code = code or reports.run(
                functions_url=config.emulators.functions.url,
                sizes_mb=[float(size) for size in args.report_sizes_mb.split(",")],
                results_file=RESULTS_FILE,
            )
        # Last: its million usage records would weigh on the other figures (the Firestore emulator scans whole
        # collections).
        if args.only in (None, "analytics") and args.analytics_events:
            reset_firestore(config)
            _analytics_section(config, args)
        if args.only is None:
            rows = json.loads(RESULTS_FILE.read_text())["sizes"]
            at_thousand = next((r for r in rows if r["items"] == 1000), rows[-1])
            _out(
                f"fanout ratio_vs_baseline at 1000 items: {at_thousand['ratio_vs_baseline']:.2f}"
            )  # still last
        return code
    finally:
        if started_cloud:
            localcloud.stop()


def _analytics_section(config: Any, args: argparse.Namespace) -> dict[str, Any]:
    from tests.bench.analytics import bench_analytics

    figures = bench_analytics(
        gateway_url=config.emulators.functions.url,
        events=args.analytics_events,
        days=args.analytics_days,
        queries=args.analytics_queries,
        scans=args.analytics_scans,
    )
    RESULTS_FILE.parent.mkdir(exist_ok=True)
    (RESULTS_FILE.parent / "analytics.json").write_text(json.dumps(figures, indent=2) + "\n")
    api = figures["metrics_api"]
    _out(f"analytics: {figures['events']:,} events over {figures['days']} days loaded in "
         f"{figures['load_s']} s, rolled in {figures['roll_s']} s; GET /analytics/metrics "
         f"({figures['days']} days, p50/p99 ms): {api}; naive scan "
         f"of the tenant's {figures['tenant_calls_in_window']:,} calls {figures['naive_scan_s']} s; agree: "
         f"{figures['naive_agrees']}; summary write overhead {figures['write_overhead']}")  # fmt: skip
    return figures


def _bench(
    *,
    config: Any,
    sizes: list[int],
    latency_ms: int,
    concurrency: int,
    submits: int,
    rounds: int,
    embed_documents: int,
    searches: int,
    metrics_requests: int = 0,
    large_rounds: int = 1,
) -> int:
    gemini = httpx.Client(base_url=config.emulators.gemini.url, timeout=10)
    gemini.post("/emulator/reset").raise_for_status()
    gemini.post("/emulator/config", json={"latencyMs": latency_ms}).raise_for_status()
    wired = platform()
    tenant = f"bench-{uuid.uuid4().hex[:8]}"
    key = runtime.run(
        create_api_key(
            keys=wired.keys,
            tenant=tenant,
            role=Role.USER,
            now=wired.engine.clock(),
            rate_limit_per_minute=1_000_000,
        )
    )
    api = httpx.Client(base_url=config.emulators.functions.url, headers={"Authorization": f"Bearer {key}"},
                       timeout=120)  # fmt: skip
    pids: dict[str, int] = json.loads((STATE_DIR / "pids.json").read_text())
    platform_pids = {
        n: p for n, p in pids.items() if n in ("functions", "firestore", "tasks", "storage", "gemini")
    }
    # Warm up: the first calls build clients and JIT-compile the Firestore emulator's paths.
    _platform_run(api, items=50, concurrency=concurrency)
    gateway_peak_rss_mb = round(_peak_rss_mb(pids["functions"]), 1)
    asyncio.run(_baseline(gemini_url=config.emulators.gemini.url, items=50, concurrency=concurrency))

    # Rounds alternate the baseline and the platform at every size, so a slow spell of the machine hits both;
    # each figure is the median over the rounds, each ratio the median of the rounds' own ratios.
    runs: dict[int, list[dict[str, float]]] = {items: [] for items in sizes}
    cpu_used: dict[int, dict[str, float]] = {items: {} for items in sizes}
    documents = _documents(embed_documents)
    embed_runs: list[dict[str, float]] = []
    os.environ["FIRESTORE_EMULATOR_HOST"] = config.emulators.firestore.address
    db = firestore.Client(project=config.project_id)
    for round_number in range(rounds):
        for items in sizes:
            if round_number >= _rounds_of(items, rounds=rounds, large_rounds=large_rounds):
                continue
            baseline_s = asyncio.run(
                _baseline(gemini_url=config.emulators.gemini.url, items=items, concurrency=concurrency)
            )
            footprint.reset_peak_rss(_group(pids["functions"]))
            cpu_before = _cpu_seconds(platform_pids)
            run = _platform_run(api, items=items, concurrency=concurrency)
            cpu_after = _cpu_seconds(platform_pids)
            for name in cpu_before:
                cpu_used[items][name] = cpu_used[items].get(name, 0.0) + cpu_after[name] - cpu_before[name]
            written = footprint.batch_footprint(db, batch_id=run.pop("batch_id"))
            run["gateway_peak_rss_mb"] = _peak_rss_mb(pids["functions"])
            if items < LARGE_SIZE:  # the same batch, its end waited for (waitSeconds) instead of polled
                waited = _platform_run(api, items=items, concurrency=concurrency, wait_seconds=STATUS_WAIT_S)
                run["platform_wait_s"] = waited["platform_s"]
            runs[items].append(
                run
                | {"baseline_s": baseline_s}
                | {f"{name}_per_1000": value * 1000 / items for name, value in written.items()}
            )
    db.close()
    rows = [_row(items, runs[items], latency_ms=latency_ms, concurrency=concurrency) for items in sizes]
    cpu_per_thousand = [
        {name: round(used * 1000 / (items * len(runs[items])), 2) for name, used in cpu_used[items].items()}
        for items in sizes
    ]
    submit = _submit_latency(api, submits=submits)
    # of batch generation (the largest of its runs' own peaks, each measured from a reset), before embeddings
    gateway_peak_rss_mb = max([gateway_peak_rss_mb, *(row["gateway_peak_rss_mb"] for row in rows)])
    # Embeddings after generation (their vectors would weigh on the Firestore emulator during it), rounds
    # alternating the bare loop and the platform; each round's collection replaces the one before.
    for round_number in range(rounds if documents else 0):
        if round_number:
            api.delete(f"/batch/collections/bench{round_number - 1}").raise_for_status()
        embed_runs.append(
            {
                "baseline_s": asyncio.run(
                    _embed_baseline(
                        gemini_url=config.emulators.gemini.url, documents=documents, concurrency=concurrency
                    )
                ),
                "platform_s": _embed_platform(
                    api, name=f"bench{round_number}", documents=documents, concurrency=concurrency
                ),
            }
        )
    embeddings = (
        {
            "documents": embed_documents,
            "concurrency": concurrency,
            "ideal_s": round(-(-embed_documents // EMBED_BATCH) * latency_ms / 1000 / concurrency, 3),
            "baseline_s": round(statistics.median(r["baseline_s"] for r in embed_runs), 3),
            "platform_s": round(statistics.median(r["platform_s"] for r in embed_runs), 3),
            "ratio_vs_baseline": round(
                statistics.median(r["platform_s"] / r["baseline_s"] for r in embed_runs), 2
            ),
            "rounds": [{k: round(v, 3) for k, v in r.items()} for r in embed_runs],
            "search": _search_latency(api, tenant=tenant, name=f"bench{rounds - 1}", searches=searches),
        }
        if documents
        else None
    )
    resources = {
        "gateway_peak_rss_mb": gateway_peak_rss_mb,
        "gateway_peak_rss_mb_after_embeddings": round(_peak_rss_mb(pids["functions"]), 1),
        "cpu_s_per_1000_items": cpu_per_thousand[-1] if cpu_per_thousand else {},
        "cpu_s_per_1000_items_by_size": dict(zip([str(s) for s in sizes], cpu_per_thousand, strict=True)),
    }
    gemini.post("/emulator/reset").raise_for_status()
    reset_firestore(config)
    metrics = (
        metrics_bench.run_section(config=config, pids=pids, group=_group, requests=metrics_requests, rounds=1)
        if metrics_requests
        else None
    )
    report = {
        "metrics": metrics,
        "sizes": rows,
        "submit": submit,
        "embeddings": embeddings,
        "resources": resources,
        "machine": _machine(),
    }
    RESULTS_FILE.parent.mkdir(exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(report, indent=2) + "\n")
    _print_table(rows, submit, resources)
    if embeddings:
        search = embeddings["search"]
        _out(f"embeddings: {embed_documents} documents indexed in {embeddings['platform_s']} s "
             f"(bare google-genai loop {embeddings['baseline_s']} s, "
             f"ratio {embeddings['ratio_vs_baseline']}, "
             f"ideal {embeddings['ideal_s']} s); search over them p50 {search['api']['p50_ms']} ms, "
             f"p99 {search['api']['p99_ms']} ms through the API, p50 {search['find_nearest']['p50_ms']} ms, "
             f"p99 {search['find_nearest']['p99_ms']} ms for Firestore's vector search alone")  # fmt: skip
    if metrics:
        metrics_bench.print_section(metrics, _out)
    at_thousand = next((r for r in rows if r["items"] == 1000), rows[-1])
    _out(f"fanout ratio_vs_baseline at 1000 items: {at_thousand['ratio_vs_baseline']:.2f}")
    return 0


def _metrics_only(*, config: Any, requests: int, rounds: int) -> int:
    """`--only metrics`: the metric batches' section alone (results in .bench/metrics.json)."""
    pids: dict[str, int] = json.loads((STATE_DIR / "pids.json").read_text())
    section = metrics_bench.run_section(
        config=config, pids=pids, group=_group, requests=requests, rounds=rounds
    )
    RESULTS_FILE.parent.mkdir(exist_ok=True)
    (RESULTS_FILE.parent / "metrics.json").write_text(json.dumps(section, indent=2) + "\n")
    metrics_bench.print_section(section, _out)
    return 0


def _rounds_of(items: int, *, rounds: int, large_rounds: int) -> int:
    return min(rounds, large_rounds) if items >= LARGE_SIZE else rounds


def _row(items: int, runs: list[dict[str, float]], *, latency_ms: int, concurrency: int) -> dict[str, Any]:
    median = statistics.median
    baseline = [run["baseline_s"] for run in runs]
    platform_s = [run["platform_s"] for run in runs]
    waited = [run["platform_wait_s"] for run in runs if "platform_wait_s" in run]
    return {
        "items": items,
        "latency_ms": latency_ms,
        "concurrency": concurrency,
        "ideal_s": round(items * latency_ms / 1000 / concurrency, 3),
        "baseline_s": round(median(baseline), 3),
        "platform_s": round(median(platform_s), 3),
        "seed_s": round(items * (latency_ms / 1000 + SEED_PAUSE_S), 1),
        "ratio_vs_baseline": round(median([p / b for p, b in zip(platform_s, baseline, strict=True)]), 3),
        # The same batch with its end waited for (`waitSeconds`), run after the polled one in each round.
        "platform_wait_s": round(median(waited), 3) if waited else None,
        "ratio_wait_vs_baseline": (
            round(median([w / b for w, b in zip(waited, baseline, strict=True)]), 3) if waited else None
        ),
        "overhead_ms_per_item": round(
            median([(p - b) / items * 1000 for p, b in zip(platform_s, baseline, strict=True)]), 3
        ),
        "first_result_s": round(median([run["first_result_s"] for run in runs]), 3),
        "submit_ms": round(median([run["submit_s"] for run in runs]) * 1000, 1),
        "gateway_peak_rss_mb": round(max(run["gateway_peak_rss_mb"] for run in runs), 1),
        "firestore_documents_per_1000": round(median([run["documents_per_1000"] for run in runs]), 1),
        "firestore_writes_per_1000": round(median([run["writes_per_1000"] for run in runs]), 1),
        "firestore_kb_per_1000": round(median([run["bytes_per_1000"] for run in runs]) / 1024, 1),
        "rounds": [{name: round(value, 3) for name, value in run.items()} for run in runs],
    }


def _machine() -> dict[str, Any]:
    import platform as py_platform

    return {"cpus": os.cpu_count(), "python": py_platform.python_version(), "system": py_platform.platform()}


def _print_table(rows: list[dict[str, Any]], submit: dict[str, float], resources: dict[str, Any]) -> None:
    header = ["items", "ideal_s", "baseline_s", "platform_s", "ratio", "wait_s", "ratio_wait", "ovh_ms/item",
              "first_s", "seed_s", "submit_ms", "rss_mb", "docs/1k", "writes/1k", "kb/1k"]  # fmt: skip
    _out(" ".join(f"{h:>11}" for h in header))
    for r in rows:
        values = [r["items"], r["ideal_s"], r["baseline_s"], r["platform_s"], r["ratio_vs_baseline"],
                  r["platform_wait_s"] or "-", r["ratio_wait_vs_baseline"] or "-",
                  r["overhead_ms_per_item"], r["first_result_s"], r["seed_s"], r["submit_ms"],
                  r["gateway_peak_rss_mb"], r["firestore_documents_per_1000"],
                  r["firestore_writes_per_1000"], r["firestore_kb_per_1000"]]  # fmt: skip
        _out(" ".join(f"{v:>11}" for v in values))
    _out(f"submit latency (100 requests, no wait): p50 {submit['p50_ms']} ms, p99 {submit['p99_ms']} ms")
    _out(f"gateway peak RSS: {resources['gateway_peak_rss_mb']} MB; "
         f"CPU s per 1,000 items: {resources['cpu_s_per_1000_items']}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
