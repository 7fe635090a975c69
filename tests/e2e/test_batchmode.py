"""Gemini Batch Mode jobs paid with credits, end to end through the gateway, Cloud Tasks and the Gemini
emulator's Batch Mode, as a client would: every type, refunds, cancel, expiry, guards, isolation, history,
webhooks, auto mode. After every job the tenant's balance equals the sum of its ledger."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from google.cloud.firestore_v1.base_query import FieldFilter

from infra.emulators.gemini.content import png
from shared.images import check_decodes
from shared.models.auth import Role
from shared.models.batchmode import JobStatusView
from shared.services.pricing import BATCH_MODE_FACTOR, estimate_cost_usd
from tests.conftest import wait_for
from tests.e2e.conftest import configure_gemini, new_api_key
from tests.e2e.delivery import Gateway, free_port, usage_events

FAST = {"batchPendingMs": 0, "batchRunningMs": 0}
FINAL_STATES = {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"}


@pytest.fixture
def admin(gateway_url: str, unique: str) -> Iterator[httpx.Client]:
    key = new_api_key(f"ops-{unique}", Role.ADMIN)
    with httpx.Client(base_url=gateway_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        yield client


def tenant_of(client: httpx.Client) -> str:
    return str(client.get("/batch/credits").json()["tenant"])


def grant(admin: httpx.Client, tenant: str, amount: float) -> None:
    response = admin.post("/batch/credits/grant", json={"tenant": tenant, "amount": amount, "reason": "test"})
    assert response.status_code == 200, response.text


def create(api: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = api.post("/batch/create", json=body)
    assert response.status_code == 202, response.text
    created: dict[str, Any] = response.json()
    return created


def wait_final(api: httpx.Client, job_id: str, timeout: float = 60) -> dict[str, Any]:
    def _final() -> dict[str, Any] | None:
        view: dict[str, Any] = api.get(f"/batch/status/{job_id}").json()
        JobStatusView.model_validate(view)  # the shape the OpenAPI document gives
        return view if view["state"] in FINAL_STATES and view.get("finishedAt") else None

    return wait_for(_final, timeout=timeout, interval=0.2, what=f"job {job_id} to finish")


def ledger_sum(db: Any, tenant: str) -> float:
    ledger = db.collection("credit_balances").document(tenant).collection("ledger").stream()
    return sum(entry.get("units") for entry in ledger) / 100


def assert_ledger_matches(api: httpx.Client, db: Any) -> float:
    credits = api.get("/batch/credits").json()
    assert credits["balance"] == ledger_sum(db, credits["tenant"])
    return float(credits["balance"])


def refunds(db: Any, tenant: str, job_id: str) -> list[str]:
    ledger = db.collection("credit_balances").document(tenant).collection("ledger")
    query = ledger.where(filter=FieldFilter("job_id", "==", job_id)).where(
        filter=FieldFilter("kind", "==", "refund")
    )
    return sorted(snapshot.id for snapshot in query.stream())


def image_at(url: str) -> bytes:
    response = httpx.get(url, timeout=30)
    response.raise_for_status()
    return response.content


@pytest.mark.parametrize(
    ("job_type", "row_price", "with_image"),
    [("character", 2.0, False), ("food", 2.0, True), ("product", 2.5, True), ("text", 2.0, False)],
)
def test_each_type_runs_through_gemini_batch_mode_at_half_price(
    api: httpx.Client,
    admin: httpx.Client,
    gemini_control: httpx.Client,
    firestore_db: Any,
    job_type: str,
    row_price: float,
    with_image: bool,
) -> None:
    configure_gemini(gemini_control, **FAST)
    tenant = tenant_of(api)
    grant(admin, tenant, 100)
    photo = base64.b64encode(png(seed=7, size=24)).decode()
    rows = [
        {"prompt": f"{job_type} pose {index}", **({"imageBase64": photo} if with_image else {})}
        for index in range(3)
    ]

    created = create(api, {"type": job_type, "requests": rows, "displayName": f"{job_type} set"})
    final = wait_final(api, created["id"])

    assert created["status"] == "pending" and created["type"] == f"batch-{job_type}"
    assert (created["requestCount"], created["creditCost"], created["mode"]) == (3, 3 * row_price, "batch")
    assert final["status"] == "completed" and final["state"] == "JOB_STATE_SUCCEEDED"
    assert (final["successCount"], final["failCount"], final["errors"]) == (3, 0, [])
    assert (final["creditCost"], final["creditsRefunded"]) == (3 * row_price, 0)
    images = [image_at(url) for url in final["results"]]
    assert all(check_decodes(image) == "image/png" for image in images) and len(set(images)) == 3
    assert assert_ledger_matches(api, firestore_db) == 100 - 3 * row_price
    events = usage_events(firestore_db, created["id"])
    assert len(events) == 3 and {(e["endpoint"], e["method"]) for e in events} == {
        ("batchmode", "batchGenerateContent")
    }
    for event in events:  # billed at the Batch Mode price: half the interactive one
        full = estimate_cost_usd(
            model=event["model"], input_tokens=event["input_tokens"], output_tokens=event["output_tokens"]
        )
        assert event["cost_usd"] == pytest.approx(full * BATCH_MODE_FACTOR) and full > 0


def test_rows_match_their_answers_by_key_when_gemini_answers_out_of_order(
    api: httpx.Client, admin: httpx.Client, gemini_control: httpx.Client
) -> None:
    configure_gemini(gemini_control, **FAST, batchResponseOrder="shuffled")
    grant(admin, tenant_of(api), 20)
    prompts = [f"a lamp in style {index}" for index in range(5)]

    final = wait_final(api, create(api, {"type": "text", "requests": [{"prompt": p} for p in prompts]})["id"])
    # The same prompt asked interactively: the emulator's images are deterministic.
    expected = []
    for prompt in prompts:
        answer = gemini_control.post(
            "/v1beta/models/gemini-2.5-flash-image:generateContent",
            headers={"x-goog-api-key": "local"},
            json={
                "contents": [{"role": "user", "parts": [{"text": prompt}]}],
                "generationConfig": {"responseModalities": ["TEXT", "IMAGE"]},
            },
        ).json()
        parts = answer["candidates"][0]["content"]["parts"]
        expected.append(base64.b64decode(next(p["inlineData"]["data"] for p in parts if "inlineData" in p)))

    assert [image_at(url) for url in final["results"]] == expected


def test_failed_rows_are_refunded_exactly_once(
    api: httpx.Client, admin: httpx.Client, gemini_control: httpx.Client, firestore_db: Any
) -> None:
    configure_gemini(gemini_control, **FAST)
    tenant = tenant_of(api)
    grant(admin, tenant, 10)
    rows = [
        {"prompt": "ok 0"},
        {"prompt": "EMULATOR_FAIL_400 bad 1"},
        {"prompt": "ok 2"},
        {"prompt": "x EMULATOR_FAIL_500"},
    ]

    created = create(api, {"type": "product", "requests": rows})
    final = wait_final(api, created["id"])

    assert final["state"] == "JOB_STATE_SUCCEEDED" and final["status"] == "completed"
    assert [url is not None for url in final["results"]] == [True, False, True, False]
    assert (final["successCount"], final["failCount"], final["creditsRefunded"]) == (2, 2, 5.0)
    assert final["errors"][0].startswith("request 1: request_failed")
    assert refunds(firestore_db, tenant, created["id"]) == [f"{created['id']}:refund:{row}" for row in (1, 3)]
    assert assert_ledger_matches(api, firestore_db) == 10 - 10 + 5
    history = api.get("/batch/history").json()
    assert history[0]["id"] == created["id"] and history[0]["successCount"] == 2


def test_insufficient_credits_is_402_with_the_cost_and_the_balance_and_creates_nothing(
    api: httpx.Client, admin: httpx.Client, firestore_db: Any
) -> None:
    tenant = tenant_of(api)
    grant(admin, tenant, 3)

    response = api.post("/batch/create", json={"type": "character", "requests": [{"prompt": "a"}] * 2})

    assert response.status_code == 402
    error = response.json()["error"]
    assert error["code"] == "insufficient_credits" and error["details"] == [
        {"creditCost": 4.0, "balance": 3.0}
    ]
    assert api.get("/batch/history").json() == []
    assert assert_ledger_matches(api, firestore_db) == 3
    jobs = firestore_db.collection("batchmode_jobs").where(filter=FieldFilter("owner", "==", tenant)).stream()
    assert list(jobs) == []


def test_cancel_stops_the_gemini_job_and_refunds_every_row_not_run(
    api: httpx.Client, admin: httpx.Client, gemini_control: httpx.Client, firestore_db: Any
) -> None:
    configure_gemini(gemini_control, batchPendingMs=600_000)
    tenant = tenant_of(api)
    grant(admin, tenant, 10)
    created = create(api, {"type": "food", "requests": [{"prompt": f"dish {i}"} for i in range(3)]})
    job_id = created["id"]
    record = firestore_db.collection("batchmode_jobs").document(job_id)
    gemini_job = wait_for(lambda: record.get().get("gemini_job"), timeout=30, what="the Gemini job")

    cancelled = api.delete(f"/batch/{job_id}")
    final = wait_final(api, job_id)

    assert cancelled.status_code == 200
    assert final["state"] == "JOB_STATE_CANCELLED" and final["status"] == "cancelled"
    assert final["results"] == [None, None, None] and final["creditsRefunded"] == 6.0
    gemini = gemini_control.get(f"/v1beta/{gemini_job}", headers={"x-goog-api-key": "k"}).json()
    assert gemini["metadata"]["state"] == "BATCH_STATE_CANCELLED"
    assert len(refunds(firestore_db, tenant, job_id)) == 3
    assert assert_ledger_matches(api, firestore_db) == 10
    assert api.delete(f"/batch/{job_id}").status_code == 409


def test_an_expired_gemini_job_refunds_every_row(
    api: httpx.Client, admin: httpx.Client, gemini_control: httpx.Client, firestore_db: Any
) -> None:
    configure_gemini(gemini_control, batchPendingMs=600_000, batchExpireMs=1)
    tenant = tenant_of(api)
    grant(admin, tenant, 4)

    created = create(api, {"type": "text", "requests": [{"prompt": "late 0"}, {"prompt": "late 1"}]})
    final = wait_final(api, created["id"])

    assert final["state"] == "JOB_STATE_EXPIRED" and final["status"] == "failed"
    assert final["failCount"] == 2 and final["creditsRefunded"] == 4.0
    assert all(error.split(": ")[1] == "job_expired" for error in final["errors"])
    assert assert_ledger_matches(api, firestore_db) == 4


def test_guards_key_admin_limits_and_images(api: httpx.Client, admin: httpx.Client, gateway_url: str) -> None:
    grant(admin, tenant_of(api), 1000)
    tiny = base64.b64encode(png(seed=1)).decode()

    def problem(body: dict[str, Any]) -> tuple[int, str]:
        response = api.post("/batch/create", json=body)
        details = response.json()["error"].get("details") or [{}]
        return response.status_code, str(details[0].get("field", ""))

    assert httpx.post(f"{gateway_url}/batch/create", json={}).status_code == 401
    refused = admin.post("/batch/create", json={"type": "text", "requests": [{"prompt": "a"}]})
    assert refused.status_code == 403
    assert problem({"type": "text", "requests": [{"prompt": "a"}] * 21}) == (400, "requests")
    assert problem({"type": "poster", "requests": [{"prompt": "a"}]}) == (400, "type")
    assert problem({"type": "text", "requests": [{"prompt": "a"}], "status": "completed"}) == (400, "status")
    assert problem({"type": "food", "requests": [{"prompt": "a", "imageBase64": "@@@"}]}) == (
        400,
        "requests.0.imageBase64",
    )
    not_image = base64.b64encode(b"just text, not a picture").decode()
    assert problem({"type": "food", "requests": [{"prompt": "a", "imageBase64": not_image}]})[0] == 400
    huge = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * (7 * 1024 * 1024 + 1)).decode()
    assert problem({"type": "food", "requests": [{"prompt": "a", "imageBase64": huge}]})[0] == 400
    assert problem({"type": "text", "requests": [{"prompt": "a"}], "notify": {"url": "ftp://x"}}) == (
        400,
        "notify.url",
    )
    accepted = api.post(
        "/batch/create", json={"type": "food", "requests": [{"prompt": "a", "imageBase64": tiny}]}
    )
    assert accepted.status_code == 202
    assert (
        admin.post("/batch/credits/grant", json={"tenant": "x", "amount": 1, "reason": "r"}).status_code
        == 200
    )
    assert (
        api.post("/batch/credits/grant", json={"tenant": "x", "amount": 1, "reason": "r"}).status_code == 403
    )


def test_tenants_see_only_their_own_jobs(
    api: httpx.Client, other_api: httpx.Client, admin: httpx.Client, gemini_control: httpx.Client
) -> None:
    configure_gemini(gemini_control, **FAST)
    grant(admin, tenant_of(api), 10)
    job_id = create(api, {"type": "text", "requests": [{"prompt": "mine"}]})["id"]
    wait_final(api, job_id)

    assert other_api.get(f"/batch/status/{job_id}").status_code == 404
    assert other_api.delete(f"/batch/history/{job_id}").status_code == 404
    assert other_api.delete(f"/batch/{job_id}").status_code == 404
    assert other_api.get("/batch/history").json() == []
    assert other_api.get("/batch/credits").json()["balance"] == 0


def test_history_is_newest_first_paginated_filtered_and_deletable(
    api: httpx.Client, admin: httpx.Client, gemini_control: httpx.Client, firestore_db: Any
) -> None:
    configure_gemini(gemini_control, **FAST)
    grant(admin, tenant_of(api), 20)
    ids = [create(api, {"type": t, "requests": [{"prompt": t}]})["id"] for t in ("text", "food", "text")]
    image_url = [wait_final(api, job_id)["results"][0] for job_id in ids][0]
    gemini_job = firestore_db.collection("batchmode_jobs").document(ids[0]).get().get("gemini_job")
    running = create(api, {"type": "text", "requests": [{"prompt": "still running"}]})
    refused = api.delete(f"/batch/history/{running['id']}")
    wait_final(api, running["id"])

    first = api.get("/batch/history", params={"limit": 2})
    second = api.get("/batch/history", params={"limit": 2, "cursor": first.headers["X-Next-Cursor"]})
    texts = api.get("/batch/history", params={"type": "text"}).json()
    deleted = api.delete(f"/batch/history/{ids[0]}")

    assert refused.status_code == 409  # a job still running is cancelled first
    assert [job["id"] for job in first.json() + second.json()] == [running["id"], *ids[::-1]][:4]
    assert first.headers["X-Next-Cursor"] == ids[2]
    assert [job["id"] for job in texts] == [running["id"], ids[2], ids[0]]
    assert deleted.status_code == 200
    assert api.get(f"/batch/status/{ids[0]}").status_code == 404
    assert ids[0] not in [job["id"] for job in api.get("/batch/history").json()]
    assert httpx.get(image_url, timeout=30).status_code == 404  # its image is gone
    assert gemini_control.get(f"/v1beta/{gemini_job}", headers={"x-goog-api-key": "k"}).status_code == 404
    assert assert_ledger_matches(api, firestore_db) == 20 - 2 * 4


class _Hooks(BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return


def test_the_webhook_is_signed_and_delivered_once(
    api: httpx.Client, admin: httpx.Client, gemini_control: httpx.Client
) -> None:
    configure_gemini(gemini_control, **FAST)
    grant(admin, tenant_of(api), 10)
    received: list[tuple[dict[str, str], bytes]] = []
    handler = type("Hooks", (_Hooks,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        job_id = create(api, {"type": "text", "requests": [{"prompt": "ping"}], "notify": {"url": url}})["id"]
        final = wait_final(api, job_id)
        wait_for(lambda: received, timeout=30, what="the webhook")
        # A second fan-in (a repeated finalize task) must not post again.
        api.get(f"/batch/status/{job_id}")
    finally:
        server.shutdown()
        server.server_close()
    secret = api.get("/batch/webhook-secret").json()["secret"]

    assert len(received) == 1
    headers, body = received[0]
    fields = dict(part.split("=", 1) for part in headers["x-batch-signature"].split(","))
    expected = hmac.new(secret.encode(), f"{fields['t']}.".encode() + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(fields["v1"], expected)
    posted = json.loads(body)
    assert (posted["id"], posted["state"], posted["successCount"]) == (job_id, final["state"], 1)


def test_auto_mode_runs_a_small_job_interactively_at_the_interactive_price(
    api: httpx.Client, admin: httpx.Client, firestore_db: Any
) -> None:
    tenant = tenant_of(api)
    grant(admin, tenant, 20)

    created = create(
        api, {"type": "character", "mode": "auto", "requests": [{"prompt": "hero"}, {"prompt": "x"}]}
    )
    final = wait_final(api, created["id"])
    urgent = create(
        api, {"type": "text", "mode": "auto", "deadlineSeconds": 600, "requests": [{"prompt": "p"}] * 3}
    )

    assert created["mode"] == "interactive" and created["creditCost"] == 8.0
    assert "interactive" in created["message"]
    assert final["state"] == "JOB_STATE_SUCCEEDED" and final["successCount"] == 2
    assert urgent["mode"] == "interactive" and urgent["creditCost"] == 12.0
    events = usage_events(firestore_db, created["id"])
    assert {(e["endpoint"], e["method"]) for e in events} == {("batchmode", "generateContent")}
    wait_final(api, urgent["id"])
    assert assert_ledger_matches(api, firestore_db) == 0


def test_a_running_gemini_job_is_polled_by_scheduled_tasks_until_it_ends(
    gateway_url: str,
    own_queue: str,
    admin: httpx.Client,
    gemini_control: httpx.Client,
    firestore_db: Any,
    unique: str,
) -> None:
    # A gateway of the test's own polls every 0.3 s (growing 1.5x), so the deferral chain is seen in seconds.
    gateway = Gateway(port=free_port(), queue=own_queue, lease_seconds=60)
    gateway.env["BATCHMODE_POLL_SECONDS"] = "0.3"
    gateway.start()
    configure_gemini(gemini_control, batchPendingMs=1500, batchRunningMs=4000)  # polls at 0.3 s, 1.5x
    tenant = f"poll-{unique}"
    grant(admin, tenant, 10)
    key = new_api_key(tenant)
    states: list[str] = []
    try:
        with httpx.Client(
            base_url=gateway.url, headers={"Authorization": f"Bearer {key}"}, timeout=60
        ) as api:
            job_id = create(api, {"type": "character", "requests": [{"prompt": "p0"}, {"prompt": "p1"}]})[
                "id"
            ]

            def _final() -> dict[str, Any] | None:
                shown: dict[str, Any] = api.get(f"/batch/status/{job_id}").json()
                states.append(shown["state"])
                return shown if shown.get("finishedAt") else None

            final = wait_for(_final, timeout=60, interval=0.1, what="the polled job")
    finally:
        gateway.kill()
    poll_chunk = (
        firestore_db.collection("batches").document(job_id).collection("chunks").document("000001").get()
    )

    assert final["state"] == "JOB_STATE_SUCCEEDED" and final["successCount"] == 2
    assert (
        states.index("JOB_STATE_PENDING") < states.index("JOB_STATE_RUNNING") < states.index(final["state"])
    )
    assert poll_chunk.get("deferrals") >= 2 and poll_chunk.get("state") == "done"
