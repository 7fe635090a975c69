"""Batches past one body: requests from a JSONL object in Cloud Storage (`inputUri`), uploaded through an
upload session (`POST /batch/uploads`), end to end through the gateway."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from shared.settings import get_settings
from tests.e2e.batch_client import status, wait_final
from tests.e2e.conftest import configure_gemini


def _jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def upload(api: httpx.Client, data: bytes) -> str:
    """Upload `data` through an upload session; the inputUri to submit."""
    opened = api.post("/batch/uploads", json={"sizeBytes": len(data)})
    assert opened.status_code == 201, opened.text
    session = opened.json()
    assert session["method"] == "PUT" and session["sizeBytes"] == len(data)
    put = httpx.put(session["uploadUrl"], content=data, timeout=300)
    assert put.status_code in (200, 201), put.text
    input_uri: str = session["inputUri"]
    return input_uri


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_100000_requests_from_a_jsonl_object(api: httpx.Client, gemini_control: httpx.Client) -> None:
    configure_gemini(gemini_control, latencyMs=0)
    count = 100_000
    data = _jsonl([{"prompt": f"Describe item number {i}", "customId": f"c{i}"} for i in range(count)])
    input_uri = upload(api, data)

    accepted = api.post("/batch/generate", json={"inputUri": input_uri, "options": {"concurrency": 100}})

    assert accepted.status_code == 202, accepted.text
    batch_id = accepted.json()["batchId"]
    final = wait_final(api, batch_id, timeout=840)
    assert final["status"] == "completed", final
    assert final["progress"]["total"] == count
    assert final["summary"]["successful"] == count
    page = status(api, batch_id, offset=count - 3, limit=3)["results"]
    assert [(r["index"], r["customId"], r["success"]) for r in page] == [
        (i, f"c{i}", True) for i in range(count - 3, count)
    ]
    download = httpx.get(final["resultsUrl"], timeout=120)
    assert download.status_code == 200
    lines = download.content.splitlines()
    assert len(lines) == count
    assert [json.loads(lines[i])["customId"] for i in (0, 1, count // 2, count - 1)] == [
        "c0",
        "c1",
        f"c{count // 2}",
        f"c{count - 1}",
    ]


def test_a_small_input_runs_like_a_body_and_blank_lines_are_skipped(api: httpx.Client) -> None:
    data = _jsonl([{"prompt": "one", "customId": "a"}]) + b"\n  \n" + _jsonl([{"prompt": "two"}])
    input_uri = upload(api, data)

    response = api.post("/batch/generate", json={"inputUri": input_uri, "options": {"wait": True}})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "completed"
    assert [(r["index"], r["customId"], r["success"]) for r in body["results"]] == [
        (0, "a", True),
        (1, None, True),
    ]


def test_another_tenants_input_is_404_and_another_bucket_400(
    api: httpx.Client, other_api: httpx.Client
) -> None:
    input_uri = upload(api, _jsonl([{"prompt": "mine"}]))
    bucket = get_settings().results_bucket

    foreign = other_api.post("/batch/generate", json={"inputUri": input_uri})
    missing = api.post("/batch/generate", json={"inputUri": input_uri.replace(".jsonl", "x.jsonl")})
    elsewhere = api.post("/batch/generate", json={"inputUri": "gs://someone-elses-bucket/inputs/x.jsonl"})
    outside = api.post("/batch/generate", json={"inputUri": f"gs://{bucket}/batches/x/results.jsonl"})

    assert foreign.status_code == 404, foreign.text
    assert missing.status_code == 404, missing.text
    assert foreign.json()["error"]["code"] == missing.json()["error"]["code"]
    for response in (elsewhere, outside):
        assert response.status_code == 400, response.text
        assert response.json()["error"]["details"][0]["field"] == "inputUri"
    assert other_api.get("/batch/active").json()["batches"] == []


def test_a_bad_line_is_400_naming_it_and_nothing_is_written(api: httpx.Client) -> None:
    lines = [
        {"prompt": "fine"},
        {"prompt": "fine too"},
        {"prompt": "x", "status": "completed"},
        {"prompt": ""},
    ]
    input_uri = upload(api, _jsonl(lines) + b"{not json\n")

    response = api.post("/batch/generate", json={"inputUri": input_uri})

    assert response.status_code == 400, response.text
    fields = [detail["field"] for detail in response.json()["error"]["details"]]
    assert fields[:2] == ["inputUri line 3.status", "inputUri line 4.prompt"]
    assert fields[2].startswith("inputUri line 5")
    assert api.get("/batch/active").json()["batches"] == []


def test_requests_and_input_uri_together_or_neither_is_400(api: httpx.Client) -> None:
    input_uri = upload(api, _jsonl([{"prompt": "x"}]))

    both = api.post("/batch/generate", json={"inputUri": input_uri, "requests": [{"prompt": "x"}]})
    neither = api.post("/batch/generate", json={"options": {"wait": False}})

    assert both.status_code == 400 and neither.status_code == 400


def test_an_upload_session_past_the_limit_is_413(api: httpx.Client) -> None:
    response = api.post("/batch/uploads", json={"sizeBytes": get_settings().batch_input_max_bytes + 1})
    assert response.status_code == 413
    assert api.post("/batch/uploads", json={"sizeBytes": 0}).status_code == 400
    assert api.post("/batch/uploads", json={"sizeBytes": 10, "inputUri": "x"}).status_code == 400


def test_a_retried_streamed_submit_returns_the_same_batch(api: httpx.Client) -> None:
    input_uri = upload(api, _jsonl([{"prompt": f"p{i}"} for i in range(30)]))
    body = {"inputUri": input_uri, "options": {"wait": False}}

    first = api.post("/batch/generate", json=body, headers={"Idempotency-Key": "input-1"})
    again = api.post("/batch/generate", json=body, headers={"Idempotency-Key": "input-1"})
    other = api.post(
        "/batch/generate",
        json={"inputUri": input_uri, "options": {"wait": False, "concurrency": 3}},
        headers={"Idempotency-Key": "input-1"},
    )

    assert first.status_code == again.status_code == 202
    assert again.json()["batchId"] == first.json()["batchId"]
    assert other.status_code == 409
    final = wait_final(api, first.json()["batchId"], timeout=120)
    assert final["summary"]["successful"] == 30
