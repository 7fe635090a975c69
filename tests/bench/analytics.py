"""Benchmark section `analytics` (`make bench BENCH_ARGS="--only analytics"`).

Loads N usage events (1,000,000 by default) spread over D days (30) into the local cloud as the engine
stores them (usage records of 100 calls with their usage-tail entries, by the adapter's own `add_usage`,
written in bulk), rolls them with the roller's own code (`roll`, as the scheduled function runs it, from the
start of the data to now), then measures in the same run:
  metrics_api   GET /analytics/metrics for the whole D days, through the gateway (one tenant, and an admin
                over all tenants; a window ending now, and one ending at the watermark): p50 / p99 over Q
                requests
  naive_scan    the same figures computed by reading every usage record of the window with its events
                (what a read without rollups costs): per scan, and whether both agree (sums exactly,
                percentiles within 1 %)
  write_overhead what the analytics add when the engine records a 1,000-request batch: CPU time and bytes of
                the per-record summary, and the time of its 20 results commits with and without the tail entry
"""

from __future__ import annotations

import datetime as dt
import math
import random
import statistics
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from shared import runtime
from shared.adapters.firestore_store import _EVENTS, USAGE_EVENTS, _dump_usage, add_usage
from shared.app import platform
from shared.models.auth import Role
from shared.models.usage import UsageEvent, UsageRecord
from shared.models.usage_stats import summarize
from shared.services.auth import create_api_key
from shared.services.usage_rollups import DAY, MINUTE, floor, roll

MODELS = ["gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.5-flash-lite"]
ENDPOINTS = ["generate", "analyze", "embeddings"]
PER_RECORD = 100
RECORDS_PER_COMMIT = 100  # about 2.5 MB a commit, under Firestore's 10 MiB request limit
TENANTS = 4


def _records(*, run_id: str, events: int, days: int, now: dt.datetime) -> list[UsageRecord]:
    rng = random.Random(42)
    start = now - dt.timedelta(days=days)
    span_s = (now - dt.timedelta(minutes=5) - start).total_seconds()
    records = []
    for number in range(events // PER_RECORD):
        tenant = f"abench-{run_id}-{number % TENANTS}"
        at = start + dt.timedelta(seconds=rng.uniform(0, span_s))
        job = f"job{number}"
        group = []
        for k in range(PER_RECORD):
            failed = rng.random() < 0.02
            input_tokens, output_tokens = rng.randint(20, 2000), 0 if failed else rng.randint(10, 800)
            cached = input_tokens // 2 if rng.random() < 0.2 else 0
            group.append(
                UsageEvent.model_construct(
                    event_id=f"{job}-{k}-1-1",
                    tenant=tenant,
                    model=rng.choice(MODELS),
                    endpoint=rng.choice(ENDPOINTS),
                    method="generateContent",
                    source="batch:generate",
                    job_id=job,
                    latency_ms=int(rng.lognormvariate(6.5, 0.8)),
                    input_tokens=input_tokens,
                    output_tokens=output_tokens,
                    cached_tokens=cached,
                    total_tokens=input_tokens + output_tokens,
                    cost_usd=(input_tokens * 0.3 + output_tokens * 2.5) / 1e6,
                    cache_hit=cached > 0,
                    outcome="error:429" if failed else "ok",
                    at=at - dt.timedelta(milliseconds=PER_RECORD - k),
                )
            )
        records.append(
            UsageRecord.model_construct(
                job_id=job,
                tenant=tenant,
                source="batch:generate",
                calls=len(group),
                events=group,
                at=at,
                expire_at=at + dt.timedelta(days=30),
            )  # fmt: skip
        )
    return records


def _load(records: list[UsageRecord]) -> float:
    from google.cloud import firestore

    db = firestore.Client(project=platform().settings.project_id)
    started = time.perf_counter()

    def commit(part: list[UsageRecord]) -> None:
        batch = db.batch()
        for record in part:
            add_usage(db=db, commit=batch, record=record)
        batch.commit()

    parts = [records[i : i + RECORDS_PER_COMMIT] for i in range(0, len(records), RECORDS_PER_COMMIT)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(commit, parts))
    return time.perf_counter() - started


def _roll_all(*, start: dt.datetime) -> tuple[float, int]:
    """Roll from the start of the data to now with the scheduled function's own code."""
    wired = platform()
    settings = wired.settings
    lag = dt.timedelta(seconds=settings.analytics_rollup_lag_seconds)
    retention = dt.timedelta(days=settings.analytics_retention_days)
    began = time.perf_counter()
    runtime.run(wired.usage.set_watermark(floor(start, DAY)))
    runs = 0
    while True:
        runs += 1
        now = wired.engine.clock()
        result = runtime.run(roll(usage=wired.usage, now=now, lag=lag, retention=retention))
        if result["rolledTo"] == floor(now - lag, MINUTE).isoformat():
            return time.perf_counter() - began, runs


def _naive(*, tenant: str | None, start: dt.datetime, end: dt.datetime) -> tuple[float, dict[str, Any]]:
    """Every record of the window with its events, decoded, and the metrics computed from the events."""
    usage = platform().usage

    async def scan() -> dict[str, Any]:
        latencies: list[int] = []
        calls = failed = tokens = 0
        async for record in usage.usage_records(tenant=tenant, start=start, end=end):
            for event in record.events:
                calls += 1
                failed += event.outcome != "ok"
                tokens += event.input_tokens + event.output_tokens
                latencies.append(event.latency_ms)
        latencies.sort()

        def nearest(q: float) -> int:
            return latencies[max(1, math.ceil(q * len(latencies))) - 1]

        return {
            "total": calls,
            "failed": failed,
            "totalTokens": tokens,
            "p95": nearest(0.95),
            "p99": nearest(0.99),
        }

    began = time.perf_counter()
    figures = runtime.run(scan())
    return time.perf_counter() - began, figures


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p99_ms": round(ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)] * 1000, 1),
    }


def _write_overhead() -> dict[str, float]:
    """What the usage analytics cost the engine for a 1,000-request batch (committed as 20 records of 50
    calls, one a second per lane): CPU and bytes of the per-record summary against encoding the events, and
    the tail entry each results commit adds (one more document in the same commit, no extra round trip): the
    time of those 20 commits against the emulator with and without it, alternated within this run."""
    from google.cloud import firestore

    now = dt.datetime.now(dt.UTC)
    records = _records(run_id="overhead", events=1000, days=1, now=now)
    split = [
        record.model_copy(update={"events": record.events[i : i + 50], "calls": 50})
        for record in records
        for i in range(0, len(record.events), 50)
    ]
    groups = [record.events for record in split]
    summary_s = min(_timed(lambda: [summarize(events).dump() for events in groups]) for _ in range(5))
    events_s = min(_timed(lambda: [_EVENTS.dump_json(events) for events in groups]) for _ in range(5))
    db = firestore.Client(project=platform().settings.project_id)

    def commits(*, with_tail: bool) -> None:
        for record in split:
            commit = db.batch()
            if with_tail:
                add_usage(db=db, commit=commit, record=record)
            else:
                commit.create(db.collection(USAGE_EVENTS).document(), _dump_usage(record))
            commit.commit()

    rounds = [
        (_timed(lambda: commits(with_tail=False)), _timed(lambda: commits(with_tail=True))) for _ in range(5)
    ]
    record_only_s, with_tail_s = min(r[0] for r in rounds), min(r[1] for r in rounds)
    return {
        "summary_cpu_ms_per_1000_calls": round(summary_s * 1000, 2),
        "events_blob_cpu_ms_per_1000_calls": round(events_s * 1000, 2),
        "summary_bytes_per_record": round(statistics.mean(len(summarize(e).dump()) for e in groups)),
        "events_bytes_per_record": round(statistics.mean(len(_EVENTS.dump_json(e)) for e in groups)),
        "commits_per_1000_calls": len(split),
        "extra_documents_per_commit": 1,
        "extra_round_trips": 0,
        "commits_ms_record_only": round(record_only_s * 1000, 1),
        "commits_ms_with_tail": round(with_tail_s * 1000, 1),
    }


def _timed(work: Any) -> float:
    began = time.perf_counter()
    work()
    return time.perf_counter() - began


def bench_analytics(*, gateway_url: str, events: int, days: int, queries: int, scans: int) -> dict[str, Any]:
    wired = platform()
    run_id = uuid.uuid4().hex[:6]
    now = wired.engine.clock()
    built = time.perf_counter()
    records = _records(run_id=run_id, events=events, days=days, now=now)
    build_s = time.perf_counter() - built
    load_s = _load(records)
    roll_s, roll_runs = _roll_all(start=now - dt.timedelta(days=days))
    del records

    tenant = f"abench-{run_id}-0"
    keys = {
        "tenant": runtime.run(create_api_key(keys=wired.keys, tenant=tenant, role=Role.USER, now=now,
                                             rate_limit_per_minute=1_000_000)),
        "admin": runtime.run(create_api_key(keys=wired.keys, tenant=f"abench-{run_id}-ops", role=Role.ADMIN,
                                            now=now, rate_limit_per_minute=1_000_000)),
    }  # fmt: skip
    end = wired.engine.clock()
    start = end - dt.timedelta(days=days)
    watermark = runtime.run(wired.usage.get_watermark())
    assert watermark is not None
    # A window ending now reads the records after the watermark with a query; one ending at the watermark,
    # from a whole minute, reads rollups only (lookups by id).
    windows = {
        "now": {"from": start.isoformat(), "to": end.isoformat()},
        "rolled": {"from": floor(start, MINUTE).isoformat(), "to": watermark.isoformat()},
    }
    api_figures: dict[str, Any] = {}
    answers: dict[str, Any] = {}
    for who, key in keys.items():
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=gateway_url, headers=headers, timeout=60) as api:
            for name, params in windows.items():
                api.get("/analytics/metrics", params=params).raise_for_status()  # warm
                samples = []
                for _ in range(queries):
                    began = time.perf_counter()
                    response = api.get("/analytics/metrics", params=params)
                    samples.append(time.perf_counter() - began)
                    response.raise_for_status()
                answers[f"{who}_{name}"] = response.json()["metrics"]
                api_figures[f"{who}_{name}"] = _percentiles(samples)
    naive_runs = [_naive(tenant=tenant, start=start, end=end) for _ in range(scans)]
    naive = naive_runs[-1][1]
    got = answers["tenant_now"]
    agree = (
        got["requests"]["total"] == naive["total"]
        and got["requests"]["failed"] == naive["failed"]
        and got["usage"]["totalTokens"] == naive["totalTokens"]
        and abs(got["performance"]["p95ResponseTime"] - naive["p95"]) <= 0.01 * naive["p95"]
        and abs(got["performance"]["p99ResponseTime"] - naive["p99"]) <= 0.01 * naive["p99"]
    )
    return {
        "events": events,
        "days": days,
        "records": events // PER_RECORD,
        "tenants": TENANTS,
        "build_s": round(build_s, 2),
        "load_s": round(load_s, 2),
        "roll_s": round(roll_s, 2),
        "roll_runs": roll_runs,
        "metrics_api": api_figures,
        "tenant_calls_in_window": got["requests"]["total"],
        "naive_scan_s": [round(seconds, 2) for seconds, _ in naive_runs],
        "naive_agrees": agree,
        "naive": naive,
        "rollups": {k: got["performance"][k] for k in ("p95ResponseTime", "p99ResponseTime")},
        "write_overhead": _write_overhead(),
    }
