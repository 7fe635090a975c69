"""The SSE stream: framing, heartbeats, ids after a Last-Event-ID, the stream gate, the shared snapshot."""

from __future__ import annotations

import itertools

import pytest

from shared.models.auth import Principal, Role
from shared.services.analytics_stream import SnapshotCache, StreamGate, TooManyStreams, events


class FakeClock:
    def __init__(self, at: float) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at

    def sleep(self, seconds: float) -> None:
        self.at += seconds


def read(*, last_id: int | None = None, max_s: float = 12.0, event_name: str | None = "metrics") -> list[str]:
    clock = FakeClock(1000.0)
    counter = itertools.count()
    pieces = list(
        events(
            snapshot=lambda: {"n": next(counter)},
            interval_s=5.0,
            heartbeat_s=2.0,
            max_s=max_s,
            last_id=last_id,
            event_name=event_name,
            clock=clock,
            sleep=clock.sleep,
        )
    )
    return pieces


def test_events_every_interval_with_ids_retry_and_heartbeats_between() -> None:
    pieces = read()
    assert pieces[0] == ": connected\n\n"
    metrics = [p for p in pieces if "event: metrics" in p]
    assert metrics[0] == 'retry: 5000\nid: 1000000\nevent: metrics\ndata: {"n":0}\n\n'
    assert [p.split("\n")[0] for p in metrics[1:]] == ["id: 1005000", "id: 1010000"]
    assert pieces.count(": heartbeat\n\n") == 5  # at 2, 4, 7, 9 and 12 s: every 2 s without an event


def test_after_a_recent_last_event_id_the_next_event_waits_its_interval_and_ids_go_on() -> None:
    pieces = read(last_id=999_000, max_s=5.0)
    first = next(p for p in pieces if "event:" in p)
    assert first.startswith("retry: 5000\nid: 1004000\n")


def test_unnamed_events_reach_onmessage() -> None:
    first = read(max_s=1.0, event_name=None)[1]
    assert "event:" not in first and "data: " in first


def test_the_gate_refuses_past_its_limit() -> None:
    gate = StreamGate()
    gate.enter(1)
    with pytest.raises(TooManyStreams) as refused:
        gate.enter(1)
    assert refused.value.http_status == 503 and refused.value.headers["Retry-After"] == "5"
    gate.leave()
    gate.enter(1)


def test_streams_of_one_scope_share_a_snapshot_for_its_age() -> None:
    clock = FakeClock(0.0)
    cache = SnapshotCache(max_age_s=1.0, clock=clock)
    builds = itertools.count()
    user = Principal(tenant="a", role=Role.USER)
    other = Principal(tenant="b", role=Role.USER)
    assert cache.get(user, lambda: {"n": next(builds)}) == {"n": 0}
    assert cache.get(user, lambda: {"n": next(builds)}) == {"n": 0}
    assert cache.get(other, lambda: {"n": next(builds)}) == {"n": 1}
    clock.at = 1.5
    assert cache.get(user, lambda: {"n": next(builds)}) == {"n": 2}
