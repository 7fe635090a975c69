"""Fixtures shared by the emulator conformance suites."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.emulator_config import EmulatorConfig
from tests.integration.http_recorder import Recorder


@pytest.fixture
def parent(local_cloud: EmulatorConfig) -> str:
    """The project's location, parent of queues and scheduler jobs."""
    return f"projects/{local_cloud.project_id}/locations/{local_cloud.region}"


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    """A real HTTP handler on loopback that records what is delivered to it."""
    with Recorder() as running:
        yield running
