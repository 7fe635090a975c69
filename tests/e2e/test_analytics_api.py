"""The analytics API through the gateway, as a client would: shapes, auth, admin-only reset, the live
stream read by an SSE client (httpx-sse), and the connection limit."""

from __future__ import annotations

import json
import sys
from typing import Any

import functions_framework
import httpx
import pytest
from httpx_sse import connect_sse

from infra.emulators.oidc import TokenMinter
from shared.emulator_config import REPO_ROOT
from shared.models.auth import Role
from shared.settings import get_settings
from tests.e2e.batch_client import submit, wait_final
from tests.e2e.conftest import new_api_key

METRICS_SHAPE = {
    "requests": {"total", "successful", "failed", "successRate", "byModel", "byEndpoint"},
    "performance": {"averageResponseTime", "p50ResponseTime", "p95ResponseTime", "p99ResponseTime"},
    "usage": {"totalTokens", "inputTokens", "outputTokens", "estimatedCost"},
    "cache": {"hits", "misses", "hitRate"},
}


def test_metrics_count_the_tenants_own_batch_calls_with_the_seed_shape(
    api: httpx.Client, other_api: httpx.Client
) -> None:
    batch = submit(api, ["one", "two", "three"])
    wait_final(api, batch["batchId"])
    body = api.get("/analytics/metrics").raise_for_status().json()
    assert set(body) == {"metrics", "window"}
    assert {key: set(value) for key, value in body["metrics"].items()} == METRICS_SHAPE
    requests = body["metrics"]["requests"]
    assert requests["total"] == 3 and requests["successful"] == 3 and requests["successRate"] == 100.0
    assert requests["byEndpoint"] == {"generate": 3}
    assert body["metrics"]["usage"]["totalTokens"] > 0

    assert other_api.get("/analytics/metrics").json()["metrics"]["requests"]["total"] == 0
    assert other_api.get("/analytics/metrics", params={"tenant": "someone"}).status_code == 403
    assert api.get("/analytics/metrics", params={"from": "yesterday"}).status_code == 400
    assert httpx.get(f"{api.base_url}/analytics/metrics").status_code == 401


def test_realtime_and_insights_answer_for_the_caller(api: httpx.Client) -> None:
    batch = submit(api, ["alpha", "beta"])
    wait_final(api, batch["batchId"])
    realtime = api.get("/analytics/realtime").raise_for_status().json()["realtime"]
    assert realtime["last5Minutes"]["requests"] == 2
    assert set(realtime["lastMinute"]) == {
        "requests", "callsPerSecond", "errorRate", "p95ResponseTime", "tokensPerSecond"
    }  # fmt: skip
    assert realtime["inFlight"]["batches"] == 0
    insights = api.get("/analytics/insights").raise_for_status().json()["insights"]
    assert set(insights) == {"performance", "usage", "errors"}
    assert insights["performance"]["status"] == "good"
    assert insights["usage"]["trend"] == "increasing"
    assert insights["errors"]["mostCommon"] is None


def test_reset_is_admin_only(api: httpx.Client, gateway_url: str, unique: str) -> None:
    assert api.post("/analytics/reset", json={}).status_code == 403
    admin_key = new_api_key(f"admin-{unique}", Role.ADMIN)
    with httpx.Client(base_url=gateway_url, headers={"Authorization": f"Bearer {admin_key}"}) as admin:
        answer = admin.post("/analytics/reset", json={"tenant": f"nobody-{unique}"}).raise_for_status().json()
        assert answer["removed"] == {"records": 0, "calls": 0, "rollups": 0}
        assert admin.post("/analytics/reset", json={"tenant": "x", "status": "y"}).status_code == 400


def test_export_answers_with_a_signed_url_to_the_calls(api: httpx.Client) -> None:
    batch = submit(api, ["exported"])
    wait_final(api, batch["batchId"])
    answer = api.post("/analytics/export", json={"format": "csv"}).raise_for_status().json()
    assert answer["rows"] == 1 and len(answer["parts"]) == 1
    body = httpx.get(answer["url"], timeout=30).raise_for_status().text
    assert body.splitlines()[0].startswith("at,tenant,jobId,eventId,model,endpoint")
    assert batch["batchId"] in body


@pytest.mark.slow
def test_the_stream_sends_metrics_events_with_ids_and_honours_last_event_id(api: httpx.Client) -> None:
    seen: list[Any] = []
    with connect_sse(api, "GET", "/analytics/stream", timeout=30) as source:
        assert source.response.headers["content-type"].startswith("text/event-stream")
        for sse in source.iter_sse():
            assert sse.event == "metrics"
            seen.append(sse)
            if len(seen) == 2:
                break
    assert seen[0].retry == 5000
    ids = [int(sse.id) for sse in seen]
    assert ids[1] - ids[0] >= 4900
    assert set(json.loads(seen[0].data)["realtime"]) == {"lastMinute", "last5Minutes", "inFlight"}

    headers = {"Last-Event-ID": seen[-1].id}
    with connect_sse(api, "GET", "/analytics/stream", headers=headers, timeout=30) as source:
        resumed = next(iter(source.iter_sse()))
    assert int(resumed.id) > ids[-1]


def test_a_closed_stream_frees_its_place_and_past_the_limit_a_stream_is_refused(
    monkeypatch: pytest.MonkeyPatch, gateway_url: str, unique: str
) -> None:
    app = functions_framework.create_app(
        target="analytics", source=str(REPO_ROOT / "functions" / "analytics.py")
    )
    # functions-framework loads the source as module `analytics`, with the instance-wide gate.
    gate = sys.modules["analytics"].STREAMS
    headers = {"Authorization": f"Bearer {new_api_key(f'sse-{unique}')}"}
    client = app.test_client()
    opened = client.get("/stream", headers=headers, buffered=False)
    assert next(iter(opened.response)) == b": connected\n\n"
    assert gate.open == 1
    opened.close()  # the client goes away
    assert gate.open == 0

    monkeypatch.setattr(gate, "open", 1000)
    response = client.get("/stream", headers=headers)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.get_json()["error"]["code"] == "too_many_streams"


def test_the_roller_takes_only_the_schedulers_token_and_a_second_firing_rolls_nothing_again(
    gateway_url: str,
) -> None:
    settings = get_settings()
    url = f"{gateway_url}/analytics_rollup"
    minter = TokenMinter()

    def fire(account: str) -> httpx.Response:
        token = minter.mint(service_account_email=account, audience=url)
        return httpx.post(url, headers={"Authorization": f"Bearer {token}"}, timeout=120)

    assert httpx.post(url).status_code == 401
    assert fire(settings.tasks_service_account).status_code == 403
    first = fire(settings.scheduler_service_account).raise_for_status().json()
    second = fire(settings.scheduler_service_account).raise_for_status().json()
    # The second firing starts where the first stopped (later if Cloud Scheduler fired in between).
    assert second["rolledFrom"] >= first["rolledTo"]
