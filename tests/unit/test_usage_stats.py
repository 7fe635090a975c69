"""Mergeable usage statistics, window decomposition and the insight rules, on crafted data."""

from __future__ import annotations

import datetime as dt
import math
import random

from shared.models.usage import UsageEvent
from shared.models.usage_stats import Cell, UsageStats, percentile, summarize
from shared.services import insights
from shared.services.usage_rollups import pieces

T0 = dt.datetime(2026, 11, 20, 13, 0, tzinfo=dt.UTC)


def event(
    *, latency: int, outcome: str = "ok", item: int = 0, attempt: int = 1, model: str = "m", cached: int = 0
) -> UsageEvent:
    return UsageEvent(
        event_id=f"job-x-{item}-{attempt}-1",
        tenant="t",
        model=model,
        endpoint="generate",
        source="batch:generate",
        job_id="job-x",
        latency_ms=latency,
        input_tokens=10,
        output_tokens=5,
        cached_tokens=cached,
        total_tokens=15,
        cost_usd=0.001,
        cache_hit=cached > 0,
        outcome=outcome,
        at=T0,
    )


def exact(values: list[int], q: float) -> int:
    return sorted(values)[max(1, math.ceil(q * len(values))) - 1]


def test_merged_percentiles_are_within_one_percent_of_the_exact_ones() -> None:
    rng = random.Random(7)
    latencies = [int(rng.lognormvariate(6.5, 1.2)) for _ in range(20_000)] + [0, 1, 2, 3]
    parts = [summarize(event(latency=v) for v in latencies[i : i + 37]) for i in range(0, len(latencies), 37)]
    merged = UsageStats.merged(UsageStats.load(p.dump()) for p in parts).total()
    assert merged.calls == len(latencies)
    assert merged.latency_sum_ms == sum(latencies)
    for q in (0.5, 0.9, 0.95, 0.99, 0.999, 1.0):
        estimate, truth = percentile(merged.latency, q), exact(latencies, q)
        assert estimate is not None
        assert abs(round(estimate) - truth) <= 0.01 * truth, (q, estimate, truth)


def test_small_integer_latencies_come_back_exact() -> None:
    cell = summarize(event(latency=v) for v in [1, 2, 3, 5, 8, 13, 21, 34, 55, 89]).total()
    assert [round(percentile(cell.latency, q) or 0) for q in (0.1, 0.5, 0.9, 1.0)] == [1, 8, 55, 89]


def test_subtracting_a_part_leaves_the_rest_exactly() -> None:
    a = summarize([event(latency=100), event(latency=200, outcome="error:429")])
    b = summarize([event(latency=300, cached=4)])
    total = UsageStats.merged([a, b]).merge(a, sign=-1)
    assert total.dump() == UsageStats.merged([b]).dump()
    assert UsageStats.merged([a]).merge(a, sign=-1).cells == {}


def test_failures_absorbed_by_a_later_successful_attempt_are_counted() -> None:
    cell = summarize(
        [
            event(latency=10, outcome="error:429", item=1, attempt=1),
            event(latency=10, outcome="error:503", item=1, attempt=2),
            event(latency=10, item=1, attempt=3),
            event(latency=10, outcome="error:429", item=2, attempt=1),
        ]
    ).total()
    assert (cell.calls, cell.failed, cell.absorbed) == (4, 3, 2)
    assert cell.errors == {"error:429": 2, "error:503": 1}


def test_a_window_is_split_into_the_fewest_aligned_periods() -> None:
    start = dt.datetime(2026, 11, 1, 22, 58, tzinfo=dt.UTC)
    end = dt.datetime(2026, 11, 4, 1, 2, tzinfo=dt.UTC)
    got = list(pieces(start, end))
    grains = [grain for grain, _ in got]
    assert grains == ["minute"] * 2 + ["hour"] + ["day"] * 2 + ["hour"] + ["minute"] * 2
    assert got[0][1] == start and got[-1][1] == end - dt.timedelta(minutes=1)
    assert all(grain != "day" for grain, _ in pieces(start, end, largest="hour"))


def test_performance_rule_thresholds() -> None:
    good = summarize(event(latency=1000, cached=1) for _ in range(100)).total()
    assert insights.performance(good)["status"] == "good"
    slow = summarize(event(latency=6000, cached=1) for _ in range(100)).total()
    view = insights.performance(slow)
    assert view["status"] == "degraded"
    assert any("p95ResponseTime" in r and "> 5000 ms" in r for r in view["recommendations"])
    failing = summarize(
        [event(latency=100, cached=1) for _ in range(70)] + [event(latency=100, outcome="error:500")] * 30
    ).total()
    assert insights.performance(failing)["status"] == "critical"
    no_cache = summarize(event(latency=100) for _ in range(50)).total()
    assert any("hitRate 0.0% < 20.0%" in r for r in insights.performance(no_cache)["recommendations"])
    assert insights.performance(Cell())["status"] == "no_data"


def test_trend_compares_with_the_previous_window() -> None:
    assert insights.trend(111, 100) == "increasing"
    assert insights.trend(110, 100) == "stable"
    assert insights.trend(89, 100) == "decreasing"
    assert insights.trend(5, 0) == "increasing"
    assert insights.trend(0, 0) == "stable"


def test_peak_hours_are_hours_at_one_and_a_half_times_the_mean() -> None:
    calls = {hour: 10 for hour in range(24)} | {14: 40, 15: 35, 20: 30, 21: 30, 3: 16}
    assert insights.peak_hours(calls) == ["14:00-16:00", "20:00-22:00"]
    assert insights.peak_hours({}) == []


def test_errors_rule_names_the_most_common_error_and_what_retries_absorbed() -> None:
    cell = summarize(
        [event(latency=10, outcome="error:429", item=i, attempt=1) for i in range(3)]
        + [event(latency=10, item=i, attempt=2) for i in range(2)]
        + [event(latency=10, item=i) for i in range(10, 25)]
    ).total()
    view = insights.errors_view(cell)
    assert view["mostCommon"] == "Rate limit exceeded"
    assert view["frequency"] == "15%"
    assert view["retries"] == {"failedCalls": 3, "absorbedByRetries": 2, "absorbedShare": 66.67}
    assert any("backoff" in s for s in view["suggestions"])


def test_cost_rule_reports_cache_savings_and_premium_share() -> None:
    stats = UsageStats()
    stats.cell("gemini-2.5-pro", "generate").merge(Cell(calls=1, cost_usd=3.0, cached_tokens=1_000_000))
    stats.cell("gemini-2.5-flash", "generate").merge(Cell(calls=1, cost_usd=1.0, batch_mode_cost_usd=1.0))
    advice, savings = insights.cost_view(stats)
    assert savings == {"cacheUsd": 0.9375, "batchModeUsd": 1.0, "totalUsd": 1.9375}
    assert any("premium = 75.0% del coste" in line for line in advice)
