"""Batch generation end to end: through the gateway, Cloud Tasks, Firestore, Cloud Storage and Gemini."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from shared.settings import get_settings
from tests.e2e.batch_client import all_results, status, submit, wait_final
from tests.e2e.conftest import configure_gemini


def test_small_batch_waits_and_returns_results_in_request_order(api: httpx.Client) -> None:
    prompts = [f"Write a haiku about spare part {i}" for i in range(12)]

    body = submit(api, prompts, concurrency=4)

    assert body["status"] == "completed", body
    assert [r["index"] for r in body["results"]] == list(range(12))
    assert [r["customId"] for r in body["results"]] == [f"item-{i}" for i in range(12)]
    assert all(r["success"] and r["response"] for r in body["results"])
    summary = body["summary"]
    assert (summary["total"], summary["successful"], summary["failed"], summary["cancelled"]) == (
        12,
        12,
        0,
        0,
    )
    assert summary["totalTokens"] == sum(r["tokensUsed"] for r in body["results"]) > 0


def test_500_requests_complete_with_every_result_in_order(api: httpx.Client) -> None:
    prompts = [f"Describe item number {i}" for i in range(500)]

    accepted = submit(api, prompts, concurrency=50, wait=False)
    assert accepted["status"] == "queued"
    final = wait_final(api, accepted["batchId"], timeout=120)

    assert final["status"] == "completed"
    assert final["progress"]["successful"] == 500
    results = all_results(api, accepted["batchId"])
    assert [r["index"] for r in results] == list(range(500))
    assert [r["customId"] for r in results] == [f"item-{i}" for i in range(500)]
    assert all(r["status"] == "succeeded" for r in results)
    assert final["tokens"]["total"] == sum(r["tokensUsed"] for r in results)
    assert final["costUsd"] > 0

    download = httpx.get(final["resultsUrl"], timeout=30)
    assert download.status_code == 200
    lines = [json.loads(line) for line in download.text.splitlines()]
    assert [line["customId"] for line in lines] == [f"item-{i}" for i in range(500)]


def test_partial_failures_are_recorded_per_request(api: httpx.Client) -> None:
    prompts = ["ok 0", "EMULATOR_FAIL_400 bad request", "ok 2", "EMULATOR_FAIL_500 flaky", "ok 4"]

    body = submit(api, prompts, concurrency=2, retryPolicy={"maxRetries": 2, "baseDelay": 10, "maxDelay": 20})

    assert body["status"] == "completed"
    outcome = {r["index"]: r for r in body["results"]}
    assert [outcome[i]["success"] for i in range(5)] == [True, False, True, False, True]
    assert outcome[1]["error"]["status"] == 400
    assert outcome[1]["attempts"] == 1, "a permanent error is not retried"
    assert outcome[3]["error"]["status"] == 500
    assert outcome[3]["attempts"] == 3, "a transient error is retried maxRetries times"
    assert body["summary"]["failed"] == 2


def test_fail_fast_stops_the_batch_and_keeps_results_so_far(api: httpx.Client) -> None:
    prompts = ["first", "second", "EMULATOR_FAIL_400 stop here"] + [f"later {i}" for i in range(20)]

    body = submit(api, prompts, concurrency=1, failFast=True, wait=False)
    final = wait_final(api, body["batchId"])

    assert final["status"] == "failed"
    assert "failFast" in final["stopReason"]
    results = all_results(api, body["batchId"])
    assert [r["status"] for r in results[:3]] == ["succeeded", "succeeded", "failed"]
    assert all(r["status"] == "cancelled" for r in results[3:])
    assert final["progress"]["cancelled"] == 20
    # The results file has a line for every request, those that never ran included, joined to their customId.
    lines = [json.loads(line) for line in httpx.get(final["resultsUrl"], timeout=30).text.splitlines()]
    assert [(line["index"], line["customId"]) for line in lines] == [(i, f"item-{i}") for i in range(23)]
    assert [line["status"] for line in lines] == [r["status"] for r in results]


def test_cancel_mid_run_keeps_finished_results(api: httpx.Client) -> None:
    prompts = [f"EMULATOR_SLEEP_150 slow {i}" for i in range(60)]
    body = submit(api, prompts, concurrency=2, wait=False)
    batch_id = body["batchId"]

    from tests.conftest import wait_for

    wait_for(lambda: status(api, batch_id)["progress"]["finished"] >= 4, timeout=60, what="a few results")
    cancelled = api.delete(f"/batch/{batch_id}")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    final = wait_final(api, batch_id)

    assert final["status"] == "cancelled"
    finished = final["progress"]["finished"]
    assert 4 <= finished < 60
    assert final["progress"]["cancelled"] == 60 - finished
    results = all_results(api, batch_id)
    assert sum(r["status"] == "succeeded" for r in results) == finished
    assert api.delete(f"/batch/{batch_id}").status_code == 409, "a finished batch cannot be cancelled again"


def test_rate_limit_storm_is_absorbed_by_backoff(api: httpx.Client, gemini_control: httpx.Client) -> None:
    configure_gemini(gemini_control, errorRate=0.5, errorStatus=429, retryDelayMs=20)
    prompts = [f"storm {i}" for i in range(30)]

    body = submit(
        api, prompts, concurrency=10, retryPolicy={"maxRetries": 10, "baseDelay": 10, "maxDelay": 50}
    )

    assert body["status"] == "completed"
    assert body["summary"]["successful"] == 30
    assert max(r["attempts"] for r in body["results"]) > 1, "some requests must have been retried"


def test_idempotency_key_returns_the_same_batch(api: httpx.Client, unique: str) -> None:
    body = {"requests": [{"prompt": "hello"}], "options": {"wait": False}}
    headers = {"Idempotency-Key": f"key-{unique}"}

    first = api.post("/batch/generate", json=body, headers=headers)
    again = api.post("/batch/generate", json=body, headers=headers)
    different = api.post("/batch/generate", json={**body, "requests": [{"prompt": "bye"}]}, headers=headers)

    assert first.status_code == again.status_code == 202
    assert first.json()["batchId"] == again.json()["batchId"]
    assert different.status_code == 409
    assert different.json()["error"]["code"] == "conflict"


def test_active_lists_only_the_callers_running_batches(api: httpx.Client, other_api: httpx.Client) -> None:
    mine = submit(api, [f"EMULATOR_SLEEP_100 {i}" for i in range(30)], concurrency=1, wait=False)
    submit(other_api, ["theirs"], wait=False)

    active = api.get("/batch/active").json()["batches"]

    assert [b["batchId"] for b in active] == [mine["batchId"]]
    api.delete(f"/batch/{mine['batchId']}")
    wait_final(api, mine["batchId"])
    assert api.get("/batch/active").json()["batches"] == []


def test_stats_count_the_callers_batches(api: httpx.Client) -> None:
    submit(api, ["one", "EMULATOR_FAIL_400 two"])

    stats = api.get("/batch/stats").json()

    assert stats["batches"]["completed"] == 1
    assert stats["items"] == 2
    assert stats["failedItems"] == 1
    assert stats["failureRate"] == 0.5


# an offset past 64 bits was a 500 (Firestore cannot hold it in the page's query), found by `make fuzz`
@pytest.mark.parametrize("offset,limit", [(-1, 10), (0, 0), (0, 5000), (12299792169135196876742590464, 10)])
def test_status_rejects_bad_pagination(api: httpx.Client, offset: int, limit: int) -> None:
    body = submit(api, ["x"])
    response = api.get(f"/batch/status/{body['batchId']}", params={"offset": offset, "limit": limit})
    assert response.status_code == 400


def test_status_with_wait_answers_once_the_batch_is_finished(api: httpx.Client) -> None:
    body = submit(api, [f"EMULATOR_SLEEP_100 waited {i}" for i in range(12)], concurrency=3, wait=False)

    response = api.get(f"/batch/status/{body['batchId']}", params={"waitSeconds": 60, "limit": 12})

    assert response.status_code == 200, response.text
    final = response.json()
    assert final["status"] == "completed", "one read that waits sees the end, without polling"
    assert final["resultsUrl"], "finished means fanned in: the results file is there"
    assert [r["customId"] for r in final["results"]] == [f"item-{i}" for i in range(12)]


def test_status_with_wait_answers_with_the_current_state_after_its_seconds(api: httpx.Client) -> None:
    body = submit(api, [f"EMULATOR_SLEEP_1000 slow {i}" for i in range(30)], concurrency=1, wait=False)
    batch_id = body["batchId"]
    try:
        response = api.get(f"/batch/status/{batch_id}", params={"waitSeconds": 0.3})

        assert response.status_code == 200, response.text
        assert response.json()["status"] in ("queued", "running"), "30 requests of 1 s one at a time"
    finally:
        api.delete(f"/batch/{batch_id}")
    assert wait_final(api, batch_id)["status"] == "cancelled"


@pytest.mark.parametrize("extra", [-1.0, 1.0])
def test_status_rejects_a_wait_outside_its_bounds(api: httpx.Client, extra: float) -> None:
    body = submit(api, ["x"])
    longest = get_settings().batch_max_wait_seconds
    wait = extra if extra < 0 else longest + extra

    response = api.get(f"/batch/status/{body['batchId']}", params={"waitSeconds": wait})

    assert response.status_code == 400, response.text
    assert "waitSeconds" in response.text


def test_a_prompt_too_large_for_a_document_travels_by_reference(api: httpx.Client, local_cloud: Any) -> None:
    big = "spare part description " * 5000  # about 115 KB: more than a chunk document should inline
    body = submit(api, [big, "small"])

    assert body["status"] == "completed"
    assert [r["success"] for r in body["results"]] == [True, True]
    client = storage.Client(
        project=local_cloud.project_id,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": local_cloud.emulators.storage.url},
    )
    bucket = client.bucket(get_settings().results_bucket)
    stored = json.loads(bucket.blob(f"batches/{body['batchId']}/requests/00000000.json").download_as_bytes())
    assert stored["prompt"] == big
    assert not bucket.blob(f"batches/{body['batchId']}/requests/00000001.json").exists()
