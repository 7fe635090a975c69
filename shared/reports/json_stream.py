"""The records of a large JSON input, read as a stream in constant memory and parsed by msgspec a block at a
time: a top-level array, or the array under one key of a top-level object.

msgspec parses a whole document, so the stream is cut into documents: the records read so far, up to the
last `}` followed by a comma, between brackets. A cut is right exactly when that document parses (a cut
inside a string or inside a record leaves it unterminated), and what msgspec says when it does not tells the
three cases apart: an error at the bracket added (or an unterminated document) is a wrong cut, so an earlier
one is tried; "trailing characters" is the array's own end before the cut; any other error is the input's,
at the byte it names. Parsing a block of records in one call is about four times faster than building each
record from the callbacks of an event parser (ijson), and only a block and its records are held at a time.

With a `record_type` (a msgspec Struct), a block is parsed once, straight into records of that type: msgspec
checks each member's type (and bounds) in C, and builds no dict. The first cut tried is the one before the
last record that opens like the block's first, so it is nearly always right. A block that does not parse as
those records (a record of another shape, or a wrong cut) is checked and parsed as plain JSON values, as
without a type, so its reader can say what is wrong with each record.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from typing import Any, BinaryIO

import msgspec

BLANKS = b" \t\r\n"
MAX_RECORD_BYTES = 16 << 20  # a record, or a value skipped, longer than this fails the job: memory stays flat
_BOM = b"\xef\xbb\xbf"
_TRIES_PER_BLOCK = 8  # cuts tried before reading another block (most blocks take one or two)
_BLANKS_BEFORE_COMMA = 64  # a record followed by more blanks than this before its comma is not cut there
_UTF8_SLICE_BYTES = 64 * 1024
_AT_BYTE = re.compile(r"\s*\(byte (\d+)\)$")
_IN_RECORD = re.compile(r" - at `\$\[(\d+)\]")


class MalformedJSON(Exception):
    """The input is not JSON, or not the shape asked for, at `offset` (bytes from the input's start)."""

    def __init__(self, *, offset: int, reason: str) -> None:
        super().__init__(f"byte offset {offset}: {reason}")
        self.offset = offset
        self.reason = reason


def _comma_follows(buffer: bytes, brace: int) -> bool:
    return buffer[brace + 1 : brace + _BLANKS_BEFORE_COMMA].lstrip(BLANKS).startswith(b",")


def _where(exc: Exception) -> tuple[int | None, str]:
    """(the document's byte msgspec names, or None, and its reason without it)."""
    message = str(exc).removeprefix("JSON is malformed: ")
    found = _AT_BYTE.search(message)
    if found is None:
        return None, message
    return int(found.group(1)), message[: found.start()]


def _not_utf8_at(document: bytes) -> int | None:
    """The first byte of `document` that is not UTF-8, or None. Checked a slice at a time: decoding a block
    whole kept 20 MB more of the process's memory (the decoder's buffers), for the same time."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(document)
    try:
        for at in range(0, len(document), _UTF8_SLICE_BYTES):
            decoder.decode(view[at : at + _UTF8_SLICE_BYTES])
        decoder.decode(b"", True)
    except UnicodeDecodeError:
        try:
            document.decode()
        except UnicodeDecodeError as exc:
            return exc.start
    return None


def _record_of(exc: msgspec.ValidationError) -> tuple[int, str]:
    """The index of the record an error is in (from its path, `$[3]...`), and the error without its path."""
    message = str(exc)
    found = _IN_RECORD.search(message)
    return (int(found.group(1)) if found else 0), message.split(" - at ", 1)[0].lower()


def _record_start(document: bytes, index: int) -> int:
    """Where the record at `index` of `document` (a JSON array whose syntax was checked) starts."""
    at = 1
    for number, raw in enumerate(msgspec.json.decode(document, type=list[msgspec.Raw])):
        text = bytes(raw)
        at = document.index(text, at)  # records follow one another, with only blanks and commas between
        if number == index:
            return at
        at += len(text)
    return 1


class RecordBatches:
    """`for records in RecordBatches(source=..., object_key=...)`: lists of records, in input order."""

    def __init__(
        self, *, source: BinaryIO, object_key: str, block_bytes: int, record_type: Any = None
    ) -> None:
        self._source = source
        self._typed = None if record_type is None else msgspec.json.Decoder(list[record_type])
        self._object_key = object_key
        self._block_bytes = block_bytes
        self._buffer = b""
        self._pos = 0  # the next byte of the buffer to read
        self._offset = 0  # the input's offset of the buffer's first byte
        self._eof = False

    def _fill(self) -> bool:
        """Read one more block (the bytes already read are dropped); False at the end of the input."""
        if self._eof:
            return False
        left = self._buffer[self._pos :]
        room = MAX_RECORD_BYTES - len(left)
        if room <= 0:
            raise self._malformed(len(self._buffer), f"no record ends within {MAX_RECORD_BYTES >> 20} MiB")
        # A record longer than a block doubles the read, so it is parsed again a few times, not once a block.
        block = self._source.read(min(max(self._block_bytes, len(left)), room))
        self._offset += self._pos
        self._buffer = left + block
        self._pos = 0
        self._eof = not block
        return bool(block)

    def _typed_records(self, document: bytes, start: int) -> list[Any] | None:
        """The records of `document` (`[` and the buffer's bytes from `start`) as `record_type`; None when
        there is no type or the document is not a list of them (or not JSON: its syntax was not checked)."""
        if self._typed is None:
            return None
        try:
            records: list[Any] = self._typed.decode(document)
        except (msgspec.DecodeError, UnicodeDecodeError):
            return None
        bad = _not_utf8_at(document)  # the members the type does not read are skipped unchecked: UTF-8 too
        if bad is not None:
            raise self._malformed(start + bad - 1, "a string is not UTF-8")
        return records

    def _records(self, document: bytes, start: int) -> list[Any]:
        """The records of `document`, `[` and the buffer's bytes from `start`, whose syntax was checked, as
        plain JSON values."""
        try:
            records: list[Any] = msgspec.json.decode(document)
        except UnicodeDecodeError:  # a string that is not UTF-8: found again, to name its byte
            bad = _not_utf8_at(document)
            raise self._malformed(start + (bad or 1) - 1, "a string is not UTF-8") from None
        except msgspec.ValidationError as exc:  # valid syntax that no value holds, as a number past a double
            index, reason = _record_of(exc)
            raise self._malformed(start + _record_start(document, index) - 1, reason) from None
        return records

    def _malformed(self, at: int, reason: str) -> MalformedJSON:
        return MalformedJSON(offset=self._offset + at, reason=reason)

    def _next_byte(self) -> bytes:
        """The next byte that is not blank (b"" at the end of the input), not consumed."""
        while True:
            rest = self._buffer[self._pos :].lstrip(BLANKS)
            self._pos = len(self._buffer) - len(rest)
            if rest:
                return rest[:1]
            if not self._fill():
                return b""

    def _expect(self, allowed: bytes, reason: str) -> bytes:
        found = self._next_byte()
        if not found or found not in allowed:
            raise self._malformed(self._pos, reason)
        self._pos += 1
        return found

    def __iter__(self) -> Iterator[list[Any]]:
        self._fill()
        if self._buffer.startswith(_BOM):
            self._pos = len(_BOM)
        first = self._next_byte()
        shape = f"expected a JSON array or an object with a '{self._object_key}' array"
        if first not in (b"[", b"{"):
            raise self._malformed(self._pos, shape)
        self._pos += 1
        if first == b"[":
            yield from self._array()
        else:
            yield from self._object()
        if self._next_byte():
            raise self._malformed(self._pos, "trailing characters")

    def _object(self) -> Iterator[list[Any]]:
        """The members of the top-level object: the records of the arrays under `object_key`; the other
        members are checked and skipped (an array a block at a time, any other value held while skipped)."""
        if self._next_byte() == b"}":
            self._pos += 1
            return
        while True:
            if self._next_byte() != b'"':
                raise self._malformed(self._pos, "expected a key")
            key = msgspec.json.decode(self._value(), type=str)
            self._expect(b":", "expected ':'")
            if self._next_byte() == b"[":
                self._pos += 1
                if key == self._object_key:
                    yield from self._array()
                else:
                    for _ in self._array():
                        pass
            else:
                self._value()
            if self._expect(b",}", "expected ',' or '}'") == b"}":
                return

    def _value(self) -> bytes:
        """One whole JSON value, consumed and returned."""
        self._next_byte()
        while True:
            text = self._buffer[self._pos :]
            try:
                msgspec.json.decode(text, type=msgspec.Raw)
            except msgspec.DecodeError as exc:
                at, reason = _where(exc)
                if at is None:  # unterminated: the value goes on in the next block
                    if not self._fill():
                        raise self._malformed(len(self._buffer), reason) from None
                    continue
                if reason != "trailing characters":
                    raise self._malformed(self._pos + at, reason) from None
                # msgspec names the byte after the first trailing one
                end = len(text[: at - 1].rstrip(BLANKS))
                self._pos += end
                return text[:end]
            if not self._fill():  # a number may go on in the next block
                self._pos = len(self._buffer)
                return text

    def _array(self) -> Iterator[list[Any]]:
        """The records of an array whose `[` was consumed, up to and including its `]`."""
        while True:
            reading = self._fill()
            cut = self._cut()
            if cut is not None:
                records, closed = cut
                if records:
                    yield records
                if closed:
                    return
            elif not reading:
                yield self._last_records()
                return

    def _cut(self) -> tuple[list[Any], bool] | None:
        """The records up to the last cut that parses, and whether the array closed before it; None when no
        cut in the buffer parses (a record goes on in the next block)."""
        buffer, start = self._buffer, self._pos
        end = self._last_opening(buffer, start)
        for _ in range(_TRIES_PER_BLOCK):
            brace = buffer.rfind(b"}", start, end)
            while brace >= 0 and not _comma_follows(buffer, brace):
                brace = buffer.rfind(b"}", start, brace)
            if brace < 0:
                return None
            end = brace
            document = b"[" + buffer[start : brace + 1] + b"]"
            records = self._typed_records(document, start)
            if records is None:
                try:
                    msgspec.json.decode(document, type=msgspec.Raw)  # checked without building a record first
                except msgspec.DecodeError as exc:
                    at, reason = _where(exc)
                    if at is None or at >= len(document) - 1:
                        continue  # a cut inside a record, or inside a string
                    if reason == "trailing characters":
                        return self._closed_at(start + at - 2), True
                    raise self._malformed(start + at - 1, reason) from None
                records = self._records(document, start)
            self._pos = buffer.index(b",", brace) + 1
            if self._next_byte() == b"]":
                raise self._malformed(self._pos, "trailing comma in array")
            return records, False
        return None

    @staticmethod
    def _last_opening(buffer: bytes, start: int) -> int:
        """Where the last record that opens like the first one (up to its first key) starts, or the buffer's
        end: the cut before it is nearly always right, where the last `}` and comma of the buffer is often
        inside a record (between two of its items), and a wrong cut costs a parse of the block."""
        colon = buffer.find(b":", start, start + _BLANKS_BEFORE_COMMA)
        if colon < 0 or buffer[start : start + 1] != b"{":
            return len(buffer)
        found = buffer.rfind(buffer[start : colon + 1], start + 1)
        return len(buffer) if found < 0 else found

    def _closed_at(self, trailing: int) -> list[Any]:
        """The array ended before the buffer's byte `trailing` (the first after it that is not blank)."""
        document = b"[" + self._buffer[self._pos : trailing]
        records = self._typed_records(document, self._pos)
        if records is None:
            records = self._records(document, self._pos)
        self._pos = trailing
        return records

    def _last_records(self) -> list[Any]:
        """The input ended: what is left must be the array's last records and its `]`."""
        document = b"[" + self._buffer[self._pos :]
        records = self._typed_records(document, self._pos)
        if records is not None:
            self._pos = len(self._buffer)
            return records
        try:
            records = self._records(document, self._pos)
        except msgspec.DecodeError as exc:
            at, reason = _where(exc)
            if at is None:
                raise self._malformed(len(self._buffer), reason) from None
            if reason != "trailing characters":
                raise self._malformed(self._pos + at - 1, reason) from None
            return self._closed_at(self._pos + at - 2)
        self._pos = len(self._buffer)
        return records
