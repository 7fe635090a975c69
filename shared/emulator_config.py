"""The local cloud's single source of truth: `emulator.json` at the repository root.

The Makefile, the local cloud runner, the tests and the functions' settings all read the emulators'
hosts and ports from here, so no port is written anywhere else.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

REPO_ROOT = Path(__file__).resolve().parent.parent
EMULATOR_JSON = REPO_ROOT / "emulator.json"
# Runtime state of the local cloud (pids, logs, the local OIDC signing key); ignored by git.
STATE_DIR = REPO_ROOT / ".localcloud"


class Endpoint(BaseModel):
    """Where one emulator listens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str
    port: int = Field(ge=1, le=65535)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


class Emulators(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    firestore: Endpoint
    storage: Endpoint
    tasks: Endpoint
    scheduler: Endpoint
    gemini: Endpoint
    functions: Endpoint


class EmulatorConfig(BaseModel):
    """The parsed `emulator.json` (the shape of firebase.json's emulators block)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    project_id: str = Field(alias="projectId")
    region: str
    emulators: Emulators
    oidc_certs_url: str = Field(alias="oidcCertsUrl")

    @property
    def oidc(self) -> Endpoint:
        """Where the local OIDC issuer publishes its certificates (derived from `oidcCertsUrl`)."""
        parts = urlsplit(self.oidc_certs_url)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"oidcCertsUrl needs an explicit host and port: {self.oidc_certs_url}")
        return Endpoint(host=parts.hostname, port=parts.port)


@lru_cache(maxsize=4)
def load_emulator_config(path: Path = EMULATOR_JSON) -> EmulatorConfig:
    """Read and validate `emulator.json`."""
    return EmulatorConfig.model_validate(json.loads(path.read_text(encoding="utf-8")))
