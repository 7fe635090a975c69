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


@pytest.fixture
def api(gateway_url: str, unique: str) -> Iterator[httpx.Client]:
    """A client of a fresh tenant."""
    key = new_api_key(f"tenant-{unique}")
    with httpx.Client(
        base_url=gateway_url, headers={"Authorization": f"Bearer {key}"}, timeout=120
    ) as client:
        yield client


@pytest.fixture
def other_api(gateway_url: str, unique: str) -> Iterator[httpx.Client]:
    """A client of a second, unrelated tenant."""
    key = new_api_key(f"other-{unique}")
    with httpx.Client(
        base_url=gateway_url, headers={"Authorization": f"Bearer {key}"}, timeout=120
    ) as client:
        yield client


@pytest.fixture
def gemini(local_cloud: EmulatorConfig) -> Iterator[httpx.Client]:
    """The Gemini emulator's control endpoint; its configuration is reset after the test."""
    with httpx.Client(base_url=local_cloud.emulators.gemini.url, timeout=10) as client:
        client.post("/emulator/reset").raise_for_status()
        yield client
        client.post("/emulator/reset").raise_for_status()


def configure_gemini(gemini: httpx.Client, **config: Any) -> None:
    gemini.post("/emulator/config", json=config).raise_for_status()
