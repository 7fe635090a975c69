"""Usage analytics: metrics over a window, realtime figures, export and reset.

A window is answered from rollups (whole days, hours and minutes before the roller's watermark) and the usage
records' summaries only where no rollup exists yet (after the watermark, and a window's partial first
minute), looked up by minute in the usage tail: a 30-day window merges a few dozen documents' statistics and
reads no query, never a month of events.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from shared.errors import Forbidden, InvalidRequest
from shared.models.auth import AuditRecord, Principal
from shared.models.usage_stats import Cell, UsageStats, percentile
from shared.ports import ALL_TENANTS, UsageStore
from shared.services.batches import CallerInfo
from shared.services.engine import Engine
from shared.services.status import ProgressCache, current_totals
from shared.services.usage_rollups import MINUTE, floor, pieces

DEFAULT_WINDOW = dt.timedelta(hours=24)
MAX_WINDOW = dt.timedelta(days=400)
REALTIME_WINDOWS = {"lastMinute": dt.timedelta(seconds=60), "last5Minutes": dt.timedelta(minutes=5)}
IN_FLIGHT_LIMIT = 50
# Raw spans up to this long are read by minute from the usage tail (32 lookups by id a minute); longer ones
# with a query, whose cost does not grow with the span.
TAIL_MAX_SPAN = dt.timedelta(minutes=30)


@dataclass(frozen=True)
class Window:
    start: dt.datetime
    end: dt.datetime

    def view(self) -> dict[str, str]:
        return {"from": _iso(self.start), "to": _iso(self.end)}


def _iso(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def parse_window(*, raw_from: str | None, raw_to: str | None, now: dt.datetime) -> Window:
    """`from` and `to` as RFC 3339 instants (default: the last 24 hours)."""
    end = _instant("to", raw_to) if raw_to else now
    start = _instant("from", raw_from) if raw_from else end - DEFAULT_WINDOW
    if start >= end:
        raise InvalidRequest(
            "from must be before to", details=[{"field": "from", "problem": "not before to"}]
        )
    if end - start > MAX_WINDOW:
        raise InvalidRequest(
            f"the window is longer than {MAX_WINDOW.days} days",
            details=[{"field": "from", "problem": "window too long"}],
        )
    return Window(start=start, end=end)


def _instant(name: str, raw: str) -> dt.datetime:
    try:
        at = dt.datetime.fromisoformat(raw)
    except ValueError as exc:
        raise InvalidRequest(
            f"{name} must be an RFC 3339 date-time", details=[{"field": name, "problem": "not RFC 3339"}]
        ) from exc
    if at.tzinfo is None:
        raise InvalidRequest(
            f"{name} needs a time zone (e.g. Z)", details=[{"field": name, "problem": "no time zone"}]
        )
    return at.astimezone(dt.UTC)


def scope_of(principal: Principal, tenant: str | None) -> str | None:
    """The tenant whose calls the caller sees (None: all tenants, for an admin)."""
    if principal.is_admin:
        return tenant or None
    if tenant and tenant != principal.tenant:
        raise Forbidden("only an admin may read another tenant's analytics")
    return principal.tenant


async def window_stats(
    *, usage: UsageStore, tenant: str | None, window: Window, largest: str = "day"
) -> list[tuple[dt.datetime, UsageStats]]:
    """The statistics of the window's calls, as (period start, stats) parts: rollups where the roller has
    been, raw records elsewhere."""
    watermark = await usage.get_watermark()
    rolled_from = floor(window.start + MINUTE - dt.timedelta(microseconds=1), MINUTE)  # ceil to the minute
    rolled_to = floor(min(window.end, watermark or window.start), MINUTE)
    reads: list[Any] = []
    raw: list[tuple[dt.datetime, dt.datetime]] = []
    if rolled_from < rolled_to:
        if window.start < rolled_from:
            raw.append((window.start, rolled_from))
        reads.append(
            _rolled(usage=usage, tenant=tenant, periods=list(pieces(rolled_from, rolled_to, largest=largest)))
        )
        if rolled_to < window.end:
            raw.append((rolled_to, window.end))
    else:
        raw.append((window.start, window.end))
    if raw:
        reads.append(_raw(usage=usage, tenant=tenant, spans=raw))
    parts = await asyncio.gather(*reads)
    return [part for group in parts for part in group]


async def _raw(
    *, usage: UsageStore, tenant: str | None, spans: list[tuple[dt.datetime, dt.datetime]]
) -> list[tuple[dt.datetime, UsageStats]]:
    # Short spans (the tail after the watermark, a partial minute) by minute from the usage tail; a long one
    # (the roller has fallen behind, or never ran) with a query on the records.
    short = [(start, end) for start, end in spans if end - start <= TAIL_MAX_SPAN]
    reads = [usage.tail_summaries(tenant=tenant, spans=short)] if short else []
    reads += [
        usage.usage_summaries(tenant=tenant, start=start, end=end)
        for start, end in spans
        if end - start > TAIL_MAX_SPAN
    ]
    found = await asyncio.gather(*reads)
    return [(s.at, s.stats) for summaries in found for s in summaries]


async def _rolled(
    *, usage: UsageStore, tenant: str | None, periods: list[tuple[str, dt.datetime]]
) -> list[tuple[dt.datetime, UsageStats]]:
    rollups = await usage.rollups_at(scope=tenant or ALL_TENANTS, periods=periods)
    return [(r.start, r.stats) for r in rollups]


def _pct(part: float, whole: float) -> float:
    return round(100 * part / whole, 2) if whole else 0.0


def _ms(value: float | None) -> int:
    return 0 if value is None else round(value)


def metrics_view(stats: UsageStats) -> dict[str, Any]:
    """The seed's `metrics` object."""
    total = stats.total()
    by_model: dict[str, int] = {}
    by_endpoint: dict[str, int] = {}
    for (model, endpoint), cell in stats:
        by_model[model] = by_model.get(model, 0) + cell.calls
        by_endpoint[endpoint] = by_endpoint.get(endpoint, 0) + cell.calls
    return {
        "requests": {
            "total": total.calls,
            "successful": total.ok,
            "failed": total.failed,
            "successRate": _pct(total.ok, total.calls),
            "byModel": by_model,
            "byEndpoint": by_endpoint,
        },
        "performance": {
            "averageResponseTime": round(total.latency_sum_ms / total.calls, 1) if total.calls else 0,
            "p50ResponseTime": _ms(percentile(total.latency, 0.50)),
            "p95ResponseTime": _ms(percentile(total.latency, 0.95)),
            "p99ResponseTime": _ms(percentile(total.latency, 0.99)),
        },
        "usage": {
            "totalTokens": total.input_tokens + total.output_tokens,
            "inputTokens": total.input_tokens,
            "outputTokens": total.output_tokens,
            "estimatedCost": round(total.cost_usd, 6),
        },
        "cache": {
            "hits": total.cache_hits,
            "misses": total.calls - total.cache_hits,
            "hitRate": _pct(total.cache_hits, total.calls),
        },
    }


async def metrics(
    *,
    usage: UsageStore,
    principal: Principal,
    window: Window,
    tenant: str | None = None,
    model: str | None = None,
    endpoint: str | None = None,
) -> dict[str, Any]:
    scope = scope_of(principal, tenant)
    parts = await window_stats(usage=usage, tenant=scope, window=window)
    stats = UsageStats.merged(stats for _, stats in parts).select(model=model, endpoint=endpoint)
    return {"metrics": metrics_view(stats), "window": window.view()}


def _rate_view(total: Cell, seconds: float) -> dict[str, Any]:
    return {
        "requests": total.calls,
        "callsPerSecond": round(total.calls / seconds, 3),
        "errorRate": _pct(total.failed, total.calls),
        "p95ResponseTime": _ms(percentile(total.latency, 0.95)),
        "tokensPerSecond": round((total.input_tokens + total.output_tokens) / seconds, 3),
    }


async def realtime(
    *, engine: Engine, usage: UsageStore, progress: ProgressCache, principal: Principal, now: dt.datetime
) -> dict[str, Any]:
    """Calls per second, error rate, p95 latency and tokens per second over the last 60 s and 5 min (raw
    records: the roller has not reached them), and the caller's batches in flight with their progress."""
    scope = scope_of(principal, None)
    longest = max(REALTIME_WINDOWS.values())
    # Records are stamped with their last call, before they are committed: a little ahead of `now` is fine.
    recent = await usage.tail_summaries(tenant=scope, spans=[(now - longest, now + MINUTE)])
    windows = {}
    for name, length in REALTIME_WINDOWS.items():
        cell = UsageStats.merged(s.stats for s in recent if s.at > now - length).total()
        windows[name] = _rate_view(cell, length.total_seconds())
    return {"realtime": windows | {"inFlight": await _in_flight(engine, progress, scope)}, "at": _iso(now)}


async def _in_flight(engine: Engine, progress: ProgressCache, owner: str | None) -> dict[str, Any]:
    batches = await engine.store.active_batches(owner, limit=IN_FLIGHT_LIMIT)
    totals = await asyncio.gather(
        *(current_totals(engine=engine, batch=batch, progress=progress) for batch in batches)
    )
    listed = []
    for batch, (sums, _) in zip(batches, totals, strict=True):
        listed.append(
            {
                "batchId": batch.batch_id,
                "kind": batch.kind,
                "status": batch.status.value,
                "total": batch.total,
                "finished": sums.finished,
                "percent": _pct(sums.finished, batch.total),
            }
        )
    return {"batches": len(listed), "list": listed}


async def reset(
    *, engine: Engine, usage: UsageStore, principal: Principal, tenant: str | None, caller: CallerInfo
) -> dict[str, Any]:
    """Delete the usage data (records and rollups) of one tenant or of all; admin only; audited."""
    if not principal.is_admin:
        raise Forbidden("only an admin may reset analytics")
    records, calls = await usage.delete_usage(tenant=tenant)
    rollups = await usage.delete_rollups(tenant=tenant)
    await engine.store.write_audit(
        AuditRecord(
            tenant=principal.tenant,
            action="analytics.reset",
            target=f"usage:{tenant or ALL_TENANTS}",
            at=engine.clock(),
            remote_addr=caller.remote_addr,
            user_agent=caller.user_agent,
        )
    )
    return {
        "message": "analytics reset",
        "tenant": tenant or ALL_TENANTS,
        "removed": {"records": records, "calls": calls, "rollups": rollups},
    }


def hourly(parts: Iterable[tuple[dt.datetime, UsageStats]]) -> dict[int, int]:
    """Calls by hour of day (UTC), from parts no larger than an hour."""
    calls: dict[int, int] = {}
    for at, stats in parts:
        calls[at.hour] = calls.get(at.hour, 0) + stats.total().calls
    return calls
