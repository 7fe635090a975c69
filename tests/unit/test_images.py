"""Images recognised by their bytes, and the structural check of what the model returns."""

from __future__ import annotations

import pytest

from infra.emulators.gemini.content import png, png_of_rows
from shared.images import NotAnImage, check_decodes, sniff

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xda\x00\x02\x00\xff\xd9"
WEBP = b"RIFF\x14\x00\x00\x00WEBPVP8L\x08\x00\x00\x00\x2f\x00\x00\x00\x00\x00\x00\x00"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (png(seed=1), "image/png"),
        (JPEG, "image/jpeg"),
        (WEBP, "image/webp"),
        (b"GIF89a....", None),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", None),
        (b"", None),
    ],
)
def test_sniff_reads_the_signature_not_a_header(data: bytes, expected: str | None) -> None:
    assert sniff(data) == expected


def test_check_decodes_accepts_well_formed_images() -> None:
    assert check_decodes(png(seed=3, size=32)) == "image/png"
    assert check_decodes(JPEG) == "image/jpeg"
    assert check_decodes(WEBP) == "image/webp"


@pytest.mark.parametrize(
    "data",
    [
        png(seed=1)[:-12],  # truncated: no IEND
        png(seed=1)[:40] + b"\x00" + png(seed=1)[41:],  # a flipped byte: bad CRC
        png_of_rows(b"\x00" * 5, size=2),  # fewer rows than the header says
        b"\x89PNG\r\n\x1a\n",
        b"\xff\xd8\xff\xe0\x00\x10JFIF",  # JPEG without image data
        WEBP[:-2],  # WebP shorter than declared
        b"not an image",
    ],
)
def test_check_decodes_rejects_broken_images(data: bytes) -> None:
    with pytest.raises(NotAnImage):
        check_decodes(data)
