"""Settings: local mode derives emulator endpoints; production refuses unsafe values."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from shared.emulator_config import load_emulator_config
from shared.settings import Settings


def test_local_mode_reads_emulator_json() -> None:
    settings = Settings(platform_env="local")
    config = load_emulator_config()
    assert settings.firestore_emulator_host == config.emulators.firestore.address
    assert settings.function_url("batch_worker") == f"{config.emulators.functions.url}/batch_worker"
    assert settings.oidc_certs_url == config.oidc_certs_url


# Every setting production requires, set to a value it accepts.
PRODUCTION: dict[str, Any] = {
    "platform_env": "production",
    "project_id": "p",
    "region": "europe-west1",
    "functions_base_url": "https://example.run.app",
    "results_bucket": "b",
    "tasks_service_account": "t@p.iam.gserviceaccount.com",
    "scheduler_service_account": "s@p.iam.gserviceaccount.com",
    "gemini_api_key": "real-key",
}


def test_production_requires_real_settings() -> None:
    with pytest.raises(ValidationError, match="GEMINI_API_KEY"):
        Settings(platform_env="production", project_id="p")


def test_production_refuses_emulator_endpoints() -> None:
    with pytest.raises(ValidationError, match="FIRESTORE_EMULATOR_HOST"):
        Settings(**PRODUCTION, firestore_emulator_host="127.0.0.1:1")


def test_limits_are_validated() -> None:
    with pytest.raises(ValidationError):
        Settings(batch_max_concurrency=0)


def test_a_clock_offset_is_refused_outside_local_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FIRESTORE_EMULATOR_HOST", "STORAGE_EMULATOR_HOST"):  # set by other tests' local cloud
        monkeypatch.delenv(name, raising=False)
    assert Settings(platform_env="local", clock_offset_seconds=5).clock_offset_seconds == 5
    with pytest.raises(ValidationError, match="CLOCK_OFFSET_SECONDS"):
        Settings(**PRODUCTION, clock_offset_seconds=5)
