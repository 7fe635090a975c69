"""Image bytes, recognised by what they are rather than by what a header says: PNG, JPEG and WebP.

Pure functions (no I/O). `sniff` reads the signature; `check_decodes` goes further for what the model returns:
a PNG must be a well-formed chunk sequence (CRCs, IHDR, IDAT that inflates to exactly the rows IHDR promises),
a JPEG must run from SOI to EOI through well-formed segments, a WebP must be a RIFF of its declared size.
"""

from __future__ import annotations

import struct
import zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
# Bits per pixel of each PNG colour type, per bit of depth (gray, -, RGB, palette, gray+alpha, -, RGBA).
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


class NotAnImage(ValueError):
    """The bytes are not an image of a recognised type, or do not decode as one."""


def sniff(data: bytes) -> str | None:
    """The image's MIME type from its leading bytes (PNG, JPEG, WebP), or None."""
    if data.startswith(PNG_SIGNATURE):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def check_decodes(data: bytes) -> str:
    """The MIME type of `data` once its structure has been checked; raises NotAnImage otherwise."""
    mime = sniff(data)
    if mime == "image/png":
        _check_png(data)
    elif mime == "image/jpeg":
        _check_jpeg(data)
    elif mime == "image/webp":
        _check_webp(data)
    else:
        raise NotAnImage("not a PNG, JPEG or WebP image")
    return mime


def _check_png(data: bytes) -> None:
    offset = len(PNG_SIGNATURE)
    header: tuple[int, ...] | None = None
    compressed = bytearray()
    while True:
        if offset + 8 > len(data):
            raise NotAnImage("PNG ends before its IEND chunk")
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        body = data[offset + 8 : offset + 8 + length]
        crc_at = offset + 8 + length
        if len(body) != length or crc_at + 4 > len(data):
            raise NotAnImage("PNG chunk runs past the end of the data")
        (crc,) = struct.unpack(">I", data[crc_at : crc_at + 4])
        if zlib.crc32(kind + body) & 0xFFFFFFFF != crc:
            raise NotAnImage(f"PNG chunk {kind!r} has a bad CRC")
        if kind == b"IHDR":
            if length != 13:
                raise NotAnImage("PNG IHDR has the wrong size")
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            compressed += body
        elif kind == b"IEND":
            break
        offset = crc_at + 4
    if header is None or not compressed:
        raise NotAnImage("PNG without IHDR or IDAT")
    width, height, depth, colour, _, _, interlace = header
    if width == 0 or height == 0 or colour not in _PNG_CHANNELS:
        raise NotAnImage("PNG header is not valid")
    try:
        raw = zlib.decompress(bytes(compressed))
    except zlib.error as exc:
        raise NotAnImage(f"PNG image data does not inflate: {exc}") from exc
    if interlace == 0:
        row_bytes = (width * _PNG_CHANNELS[colour] * depth + 7) // 8
        if len(raw) != height * (row_bytes + 1):
            raise NotAnImage("PNG image data does not match its dimensions")


def _check_jpeg(data: bytes) -> None:
    offset = 2
    while offset + 4 <= len(data):
        if data[offset] != 0xFF:
            raise NotAnImage("JPEG segment does not start with a marker")
        marker = data[offset + 1]
        if marker == 0xDA:  # start of scan: entropy-coded data follows up to EOI
            if not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
                raise NotAnImage("JPEG does not end with EOI")
            return
        (length,) = struct.unpack(">H", data[offset + 2 : offset + 4])
        if length < 2:
            raise NotAnImage("JPEG segment length is not valid")
        offset += 2 + length
    raise NotAnImage("JPEG has no image data")


def _check_webp(data: bytes) -> None:
    (size,) = struct.unpack("<I", data[4:8])
    if size + 8 != len(data) or len(data) < 20 or data[12:15] != b"VP8":
        raise NotAnImage("WebP container does not match its declared size")
