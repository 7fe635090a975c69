"""Report types: plugins of one registry (`REPORT_TYPES`). A type says which array of the input holds its
records, checks and adds one record at a time, and writes its files into the report's zip; the pipeline
does the reading, the errors file and the summary file.

A new type is a `ReportType` subclass and one line in `REPORT_TYPES`.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import functools
import io
import os
import tempfile
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, ClassVar, NamedTuple

import msgspec

from shared.reports.sheets import SheetsProcess

# Excel's limit is 1,048,576 rows a sheet (one is the header): longer sheets continue on "Facturas 2", ...
XLSX_MAX_DATA_ROWS = 1_048_575


class InvalidRecord(Exception):
    """One input record is not valid: it goes to errores.csv with `reason`; the report goes on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ReportWriter(ABC):
    @abstractmethod
    def add(self, records: list[Any]) -> list[tuple[int, str]]:
        """Add a block of records; the invalid ones are left out and returned, as (their index in `records`,
        why), for errores.csv. A block at a time: a call a record cost as much as a record's own checks."""

    @abstractmethod
    def finish(self, *, records: int, invalid: int) -> dict[str, Any]:
        """Write the type's files into the zip; the summary (resumen.json)."""

    @abstractmethod
    def abort(self) -> None:
        """The report failed: close what is open and remove temporary files."""


class ReportType(ABC):
    name: ClassVar[str]
    file_name: ClassVar[str]  # the zip's name, as downloaded
    object_key: ClassVar[str]  # an input that is an object holds its records in this array
    # A msgspec Struct a valid record decodes as (types and bounds checked in C): blocks of records that all
    # do come as those, the others as plain JSON values; `add` takes both.
    record_type: ClassVar[type[msgspec.Struct] | None] = None

    @abstractmethod
    def writer(self, *, archive: zipfile.ZipFile, work_dir: str | None) -> ReportWriter: ...


# --- invoices -----------------------------------------------------------------------------------------


class Invoice(NamedTuple):
    """One checked invoice (a tuple: built once per record, so it is built cheaply)."""

    numero: str
    fecha: str  # ISO date
    nit: str
    nombre: str
    ciudad: str
    items: int
    unidades: float
    subtotal: float
    iva: float

    @property
    def total(self) -> float:
        return self.subtotal + self.iva


_Positive = Annotated[int, msgspec.Meta(gt=0)] | Annotated[float, msgspec.Meta(gt=0)]
_NotNegative = Annotated[int, msgspec.Meta(ge=0)] | Annotated[float, msgspec.Meta(ge=0)]
_Rate = Annotated[int, msgspec.Meta(ge=0, le=100)] | Annotated[float, msgspec.Meta(ge=0, le=100)]


# Typed records: msgspec takes an int or a float for a number, never a bool, and a str or an int for a text,
# as `_text` and `_number` do; other members are skipped. gc=False: they hold no cycles, so the collector
# need not track the hundreds of thousands a report decodes.
class ItemRecord(msgspec.Struct, gc=False):
    sku: str | int
    cantidad: _Positive
    precio_unitario: _NotNegative
    iva: _Rate


class ClientRecord(msgspec.Struct, gc=False):
    nit: str | int
    nombre: str | int
    ciudad: str | int


class InvoiceRecord(msgspec.Struct, gc=False):
    """An invoice whose members have their types and bounds; what those cannot say (a blank text, a date,
    no items) `parse_invoice` checks."""

    numero: str | int
    fecha: str | int
    cliente: ClientRecord
    items: list[ItemRecord]


def _text(record: Mapping[str, Any], key: str, where: str = "") -> str:
    value = record.get(key)
    if type(value) is str:  # exact types: a JSON parser gives no subclasses, and bool is not taken for int
        text = value.strip()
        if text:
            return text
    elif type(value) is int:
        return str(value)
    raise InvalidRecord(f"{where}{key}: falta o no es texto")


def _number(record: Mapping[str, Any], key: str, where: str) -> float:
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRecord(f"{where}{key}: falta o no es un número")
    return float(value)


def _check_item(item: Any, number: int) -> None:
    """Raise InvalidRecord for the first problem of an item (the slow path, taken only by a bad item)."""
    where = f"items[{number}]."
    if not isinstance(item, dict):
        raise InvalidRecord(f"items[{number}]: no es un objeto")
    _text(item, "sku", where)
    cantidad = _number(item, "cantidad", where)
    precio = _number(item, "precio_unitario", where)
    rate = _number(item, "iva", where)
    if cantidad <= 0:
        raise InvalidRecord(f"{where}cantidad: debe ser mayor que 0")
    if precio < 0:
        raise InvalidRecord(f"{where}precio_unitario: no puede ser negativo")
    if rate < 0 or rate > 100:
        raise InvalidRecord(f"{where}iva: debe estar entre 0 y 100 (o 0 y 1)")


_NUMBER_TYPES = (int, float)


def parse_invoice(record: Any) -> Invoice:
    """An invoice record (an `InvoiceRecord`, or a plain JSON value), checked, with its subtotal and IVA
    computed (IVA as a rate, 0.19, or a percent, 19). A typed record that fails a check, and any plain one,
    is checked member by member, to say why."""
    if type(record) is InvoiceRecord:
        invoice = _typed_invoice(record)
        if invoice is not None:
            return invoice
        record = msgspec.to_builtins(record)
    return _plain_invoice(record)


def _typed_text(value: str | int) -> str:
    return value.strip() if type(value) is str else str(value)


@functools.lru_cache(maxsize=4096)
def _iso_date(text: str) -> str:
    """A date's ISO text (raises ValueError): the same few hundred dates come again and again."""
    return dt.date.fromisoformat(text).isoformat()


def _typed_invoice(record: InvoiceRecord) -> Invoice | None:
    """The invoice of a typed record (its types and bounds are checked already); None if a text is blank,
    the date is not one or there are no items, for `_plain_invoice` to say which."""
    cliente, items = record.cliente, record.items
    numero = _typed_text(record.numero)
    nit = _typed_text(cliente.nit)
    nombre = _typed_text(cliente.nombre)
    ciudad = _typed_text(cliente.ciudad)
    fecha = record.fecha
    if not (numero and nit and nombre and ciudad and items) or type(fecha) is not str:
        return None
    try:
        fecha = _iso_date(fecha.strip()[:10])
    except ValueError:
        return None
    subtotal = iva = unidades = 0.0
    for item in items:
        sku = item.sku
        if type(sku) is str and not sku.strip():
            return None
        cantidad, rate = item.cantidad, item.iva
        base = cantidad * item.precio_unitario
        subtotal += base
        iva += base * (rate / 100 if rate > 1 else rate)
        unidades += cantidad
    subtotal, iva = round(subtotal, 2), round(iva, 2)
    return Invoice(numero, fecha, nit, nombre, ciudad, len(items), unidades, subtotal, iva)


def _plain_invoice(record: Any) -> Invoice:
    """An invoice from a plain JSON value: each item is checked by one expression of exact type tests, and
    only an item that fails it is checked again, slowly, to say why."""
    if not isinstance(record, dict):
        raise InvalidRecord("el registro no es un objeto")
    numero = _text(record, "numero")
    fecha_text = _text(record, "fecha")
    try:
        fecha = dt.date.fromisoformat(fecha_text[:10])
    except ValueError:
        raise InvalidRecord(f"fecha: {fecha_text[:40]!r} no es una fecha AAAA-MM-DD") from None
    cliente = record.get("cliente")
    if not isinstance(cliente, dict):
        raise InvalidRecord("cliente: falta o no es un objeto")
    nit = _text(cliente, "nit", "cliente.")
    nombre = _text(cliente, "nombre", "cliente.")
    ciudad = _text(cliente, "ciudad", "cliente.")
    items = record.get("items")
    if not isinstance(items, list) or not items:
        raise InvalidRecord("items: falta o está vacío")
    subtotal = iva = unidades = 0.0
    for number, item in enumerate(items):
        if type(item) is not dict:
            _check_item(item, number)
        sku = item.get("sku")
        cantidad = item.get("cantidad")
        precio = item.get("precio_unitario")
        rate = item.get("iva")
        if (
            not ((type(sku) is str and sku.strip()) or type(sku) is int)
            or type(cantidad) not in _NUMBER_TYPES
            or type(precio) not in _NUMBER_TYPES
            or type(rate) not in _NUMBER_TYPES
            or cantidad <= 0
            or precio < 0
            or rate < 0
            or rate > 100
        ):
            _check_item(item, number)
        # int * float and int / int give what float(int) would: the figures are those of floats
        base = cantidad * precio
        subtotal += base
        iva += base * (rate / 100 if rate > 1 else rate)
        unidades += cantidad
    return Invoice(
        numero,
        fecha.isoformat(),
        nit,
        nombre,
        ciudad,
        len(items),
        unidades,
        round(subtotal, 2),
        round(iva, 2),
    )


class _Totals:
    __slots__ = ("count", "subtotal", "iva", "units")

    def __init__(self) -> None:
        self.count = 0
        self.subtotal = 0.0
        self.iva = 0.0
        self.units = 0.0

    def add(self, invoice: Invoice) -> None:
        self.count += 1
        self.subtotal += invoice.subtotal
        self.iva += invoice.iva
        self.units += invoice.unidades


def _valid_invoices(records: list[Any], invalid: list[tuple[int, str]]) -> Iterator[Invoice]:
    """The invoices of the valid records of a block; each invalid one's (index, why) appended to `invalid`."""
    for index, record in enumerate(records):
        try:
            yield parse_invoice(record)
        except InvalidRecord as exc:
            invalid.append((index, exc.reason))


def _money(value: float) -> float:
    return round(value, 2)


def _invoice_summary(
    totals: _Totals, first: str | None, last: str | None, records: int, invalid: int
) -> dict[str, Any]:
    return {
        "registros": records,
        "facturasValidas": records - invalid,
        "facturasInvalidas": invalid,
        "totales": {
            "subtotal": _money(totals.subtotal),
            "iva": _money(totals.iva),
            "total": _money(totals.subtotal + totals.iva),
        },
        "rangoFechas": {"desde": first, "hasta": last},
    }


INVOICE_COLUMNS = ["numero", "fecha", "nit", "cliente", "ciudad", "items", "subtotal", "iva", "total"]
SUMMARY_COLUMNS = ["nit", "cliente", "ciudad", "mes", "facturas", "subtotal", "iva", "total"]


class _FacturacionWriter(ReportWriter):
    """facturas.csv and facturas.xlsx written by a process of their own (`SheetsProcess`: the csv module and
    rust_xlsxwriter, constant memory) from the rows this one hands over while it parses, checks and computes,
    and copied into the zip at the end: the CSV while the workbook is compressed. Formatting each cell in
    Python was two thirds of a report's CPU; the job's process now only builds each row once."""

    def __init__(self, *, archive: zipfile.ZipFile, work_dir: str | None) -> None:
        self._archive = archive
        self._xlsx_path = _temporary_path(suffix=".xlsx", work_dir=work_dir)
        self._csv_path = _temporary_path(suffix=".csv", work_dir=work_dir)
        self._sheets = SheetsProcess(xlsx_path=self._xlsx_path, csv_path=self._csv_path, work_dir=work_dir)
        self._sheet_count = 0
        self._sheet = self._new_sheet()
        self._rows_in_sheet = 0
        self._by_client: dict[tuple[str, str, str, str], _Totals] = {}
        self._totals = _Totals()
        self._first: str | None = None
        self._last: str | None = None

    def _new_sheet(self) -> str:
        self._sheet_count += 1
        name = "Facturas" if self._sheet_count == 1 else f"Facturas {self._sheet_count}"
        self._sheets.add_row(sheet=name, row=INVOICE_COLUMNS, to_csv=self._sheet_count == 1)
        return name

    def add(self, records: list[Any]) -> list[tuple[int, str]]:
        invalid: list[tuple[int, str]] = []
        rows: list[list[Any]] = []
        by_client, totals = self._by_client, self._totals
        first, last = self._first, self._last
        for invoice in _valid_invoices(records, invalid):
            numero, fecha, nit, nombre, ciudad, items, _, subtotal, iva = invoice
            rows.append([numero, fecha, nit, nombre, ciudad, items, subtotal, iva, round(subtotal + iva, 2)])
            key = (nit, nombre, ciudad, fecha[:7])
            group = by_client.get(key)
            if group is None:
                group = by_client[key] = _Totals()
            group.count += 1  # written out, not `add`: a call a record was a tenth of this loop
            group.subtotal += subtotal
            group.iva += iva
            totals.count += 1
            totals.subtotal += subtotal
            totals.iva += iva
            if first is None or fecha < first:
                first = fecha
            if last is None or fecha > last:
                last = fecha
        self._first, self._last = first, last
        self._add_rows(rows)
        return invalid

    def _add_rows(self, rows: list[list[Any]]) -> None:
        """Hand rows to the sheets' process: to the CSV file, and to the invoices' sheet while it has room."""
        while rows:
            room = XLSX_MAX_DATA_ROWS - self._rows_in_sheet
            if room == 0:
                self._sheet = self._new_sheet()
                self._rows_in_sheet = 0
                continue
            part, rows = (rows, []) if len(rows) <= room else (rows[:room], rows[room:])
            self._sheets.add_rows(sheet=self._sheet, rows=part, to_csv=True)
            self._rows_in_sheet += len(part)

    def abort(self) -> None:
        self._sheets.abort()
        for path in (self._xlsx_path, self._csv_path):
            with contextlib.suppress(OSError):
                os.unlink(path)

    def finish(self, *, records: int, invalid: int) -> dict[str, Any]:
        self._sheets.add_row(sheet="Resumen", row=SUMMARY_COLUMNS)
        for key, group in sorted(self._by_client.items()):
            total = _money(group.subtotal + group.iva)
            self._sheets.add_row(
                sheet="Resumen", row=[*key, group.count, _money(group.subtotal), _money(group.iva), total]
            )
        try:
            self._sheets.end_rows()
            _store(archive=self._archive, path=self._csv_path, entry="facturas.csv")
            self._sheets.close()
            # The xlsx is a zip already: stored, not compressed again.
            stored = zipfile.ZipInfo("facturas.xlsx", date_time=dt.datetime.now(dt.UTC).timetuple()[:6])
            _store(archive=self._archive, path=self._xlsx_path, entry=stored)
        finally:
            self.abort()
        summary = _invoice_summary(self._totals, self._first, self._last, records, invalid)
        summary["clientes"] = len({key[0] for key in self._by_client})
        summary["ciudades"] = len({key[2] for key in self._by_client})
        return summary


def _temporary_path(*, suffix: str, work_dir: str | None) -> str:
    handle, path = tempfile.mkstemp(suffix=suffix, dir=work_dir)
    os.close(handle)
    return path


def _store(*, archive: zipfile.ZipFile, path: str, entry: str | zipfile.ZipInfo) -> None:
    """Copy a file into the zip (a name is compressed as the zip's other files; a ZipInfo says how)."""
    with open(path, "rb") as source, archive.open(entry, "w", force_zip64=True) as written:
        while block := source.read(1024 * 1024):
            written.write(block)


class FacturacionMasiva(ReportType):
    """Mass invoicing: every invoice with its subtotal, IVA and total (xlsx and csv), a summary by client,
    city and month, totals and date range."""

    name = "FacturacionMasiva"
    file_name = "reporte_facturacion.zip"
    object_key = "facturas"
    record_type = InvoiceRecord

    def writer(self, *, archive: zipfile.ZipFile, work_dir: str | None) -> ReportWriter:
        return _FacturacionWriter(archive=archive, work_dir=work_dir)


class _VentasWriter(ReportWriter):
    def __init__(self, *, archive: zipfile.ZipFile) -> None:
        self._archive = archive
        self._by_city: dict[str, _Totals] = {}
        self._totals = _Totals()
        self._first: str | None = None
        self._last: str | None = None

    def add(self, records: list[Any]) -> list[tuple[int, str]]:
        invalid: list[tuple[int, str]] = []
        for invoice in _valid_invoices(records, invalid):
            group = self._by_city.get(invoice.ciudad)
            if group is None:
                group = self._by_city[invoice.ciudad] = _Totals()
            group.add(invoice)
            self._totals.add(invoice)
            if self._first is None or invoice.fecha < self._first:
                self._first = invoice.fecha
            if self._last is None or invoice.fecha > self._last:
                self._last = invoice.fecha
        return invalid

    def abort(self) -> None:
        return None  # nothing open: everything is written at the end

    def finish(self, *, records: int, invalid: int) -> dict[str, Any]:
        text = io.StringIO()
        rows = csv.writer(text)
        rows.writerow(["ciudad", "facturas", "unidades", "subtotal", "iva", "total"])
        ranked = sorted(self._by_city.items(), key=lambda pair: -(pair[1].subtotal + pair[1].iva))
        for city, group in ranked:
            total = _money(group.subtotal + group.iva)
            rows.writerow([city, group.count, group.units, _money(group.subtotal), _money(group.iva), total])
        self._archive.writestr("ventas_por_ciudad.csv", text.getvalue())
        summary = _invoice_summary(self._totals, self._first, self._last, records, invalid)
        summary["ciudades"] = len(self._by_city)
        return summary


class VentasPorCiudad(ReportType):
    """Sales by city over the same invoices: invoices, units and totals per city, largest first."""

    name = "VentasPorCiudad"
    file_name = "ventas_por_ciudad.zip"
    object_key = "facturas"
    record_type = InvoiceRecord

    def writer(self, *, archive: zipfile.ZipFile, work_dir: str | None) -> ReportWriter:
        return _VentasWriter(archive=archive)


REPORT_TYPES: Mapping[str, ReportType] = {
    kind.name: kind for kind in (FacturacionMasiva(), VentasPorCiudad())
}
