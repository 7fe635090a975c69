"""For tests of at-least-once delivery: a gateway of the test's own to kill, calls of the internal functions
with the platform's OIDC tokens, the sweeper run by hand, and the usage events a batch recorded."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import httpx
from google.cloud.firestore_v1.base_query import FieldFilter

from infra.emulators.oidc import TokenMinter
from shared.emulator_config import REPO_ROOT
from shared.settings import get_settings
from tests.conftest import wait_for


def usage_events(db: Any, batch_id: str) -> list[dict[str, Any]]:
    """Every model call recorded for the batch (usage records hold the calls of one results commit)."""
    query = db.collection("usage_events").where(filter=FieldFilter("job_id", "==", batch_id))
    return [event for snapshot in query.stream() for event in json.loads(snapshot.get("events"))]


def call_internal(base_url: str, function_name: str, body: dict[str, Any]) -> httpx.Response:
    settings = get_settings()
    url = f"{base_url}/{function_name}"
    token = TokenMinter().mint(service_account_email=settings.tasks_service_account, audience=url)
    return httpx.post(url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=120)


def free_port() -> int:
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


def sweep_until(gateway_url: str, done: Callable[[], bool]) -> None:
    """Run the sweeper (as Cloud Scheduler does every minute) until it requeued a stalled chunk or `done`."""
    token = TokenMinter().mint(
        service_account_email=get_settings().scheduler_service_account,
        audience=f"{gateway_url}/batch_sweeper",
    )

    def _swept_or_done() -> bool:
        swept = httpx.post(
            f"{gateway_url}/batch_sweeper", headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        assert swept.status_code == 200, swept.text
        return bool(swept.json()["requeuedChunks"]) or done()

    wait_for(_swept_or_done, timeout=60, interval=0.5, what="the sweeper to requeue the stalled chunk")
