"""The chaos run's own local cloud: started for the run with short leases, its pieces restarted, paused and
faulted one at a time, and the clients the checker reads the ground truth with."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import httpx
from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore, storage, tasks_v2  # type: ignore[attr-defined]
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport
from google.protobuf import duration_pb2

from infra import localcloud
from infra.resources import apply_local
from shared.emulator_config import REPO_ROOT, EmulatorConfig, load_emulator_config
from shared.models.auth import Role
from shared.settings import get_settings
from tests.conftest import wait_for
from tests.e2e.conftest import new_api_key

# The settings of the run's own local cloud: a lease short enough that a killed worker's chunk is taken
# again within seconds, and no model-rate wait for the image queue.
CLOUD_ENV = {
    "BATCH_LEASE_SECONDS": "4",
    "BATCH_CHUNK_SIZE": "5",
    "BATCH_STALL_SECONDS": "5",
    "BATCHMODE_POLL_SECONDS": "0.5",  # Batch Mode jobs polled every 0.5 s (growing 1.5x), not 30 s
    "IMAGE_MODEL_RPM": "100000",
    "IMAGE_RETRY_BASE_DELAY_MS": "200",
}
GEMINI_DEFAULTS = {"latencyMs": 0, "errorRate": 0.0, "errorStatus": 429, "retryDelayMs": 1000}
# After the platform is paused, in-flight writes are given this long to land before Firestore's data is
# exported (the emulator keeps it in memory; Google's Firestore never loses an acknowledged write).
IN_FLIGHT_GRACE_S = 0.5


class ChaosCloud:
    """The local cloud of this checkout, started for the run (never one already running)."""

    def __init__(self) -> None:
        self.config: EmulatorConfig = load_emulator_config()
        self.settings = get_settings()
        self.export_dir = Path(tempfile.mkdtemp(prefix="chaos-firestore-"))
        self._db: Any = None
        self._storage: Any = None
        self._tasks: Any = None
        self.gemini = httpx.Client(base_url=self.config.emulators.gemini.url, timeout=30)
        self.tasks_log = localcloud.LOG_DIR / "tasks.log"

    # --- lifecycle --------------------------------------------------------------------------------------

    def start(self) -> None:
        if localcloud.is_running(self.config):
            raise localcloud.LocalCloudError(
                "the local cloud of this checkout is running: `make down` first (the chaos run starts its "
                "own and restarts its pieces)"
            )
        os.environ.update(CLOUD_ENV)
        os.environ["FIRESTORE_EMULATOR_HOST"] = self.config.emulators.firestore.address
        os.environ["STORAGE_EMULATOR_HOST"] = self.config.emulators.storage.url
        localcloud.start(self.config)

    def stop(self) -> None:
        self.gemini.close()
        localcloud.stop()
        shutil.rmtree(self.export_dir, ignore_errors=True)

    @property
    def functions_url(self) -> str:
        return self.config.emulators.functions.url

    @property
    def db(self) -> Any:
        if self._db is None:
            self._db = firestore.Client(project=self.config.project_id)
        return self._db

    @property
    def storage(self) -> Any:
        if self._storage is None:
            self._storage = storage.Client(
                project=self.config.project_id,
                credentials=AnonymousCredentials(),
                client_options={"api_endpoint": self.config.emulators.storage.url},
            )
        return self._storage

    @property
    def tasks(self) -> Any:
        if self._tasks is None:
            self._tasks = tasks_v2.CloudTasksClient(
                transport=CloudTasksGrpcTransport(
                    channel=grpc.insecure_channel(self.config.emulators.tasks.address)
                )
            )
        return self._tasks

    def api(self, tenant: str, role: Role = Role.USER) -> httpx.Client:
        key = new_api_key(tenant, role)
        return httpx.Client(
            base_url=self.functions_url, headers={"Authorization": f"Bearer {key}"}, timeout=120
        )

    # --- faults -----------------------------------------------------------------------------------------

    def configure_gemini(self, **config: Any) -> None:
        self.gemini.post("/emulator/config", json=GEMINI_DEFAULTS | config).raise_for_status()

    def restart(self, name: str, *, extra_args: tuple[str, ...] = (), env: Mapping[str, str] = {}) -> float:
        """Kill one piece (SIGKILL, its whole process group) and start it again on its port, with
        `extra_args` (a fault setting); returns the seconds it was down. Its log is appended to."""
        piece = next(p for p in localcloud.pieces(self.config) if p.name == name)
        pids = json.loads(localcloud.PIDS_FILE.read_text())
        began = time.monotonic()
        _kill_group(pids[name])
        wait_for(lambda: not _port_open(piece), timeout=20, what=f"{name} to stop")
        command = [*piece.command, *extra_args]
        if name == "firestore" and self._last_export is not None:
            command.append(f"--import-data={self._last_export}")
        child_env = os.environ | {"PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"} | dict(env)
        with (localcloud.LOG_DIR / f"{name}.log").open("ab") as log_file:
            process = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                env=child_env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        localcloud._children[name] = process
        pids[name] = process.pid
        localcloud.PIDS_FILE.write_text(json.dumps(pids))
        wait_for(lambda: localcloud._is_ready(piece), timeout=30, what=f"{name} to start again")
        if name == "tasks":
            apply_local(self.config)  # the emulator keeps its queues in memory: declare them again
        self._last_export = None
        return time.monotonic() - began

    _last_export: str | None = None

    def restart_firestore_keeping_data(self) -> float:
        """Restart the Firestore emulator without losing an acknowledged write: the platform (the gateway)
        is paused, Firestore's data exported, the emulator killed and started again on the export."""
        with self.paused("functions"):
            time.sleep(IN_FLIGHT_GRACE_S)  # in-flight writes land (see IN_FLIGHT_GRACE_S)
            self._last_export = self._export_firestore()
            return self.restart("firestore")

    def _export_firestore(self) -> str:
        target = self.export_dir / f"x{time.monotonic_ns()}"
        target.mkdir()
        project = self.config.project_id
        response = httpx.post(
            f"{self.config.emulators.firestore.url}/emulator/v1/projects/{project}:export",
            json={"database": f"projects/{project}/databases/(default)", "export_directory": str(target)},
            timeout=120,
        )
        response.raise_for_status()
        (metadata,) = target.glob("*/*.overall_export_metadata")
        return str(metadata)

    @contextmanager
    def paused(self, name: str) -> Iterator[None]:
        """SIGSTOP one piece's process group for the duration (it keeps its connections and state)."""
        pid = json.loads(localcloud.PIDS_FILE.read_text())[name]
        os.killpg(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.killpg(pid, signal.SIGCONT)

    # --- own queues -------------------------------------------------------------------------------------

    def create_queue(self, name: str) -> str:
        parent = f"projects/{self.settings.project_id}/locations/{self.settings.region}"
        self.tasks.create_queue(
            parent=parent,
            queue=tasks_v2.Queue(
                name=f"{parent}/queues/{name}",
                retry_config=tasks_v2.RetryConfig(
                    max_attempts=100,
                    min_backoff=duration_pb2.Duration(nanos=200_000_000),
                    max_backoff=duration_pb2.Duration(seconds=2),
                ),
            ),
        )
        return name

    # --- ground truth -----------------------------------------------------------------------------------

    def deliveries(self, task_prefixes: tuple[str, ...]) -> list[dict[str, Any]]:
        """The Tasks emulator's log lines of deliveries of tasks whose id starts with one of the prefixes."""
        records = []
        if not self.tasks_log.exists():
            return records
        for line in self.tasks_log.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("{") and '"task"' in line:
                record = json.loads(line)
                if str(record.get("task", "")).startswith(task_prefixes):
                    records.append(record)
        return records

    def model_calls(self, marker_prefix: str) -> list[dict[str, Any]]:
        """The calls the Gemini emulator answered whose request held a marker of this prefix."""
        response = self.gemini.get("/emulator/calls", params={"marker": marker_prefix})
        response.raise_for_status()
        calls: list[dict[str, Any]] = response.json()["calls"]
        return calls


class UploadWatch:
    """Every generation of the objects under some prefixes, as seen by listing the buckets often while a
    scenario runs: a second upload of an object shows as a second generation (the storage emulator keeps no
    object versions, so this watch is its record of uploads)."""

    def __init__(self, cloud: ChaosCloud, *, interval_s: float = 0.25) -> None:
        self._cloud = cloud
        self._interval_s = interval_s
        self._prefixes: list[tuple[str, str]] = []
        self.generations: dict[tuple[str, str], set[int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="upload-watch", daemon=True)
        self._lock = threading.Lock()

    def watch(self, bucket: str, prefix: str) -> None:
        with self._lock:
            self._prefixes.append((bucket, prefix))

    def __enter__(self) -> UploadWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.scan()
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.scan()
            except Exception:  # noqa: S112 - a scan during a restart fails; the next one counts
                continue

    def scan(self) -> None:
        with self._lock:
            prefixes = list(self._prefixes)
        for bucket, prefix in prefixes:
            for blob in self._cloud.storage.list_blobs(bucket, prefix=prefix):
                self.generations.setdefault((bucket, blob.name), set()).add(int(blob.generation))

    def uploads(self, bucket: str, name: str) -> int:
        return len(self.generations.get((bucket, name), set()))


def generation_time(generation: int) -> dt.datetime:
    """The storage emulator's generations are the upload's time in microseconds since the epoch."""
    return dt.datetime.fromtimestamp(generation / 1_000_000, dt.UTC)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _port_open(piece: localcloud.Piece) -> bool:
    return localcloud._port_open(piece.endpoint)
