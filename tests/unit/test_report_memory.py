"""A job's peak memory counts the files it spills where they live in memory (tmpfs, as on Cloud Run), and
only there."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from shared.reports import memory

SPILL = 24 * 1024 * 1024


def _in_memory_dir() -> Path:
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK) and memory.held_in_memory(str(shm))):
        pytest.skip("no writable tmpfs at /dev/shm on this machine")
    return shm


def _measure_a_spill(directory: str) -> float:
    """The meter's figure for a job that spills SPILL bytes to an unlinked file in `directory` (still open
    when the job ends, so the meter's last sample sees it)."""
    with tempfile.TemporaryFile(dir=directory) as spilled:  # unlinked at once, as the job's files are
        with memory.PeakMemory(spill_dir=directory) as meter:
            block = os.urandom(1024 * 1024)  # a MiB at a time: the process itself stays small
            for _ in range(SPILL // len(block)):
                spilled.write(block)
            spilled.flush()
            assert memory.spilled_bytes(directory) >= SPILL
    return meter.added_mb


def test_files_spilled_to_a_tmpfs_count_as_the_jobs_memory() -> None:
    assert _measure_a_spill(str(_in_memory_dir())) >= SPILL / (1024 * 1024)


def test_files_spilled_to_a_disk_do_not(tmp_path: Path) -> None:
    if memory.held_in_memory(str(tmp_path)):
        pytest.skip("the test's temporary directory is itself a tmpfs here")
    assert _measure_a_spill(str(tmp_path)) < SPILL / (1024 * 1024)


def test_which_directories_are_held_in_memory(tmp_path: Path) -> None:
    assert memory.held_in_memory("/proc") is False  # procfs: not a place files spill to
    found = subprocess.run(
        ["findmnt", "-n", "-o", "FSTYPE", "-T", str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert memory.held_in_memory(str(tmp_path)) == (found.stdout.strip() in memory.IN_MEMORY_FILE_SYSTEMS)


MOUNTS = """overlay / overlay rw,relatime 0 0
tmpfs /dev/shm tmpfs rw,nosuid,nodev 0 0
gcsfuse /mnt/spill fuse.gcsfuse rw 0 0
server:/export /mnt/nfs nfs4 rw 0 0
/dev/sda1 /mnt/disk ext4 rw 0 0
"""


@pytest.mark.parametrize(
    ("directory", "on_cloud_run", "in_memory"),
    [
        ("/dev/shm/reports", False, True),
        ("/tmp", False, False),  # the root's overlay, on a machine with a disk
        ("/tmp", True, True),  # the same on Cloud Run: its container file system is memory
        ("/dev/shm", True, True),
        ("/mnt/spill/reports", True, False),  # a Cloud Storage volume
        ("/mnt/nfs", True, False),  # a Filestore (NFS) volume
        ("/mnt/disk/x", False, False),
    ],
)
def test_where_a_spill_lives_by_the_mount_table(
    tmp_path: Path, directory: str, on_cloud_run: bool, in_memory: bool
) -> None:
    table = tmp_path / "mounts"
    table.write_text(MOUNTS)
    assert memory.held_in_memory(directory, mounts=str(table), on_cloud_run=on_cloud_run) is in_memory
