"""Authentication, tenant isolation, internal-call verification, rate limits and input validation."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from google.cloud.firestore_v1.base_query import FieldFilter

from infra.emulators.oidc import TokenMinter
from shared.models.auth import Role
from shared.settings import get_settings
from tests.e2e.batch_client import submit, wait_final
from tests.e2e.conftest import new_api_key


def test_missing_and_invalid_keys_get_401(gateway_url: str) -> None:
    missing = httpx.get(f"{gateway_url}/batch/active")
    invalid = httpx.get(f"{gateway_url}/batch/active", headers={"Authorization": "Bearer bp_not-a-real-key"})
    assert missing.status_code == invalid.status_code == 401
    assert missing.json()["error"]["code"] == "unauthenticated"


def test_another_tenants_batch_is_404_like_a_missing_one(
    api: httpx.Client, other_api: httpx.Client, gateway_url: str, unique: str
) -> None:
    batch_id = submit(api, ["private"])["batchId"]

    assert other_api.get(f"/batch/status/{batch_id}").status_code == 404
    assert other_api.delete(f"/batch/{batch_id}").status_code == 404
    foreign = other_api.get(f"/batch/status/{batch_id}")
    missing = other_api.get("/batch/status/0123456789abcdef0123456789abcdef")
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json()["error"]["code"] == missing.json()["error"]["code"] == "not_found"

    admin_key = new_api_key(f"admin-{unique}", Role.ADMIN)
    with httpx.Client(base_url=gateway_url, headers={"Authorization": f"Bearer {admin_key}"}) as admin:
        assert admin.get(f"/batch/status/{batch_id}").status_code == 200


def test_clients_cannot_set_server_owned_fields(api: httpx.Client) -> None:
    response = api.post("/batch/generate", json={"requests": [{"prompt": "x"}], "status": "completed"})
    assert response.status_code == 400
    assert response.json()["error"]["details"][0]["field"] == "status"
    item_field = api.post("/batch/generate", json={"requests": [{"prompt": "x", "owner": "someone"}]})
    assert item_field.status_code == 400
    assert item_field.json()["error"]["details"][0]["field"] == "requests.0.owner"


@pytest.mark.parametrize(
    "body,field",
    [
        ({"requests": []}, "requests"),
        ({"requests": [{"prompt": ""}]}, "requests.0.prompt"),
        ({"requests": [{"prompt": "x", "temperature": 3}]}, "requests.0.temperature"),
        ({"requests": [{"prompt": "x"}], "options": {"concurrency": 101}}, "options.concurrency"),
        ({"requests": [{"prompt": "x"}], "options": {"timeout": 300_001}}, "options.timeout"),
        (
            {"requests": [{"prompt": "x"}], "options": {"retryPolicy": {"maxRetries": -1}}},
            "options.retryPolicy.maxRetries",
        ),
    ],
)
def test_bad_input_is_400_naming_the_field_and_writes_nothing(
    api: httpx.Client, body: dict[str, object], field: str
) -> None:
    response = api.post("/batch/generate", json=body)

    assert response.status_code == 400
    assert field in [d["field"] for d in response.json()["error"]["details"]]
    assert api.get("/batch/stats").json()["batches"]["queued"] == 0


def test_malformed_json_is_400(api: httpx.Client) -> None:
    response = api.post("/batch/generate", content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"


def test_oversized_body_is_413(api: httpx.Client) -> None:
    limit = get_settings().batch_max_body_bytes
    response = api.post(
        "/batch/generate", content=b"x" * (limit + 1), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413


def test_too_many_requests_in_a_batch_is_400(api: httpx.Client) -> None:
    limit = get_settings().batch_max_requests
    response = api.post("/batch/generate", json={"requests": [{"prompt": "x"}] * (limit + 1)})
    assert response.status_code == 400
    assert response.json()["error"]["details"][0]["field"] == "requests"


def test_rate_limit_answers_429_with_retry_after(gateway_url: str, unique: str) -> None:
    key = new_api_key(f"limited-{unique}", rate_limit_per_minute=3)
    # The limit counts per clock minute: start clear of a minute's end, so all requests fall in one window.
    seconds_left = 60 - time.time() % 60
    if seconds_left < 5:
        time.sleep(seconds_left)  # waits for the clock, not for work
    with httpx.Client(base_url=gateway_url, headers={"Authorization": f"Bearer {key}"}) as client:
        responses = [client.get("/batch/active") for _ in range(12)]
    codes = [response.status_code for response in responses]
    assert codes[:3] == [200, 200, 200]
    # Each gateway process counts on top of the shared total it last synced, so across the two processes
    # (GATEWAY_WORKERS) up to twice the limit may pass before both have synced: never more.
    assert codes.count(200) <= 3 * 2, codes
    limited = next(response for response in responses if response.status_code == 429)
    assert 1 <= int(limited.headers["Retry-After"]) <= 60


@pytest.mark.parametrize("function_name", ["batch_worker", "batch_finalizer", "batch_sweeper"])
def test_internal_functions_refuse_calls_without_a_valid_oidc_token(
    gateway_url: str, function_name: str
) -> None:
    settings = get_settings()
    url = f"{gateway_url}/{function_name}"
    body = {"batch_id": "0" * 32, "chunk": 0} if function_name == "batch_worker" else {"batch_id": "0" * 32}
    minter = TokenMinter()

    no_token = httpx.post(url, json=body)
    wrong_audience = httpx.post(
        url,
        json=body,
        headers={
            "Authorization": "Bearer "
            + minter.mint(
                service_account_email=settings.tasks_service_account, audience=f"{gateway_url}/batch"
            )
        },
    )
    stranger = httpx.post(
        url,
        json=body,
        headers={
            "Authorization": "Bearer "
            + minter.mint(service_account_email="intruder@example.iam.gserviceaccount.com", audience=url)
        },
    )
    forged = httpx.post(url, json=body, headers={"Authorization": "Bearer eyJhbGciOiJub25lIn0.e30."})

    assert no_token.status_code == 401
    assert wrong_audience.status_code == 401
    assert stranger.status_code == 403
    assert forged.status_code == 401


def test_cancel_is_audited(api: httpx.Client, firestore_db: Any) -> None:
    batch_id = submit(api, [f"EMULATOR_SLEEP_200 {i}" for i in range(20)], concurrency=1, wait=False)[
        "batchId"
    ]
    assert api.delete(f"/batch/{batch_id}").status_code == 200
    wait_final(api, batch_id)

    audit = firestore_db.collection("audit_log").where(filter=FieldFilter("target", "==", batch_id))
    assert {snapshot.get("action") for snapshot in audit.stream()} == {"batch.submit", "batch.cancel"}
