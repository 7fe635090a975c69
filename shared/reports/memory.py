"""The honest peak memory a job adds: the process's resident set, and its helper processes' (the process
writing a workbook's sheets), sampled every 20 ms while it runs, minus what it was when the job started; and,
where the directory its files spill to is held in memory (tmpfs, as a Cloud Run instance's file system is),
those files too, since there they take the instance's memory as much as the processes do.
Measured, not estimated; on an instance running other work at the same time the other work's growth is
counted too (the figure is then an upper bound)."""

from __future__ import annotations

import os
import threading
from types import TracebackType

SAMPLE_INTERVAL_S = 0.02
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_helpers: set[int] = set()  # pids of the helper processes jobs of this process run now


def track_helper(pid: int) -> None:
    """Count a helper process's memory as the jobs' (until `untrack_helper`)."""
    _helpers.add(pid)


def untrack_helper(pid: int) -> None:
    _helpers.discard(pid)


def _statm_resident(path: str) -> int:
    try:
        with open(path, "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def resident_bytes() -> int:
    """The resident set size now of the process and its helpers (Linux /proc; 0 where it cannot be read)."""
    return _statm_resident("/proc/self/statm") + sum(
        _statm_resident(f"/proc/{pid}/statm") for pid in list(_helpers)
    )


IN_MEMORY_FILE_SYSTEMS = frozenset({"tmpfs", "ramfs"})
# Cloud Run's volumes that are not memory: Cloud Storage (gcsfuse) and NFS (Filestore).
VOLUME_FILE_SYSTEMS = ("nfs", "nfs4", "fuse")


def held_in_memory(directory: str, *, mounts: str = "/proc/mounts", on_cloud_run: bool | None = None) -> bool:
    """Whether files written under `directory` live in memory: its mount (the longest mount point that
    contains it) is a tmpfs or ramfs; or, on Cloud Run (`K_SERVICE` is set), whose container file system is
    held in memory whatever it calls itself, anything but a Cloud Storage or NFS volume."""
    if on_cloud_run is None:
        on_cloud_run = bool(os.environ.get("K_SERVICE"))
    path = os.path.realpath(directory)
    best, kind = "", ""
    try:
        with open(mounts, encoding="utf-8") as table:
            for line in table:
                fields = line.split()
                if len(fields) < 3:
                    continue
                point = fields[1].replace("\\040", " ")
                inside = path == point or path.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best):
                    best, kind = point, fields[2]
    except OSError:
        return on_cloud_run
    if kind in IN_MEMORY_FILE_SYSTEMS:
        return True
    return on_cloud_run and not kind.startswith(VOLUME_FILE_SYSTEMS)


def spilled_bytes(directory: str) -> int:
    """The bytes of the files under `directory` that the process and its helpers hold open (temporary
    files are unlinked at once, so only their descriptors find them), each file counted once."""
    prefix = os.path.realpath(directory).rstrip("/") + "/"
    sizes: dict[tuple[int, int], int] = {}
    for pid in ["self", *map(str, list(_helpers))]:
        try:
            descriptors = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for descriptor in descriptors:
            link = f"/proc/{pid}/fd/{descriptor}"
            try:
                if not os.readlink(link).startswith(prefix):
                    continue
                stat = os.stat(link)
            except OSError:
                continue
            sizes[(stat.st_dev, stat.st_ino)] = stat.st_blocks * 512
    return sum(sizes.values())


class PeakMemory:
    """`with PeakMemory(spill_dir=...) as meter: ...` then `meter.added_mb`. `spill_dir`, where the job's
    temporary files go, counts when it is held in memory (`held_in_memory`)."""

    def __init__(self, *, spill_dir: str | None = None) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="peak-memory", daemon=True)
        self._spill_dir = spill_dir if spill_dir and held_in_memory(spill_dir) else None
        self.baseline = 0
        self.peak = 0

    def _used(self) -> int:
        spilled = spilled_bytes(self._spill_dir) if self._spill_dir else 0
        return resident_bytes() + spilled

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL_S):
            self.peak = max(self.peak, self._used())

    def __enter__(self) -> PeakMemory:
        self.baseline = self.peak = self._used()
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._used())

    @property
    def added_mb(self) -> float:
        return round(max(0, self.peak - self.baseline) / (1024 * 1024), 1)
