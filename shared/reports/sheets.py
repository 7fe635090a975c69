"""A workbook's sheets, and a CSV file of some of their rows, written in a process of their own, so a report
uses both cores about equally: the job parses, checks and computes while this process writes the rows to the
CSV file and has rust_xlsxwriter (through rvgsrust-xlsxwriter) write them to the sheets, in constant memory
(each row goes to a temporary file), and compress the workbook at the end.

The job sends batches of rows, `(sheet_name, rows, to_csv)`, pickled on the process's standard input (a full
pipe holds the job back, so neither side buffers more than a batch); a new sheet name starts a sheet, and
rows `to_csv` go to the CSV file too. `None` ends the rows: the process closes the CSV file, says so on its
standard output (so the job stores the CSV while the workbook is compressed) and closes the workbook. An input
that ends without it (the job failed, or died) writes no workbook.

    python -m shared.reports.sheets XLSX_PATH CSV_PATH [WORK_DIR]
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO, Any, BinaryIO

from shared.reports.memory import track_helper, untrack_helper

ROWS_PER_BATCH = 2000
PIPE_BYTES = 1 << 20  # the most a pipe holds by default (/proc/sys/fs/pipe-max-size): about four batches
CLOSE_TIMEOUT_S = 900.0  # compressing a workbook of a few million rows, on a loaded instance
CSV_WRITTEN = b"csv\n"  # what the process says once the CSV file is complete
_ROOT = str(Path(__file__).resolve().parents[2])  # where `shared` is imported from


class SheetsFailed(Exception):
    """The sheets' process failed; the message ends with what it wrote to its standard error."""


def _widen_pipe(pipe: BinaryIO) -> None:
    """Let the pipe hold a few batches (Linux; elsewhere, or if refused, it keeps its size). With its default
    64 KiB, less than a batch, the job waited for each batch to be read, 0.2 s a 50 MB report, the sheets'
    process then waited for the next: the two took turns instead of running at once."""
    with contextlib.suppress(AttributeError, OSError):
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)


class SheetsProcess:
    """The job's side: `add_rows(sheet=..., rows=..., to_csv=...)` (or `add_row`) in order, then `end_rows()`
    (the CSV file is written at `csv_path`) and `close()` (the workbook is written at `xlsx_path`), or
    `abort()`."""

    def __init__(self, *, xlsx_path: str, csv_path: str, work_dir: str | None) -> None:
        self._errors = tempfile.TemporaryFile(dir=work_dir)
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "shared.reports.sheets",
                xlsx_path,
                csv_path,
                *([work_dir] if work_dir else ()),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._errors,
            cwd=_ROOT,
        )
        track_helper(self._process.pid)
        self._input: BinaryIO = self._process.stdin  # type: ignore[assignment]
        _widen_pipe(self._input)
        self._said: BinaryIO = self._process.stdout  # type: ignore[assignment]
        self._batch: tuple[str, bool] = ("", False)
        self._rows: list[list[Any]] = []
        self._rows_ended = False

    def add_row(self, *, sheet: str, row: list[Any], to_csv: bool = False) -> None:
        self.add_rows(sheet=sheet, rows=[row], to_csv=to_csv)

    def add_rows(self, *, sheet: str, rows: list[list[Any]], to_csv: bool = False) -> None:
        if (sheet, to_csv) != self._batch:
            self._send()
            self._batch = (sheet, to_csv)
        self._rows.extend(rows)
        while len(self._rows) >= ROWS_PER_BATCH:  # a message holds at most a batch: the two sides' memory
            self._put((*self._batch, self._rows[:ROWS_PER_BATCH]))
            del self._rows[:ROWS_PER_BATCH]

    def _send(self) -> None:
        if self._rows:
            self._put((*self._batch, self._rows))
            self._rows = []

    def _put(self, message: tuple[str, bool, list[list[Any]]] | None) -> None:
        try:
            pickle.dump(message, self._input, protocol=pickle.HIGHEST_PROTOCOL)
        except BrokenPipeError:
            self._process.wait(CLOSE_TIMEOUT_S)
            raise self._failure() from None

    def end_rows(self) -> None:
        """Send what is left; return once the CSV file is written (the workbook is compressed meanwhile)."""
        self._rows_ended = True
        self._send()
        self._put(None)
        self._input.close()
        if self._said.readline() != CSV_WRITTEN:
            self._process.wait(CLOSE_TIMEOUT_S)
            raise self._failure()

    def close(self) -> None:
        """Wait for the workbook to be written."""
        try:
            if not self._rows_ended:
                self.end_rows()
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
        self._said.close()
        self._errors.close()

    def _failure(self) -> SheetsFailed:
        self._errors.seek(0)
        said = self._errors.read().decode(errors="replace").strip()[-2000:]
        return SheetsFailed(f"the sheets' process exited with {self._process.returncode}: {said}")


def write_workbook(
    *, source: BinaryIO, said: IO[bytes], xlsx_path: str, csv_path: str, work_dir: str | None
) -> bool:
    """The process's side: write the rows read from `source`; False if it ended without being closed."""
    import rvgsrust_xlsxwriter  # only here: the job's process never loads it

    book = rvgsrust_xlsxwriter.Workbook(xlsx_path)
    if work_dir:
        book.set_tempdir(work_dir)
    book.use_zip_large_file(True)
    current, sheet, next_row = "", None, 0
    with open(csv_path, "w", encoding="utf-8", newline="") as csv_file:
        csv_rows = csv.writer(csv_file)
        while True:
            try:
                message = pickle.load(source)
            except EOFError:
                return False
            if message is None:
                break
            name, to_csv, rows = message
            if to_csv:
                csv_rows.writerows(rows)
            if sheet is None or name != current:
                current, sheet, next_row = name, book.add_worksheet(name, constant_memory=True), 0
            sheet.write_rows(next_row, 0, rows)
            next_row += len(rows)
    said.write(CSV_WRITTEN)
    said.flush()
    book.close()
    return True


if __name__ == "__main__":
    closed = write_workbook(
        source=sys.stdin.buffer,
        said=sys.stdout.buffer,
        xlsx_path=sys.argv[1],
        csv_path=sys.argv[2],
        work_dir=sys.argv[3] if len(sys.argv) > 3 else None,
    )
    sys.exit(0 if closed else 1)
