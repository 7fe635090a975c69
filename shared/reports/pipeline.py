"""One report from one input, in one pass and constant memory: records are parsed from a stream a block at
a time (msgspec, `json_stream`), handed to the report type, and the zip is written as a stream (to Cloud
Storage, by the caller's sink). Pure: no Google client; the caller opens the source and the sink.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import tempfile
import threading
import zipfile
from dataclasses import dataclass
from typing import IO, Any, BinaryIO

from shared.reports.json_stream import MalformedJSON, RecordBatches
from shared.reports.types import ReportType, ReportWriter

READ_BUFFER_BYTES = 1024 * 1024  # a block of records parsed at once (about 2,400 invoices held as objects)


class JobStopped(Exception):
    """The job was stopped (its lease lost, or the batch stopped) while it read."""


class MalformedInput(Exception):
    """The input is not JSON, or not the shape a report type reads; the message gives the byte offset."""


@dataclass
class Progress:
    """What the running job has read so far, shared with the thread that publishes it."""

    bytes_read: int = 0
    records: int = 0


@dataclass(frozen=True)
class ReportOutput:
    records: int
    invalid: int
    summary: dict[str, Any]


class _CountingReader:
    """Counts the bytes read, for the job's progress."""

    def __init__(self, raw: BinaryIO, progress: Progress) -> None:
        self._raw = raw
        self._progress = progress

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._progress.bytes_read += len(data)
        return data


def build_report(
    *,
    source: BinaryIO,
    sink: IO[bytes],
    report_type: ReportType,
    work_dir: str | None,
    progress: Progress,
    cancelled: threading.Event | None = None,
) -> ReportOutput:
    """Read every record of `source`, write the report's zip to `sink`. Raises MalformedInput."""
    batches = RecordBatches(
        source=_CountingReader(source, progress),  # type: ignore[arg-type]
        object_key=report_type.object_key,
        block_bytes=READ_BUFFER_BYTES,
        record_type=report_type.record_type,
    )
    archive = zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1)
    with tempfile.TemporaryFile(dir=work_dir) as errors_file:
        errors_text = io.TextIOWrapper(errors_file, encoding="utf-8", newline="")
        errors = csv.writer(errors_text)
        errors.writerow(["posicion", "numero", "motivo"])
        writer = report_type.writer(archive=archive, work_dir=work_dir)
        try:
            records, invalid = _read_records(batches, writer, errors, progress, cancelled)
            summary = writer.finish(records=records, invalid=invalid)
        except BaseException:
            writer.abort()
            with contextlib.suppress(ValueError, OSError):
                archive.close()
            raise
        errors_text.flush()
        errors_file.seek(0)
        with archive.open("errores.csv", "w", force_zip64=True) as entry:
            while block := errors_file.read(1024 * 1024):
                entry.write(block)
        archive.writestr("resumen.json", json.dumps(summary, ensure_ascii=False, indent=2))
        archive.close()
        errors_text.detach()
    return ReportOutput(records=records, invalid=invalid, summary=summary)


def _read_records(
    batches: RecordBatches,
    writer: ReportWriter,
    errors: Any,
    progress: Progress,
    cancelled: threading.Event | None,
) -> tuple[int, int]:
    """Hand every record to the writer; invalid ones to errores.csv. Returns (records, invalid)."""
    records = invalid = 0
    try:
        for batch in batches:
            for index, reason in writer.add(batch):
                errors.writerow([records + index, _numero(batch[index]), reason])
                invalid += 1
            records += len(batch)
            progress.records = records
            if cancelled is not None and cancelled.is_set():
                raise JobStopped("the job was stopped")
    except MalformedJSON as exc:
        raise MalformedInput(f"malformed JSON at byte offset {exc.offset}: {exc.reason}") from exc
    return records, invalid


def _numero(record: Any) -> Any:
    """The invalid record's `numero` as given, for errores.csv: a typed record's, a plain object's, or ""."""
    numero = record.get("numero") if isinstance(record, dict) else getattr(record, "numero", None)
    return "" if numero is None else numero
