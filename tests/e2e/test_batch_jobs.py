"""GET /batch/jobs: the caller's jobs of every kind, newest first, a page at a time."""

from __future__ import annotations

import httpx

from shared.models.auth import Role
from tests.e2e.batch_client import submit, wait_final
from tests.e2e.conftest import new_api_key


def _analyze(api: httpx.Client, texts: list[str]) -> str:
    response = api.post(
        "/batch/analyze", json={"analysisType": "sentiment", "texts": texts, "options": {"wait": False}}
    )
    assert response.status_code == 202, response.text
    return str(response.json()["batchId"])


def test_lists_the_callers_jobs_of_every_kind_newest_first_with_progress(
    api: httpx.Client, other_api: httpx.Client
) -> None:
    first = submit(api, ["one", "two", "three"])["batchId"]
    second = _analyze(api, ["I love this part", "terrible"])
    wait_final(api, second)
    submit(other_api, ["not yours"])

    jobs = api.get("/batch/jobs").json()

    assert [job["batchId"] for job in jobs["jobs"]] == [second, first]
    assert [job["kind"] for job in jobs["jobs"]] == ["analyze", "generate"]
    assert jobs["nextCursor"] is None
    newest = jobs["jobs"][0]
    assert newest["status"] == "completed"
    assert newest["progress"]["total"] == 2
    assert newest["progress"]["finished"] == 2
    assert newest["progress"]["percent"] == 100.0


def test_filters_by_kind_and_status_and_pages_with_a_cursor(api: httpx.Client, gateway_url: str) -> None:
    batch_ids = [submit(api, [f"prompt {i}"])["batchId"] for i in range(3)]
    _analyze(api, ["fine"])

    generated = api.get("/batch/jobs", params={"kind": "generate", "status": "completed"}).json()
    assert [job["batchId"] for job in generated["jobs"]] == batch_ids[::-1]

    seen: list[str] = []
    cursor: str | None = None
    while True:
        params = {"kind": "generate", "limit": 2} | ({"cursor": cursor} if cursor else {})
        page = api.get("/batch/jobs", params=params).json()
        seen += [job["batchId"] for job in page["jobs"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == batch_ids[::-1]

    admin_key = new_api_key("admin-jobs", Role.ADMIN)
    with httpx.Client(base_url=gateway_url, headers={"Authorization": f"Bearer {admin_key}"}) as admin:
        everyone = admin.get("/batch/jobs", params={"kind": "generate", "limit": 200}).json()
    assert {job["batchId"] for job in everyone["jobs"]} >= set(batch_ids)


def test_bad_filters_are_400_naming_the_field(api: httpx.Client) -> None:
    response = api.get("/batch/jobs", params={"kind": "nope", "status": "sleeping", "limit": 0})

    assert response.status_code == 400
    fields = {detail["field"] for detail in response.json()["error"]["details"]}
    assert fields == {"kind", "status", "limit"}
