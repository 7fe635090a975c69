"""A functions gateway of a bench section's own, on a free port, with the settings the section needs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from shared.emulator_config import REPO_ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_gateway(*, settings: Mapping[str, str], log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start the gateway with `settings` added to the environment; its process and URL once it answers.
    Its output (the functions' JSON log lines, warnings and errors) goes to `log_path`, never away: a bench
    that hides its errors cannot explain an outlier."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = os.environ | {"PYTHONPATH": str(REPO_ROOT), "FUNCTIONS_BASE_URL": url} | dict(settings)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "infra.gateway", "--port", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)  # polling interval of a bounded wait for the gateway to answer
    process.kill()
    raise RuntimeError("the bench gateway did not start within 30 s")
