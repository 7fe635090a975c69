"""The functions gateway and functions started alone behave the same."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import httpx

from shared.emulator_config import REPO_ROOT, EmulatorConfig
from tests.conftest import wait_for


def test_gateway_health_lists_every_function(local_cloud: EmulatorConfig) -> None:
    response = httpx.get(f"{local_cloud.emulators.functions.url}/health")
    assert response.status_code == 200
    functions = response.json()["functions"]
    expected = sorted(p.stem for p in (REPO_ROOT / "functions").glob("*.py") if not p.stem.startswith("_"))
    assert functions == expected


def test_unknown_function_and_route_are_json_404(local_cloud: EmulatorConfig) -> None:
    base = local_cloud.emulators.functions.url
    assert httpx.get(f"{base}/no_such_function/x").status_code == 404
    unknown_route = httpx.get(f"{base}/batch/no/such/route")
    assert unknown_route.status_code == 404
    assert unknown_route.json()["error"]["code"] == "not_found"


def test_a_function_started_alone_with_functions_framework_answers_the_same(
    local_cloud: EmulatorConfig,
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    executable = os.path.join(os.path.dirname(sys.executable), "functions-framework")
    process = subprocess.Popen(
        [executable, "--target", "batch", "--source", "functions/batch.py", "--host", "127.0.0.1",
         "--port", str(port)],
        cwd=REPO_ROOT,
        env=os.environ | {"PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:

        def _answer() -> httpx.Response | None:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/active", timeout=1)
            except httpx.TransportError:
                return None

        alone = wait_for(_answer, timeout=30, what="functions-framework to start")
        via_gateway = httpx.get(f"{local_cloud.emulators.functions.url}/batch/active")
        assert alone.status_code == via_gateway.status_code == 401
        assert alone.json() == via_gateway.json()
    finally:
        process.terminate()
        process.wait(10)


def test_a_function_with_an_invalid_setting_does_not_start() -> None:
    executable = os.path.join(os.path.dirname(sys.executable), "functions-framework")
    result = subprocess.run(
        [executable, "--target", "batch", "--source", "functions/batch.py", "--host", "127.0.0.1",
         "--port", "0"],
        cwd=REPO_ROOT,
        env=os.environ | {"PYTHONPATH": str(REPO_ROOT), "RATE_LIMIT_SYNC_SECONDS": "3600"},
        capture_output=True,
        timeout=30,  # a function that starts serves until stopped: the test fails on the timeout
    )  # fmt: skip

    assert result.returncode != 0
    assert b"rate_limit_sync_seconds" in result.stderr
