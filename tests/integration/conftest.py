"""Fixtures shared by the emulator conformance suites."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from shared.emulator_config import REPO_ROOT, EmulatorConfig
from tests.conftest import wait_for
from tests.integration.http_recorder import Recorder
from tests.integration.processes import serves


@pytest.fixture
def parent(emulator_config: EmulatorConfig) -> str:
    """The project's location, parent of queues and scheduler jobs."""
    return f"projects/{emulator_config.project_id}/locations/{emulator_config.region}"


@pytest.fixture(scope="module")
def oidc_certs_url(emulator_config: EmulatorConfig) -> Iterator[str]:
    """The local OIDC issuer's certificates: the running local cloud's, or an issuer started here."""
    url = emulator_config.oidc_certs_url
    if serves(url):
        yield url
        return
    issuer = subprocess.Popen(
        [sys.executable, "-m", "infra.emulators.oidc"],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: serves(url), timeout=20, what="the OIDC issuer")
        yield url
    finally:
        issuer.terminate()
        issuer.wait(10)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    """A real HTTP handler on loopback that records what is delivered to it."""
    with Recorder() as running:
        yield running
