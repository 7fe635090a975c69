"""A workbook's sheets written in a process of their own, so a report uses both cores: the job parses, checks,
computes and writes the CSV while this process has rust_xlsxwriter (through rvgsrust-xlsxwriter) write the
rows, in constant memory (each row goes to a temporary file), and compress the workbook at the end.

The job sends batches of rows, `(sheet_name, rows)`, pickled on the process's standard input (a full pipe
holds the job back, so neither side buffers more than a batch); a new sheet name starts a sheet. `None`
closes the workbook. An input that ends without it (the job failed, or died) writes no workbook.

    python -m shared.reports.sheets XLSX_PATH [WORK_DIR]
"""

from __future__ import annotations

import contextlib
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

from shared.reports.memory import track_helper, untrack_helper

ROWS_PER_BATCH = 2000
CLOSE_TIMEOUT_S = 900.0  # compressing a workbook of a few million rows, on a loaded instance
_ROOT = str(Path(__file__).resolve().parents[2])  # where `shared` is imported from


class SheetsFailed(Exception):
    """The sheets' process failed; the message ends with what it wrote to its standard error."""


class SheetsProcess:
    """The job's side: `add_row(sheet=..., row=...)` in order, then `close()` (the workbook is written at
    `xlsx_path`) or `abort()`."""

    def __init__(self, *, xlsx_path: str, work_dir: str | None) -> None:
        self._errors = tempfile.TemporaryFile(dir=work_dir)
        self._process = subprocess.Popen(
            [sys.executable, "-m", "shared.reports.sheets", xlsx_path, *([work_dir] if work_dir else [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=self._errors,
            cwd=_ROOT,
        )
        track_helper(self._process.pid)
        self._input: BinaryIO = self._process.stdin  # type: ignore[assignment]
        self._sheet = ""
        self._rows: list[list[Any]] = []

    def add_row(self, *, sheet: str, row: list[Any]) -> None:
        if sheet != self._sheet:
            self._send()
            self._sheet = sheet
        self._rows.append(row)
        if len(self._rows) >= ROWS_PER_BATCH:
            self._send()

    def _send(self) -> None:
        if self._rows:
            self._put((self._sheet, self._rows))
            self._rows = []

    def _put(self, message: tuple[str, list[list[Any]]] | None) -> None:
        try:
            pickle.dump(message, self._input, protocol=pickle.HIGHEST_PROTOCOL)
        except BrokenPipeError:
            self._process.wait(CLOSE_TIMEOUT_S)
            raise self._failure() from None

    def close(self) -> None:
        """Send what is left, and wait for the workbook to be written."""
        try:
            self._send()
            self._put(None)
            self._input.close()
            if self._process.wait(CLOSE_TIMEOUT_S) != 0:
                raise self._failure()
        finally:
            self.abort()

    def abort(self) -> None:
        """Stop the process (no workbook is written) and release what it held."""
        with contextlib.suppress(OSError):
            self._input.close()
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait(CLOSE_TIMEOUT_S)
        untrack_helper(self._process.pid)
        self._errors.close()

    def _failure(self) -> SheetsFailed:
        self._errors.seek(0)
        said = self._errors.read().decode(errors="replace").strip()[-2000:]
        return SheetsFailed(f"the sheets' process exited with {self._process.returncode}: {said}")


def write_workbook(*, source: BinaryIO, xlsx_path: str, work_dir: str | None) -> bool:
    """The process's side: write the rows read from `source`; False if it ended without being closed."""
    import rvgsrust_xlsxwriter  # only here: the job's process never loads it

    book = rvgsrust_xlsxwriter.Workbook(xlsx_path)
    if work_dir:
        book.set_tempdir(work_dir)
    book.use_zip_large_file(True)
    current, sheet, next_row = "", None, 0
    while True:
        try:
            message = pickle.load(source)
        except EOFError:
            return False
        if message is None:
            book.close()
            return True
        name, rows = message
        if sheet is None or name != current:
            current, sheet, next_row = name, book.add_worksheet(name, constant_memory=True), 0
        sheet.write_rows(next_row, 0, rows)
        next_row += len(rows)


if __name__ == "__main__":
    closed = write_workbook(
        source=sys.stdin.buffer, xlsx_path=sys.argv[1], work_dir=sys.argv[2] if len(sys.argv) > 2 else None
    )
    sys.exit(0 if closed else 1)
