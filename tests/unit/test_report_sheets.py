"""The process that writes a report's sheets and CSV file (no emulator): a workbook and the CSV written, a
failure reported with what the process said, an abort or a lost job leaving no workbook, and its memory
counted as the job's."""

from __future__ import annotations

import csv
import io
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import openpyxl
import pytest

from shared.reports import memory
from shared.reports.sheets import CSV_WRITTEN, ROWS_PER_BATCH, SheetsFailed, SheetsProcess, write_workbook


def test_rows_of_several_batches_and_sheets_are_written_in_order(tmp_path: Path) -> None:
    path, csv_path = str(tmp_path / "book.xlsx"), tmp_path / "rows.csv"
    rows = [[f"FV-{number}", number, number * 1.5] for number in range(ROWS_PER_BATCH + 5)]
    sheets = SheetsProcess(xlsx_path=path, csv_path=str(csv_path), work_dir=str(tmp_path))

    sheets.add_row(sheet="Facturas", row=["numero", "items", "total"], to_csv=True)
    for row in rows:
        sheets.add_row(sheet="Facturas", row=row, to_csv=True)
    sheets.add_row(sheet="Resumen", row=["filas", len(rows)])
    sheets.end_rows()
    with csv_path.open(encoding="utf-8", newline="") as written_csv:
        assert list(csv.reader(written_csv)) == [
            ["numero", "items", "total"],
            *[list(map(str, r)) for r in rows],
        ]
    sheets.close()

    book = openpyxl.load_workbook(path, read_only=True)
    assert book.sheetnames == ["Facturas", "Resumen"]
    written = [list(cells) for cells in book["Facturas"].iter_rows(values_only=True)]
    assert written == [["numero", "items", "total"], *rows]
    assert [list(cells) for cells in book["Resumen"].iter_rows(values_only=True)] == [["filas", len(rows)]]
    book.close()


def test_a_failing_process_says_why(tmp_path: Path) -> None:
    sheets = SheetsProcess(
        xlsx_path=str(tmp_path / "book.xlsx"), csv_path=str(tmp_path / "a.csv"), work_dir=None
    )

    sheets.add_row(sheet="no [valid] name?", row=["a"])  # Excel refuses [ ] ? in a sheet's name
    with pytest.raises(SheetsFailed, match="exited with 1: .+"):
        sheets.close()


def test_an_abort_stops_the_process_and_writes_no_workbook(tmp_path: Path) -> None:
    path = tmp_path / "book.xlsx"
    sheets = SheetsProcess(xlsx_path=str(path), csv_path=str(tmp_path / "a.csv"), work_dir=None)
    sheets.add_row(sheet="Facturas", row=["a"])

    sheets.abort()

    assert not path.exists()


def test_an_input_that_ends_without_closing_writes_no_workbook(tmp_path: Path) -> None:
    path = tmp_path / "book.xlsx"
    source = io.BytesIO(pickle.dumps(("Facturas", True, [["a", 1]])))
    said = io.BytesIO()

    assert (
        write_workbook(
            source=source, said=said, xlsx_path=str(path), csv_path=str(tmp_path / "a.csv"), work_dir=None
        )
        is False
    )
    assert not path.exists() and said.getvalue() == b""


def test_a_closed_input_makes_a_workbook_that_opens(tmp_path: Path) -> None:
    path = tmp_path / "book.xlsx"
    source = io.BytesIO(pickle.dumps(("Hoja", False, [["a", 1]])) + pickle.dumps(None))
    said = io.BytesIO()

    assert write_workbook(
        source=source,
        said=said,
        xlsx_path=str(path),
        csv_path=str(tmp_path / "a.csv"),
        work_dir=str(tmp_path),
    )
    assert said.getvalue() == CSV_WRITTEN and (tmp_path / "a.csv").read_text() == ""
    with zipfile.ZipFile(path) as xlsx:
        assert '"Hoja"' in xlsx.read("xl/workbook.xml").decode()


def test_a_helper_process_memory_counts_as_the_jobs() -> None:
    holds_8_mb = "import sys; held = b'x' * (8 << 20); print('ready', flush=True); sys.stdin.read()"
    helper = subprocess.Popen(
        [sys.executable, "-c", holds_8_mb], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert helper.stdout is not None and helper.stdout.readline() == "ready\n"
        alone = memory.resident_bytes()
        memory.track_helper(helper.pid)
        with_helper = memory.resident_bytes()
        memory.untrack_helper(helper.pid)
    finally:
        helper.communicate("", timeout=30)

    assert with_helper - alone > 8 * 1024 * 1024
