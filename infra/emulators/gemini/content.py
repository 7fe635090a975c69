"""Deterministic model outputs: text, PNG images, embeddings, token counts (JSON answers: structured.py)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import random
import re
import struct
import zlib
from typing import Any

WORDS = (
    "the part fits most models and ships from stock with a tested seal kit bearing gasket bracket "
    "filter pump valve sensor hose clamp bolt housing assembly replacement genuine quality fast reliable "
    "order delivery warranty condition inspection report summary brake engine gear wheel light mirror"
).split()
EMBEDDING_DIMENSION = 768
_WORD = re.compile(r"[a-z0-9]+")


def seed_of(*parts: object) -> int:
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def count_tokens(text: str) -> int:
    """About four characters a token, as Gemini's tokenizer averages on English text."""
    return max(1, math.ceil(len(text) / 4)) if text else 0


def text_of(contents: Any, *, user_only: bool = False) -> str:
    """All text parts of a `contents` list (or a single content), joined; with `user_only`, not the
    model's own turns."""
    if contents is None:
        return ""
    if isinstance(contents, dict):
        contents = [contents]
    texts: list[str] = []
    for content in contents:
        if user_only and isinstance(content, dict) and content.get("role") == "model":
            continue
        for part in (content or {}).get("parts", []) if isinstance(content, dict) else []:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
    return "\n".join(texts)


def inline_images(contents: Any) -> list[bytes]:
    """The bytes of every inline image part of a `contents` list (an undecodable one is a 400)."""
    if isinstance(contents, dict):
        contents = [contents]
    images: list[bytes] = []
    for content in contents or []:
        for part in (content or {}).get("parts", []) if isinstance(content, dict) else []:
            inline = part.get("inlineData") if isinstance(part, dict) else None
            if isinstance(inline, dict):
                try:
                    # google-genai sends bytes URL-safe encoded; the REST API takes either alphabet.
                    data = str(inline.get("data", "")).replace("-", "+").replace("_", "/")
                    images.append(base64.b64decode(data, validate=True))
                except binascii.Error as exc:
                    raise ValueError("inlineData.data is not valid base64") from exc
    return images


def generate_text(*, seed: int, prompt: str, max_tokens: int | None) -> tuple[str, bool]:
    """A deterministic answer; returns (text, truncated)."""
    rng = random.Random(seed)
    length = 12 + rng.randint(0, 40) + min(len(prompt) // 20, 60)
    words = [rng.choice(WORDS) for _ in range(length)]
    text = " ".join(words).capitalize() + "."
    if max_tokens is not None and count_tokens(text) > max_tokens:
        return text[: max_tokens * 4], True
    return text, False


def png(*, seed: int, size: int = 16) -> bytes:
    """A valid, deterministic size x size RGB PNG."""
    rng = random.Random(seed)
    base = [rng.randrange(256) for _ in range(3)]
    rows = b"".join(
        b"\x00"
        + b"".join(bytes(((base[0] + 8 * x) % 256, (base[1] + 8 * y) % 256, base[2])) for x in range(size))
        for y in range(size)
    )
    return png_of_rows(rows, size=size)


def png_of_rows(rows: bytes, *, size: int) -> bytes:
    """A size x size 8-bit RGB PNG of `rows` (each a filter byte and its pixels), compressed as they are."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


# The standard luminance DC table (ITU T.81, K.3): its code lengths and symbols (the bit sizes 0 to 11).
_DC_COUNTS = bytes([0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0])
_DC_CODES = {0: "00", 1: "010", 2: "011", 3: "100", 4: "101", 5: "110", 6: "1110", 7: "11110", 8: "111110"}
# A one-symbol AC table: end of block, code `0` (every block here is flat).
_AC_COUNTS = bytes([1] + [0] * 15)
# A 1 x 1 lossless WebP (VP8L), as browsers' feature tests use it.
WEBP_1X1 = base64.b64decode("UklGRhoAAABXRUJQVlA4TA0AAAAvAAAAEAcQERGIiP4HAA==")


def jpeg(*, seed: int) -> bytes:
    """A valid, deterministic 8 x 8 baseline JPEG: one flat gray block whose level comes from `seed`."""

    def segment(marker: int, data: bytes) -> bytes:
        return bytes([0xFF, marker]) + struct.pack(">H", len(data) + 2) + data

    level = 32 + seed % 192
    diff = level - 128  # the DC coefficient, quantized by 8: the level shifted by 128
    size = abs(diff).bit_length()
    extra = format(diff if diff >= 0 else diff - 1 + (1 << size), f"0{size}b") if size else ""
    bits = _DC_CODES[size] + extra + "0"  # DC, then end of block
    bits += "1" * (-len(bits) % 8)
    scan = bytes(int(bits[i : i + 8], 2) for i in range(0, len(bits), 8)).replace(b"\xff", b"\xff\x00")
    return (
        b"\xff\xd8"
        + segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
        + segment(0xDB, b"\x00" + bytes([8] * 64))
        + segment(0xC0, b"\x08\x00\x08\x00\x08\x01\x01\x11\x00")
        + segment(0xC4, b"\x00" + _DC_COUNTS + bytes(range(12)))
        + segment(0xC4, b"\x10" + _AC_COUNTS + b"\x00")
        + segment(0xDA, b"\x01\x01\x00\x00\x3f\x00")
        + scan
        + b"\xff\xd9"
    )


def embed(text: str, *, dimension: int = EMBEDDING_DIMENSION) -> list[float]:
    """Feature hashing of lowercased words, L2-normalised: texts that share words are closer."""
    vector = [0.0] * dimension
    words = _WORD.findall(text.lower()) or [""]
    for word in words:
        digest = hashlib.sha256(word.encode()).digest()
        for k in range(3):
            index = int.from_bytes(digest[4 * k : 4 * k + 4], "big") % dimension
            vector[index] += 1.0 if digest[20 + k] % 2 == 0 else -1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [round(v / norm, 6) for v in vector]
