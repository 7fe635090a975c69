"""The streamed reader of a report's records (no emulator): every record of both input shapes, whatever the
block size, in order; and a malformed input's byte offset."""

from __future__ import annotations

import io
import json
from typing import Any

import msgspec
import pytest

from infra.report_data import invoices
from shared.reports import json_stream
from shared.reports.json_stream import MalformedJSON, RecordBatches
from shared.reports.types import InvoiceRecord

TRICKY: list[Any] = [
    {"numero": "a}, {b", "nota": '}, {"x": [1, 2]}, ', "items": [{"n": 1}, {"n": 2}]},
    "not an invoice",
    17,
    [{"a": 1}, {"b": 2}],
    {"cliente": {"ciudad": "Bogotá"}, "vacío": {}},
    {"escapes": '\\"}, {\\\\', "n": 1.5e3},
    None,
    {},
]


def read(data: bytes, *, block_bytes: int, record_type: Any = None) -> list[Any]:
    reader = RecordBatches(
        source=io.BytesIO(data), object_key="facturas", block_bytes=block_bytes, record_type=record_type
    )
    return [record for batch in reader for record in batch]


def sample(count: int) -> list[Any]:
    stream = invoices(seed=3)
    return [next(stream) for _ in range(count)]


@pytest.mark.parametrize("block_bytes", [1, 7, 64, 1024, 1 << 20])
@pytest.mark.parametrize("indent", [None, 2])
def test_every_record_of_an_array_comes_in_order(block_bytes: int, indent: int | None) -> None:
    records = [*sample(40), *TRICKY, *sample(3)]

    assert read(json.dumps(records, indent=indent).encode(), block_bytes=block_bytes) == records


@pytest.mark.parametrize("block_bytes", [1, 13, 4096])
def test_the_records_of_an_object_are_its_facturas_and_other_members_are_skipped(block_bytes: int) -> None:
    records = [*sample(20), *TRICKY]
    document = {
        "meta": {"origen": "erp", "facturas": [{"no": "nested"}]},
        "lotes": [{"id": 1}, {"id": 2}, 3],
        "facturas": records,
        "total": 12.5,
        "fin": [],
    }

    assert read(json.dumps(document).encode(), block_bytes=block_bytes) == records


@pytest.mark.parametrize("data", [b"[]", b" [ ] ", b"{}", b'{"facturas": []}', b'{"otro": [1, {"a": 2}]}'])
def test_empty_inputs_have_no_records(data: bytes) -> None:
    assert read(data, block_bytes=3) == []


@pytest.mark.parametrize("block_bytes", [64, 1024, 1 << 20])
@pytest.mark.parametrize("indent", [None, 2])
def test_blocks_of_typed_records_come_typed_and_a_block_with_another_shape_comes_plain(
    block_bytes: int, indent: int | None
) -> None:
    records = [*sample(40), *TRICKY, *sample(30)]
    data = json.dumps(records, indent=indent).encode()

    read_back = read(data, block_bytes=block_bytes, record_type=InvoiceRecord)

    assert len(read_back) == len(records)
    for got, sent in zip(read_back, records, strict=True):
        if isinstance(got, InvoiceRecord):
            assert got == msgspec.convert(sent, InvoiceRecord)
        else:
            assert got == sent
    assert not any(isinstance(got, InvoiceRecord) for got in read_back[40 : 40 + len(TRICKY)])
    if block_bytes < 1 << 20:  # blocks of a few records: those without TRICKY's come typed
        assert sum(isinstance(got, InvoiceRecord) for got in read_back) > 40


@pytest.mark.parametrize(
    ("data", "offset", "reason"),
    [
        (b'[{"a": 1},, {"b": 2}]', 10, "invalid character"),
        (b'[{"a": 1}, {"b": 2},]', 20, "trailing comma"),
        (b'[{"a": 1}, {"b": 2}] x', 21, "trailing characters"),
        (b'[{"a": 1}, {"b": 2}', 19, "truncated"),
        (b'{"facturas": [{"a": 1}], "b" 2}', 29, "expected ':'"),
        (b'{"facturas": [{"a": 1}] "b": 2}', 24, "expected ',' or '}'"),
        (b'[{"a": "\xff"}, {"b": 2}, {"c": 3}]', 8, "not UTF-8"),
        (b'"a string"', 0, "expected a JSON array"),
        # valid syntax, but no double holds the number
        (b'[{"a": 1}, {"b": [1e400]}, {"c": 3}]', 11, "number out of range"),
        (b'{"facturas": [{"a": 1e999}]}', 14, "number out of range"),
        (b"", 0, "expected a JSON array"),
    ],
)
@pytest.mark.parametrize("record_type", [None, InvoiceRecord])
def test_a_malformed_input_names_its_byte_offset(
    data: bytes, offset: int, reason: str, record_type: Any
) -> None:
    with pytest.raises(MalformedJSON, match=reason) as raised:
        read(data, block_bytes=4, record_type=record_type)

    assert raised.value.offset == offset


@pytest.mark.parametrize("block_bytes", [256, 1 << 20])
def test_bad_utf8_in_a_member_the_typed_records_skip_names_its_byte_offset(block_bytes: int) -> None:
    data = json.dumps(sample(20)).encode()
    offset = data.index(b"Producto", 3000)
    broken = data[:offset] + b"\xff" + data[offset + 1 :]

    with pytest.raises(MalformedJSON, match="not UTF-8") as raised:
        read(broken, block_bytes=block_bytes, record_type=InvoiceRecord)

    assert raised.value.offset == offset


@pytest.mark.parametrize("position", [0, 11, 19])
def test_a_syntax_error_among_typed_records_names_its_byte_offset(position: int) -> None:
    data = json.dumps(sample(20)).encode()
    offset = data.index(b'"numero"', 400 * position)
    broken = data[:offset] + b"@" + data[offset + 1 :]

    with pytest.raises(MalformedJSON) as raised:
        read(broken, block_bytes=1 << 20, record_type=InvoiceRecord)

    assert raised.value.offset == offset


def test_a_record_over_the_limit_fails_instead_of_filling_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(json_stream, "MAX_RECORD_BYTES", 1000)
    data = json.dumps([{"a": 1}, {"texto": "x" * 5000}, {"b": 2}]).encode()

    with pytest.raises(MalformedJSON, match="no record ends within"):
        read(data, block_bytes=64)
