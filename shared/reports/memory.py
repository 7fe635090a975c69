"""The honest peak memory a job adds: the process's resident set, and its helper processes' (the process
writing a workbook's sheets), sampled every 20 ms while it runs, minus what it was when the job started.
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


class PeakMemory:
    """`with PeakMemory() as meter: ...` then `meter.added_mb`."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="peak-memory", daemon=True)
        self.baseline = 0
        self.peak = 0

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL_S):
            self.peak = max(self.peak, resident_bytes())

    def __enter__(self) -> PeakMemory:
        self.baseline = self.peak = resident_bytes()
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, resident_bytes())

    @property
    def added_mb(self) -> float:
        return round(max(0, self.peak - self.baseline) / (1024 * 1024), 1)
