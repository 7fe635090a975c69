"""The report pipeline alone (no emulator): records streamed in, the zip out, invalid records and malformed
input, on in-memory streams."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import threading
import zipfile
from typing import Any

import msgspec
import openpyxl
import pytest

from infra.report_data import invoices
from shared.kinds.base import Ports
from shared.kinds.report import Report, ReportJob
from shared.reports import pipeline, types
from shared.reports.pipeline import MalformedInput, Progress, build_report
from shared.reports.types import (
    INVOICE_COLUMNS,
    REPORT_TYPES,
    SUMMARY_COLUMNS,
    InvalidRecord,
    InvoiceRecord,
    parse_invoice,
)
from shared.settings import Settings


def run(data: bytes, report_type: str = "FacturacionMasiva") -> tuple[Any, zipfile.ZipFile, Progress]:
    sink = io.BytesIO()
    progress = Progress()
    output = build_report(
        source=io.BytesIO(data),
        sink=sink,
        report_type=REPORT_TYPES[report_type],
        work_dir=None,
        progress=progress,
    )
    return output, zipfile.ZipFile(io.BytesIO(sink.getvalue())), progress


def sample(count: int) -> list[dict[str, Any]]:
    stream = invoices(seed=2)
    return [next(stream) for _ in range(count)]


def test_an_invoice_gets_its_subtotal_iva_and_total() -> None:
    invoice = parse_invoice(
        {
            "numero": 7,
            "fecha": "2024-03-09T10:00:00",
            "cliente": {"nit": "900", "nombre": "Acme", "ciudad": "Cali"},
            "items": [
                {"sku": "A", "descripcion": "", "cantidad": 2, "precio_unitario": 100, "iva": 0.19},
                {"sku": "B", "cantidad": 1, "precio_unitario": 50, "iva": 5},
            ],
        }
    )

    assert (invoice.numero, invoice.fecha, invoice.subtotal, invoice.iva) == ("7", "2024-03-09", 250, 40.5)
    assert invoice.total == 290.5


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ([], "no es un objeto"),
        ({"numero": "1"}, "fecha"),
        (
            {"numero": "1", "fecha": "2024-01-01", "cliente": {"nit": "1", "nombre": "x"}, "items": [{}]},
            "ciudad",
        ),
        (
            {
                "numero": "1",
                "fecha": "2024-01-01",
                "cliente": {"nit": "1", "nombre": "x", "ciudad": "y"},
                "items": [{"sku": "a", "cantidad": 0, "precio_unitario": 1, "iva": 0}],
            },
            "cantidad",
        ),
        (
            {
                "numero": "1",
                "fecha": "2024-01-01",
                "cliente": {"nit": 1, "nombre": "x", "ciudad": "y"},
                "items": [{"sku": "a", "cantidad": 1, "precio_unitario": 1, "iva": 0}, "b"],
            },
            r"items\[1\]: no es un objeto",
        ),
        (
            {
                "numero": "1",
                "fecha": "2024-01-01",
                "cliente": {"nit": "1", "nombre": "x", "ciudad": "y"},
                "items": [{"sku": True, "cantidad": 1, "precio_unitario": 1, "iva": 0}],
            },
            r"items\[0\]\.sku: falta o no es texto",
        ),
        (
            {
                "numero": "1",
                "fecha": "2024-01-01",
                "cliente": {"nit": "1", "nombre": "x", "ciudad": "y"},
                "items": [{"sku": "a", "cantidad": 1, "precio_unitario": 1, "iva": False}],
            },
            r"items\[0\]\.iva: falta o no es un número",
        ),
    ],
)
def test_an_invalid_invoice_says_why(record: Any, reason: str) -> None:
    with pytest.raises(InvalidRecord, match=reason):
        parse_invoice(record)


def _valid() -> dict[str, Any]:
    return {
        "numero": " FV-1 ",
        "fecha": "2024-03-09",
        "cliente": {"nit": 900, "nombre": "Acme", "ciudad": "Cali"},
        "items": [{"sku": "A", "cantidad": 2, "precio_unitario": 10.5, "iva": 19}],
    }


def _changed(path: str, value: Any) -> dict[str, Any]:
    record = json.loads(json.dumps(_valid()))
    *parents, key = path.split(".")
    target = record
    for parent in parents:
        target = target[int(parent)] if isinstance(target, list) else target[parent]
    target[key] = value
    return record


# Records with every member of its type and bounds, but that a check after decoding refuses.
TYPED_BUT_INVALID = [
    _changed("numero", "  "),
    _changed("fecha", "2024-02-30"),
    _changed("fecha", 2024),
    _changed("cliente.nombre", ""),
    _changed("cliente.ciudad", " \t"),
    _changed("items", []),
    _changed("items.0.sku", " "),
]
# Records the typed decoder refuses: their block comes as plain JSON values.
NOT_TYPED = [
    _changed("numero", True),
    _changed("items.0.cantidad", 0),
    _changed("items.0.cantidad", "2"),
    _changed("items.0.precio_unitario", -1),
    _changed("items.0.iva", 101),
    _changed("cliente", None),
    {"numero": "x"},
    "not an invoice",
]


@pytest.mark.parametrize("record", TYPED_BUT_INVALID)
def test_a_typed_record_that_fails_a_check_says_why_as_a_plain_one(record: dict[str, Any]) -> None:
    typed = msgspec.convert(record, InvoiceRecord)

    with pytest.raises(InvalidRecord) as plain:
        parse_invoice(record)
    with pytest.raises(InvalidRecord) as from_typed:
        parse_invoice(typed)

    assert from_typed.value.reason == plain.value.reason


def test_a_typed_record_and_a_plain_one_give_the_same_invoice() -> None:
    for record in [_valid(), *sample(50), _changed("fecha", " 2024-03-09T10:00:00 ")]:
        assert parse_invoice(msgspec.convert(record, InvoiceRecord)) == parse_invoice(record)


@pytest.mark.parametrize("block_bytes", [2048, 1 << 20])
@pytest.mark.parametrize("report_type", ["FacturacionMasiva", "VentasPorCiudad"])
def test_a_block_with_invalid_records_among_valid_ones_gives_the_plain_paths_report(
    monkeypatch: pytest.MonkeyPatch, block_bytes: int, report_type: str
) -> None:
    records: list[Any] = sample(400)
    for number, invalid in enumerate([*TYPED_BUT_INVALID, *NOT_TYPED]):
        records[7 + 23 * number] = invalid
    data = json.dumps(records).encode()
    monkeypatch.setattr(pipeline, "READ_BUFFER_BYTES", block_bytes)

    typed_output, typed_zip, _ = run(data, report_type)
    monkeypatch.setattr(type(REPORT_TYPES[report_type]), "record_type", None)
    plain_output, plain_zip, _ = run(data, report_type)

    assert typed_output == plain_output
    assert typed_output.invalid == len(TYPED_BUT_INVALID) + len(NOT_TYPED)
    for name in set(plain_zip.namelist()) - {"facturas.xlsx"}:
        assert typed_zip.read(name) == plain_zip.read(name), name
    errors = list(csv.reader(io.TextIOWrapper(typed_zip.open("errores.csv"), encoding="utf-8")))
    assert [int(row[0]) for row in errors[1:]] == [7 + 23 * number for number in range(len(errors) - 1)]


def test_invalid_records_go_to_errores_csv_and_the_rest_is_reported() -> None:
    records: list[Any] = sample(30)
    records[3] = "not an invoice"
    records[17]["items"] = []

    output, archive, progress = run(json.dumps(records).encode())

    assert (output.records, output.invalid, progress.records) == (30, 2, 30)
    errors = list(csv.reader(io.TextIOWrapper(archive.open("errores.csv"), encoding="utf-8")))
    assert [row[0] for row in errors[1:]] == ["3", "17"]
    summary = json.loads(archive.read("resumen.json"))
    assert summary["facturasValidas"] == 28 and summary["registros"] == 30
    assert progress.bytes_read == len(json.dumps(records).encode())


def test_the_workbook_holds_the_csv_rows_and_the_summary_by_client_city_and_month() -> None:
    records: list[Any] = sample(60)
    records[5]["items"] = []

    _, archive, _ = run(json.dumps(records).encode())

    rows = list(csv.reader(io.TextIOWrapper(archive.open("facturas.csv"), encoding="utf-8")))
    book = openpyxl.load_workbook(io.BytesIO(archive.read("facturas.xlsx")), read_only=True)
    assert book.sheetnames == ["Facturas", "Resumen"]
    invoices_sheet = list(book["Facturas"].iter_rows(values_only=True))
    assert list(invoices_sheet[0]) == rows[0] == INVOICE_COLUMNS
    assert len(invoices_sheet) == len(rows) == 60  # the header and 59 valid invoices
    for cells, line in zip(invoices_sheet[1:], rows[1:], strict=True):
        assert list(cells[:5]) == line[:5]
        assert list(cells[5:]) == [float(value) for value in line[5:]]
    groups: dict[tuple[str, ...], list[float]] = {}
    for line in rows[1:]:
        group = groups.setdefault((*line[2:5], line[1][:7]), [0, 0.0, 0.0])
        group[0] += 1
        group[1] += float(line[6])
        group[2] += float(line[7])
    summary_sheet = list(book["Resumen"].iter_rows(values_only=True))
    assert list(summary_sheet[0]) == SUMMARY_COLUMNS
    assert [list(cells) for cells in summary_sheet[1:]] == [
        [*key, count, round(subtotal, 2), round(iva, 2), round(subtotal + iva, 2)]
        for key, (count, subtotal, iva) in sorted(groups.items())
    ]
    book.close()


def test_an_object_with_facturas_and_a_bom_are_read() -> None:
    data = b"\xef\xbb\xbf  " + json.dumps({"meta": {"x": [1]}, "facturas": sample(5)}).encode()

    output, archive, _ = run(data, "VentasPorCiudad")

    assert output.records == 5 and output.invalid == 0
    assert "ventas_por_ciudad.csv" in archive.namelist()


def test_malformed_json_names_its_byte_offset() -> None:
    good = json.dumps(sample(6000)).encode()
    position = good.index(b"}, {", 2_000_000) + 1  # after an object, past the first block read
    broken = good[:position] + b"@" + good[position:]

    with pytest.raises(MalformedInput) as raised:
        run(broken)

    offset = int(str(raised.value).split("byte offset ")[1].split(":")[0])
    assert offset == position  # the character msgspec rejects


def test_a_truncated_input_and_a_scalar_are_malformed() -> None:
    good = json.dumps(sample(10)).encode()
    with pytest.raises(MalformedInput, match=f"byte offset {len(good) - 5}"):
        run(good[:-5])
    with pytest.raises(MalformedInput, match="byte offset 0"):
        run(b'"hello"')


class _FailingSource(io.BytesIO):
    """A source whose reads fail past `fail_at` bytes, as a dropped Storage download does."""

    def __init__(self, data: bytes, *, fail_at: int) -> None:
        super().__init__(data)
        self._fail_at = fail_at

    def read(self, size: int | None = -1) -> bytes:
        if self.tell() >= self._fail_at:
            raise ConnectionError("the download was dropped")
        return super().read(size)


def _read_ahead_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "report-read-ahead"]


def test_a_source_that_fails_while_read_ahead_fails_the_report_with_its_error() -> None:
    data = json.dumps(sample(12_000)).encode()  # about 5 MB: several blocks

    with pytest.raises(ConnectionError, match="dropped"):
        build_report(
            source=_FailingSource(data, fail_at=3 * pipeline.READ_BUFFER_BYTES),
            sink=io.BytesIO(),
            report_type=REPORT_TYPES["FacturacionMasiva"],
            work_dir=None,
            progress=Progress(),
        )

    assert _read_ahead_threads() == []


def test_a_report_that_fails_early_stops_reading_ahead() -> None:
    data = b"[@" + json.dumps(sample(12_000)).encode()[1:]

    with pytest.raises(MalformedInput, match="byte offset 1"):
        run(data)

    assert _read_ahead_threads() == []


def test_long_invoice_sheets_continue_on_another_sheet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(types, "XLSX_MAX_DATA_ROWS", 4)

    _, archive, _ = run(json.dumps(sample(10)).encode())

    with zipfile.ZipFile(io.BytesIO(archive.read("facturas.xlsx"))) as xlsx:
        workbook = xlsx.read("xl/workbook.xml").decode()
    assert all(name in workbook for name in ('"Facturas"', '"Facturas 2"', '"Facturas 3"', '"Resumen"'))


def test_a_report_job_is_one_item_on_its_own_queue_with_a_long_deadline() -> None:
    settings = Settings()
    ports = Ports(
        model=None,  # type: ignore[arg-type]
        embedder=None,  # type: ignore[arg-type]
        vectors=None,  # type: ignore[arg-type]
        blobs=None,  # type: ignore[arg-type]
        settings=settings,
        clock=lambda: dt.datetime.now(dt.UTC),
    )
    job = ReportJob(
        report_type="FacturacionMasiva",
        user_name="ana",
        input_object="inputs/t/x.json",
        input_generation=1,
        input_bytes=10,
        cache_key="k",
    )

    plan = asyncio.run(Report().plan(job, tenant="t", batch_id="b1", ports=ports))

    assert len(plan.items) == 1 and plan.items[0].output_object == "reports/t/b1/reporte_facturacion.zip"
    assert plan.deadline == dt.timedelta(hours=settings.reports_job_deadline_hours)
    assert Report().task_queue(settings) == settings.reports_tasks_queue and not Report.public
