"""At-least-once delivery: duplicate and concurrent deliveries, a worker killed mid-chunk, finalizer twice."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import httpx
import pytest
from google.cloud import tasks_v2
from google.cloud.firestore_v1.base_query import FieldFilter
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport
from google.protobuf import duration_pb2

from infra.emulators.oidc import TokenMinter
from shared.emulator_config import REPO_ROOT, EmulatorConfig
from shared.settings import get_settings
from tests.conftest import wait_for
from tests.e2e.batch_client import all_results, status, submit, wait_final
from tests.e2e.conftest import new_api_key


def usage_events(db: Any, batch_id: str) -> list[dict[str, Any]]:
    """Every model call recorded for the batch (usage records hold the calls of one results commit)."""
    query = db.collection("usage_events").where(filter=FieldFilter("job_id", "==", batch_id))
    return [event for snapshot in query.stream() for event in json.loads(snapshot.get("events"))]


def call_internal(base_url: str, function_name: str, body: dict[str, Any]) -> httpx.Response:
    settings = get_settings()
    url = f"{base_url}/{function_name}"
    token = TokenMinter().mint(service_account_email=settings.tasks_service_account, audience=url)
    return httpx.post(url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=120)


def test_duplicate_and_concurrent_deliveries_run_each_request_once(
    api: httpx.Client, gateway_url: str, firestore_db: Any
) -> None:
    body = submit(api, [f"EMULATOR_SLEEP_40 item {i}" for i in range(40)], concurrency=4, wait=False)
    batch_id = body["batchId"]
    message = {"batch_id": batch_id, "chunk": 0, "segment": 0}

    # Two more deliveries of the same chunk, at once, racing the one Cloud Tasks makes.
    with ThreadPoolExecutor(max_workers=2) as pool:
        responses = list(pool.map(lambda _: call_internal(gateway_url, "batch_worker", message), range(2)))
    assert {r.status_code for r in responses} <= {200, 409}
    final = wait_final(api, batch_id)

    assert final["status"] == "completed"
    assert final["progress"]["successful"] == 40
    events = usage_events(firestore_db, batch_id)
    assert sorted(int(e["event_id"].split("-")[1]) for e in events) == list(range(40)), (
        "each request ran once"
    )
    assert final["tokens"]["total"] == sum(e["total_tokens"] for e in events)

    # A late duplicate of the finished chunk, and the finalizer delivered twice more: no effect.
    late = call_internal(gateway_url, "batch_worker", message)
    finals = [call_internal(gateway_url, "batch_finalizer", {"batch_id": batch_id}) for _ in range(2)]
    assert late.status_code == 200
    assert [f.json()["outcome"] for f in finals] == ["already final", "already final"]
    assert len(usage_events(firestore_db, batch_id)) == 40
    assert status(api, batch_id)["tokens"] == final["tokens"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Gateway:
    """A second functions gateway of our own, so the test can kill it mid-chunk."""

    def __init__(self, *, port: int, queue: str, lease_seconds: float) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.env = os.environ | {
            "PYTHONPATH": str(REPO_ROOT),
            "FUNCTIONS_BASE_URL": self.url,
            "TASKS_QUEUE": queue,
            "BATCH_LEASE_SECONDS": str(lease_seconds),
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "infra.gateway", "--port", str(self.port), "--threads", "32"],
            cwd=REPO_ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

        def _healthy() -> bool:
            try:
                return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(_healthy, timeout=30, what="the test gateway")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


@pytest.fixture
def own_queue(local_cloud: EmulatorConfig, unique: str) -> Iterator[str]:
    settings = get_settings()
    client = tasks_v2.CloudTasksClient(
        transport=CloudTasksGrpcTransport(channel=grpc.insecure_channel(local_cloud.emulators.tasks.address))
    )
    parent = f"projects/{settings.project_id}/locations/{settings.region}"
    name = f"kill-test-{unique}"
    client.create_queue(
        parent=parent,
        queue=tasks_v2.Queue(
            name=f"{parent}/queues/{name}",
            retry_config=tasks_v2.RetryConfig(
                max_attempts=100,
                min_backoff=duration_pb2.Duration(nanos=200_000_000),
                max_backoff=duration_pb2.Duration(seconds=1),
            ),
        ),
    )
    yield name
    client.delete_queue(name=f"{parent}/queues/{name}")


def test_worker_killed_mid_chunk_recovers_through_lease_and_sweeper(
    own_queue: str, unique: str, firestore_db: Any
) -> None:
    gateway = Gateway(port=_free_port(), queue=own_queue, lease_seconds=2)
    gateway.start()
    key = new_api_key(f"kill-{unique}")
    api = httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
    try:
        batch_id = submit(
            api, [f"EMULATOR_SLEEP_200 item {i}" for i in range(30)], concurrency=2, wait=False
        )["batchId"]
        wait_for(lambda: status(api, batch_id)["progress"]["finished"] >= 4, timeout=60, what="some results")

        gateway.kill()
        gateway.start()
        # Once the dead worker's lease has expired, the sweeper hands the chunk out again.
        sweeper_token = TokenMinter().mint(
            service_account_email=get_settings().scheduler_service_account,
            audience=f"{gateway.url}/batch_sweeper",
        )

        def _swept_or_done() -> bool:
            swept = httpx.post(
                f"{gateway.url}/batch_sweeper",
                headers={"Authorization": f"Bearer {sweeper_token}"},
                timeout=30,
            )
            assert swept.status_code == 200, swept.text
            return bool(swept.json()["requeuedChunks"]) or status(api, batch_id)["status"] == "completed"

        wait_for(_swept_or_done, timeout=60, interval=0.5, what="the sweeper to requeue the stalled chunk")
        final = wait_final(api, batch_id, timeout=120)

        assert final["status"] == "completed"
        results = all_results(api, batch_id)
        assert [r["status"] for r in results] == ["succeeded"] * 30
        ok_events = [e for e in usage_events(firestore_db, batch_id) if e["outcome"] == "ok"]
        assert sorted(int(e["event_id"].split("-")[1]) for e in ok_events) == list(range(30))
        assert final["tokens"]["total"] == sum(e["total_tokens"] for e in ok_events)
    finally:
        api.close()
        gateway.kill()
