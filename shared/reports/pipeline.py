"""One report from one input, in one pass and constant memory: records are parsed from a stream (ijson's C
backend), handed to the report type, and the zip is written as a stream (to Cloud Storage, by the caller's
sink). Pure: no Google client; the caller opens the source and the sink.
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

import ijson

from shared.reports.types import InvalidRecord, ReportType, ReportWriter

READ_BUFFER_BYTES = 256 * 1024
PROGRESS_EVERY = 2000  # records between progress updates (a counter write, no I/O)


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
    """Counts the bytes the parser reads and keeps the last block, to locate a parse error in it."""

    def __init__(self, raw: BinaryIO, progress: Progress) -> None:
        self._raw = raw
        self._progress = progress
        self.block_start = 0
        self.block = b""

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.block_start = self._progress.bytes_read
        self.block = data
        self._progress.bytes_read += len(data)
        return data


def _error_offset(exc: Exception, reader: _CountingReader) -> int:
    """The byte offset of a parse error. yajl shows the text before the error on one line (indented by ten
    spaces) and a caret under the error on the next; that text is found in the block read last. Without it
    (a premature end), the bytes read so far."""
    lines = str(exc).split("\n")
    for number, line in enumerate(lines[1:], start=1):
        if "(right here)" in line and "^" in line:
            before = lines[number - 1][10 : line.index("^")].encode()
            found = reader.block.rfind(before) if before else -1
            if found >= 0:
                return reader.block_start + found + len(before)
    return reader.block_start + len(reader.block)


def _first_byte(source: BinaryIO) -> tuple[bytes, bytes]:
    """The first non-blank byte of the input (after a UTF-8 BOM) and everything read up to it."""
    head = b""
    while True:
        data = source.read(1)
        head += data
        if not data:
            return b"", head
        if head == b"\xef" or head == b"\xef\xbb":
            continue
        if data in b" \t\r\n\xbf":
            continue
        return data, head


class _Prefixed:
    """`head` then the rest of `raw`, as one readable stream (the bytes peeked are given back)."""

    def __init__(self, head: bytes, raw: BinaryIO) -> None:
        self._head = head.removeprefix(b"\xef\xbb\xbf")
        self._raw = raw

    def read(self, size: int = -1) -> bytes:
        if size == 0:  # ijson reads nothing first, to tell bytes from text
            return b""
        if self._head:
            data, self._head = self._head, b""
            return data + (self._raw.read(size - len(data)) if size > len(data) else b"")
        return self._raw.read(size)


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
    reader = _CountingReader(source, progress)
    first, head = _first_byte(reader)  # type: ignore[arg-type]
    if first == b"[":
        prefix = "item"
    elif first == b"{":
        prefix = f"{report_type.object_key}.item"
    else:
        raise MalformedInput(
            f"byte offset {max(0, len(head) - 1)}: expected a JSON array or an object with a "
            f"'{report_type.object_key}' array"
        )
    stream = _Prefixed(head, reader)  # type: ignore[arg-type]
    archive = zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1)
    with tempfile.TemporaryFile(dir=work_dir) as errors_file:
        errors_text = io.TextIOWrapper(errors_file, encoding="utf-8", newline="")
        errors = csv.writer(errors_text)
        errors.writerow(["posicion", "numero", "motivo"])
        writer = report_type.writer(archive=archive, work_dir=work_dir)
        try:
            records, invalid = _read_records(stream, prefix, writer, errors, progress, cancelled, reader)
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
    stream: _Prefixed,
    prefix: str,
    writer: ReportWriter,
    errors: Any,
    progress: Progress,
    cancelled: threading.Event | None,
    reader: _CountingReader,
) -> tuple[int, int]:
    """Hand every record to the writer; invalid ones to errores.csv. Returns (records, invalid)."""
    records = invalid = 0
    try:
        for record in ijson.items(stream, prefix, use_float=True, buf_size=READ_BUFFER_BYTES):
            try:
                writer.add(records, record)
            except InvalidRecord as exc:
                invalid += 1
                numero = record.get("numero") if isinstance(record, dict) else None
                errors.writerow([records, "" if numero is None else numero, exc.reason])
            records += 1
            if records % PROGRESS_EVERY == 0:
                progress.records = records
                if cancelled is not None and cancelled.is_set():
                    raise JobStopped("the job was stopped")
    except ijson.JSONError as exc:
        offset = _error_offset(exc, reader)
        reason = str(exc).strip().splitlines()[0]
        raise MalformedInput(f"malformed JSON at byte offset {offset}: {reason}") from exc
    progress.records = records
    return records, invalid
