"""The live metrics stream (Server-Sent Events): a `metrics` event with the realtime figures every
ANALYTICS_REALTIME_INTERVAL ms, comment heartbeats in between, a `retry:` hint, and ids that go on from the
client's Last-Event-ID when it reconnects.

Event ids are the event's time in milliseconds since the epoch: a reconnecting client's next event has a
larger id than the last it saw, and the first event after a reconnect comes at once when the client missed
one. Realtime figures are a snapshot of now, so missed snapshots are not replayed: the next one covers the
last 60 s and 5 min anyway. A stream ends after ANALYTICS_SSE_MAX_SECONDS (under Cloud Run's request timeout)
and EventSource reconnects by itself.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from shared.errors import PlatformError
from shared.models.auth import Principal


class TooManyStreams(PlatformError):
    """Too many live streams on this instance; retry later."""

    code = "too_many_streams"
    http_status = 503

    def __init__(self, message: str | None = None, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.headers["Retry-After"] = str(retry_after_s)


class StreamGate:
    """Counts this instance's open streams; past `limit`, new ones are refused."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.open = 0

    def enter(self, limit: int) -> None:
        with self._lock:
            if self.open >= limit:
                raise TooManyStreams(f"at most {limit} live streams per instance", retry_after_s=5)
            self.open += 1

    def leave(self) -> None:
        with self._lock:
            self.open -= 1


class SnapshotCache:
    """The latest realtime snapshot per scope (a tenant, or every tenant for an admin), shared by the
    instance's streams for `max_age_s`."""

    def __init__(self, *, max_age_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._max_age_s = max_age_s
        self._clock = clock
        self._latest: dict[str | None, tuple[float, dict[str, Any]]] = {}

    def get(self, principal: Principal, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        scope = None if principal.is_admin else principal.tenant
        with self._lock:
            cached = self._latest.get(scope)
        if cached is not None and self._clock() - cached[0] < self._max_age_s:
            return cached[1]
        snapshot = build()
        with self._lock:
            self._latest[scope] = (self._clock(), snapshot)
        return snapshot


def last_event_id(raw: str | None) -> int | None:
    try:
        return int(raw) if raw else None
    except ValueError:
        return None


def events(
    *,
    snapshot: Callable[[], dict[str, Any]],
    interval_s: float,
    heartbeat_s: float,
    max_s: float,
    last_id: int | None,
    event_name: str | None = "metrics",
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[str]:
    """The stream's text, piece by piece. Without `event_name` the events are unnamed, which EventSource's
    `onmessage` (the seed's client code) receives."""
    yield ": connected\n\n"
    retry = f"retry: {int(interval_s * 1000)}\n"  # sent with the first event
    started = clock()
    next_at = started
    if last_id is not None and started * 1000 - last_id < interval_s * 1000:
        next_at = last_id / 1000 + interval_s  # the client saw an event less than an interval ago
    last_sent = last_id or 0
    while clock() - started < max_s:
        now = clock()
        if now >= next_at:
            event_id = max(int(now * 1000), last_sent + 1)
            data = json.dumps(snapshot(), separators=(",", ":"))
            named = f"event: {event_name}\n" if event_name else ""
            yield f"{retry}id: {event_id}\n{named}data: {data}\n\n"
            retry = ""
            last_sent = event_id
            next_at = now + interval_s
            continue
        wait = min(next_at - now, heartbeat_s)
        sleep(wait)
        if clock() < next_at:
            yield ": heartbeat\n\n"
