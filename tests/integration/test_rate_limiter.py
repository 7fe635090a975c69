"""The per-tenant rate limit against the real Firestore adapter: exact within an instance, shared across
instances through the sharded counters, at most one sync interval late."""

from __future__ import annotations

import datetime as dt

import pytest

from shared import runtime
from shared.app import platform
from shared.emulator_config import EmulatorConfig
from shared.errors import RateLimited
from shared.models.auth import Principal, Role
from shared.services.auth import RateLimiter

# Inside one minute-window, whatever minute the test runs in.
NOW = dt.datetime(2026, 1, 1, 12, 0, 30, tzinfo=dt.UTC)


def _limiter(sync_interval_s: float) -> RateLimiter:
    return RateLimiter(keys=platform().keys, limit_per_minute=1000, sync_interval_s=sync_interval_s)


def _admitted(limiter: RateLimiter, principal: Principal, requests: int) -> int:
    async def _count() -> int:
        admitted = 0
        for _ in range(requests):
            try:
                await limiter.check(principal, now=NOW)
            except RateLimited:
                continue
            admitted += 1
        return admitted

    return runtime.run(_count())


def test_one_instance_admits_exactly_the_limit(local_cloud: EmulatorConfig, unique: str) -> None:
    principal = Principal(tenant=f"rate-{unique}", role=Role.USER, rate_limit_per_minute=5)
    limiter = _limiter(sync_interval_s=3600)  # one sync at the window's first request, then local counting

    assert _admitted(limiter, principal, 8) == 5
    with pytest.raises(RateLimited) as raised:
        runtime.run(limiter.check(principal, now=NOW))
    assert raised.value.headers["Retry-After"] == "30"


def test_instances_share_the_count_at_each_sync(local_cloud: EmulatorConfig, unique: str) -> None:
    principal = Principal(tenant=f"rate-{unique}", role=Role.USER, rate_limit_per_minute=6)
    first, second = _limiter(sync_interval_s=0), _limiter(sync_interval_s=0)  # sync on every request

    assert _admitted(first, principal, 4) == 4
    runtime.run(first.settle())
    assert _admitted(second, principal, 4) == 2, "the second instance sees the first one's four requests"
    runtime.run(second.settle())
    # The first instance decides on what its last sync told it; the sync due now, running beside, tells more.
    assert _admitted(first, principal, 1) == 1
    runtime.run(first.settle())
    assert _admitted(first, principal, 1) == 0


def test_only_the_first_request_of_a_window_waits_for_its_sync(
    local_cloud: EmulatorConfig, unique: str
) -> None:
    principal = Principal(tenant=f"rate-{unique}", role=Role.USER, rate_limit_per_minute=100)
    limiter = _limiter(sync_interval_s=0)
    keys = platform().keys
    shared: list[int] = []

    async def _counted() -> int:
        # What the shared counter holds (adding nothing to it).
        window = int(NOW.timestamp()) // 60
        expire_at = NOW + dt.timedelta(minutes=10)
        return await keys.add_requests(
            tenant=principal.tenant, window=window, count=0, shards=4, expire_at=expire_at
        )

    async def _requests() -> None:
        await limiter.check(principal, now=NOW)
        shared.append(await _counted())  # the first request's sync finished before it was admitted
        await limiter.check(principal, now=NOW)  # due a sync too, which runs beside it
        await limiter.check(principal, now=NOW)  # due one as well, but one is on its way
        assert limiter.syncs_running == 1
        await limiter.settle()
        assert limiter.syncs_running == 0
        shared.append(await _counted())

    runtime.run(_requests())
    assert shared == [1, 3]


def test_a_new_window_starts_from_zero(local_cloud: EmulatorConfig, unique: str) -> None:
    principal = Principal(tenant=f"rate-{unique}", role=Role.USER, rate_limit_per_minute=2)
    limiter = _limiter(sync_interval_s=3600)
    assert _admitted(limiter, principal, 3) == 2

    async def _next_minute() -> None:
        await limiter.check(principal, now=NOW + dt.timedelta(minutes=1))

    runtime.run(_next_minute())  # does not raise
