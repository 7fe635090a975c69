"""End-to-end fixtures: HTTP through the functions gateway, as a client would."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from shared import runtime
from shared.app import platform
from shared.emulator_config import EmulatorConfig
from shared.models.auth import Role
from shared.services.auth import create_api_key


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
