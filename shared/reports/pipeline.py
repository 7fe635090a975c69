"""One report from one input, in one pass and constant memory: records are parsed from a stream a block at
a time (msgspec, `json_stream`), handed to the report type, and the zip is written as a stream (to Cloud
Storage, by the caller's sink). Pure: no Google client; the caller opens the source and the sink.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import queue
import tempfile
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, BinaryIO

from shared.reports.json_stream import MalformedJSON, RecordBatches
from shared.reports.types import ReportType, ReportWriter

READ_BUFFER_BYTES = 1024 * 1024  # a block of records parsed at once (about 2,400 invoices held as objects)
READ_AHEAD_BLOCKS = 4  # blocks read ahead of the parser (more than a Storage chunk's request takes to parse)
READ_AHEAD_JOIN_TIMEOUT_S = 60.0


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


class _ReadAhead:
    """The source read a block at a time by a thread of its own, up to READ_AHEAD_BLOCKS ahead of the parser,
    and counted (the job's progress) as the parser takes them: reading a Cloud Storage object is a request a
    chunk (8 MiB) that the parser otherwise waited for. `close()` stops the thread."""

    def __init__(self, *, source: BinaryIO, block_bytes: int, progress: Progress) -> None:
        self._source = source
        self._block_bytes = block_bytes
        self._progress = progress
        self._blocks: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=READ_AHEAD_BLOCKS)
        self._stopped = threading.Event()
        self._pending = b""
        self._ended = False
        self._thread = threading.Thread(target=self._read_all, name="report-read-ahead", daemon=True)
        self._thread.start()

    def _read_all(self) -> None:
        try:
            while not self._stopped.is_set():
                block = self._source.read(self._block_bytes)
                self._blocks.put(block)
                if not block:
                    return
        except BaseException as exc:  # noqa: BLE001 - raised again in the parser's thread, by `read`
            self._blocks.put(exc)

    def read(self, size: int) -> bytes:
        """`size` bytes, fewer only at the input's end (b"" past it)."""
        parts = [self._pending] if self._pending else []
        held = len(self._pending)
        while held < size and not self._ended:
            block = self._blocks.get()
            if isinstance(block, BaseException):
                raise block
            self._ended = not block
            parts.append(block)
            held += len(block)
        data = parts[0] if len(parts) == 1 else b"".join(parts)  # a block as read is not copied
        self._pending = b""
        if len(data) > size:
            self._pending, data = data[size:], data[:size]
        self._progress.bytes_read += len(data)
        return data

    def close(self) -> None:
        """Stop reading: emptying the queue frees the thread if it waits to add a block; it then sees it is
        stopped (it may first finish a read under way, which the client's own timeout bounds)."""
        self._stopped.set()
        while True:
            try:
                self._blocks.get_nowait()
            except queue.Empty:
                break
        self._thread.join(READ_AHEAD_JOIN_TIMEOUT_S)


def build_report(
    *,
    source: BinaryIO,
    sink: IO[bytes],
    report_type: ReportType,
    work_dir: str | None,
    progress: Progress,
    stopped: Callable[[], bool] | None = None,
) -> ReportOutput:
    """Read every record of `source`, write the report's zip to `sink`. Raises MalformedInput."""
    reader = _ReadAhead(source=source, block_bytes=READ_BUFFER_BYTES, progress=progress)
    try:
        return _build(reader, sink, report_type, work_dir, progress, stopped)
    finally:
        reader.close()


def _build(
    reader: _ReadAhead,
    sink: IO[bytes],
    report_type: ReportType,
    work_dir: str | None,
    progress: Progress,
    stopped: Callable[[], bool] | None,
) -> ReportOutput:
    batches = RecordBatches(
        source=reader,  # type: ignore[arg-type]
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
            records, invalid = _read_records(batches, writer, errors, progress, stopped)
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
    stopped: Callable[[], bool] | None,
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
            if stopped is not None and stopped():
                raise JobStopped("the job was stopped")
    except MalformedJSON as exc:
        raise MalformedInput(f"malformed JSON at byte offset {exc.offset}: {exc.reason}") from exc
    return records, invalid


def _numero(record: Any) -> Any:
    """The invalid record's `numero` as given, for errores.csv: a typed record's, a plain object's, or ""."""
    numero = record.get("numero") if isinstance(record, dict) else getattr(record, "numero", None)
    return "" if numero is None else numero
