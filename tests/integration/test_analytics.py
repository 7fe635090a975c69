"""Usage analytics against the Firestore and Storage emulators: exact sums and percentiles from rollups and
raw records, tenant isolation, a double roll, reset, retention and a multi-part export."""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import random
from collections.abc import Coroutine
from typing import Any, TypeVar

import httpx
import pytest
from google.cloud.firestore_v1.base_query import FieldFilter

from shared import runtime
from shared.adapters.firestore_store import USAGE_EVENTS, add_usage
from shared.adapters.usage_tail import USAGE_TAIL
from shared.app import platform
from shared.emulator_config import EmulatorConfig
from shared.models.auth import Principal, Role
from shared.models.usage import UsageEvent, UsageRecord
from shared.ports import ALL_TENANTS
from shared.services import analytics
from shared.services.batches import CallerInfo
from shared.services.usage_export import ExportFormat, export
from shared.services.usage_rollups import MINUTE, floor, roll_range

T = TypeVar("T")
RETENTION = dt.timedelta(days=30)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return runtime.run(coroutine)


def make_event(*, tenant: str, model: str, at: dt.datetime, latency: int, n: int, failed: bool) -> UsageEvent:
    return UsageEvent(
        event_id=f"job-{tenant}-{n}-1-1",
        tenant=tenant,
        model=model,
        endpoint=random.choice(["generate", "analyze", "embeddings"]),
        source="batch:generate",
        job_id=f"job-{tenant}",
        latency_ms=latency,
        input_tokens=100 + n % 7,
        output_tokens=0 if failed else 20 + n % 5,
        cached_tokens=10 if n % 4 == 0 else 0,
        total_tokens=120,
        cost_usd=0.0001 * (n % 3),
        cache_hit=n % 4 == 0,
        outcome="error:429" if failed else "ok",
        at=at,
    )


def write_records(db: Any, events: list[UsageEvent], *, per_record: int = 7) -> None:
    """Usage records as the engine writes them (the adapter's own writes: the record and its tail entry), a
    few events each."""
    batch = db.batch()
    for _, group in _records_of(events, per_record):
        at = max(e.at for e in group)
        record = UsageRecord(
            job_id=group[0].job_id,
            tenant=group[0].tenant,
            source="batch:generate",
            calls=len(group),
            events=group,
            at=at,
            expire_at=at + RETENTION,
        )
        add_usage(db=db, commit=batch, record=record)
    batch.commit()


def _records_of(events: list[UsageEvent], per_record: int) -> list[tuple[int, list[UsageEvent]]]:
    """Events grouped into records of one tenant each, `per_record` events at most."""
    groups = []
    for tenant in dict.fromkeys(e.tenant for e in events):
        own = [e for e in events if e.tenant == tenant]
        groups += [(first, own[first : first + per_record]) for first in range(0, len(own), per_record)]
    return groups


def crafted(tenant: str, model: str, start: dt.datetime, minutes: int, count: int) -> list[UsageEvent]:
    """`count` calls spread over `minutes` minutes from `start`, grouped by minute so each record's time is
    its last call's."""
    rng = random.Random(hash((tenant, model)) & 0xFFFF)
    events = []
    for n in range(count):
        at = start + dt.timedelta(seconds=rng.uniform(0, minutes * 60 - 1))
        latency = int(rng.lognormvariate(6, 1))
        events.append(make_event(tenant=tenant, model=model, at=at, latency=latency, n=n, failed=n % 10 == 3))
    return sorted(events, key=lambda e: floor(e.at, MINUTE))


def exact_view(events: list[UsageEvent]) -> dict[str, Any]:
    latencies = sorted(e.latency_ms for e in events)

    def nearest(q: float) -> int:
        return latencies[max(1, math.ceil(q * len(latencies))) - 1]

    ok = sum(e.outcome == "ok" for e in events)
    return {
        "total": len(events),
        "successful": ok,
        "inputTokens": sum(e.input_tokens for e in events),
        "outputTokens": sum(e.output_tokens for e in events),
        "hits": sum(e.cache_hit for e in events),
        "cost": sum(e.cost_usd for e in events),
        "average": sum(latencies) / len(latencies),
        "p50": nearest(0.5),
        "p95": nearest(0.95),
        "p99": nearest(0.99),
    }


def assert_matches(metrics: dict[str, Any], events: list[UsageEvent]) -> None:
    want = exact_view(events)
    requests, usage = metrics["requests"], metrics["usage"]
    assert requests["total"] == want["total"]
    assert requests["successful"] == want["successful"]
    assert requests["failed"] == want["total"] - want["successful"]
    assert usage["inputTokens"] == want["inputTokens"]
    assert usage["outputTokens"] == want["outputTokens"]
    assert usage["totalTokens"] == want["inputTokens"] + want["outputTokens"]
    assert usage["estimatedCost"] == pytest.approx(want["cost"], abs=1e-6)
    assert metrics["cache"]["hits"] == want["hits"]
    assert metrics["performance"]["averageResponseTime"] == pytest.approx(want["average"], abs=0.05)
    for name in ("p50", "p95", "p99"):
        got = metrics["performance"][f"{name}ResponseTime"]
        assert abs(got - want[name]) <= 0.01 * want[name], (name, got, want[name])


@pytest.fixture
def base_time() -> dt.datetime:
    """A past hour, far enough back that the scheduled roller has rolled it, with random minutes so tests
    rarely share a minute."""
    now = dt.datetime.now(dt.UTC)
    return floor(now - dt.timedelta(days=3, minutes=random.randint(0, 2000)), dt.timedelta(hours=1))


def user(tenant: str) -> Principal:
    return Principal(tenant=tenant, role=Role.USER)


ADMIN = Principal(tenant="ops", role=Role.ADMIN)


def test_metrics_from_rollups_are_exact_and_isolated_per_tenant(
    local_cloud: EmulatorConfig, firestore_db: Any, unique: str, base_time: dt.datetime
) -> None:
    usage = platform().usage
    model = f"model-{unique}"
    mine = crafted(f"a-{unique}", model, base_time + dt.timedelta(minutes=50), 140, 600)
    theirs = crafted(f"b-{unique}", model, base_time + dt.timedelta(minutes=55), 30, 150)
    write_records(firestore_db, mine + theirs)
    span_end = base_time + dt.timedelta(hours=4)
    run(roll_range(usage=usage, start=base_time, end=span_end, retention=RETENTION))
    run(roll_range(usage=usage, start=base_time, end=span_end, retention=RETENTION))  # a double firing

    whole = analytics.Window(start=base_time, end=span_end)
    view = run(analytics.metrics(usage=usage, principal=user(f"a-{unique}"), window=whole))
    assert_matches(view["metrics"], mine)
    assert view["metrics"]["requests"]["byModel"] == {model: 600}
    assert view["window"]["from"].endswith("Z")

    # A window with ragged edges (mid-minute): raw records for the partial minutes, rollups in between.
    ragged = analytics.Window(
        start=base_time + dt.timedelta(minutes=61, seconds=30),
        end=base_time + dt.timedelta(minutes=170, seconds=10),
    )
    record_times = _record_times(mine)
    expected = [e for e in mine if ragged.start <= record_times[e.event_id] < ragged.end]
    view = run(analytics.metrics(usage=usage, principal=user(f"a-{unique}"), window=ragged))
    assert_matches(view["metrics"], expected)

    admin_one = run(analytics.metrics(usage=usage, principal=ADMIN, window=whole, tenant=f"b-{unique}"))
    assert_matches(admin_one["metrics"], theirs)
    admin_all = run(analytics.metrics(usage=usage, principal=ADMIN, window=whole, model=model))
    assert_matches(admin_all["metrics"], mine + theirs)
    with pytest.raises(analytics.Forbidden):
        run(analytics.metrics(usage=usage, principal=user(f"a-{unique}"), window=whole, tenant=f"b-{unique}"))

    endpoint = "analyze"
    only = run(analytics.metrics(usage=usage, principal=user(f"a-{unique}"), window=whole, endpoint=endpoint))
    assert only["metrics"]["requests"]["total"] == sum(e.endpoint == endpoint for e in mine)


def _record_times(events: list[UsageEvent], per_record: int = 7) -> dict[str, dt.datetime]:
    """When each event counts: its record's time (the record's last call), as write_records groups them."""
    times = {}
    for _, group in _records_of(events, per_record):
        for e in group:
            times[e.event_id] = max(x.at for x in group)
    return times


def test_recent_calls_are_read_raw_after_the_watermark(
    local_cloud: EmulatorConfig, firestore_db: Any, unique: str
) -> None:
    usage = platform().usage
    now = dt.datetime.now(dt.UTC)
    events = crafted(f"r-{unique}", "m", now - dt.timedelta(seconds=50), 1, 40)
    write_records(firestore_db, events)
    window = analytics.Window(start=now - dt.timedelta(minutes=5), end=now + dt.timedelta(minutes=1))
    view = run(analytics.metrics(usage=usage, principal=user(f"r-{unique}"), window=window))
    assert_matches(view["metrics"], events)


def test_the_usage_tail_holds_exactly_the_records_summaries_by_minute(
    local_cloud: EmulatorConfig, firestore_db: Any, unique: str, base_time: dt.datetime
) -> None:
    usage = platform().usage
    mine = crafted(f"t-{unique}", "m", base_time + dt.timedelta(minutes=3), 40, 300)
    theirs = crafted(f"u-{unique}", "m", base_time + dt.timedelta(minutes=3), 40, 100)
    write_records(firestore_db, mine + theirs)
    spans = [
        (base_time + dt.timedelta(minutes=4, seconds=20), base_time + dt.timedelta(minutes=9)),
        (base_time + dt.timedelta(minutes=30), base_time + dt.timedelta(minutes=31, seconds=30)),
    ]

    by_id = run(usage.tail_summaries(tenant=f"t-{unique}", spans=spans))
    by_query = [s for a, b in spans for s in run(usage.usage_summaries(tenant=f"t-{unique}", start=a, end=b))]

    def key(summary: Any) -> tuple[dt.datetime, int]:
        return summary.at, summary.stats.total().calls

    assert by_id and sorted(map(key, by_id)) == sorted(map(key, by_query))
    assert {s.tenant for s in by_id} == {f"t-{unique}"}
    times = _record_times(mine)
    expected = [e for e in mine if any(a <= times[e.event_id] < b for a, b in spans)]
    assert sum(s.stats.total().calls for s in by_id) == len(expected)


def test_a_tenants_reset_removes_its_records_and_its_share_of_the_all_tenant_rollups(
    local_cloud: EmulatorConfig, firestore_db: Any, unique: str, base_time: dt.datetime
) -> None:
    wired = platform()
    usage = wired.usage
    model = f"model-{unique}"
    gone = crafted(f"g-{unique}", model, base_time + dt.timedelta(minutes=5), 20, 80)
    kept = crafted(f"k-{unique}", model, base_time + dt.timedelta(minutes=5), 20, 50)
    write_records(firestore_db, gone + kept)
    now = dt.datetime.now(dt.UTC)
    recent_gone = crafted(f"g-{unique}", model, now - dt.timedelta(seconds=50), 1, 15)
    recent_kept = crafted(f"k-{unique}", model, now - dt.timedelta(seconds=50), 1, 10)
    write_records(firestore_db, recent_gone + recent_kept)
    end = base_time + dt.timedelta(hours=1)
    run(roll_range(usage=usage, start=base_time, end=end, retention=RETENTION))
    window = analytics.Window(start=base_time, end=end)
    caller = CallerInfo(remote_addr="127.0.0.1", user_agent="test")

    with pytest.raises(analytics.Forbidden):
        run(
            analytics.reset(
                engine=wired.engine, usage=usage, principal=user(f"g-{unique}"), tenant=None, caller=caller
            )
        )
    answer = run(
        analytics.reset(
            engine=wired.engine, usage=usage, principal=ADMIN, tenant=f"g-{unique}", caller=caller
        )
    )
    assert answer["removed"]["calls"] == 80 + 15
    assert answer["removed"]["records"] == math.ceil(80 / 7) + math.ceil(15 / 7)
    assert answer["removed"]["rollups"] > 0

    empty = run(analytics.metrics(usage=usage, principal=user(f"g-{unique}"), window=window))
    assert empty["metrics"]["requests"]["total"] == 0
    everyone = run(analytics.metrics(usage=usage, principal=ADMIN, window=window, model=model))
    assert_matches(everyone["metrics"], kept)
    # The recent calls, read from the usage tail: the tenant's entries left it, the other tenant's stayed.
    recent = analytics.Window(start=now - dt.timedelta(minutes=5), end=now + dt.timedelta(minutes=1))
    gone_recent = run(analytics.metrics(usage=usage, principal=user(f"g-{unique}"), window=recent))
    assert gone_recent["metrics"]["requests"]["total"] == 0
    kept_recent = run(analytics.metrics(usage=usage, principal=user(f"k-{unique}"), window=recent))
    assert_matches(kept_recent["metrics"], recent_kept)
    assert not list(
        firestore_db.collection(USAGE_TAIL)
        .where(filter=FieldFilter("tenants", "array_contains", f"g-{unique}"))
        .stream()
    )
    hour = run(usage.rollups(scope=ALL_TENANTS, grain="hour", start=base_time, end=end))
    assert hour[0].stats.select(model=model).total().calls == 50
    audit = list(
        firestore_db.collection("audit_log")
        .where(filter=FieldFilter("target", "==", f"usage:g-{unique}"))
        .stream()
    )
    assert len(audit) == 1
    again = run(
        analytics.reset(
            engine=wired.engine, usage=usage, principal=ADMIN, tenant=f"g-{unique}", caller=caller
        )
    )
    assert again["removed"] == {"records": 0, "calls": 0, "rollups": 0}


def test_records_and_rollups_past_retention_are_deleted(
    local_cloud: EmulatorConfig, firestore_db: Any, unique: str, base_time: dt.datetime
) -> None:
    usage = platform().usage
    events = crafted(f"x-{unique}", "m", base_time, 5, 20)
    write_records(firestore_db, events)
    run(roll_range(usage=usage, start=base_time, end=base_time + dt.timedelta(hours=1), retention=RETENTION))
    window = analytics.Window(start=base_time, end=base_time + dt.timedelta(hours=1))
    assert (
        run(analytics.metrics(usage=usage, principal=user(f"x-{unique}"), window=window))["metrics"][
            "requests"
        ]["total"]
        == 20
    )

    later = base_time + RETENTION + dt.timedelta(hours=2)
    while run(usage.delete_expired(now=later, limit=500)):
        pass
    left = list(
        firestore_db.collection(USAGE_EVENTS)
        .where(filter=FieldFilter("tenant", "==", f"x-{unique}"))
        .stream()
    )
    rollups = list(
        firestore_db.collection("usage_rollups")
        .where(filter=FieldFilter("scope", "==", f"x-{unique}"))
        .stream()
    )
    tail = list(
        firestore_db.collection(USAGE_TAIL)
        .where(filter=FieldFilter("tenants", "array_contains", f"x-{unique}"))
        .stream()
    )
    assert left == [] and rollups == [] and tail == []
    assert (
        run(analytics.metrics(usage=usage, principal=user(f"x-{unique}"), window=window))["metrics"][
            "requests"
        ]["total"]
        == 0
    )


@pytest.mark.parametrize("fmt", [ExportFormat.CSV, ExportFormat.JSON])
def test_an_export_larger_than_a_part_is_split_into_listed_parts(
    local_cloud: EmulatorConfig, firestore_db: Any, unique: str, base_time: dt.datetime, fmt: ExportFormat
) -> None:
    wired = platform()
    tenant = f"e-{unique}"
    events = crafted(tenant, 'm,"quoted"', base_time, 30, 300)
    write_records(firestore_db, events)
    answer = run(
        export(
            usage=wired.usage,
            blobs=wired.engine.blobs,
            tenant=tenant,
            start=base_time,
            end=base_time + dt.timedelta(hours=1),
            fmt=fmt,
            max_part_bytes=20_000,
            prefix="exports",
            url_ttl=dt.timedelta(minutes=5),
            now=dt.datetime.now(dt.UTC),
        )
    )
    assert answer["rows"] == 300
    assert len(answer["parts"]) > 1
    assert answer["url"] == answer["parts"][0]["url"]
    rows: list[dict[str, Any]] = []
    for part in answer["parts"]:
        body = httpx.get(part["url"], timeout=30).raise_for_status().content
        assert len(body) == part["bytes"] <= 20_000
        if fmt is ExportFormat.CSV:
            parsed = list(csv.DictReader(io.StringIO(body.decode())))
        else:
            import json

            parsed = json.loads(body)
        assert len(parsed) == part["rows"]
        rows.extend(parsed)
    assert sorted(r["eventId"] for r in rows) == sorted(e.event_id for e in events)
    assert {r["model"] for r in rows} == {'m,"quoted"'}
    assert sum(int(r["inputTokens"]) for r in rows) == sum(e.input_tokens for e in events)
