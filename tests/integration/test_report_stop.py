"""A report's run stops when the engine's run of it does (its lease lost, its batch stopped): the thread that
builds it asks between blocks, and an abandoned attempt leaves no report behind."""

from __future__ import annotations

import io

import pytest

from infra.report_data import write_dataset
from shared import runtime
from shared.app import platform
from shared.emulator_config import EmulatorConfig
from shared.kinds.base import ItemContext, ItemFailed
from shared.kinds.report import Report, ReportItem


def _context(item: ReportItem, *, stopping: bool) -> ItemContext:
    return ItemContext(
        kind="report",
        tenant=item.owner,
        job_id=item.job_id,
        index=0,
        attempt=1,
        timeout_s=60,
        params={},
        ports=platform().engine.ports,
        stopping=lambda: stopping,
    )


@pytest.fixture
def item(local_cloud: EmulatorConfig, unique: str) -> ReportItem:
    files = platform().reports.files
    data = io.BytesIO()
    write_dataset(data, size_bytes=4 * 1024 * 1024, seed=3)
    info = files.upload_file(
        object_name=f"inputs/stop-{unique}/datos.json", file=data, content_type="application/json"
    )
    return ReportItem(
        owner=f"stop-{unique}",
        job_id=f"stop-{unique}",
        report_type="FacturacionMasiva",
        input_object=info.name,
        input_generation=info.generation,
        input_bytes=info.size,
        cache_key=f"stop-{unique}",
        output_object=f"reports/stop-{unique}/stop-{unique}/reporte_facturacion.zip",
    )


def test_a_run_whose_engine_run_is_stopping_ends_without_a_report(item: ReportItem) -> None:
    with pytest.raises(ItemFailed) as stopped:
        runtime.run(Report().run(item, _context(item, stopping=True)))

    assert stopped.value.item_code == "stopped"
    assert runtime.run(platform().reports.files.stat(object_name=item.output_object)) is None


def test_the_same_run_not_stopping_writes_its_report(item: ReportItem) -> None:
    result = runtime.run(Report().run(item, _context(item, stopping=False)))

    written = runtime.run(platform().reports.files.stat(object_name=item.output_object))
    assert written is not None and written.size == result["fileSizeBytes"] > 0
