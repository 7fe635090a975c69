"""API keys (stored hashed), authentication of public calls and the per-tenant rate limit."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import secrets
import threading
import time
from dataclasses import dataclass

from shared.errors import RateLimited, Unauthenticated
from shared.models.auth import ApiKeyRecord, Principal, Role
from shared.ports import KeyStore

KEY_PREFIX = "bp_"
RATE_LIMIT_SHARDS = 4
RATE_WINDOW_S = 60

log = logging.getLogger(__name__)


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


async def create_api_key(
    *, keys: KeyStore, tenant: str, role: Role, now: dt.datetime, rate_limit_per_minute: int | None = None
) -> str:
    """Create a key for `tenant`; the plaintext is returned once and never stored.

    `rate_limit_per_minute` overrides the platform's default limit for this key's tenant.
    """
    api_key = KEY_PREFIX + secrets.token_urlsafe(32)
    record = ApiKeyRecord(
        tenant=tenant,
        role=role,
        prefix=api_key[:8],
        created_at=now,
        rate_limit_per_minute=rate_limit_per_minute,
    )
    await keys.put_api_key(hash_key(api_key), record)
    return api_key


class Authenticator:
    """Resolves `Authorization: Bearer <API key>` to a Principal, caching lookups for a few seconds."""

    def __init__(self, *, keys: KeyStore, cache_seconds: float) -> None:
        self._keys = keys
        self._cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._lock = threading.Lock()

    async def authenticate(self, authorization: str | None) -> Principal:
        if not authorization or not authorization.startswith("Bearer "):
            raise Unauthenticated("missing API key: send Authorization: Bearer <API key>")
        api_key = authorization.removeprefix("Bearer ").strip()
        if not api_key.startswith(KEY_PREFIX) or len(api_key) > 200:
            raise Unauthenticated("invalid API key")
        key_hash = hash_key(api_key)
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(key_hash)
        if cached is not None and now - cached[0] < self._cache_seconds:
            principal = cached[1]
        else:
            record = await self._keys.get_api_key(key_hash)
            principal = (
                Principal(
                    tenant=record.tenant, role=record.role, rate_limit_per_minute=record.rate_limit_per_minute
                )
                if record
                else None
            )
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[key_hash] = (now, principal)
        if principal is None:
            raise Unauthenticated("invalid API key")
        return principal


@dataclass
class _Window:
    """One tenant's count in one window, as this instance knows it."""

    window: int
    shared_total: int = 0  # the tenant's count across instances at the last sync (ours included)
    unsynced: int = 0  # requests counted here since then
    synced_at: float | None = None
    syncing: bool = False


class RateLimiter:
    """Fixed one-minute windows per tenant, counted in Firestore so the limit holds across instances.

    Each instance adds its requests to the shared counter at most once per `sync_interval_s` per tenant and in
    between counts locally on top of the last shared total: one Firestore round trip per tenant a second
    instead of two per request. Only the first request of a window on an instance waits for its sync (it
    learns what other instances counted); later syncs run beside the request that is due one. The limit is
    exact within an instance and at most one interval (and a round trip) late across instances. The key's own
    limit wins over the default.
    """

    def __init__(self, *, keys: KeyStore, limit_per_minute: int, sync_interval_s: float) -> None:
        self._keys = keys
        self._limit_per_minute = limit_per_minute
        self._sync_interval_s = sync_interval_s
        self._windows: dict[str, _Window] = {}
        self._syncing: set[asyncio.Task[None]] = set()

    async def check(self, principal: Principal, *, now: dt.datetime) -> None:
        """Count one request of `principal`'s tenant; RateLimited when the window's limit is exceeded."""
        epoch_s = int(now.timestamp())
        window = epoch_s // RATE_WINDOW_S
        state = self._windows.get(principal.tenant)
        if state is None or state.window != window:
            if len(self._windows) > 10_000:
                self._windows.clear()
            state = self._windows[principal.tenant] = _Window(window=window)
        state.unsynced += 1
        expire_at = now + dt.timedelta(minutes=10)
        if not state.syncing:
            if state.synced_at is None:
                await self._sync(principal.tenant, state, expire_at=expire_at)
            elif time.monotonic() - state.synced_at >= self._sync_interval_s:
                state.syncing = True  # from now, so that no request starts a second sync before this one runs
                task = asyncio.create_task(self._sync(principal.tenant, state, expire_at=expire_at))
                self._syncing.add(task)
                task.add_done_callback(self._synced)
        limit = principal.rate_limit_per_minute or self._limit_per_minute
        if state.shared_total + state.unsynced > limit:
            retry_after = RATE_WINDOW_S - epoch_s % RATE_WINDOW_S
            raise RateLimited(
                f"rate limit of {limit} requests per minute exceeded for tenant {principal.tenant}",
                retry_after_s=max(retry_after, 1),
            )

    @property
    def syncs_running(self) -> int:
        return len(self._syncing)

    async def settle(self) -> None:
        """Wait for the syncs running in the background."""
        while self._syncing:
            await asyncio.gather(*list(self._syncing), return_exceptions=True)

    def _synced(self, task: asyncio.Task[None]) -> None:
        self._syncing.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            # The counts stay unsynced and are added at the next sync.
            log.warning("rate counter sync failed: %r", error)

    async def _sync(self, tenant: str, state: _Window, *, expire_at: dt.datetime) -> None:
        state.syncing = True
        adding, state.unsynced = state.unsynced, 0
        try:
            state.shared_total = await self._keys.add_requests(
                tenant=tenant,
                window=state.window,
                count=adding,
                shards=RATE_LIMIT_SHARDS,
                expire_at=expire_at,
            )
        except BaseException:
            state.unsynced += adding  # counted at the next sync instead
            raise
        finally:
            state.syncing = False
        state.synced_at = time.monotonic()
