"""The local cloud runner's failure messages (no emulator started)."""

from __future__ import annotations

import socket

import pytest

from infra import localcloud
from shared.emulator_config import load_emulator_config


def test_a_port_already_taken_is_a_one_line_error_naming_the_piece() -> None:
    config = load_emulator_config()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        emulators = config.emulators.model_copy(
            update={"gemini": config.emulators.gemini.model_copy(update={"port": port})}
        )
        pieces = localcloud.pieces(config.model_copy(update={"emulators": emulators}))
        gemini = [p for p in pieces if p.name == "gemini"]
        with pytest.raises(localcloud.LocalCloudError) as caught:
            localcloud.check_ports_free(gemini)
    message = str(caught.value)
    assert message.startswith("gemini: port ")
    assert "\n" not in message and "emulator.json" in message


def test_a_missing_firestore_emulator_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIRESTORE_EMULATOR_JAR", "/nonexistent/cloud-firestore-emulator.jar")
    with pytest.raises(localcloud.LocalCloudError, match="install the Google Cloud CLI"):
        localcloud.pieces(load_emulator_config())


def test_the_banner_prints_the_dashboards_url() -> None:
    config = load_emulator_config()

    banner = localcloud.describe(config)

    assert f"dashboard: {config.emulators.functions.url}/dashboard/" in banner
