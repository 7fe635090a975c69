"""End-to-end fixtures: HTTP through the functions gateway, as a client would."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport
from google.protobuf import duration_pb2

from shared import runtime
from shared.app import platform
from shared.emulator_config import EmulatorConfig
from shared.models.auth import Role
from shared.services.auth import create_api_key
from shared.settings import get_settings


@pytest.fixture(scope="session")
def gateway_url(local_cloud: EmulatorConfig) -> str:
    return local_cloud.emulators.functions.url


def new_api_key(tenant: str, role: Role = Role.USER, rate_limit_per_minute: int | None = None) -> str:
    wired = platform()
    return runtime.run(
        create_api_key(
            keys=wired.keys,
            tenant=tenant,
            role=role,
            now=wired.engine.clock(),
            rate_limit_per_minute=rate_limit_per_minute,
        )
    )


def tenant_client(gateway_url: str, tenant: str) -> httpx.Client:
    """An HTTP client of the gateway holding a fresh API key of `tenant`."""
    key = new_api_key(tenant)
    return httpx.Client(base_url=gateway_url, headers={"Authorization": f"Bearer {key}"}, timeout=120)


@pytest.fixture
def api(gateway_url: str, unique: str) -> Iterator[httpx.Client]:
    """A client of a fresh tenant."""
    with tenant_client(gateway_url, f"tenant-{unique}") as client:
        yield client


@pytest.fixture
def other_api(gateway_url: str, unique: str) -> Iterator[httpx.Client]:
    """A client of a second, unrelated tenant."""
    with tenant_client(gateway_url, f"other-{unique}") as client:
        yield client


def configure_gemini(gemini: httpx.Client, **config: Any) -> None:
    gemini.post("/emulator/config", json=config).raise_for_status()


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
