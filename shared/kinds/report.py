"""Report jobs as a kind of the engine: one job is one item (the whole input, read as a stream), so it is
leased, retried with backoff, recovered by the sweeper and recorded exactly once like any other item.

Its chunk tasks go to a queue of their own (`REPORTS_TASKS_QUEUE`), whose `max_concurrent_dispatches` is
`REPORTS_MAX_CONCURRENT`: at most that many jobs run at once across every instance; the rest wait, queued.
The kind is not public: only the reports service (`POST /reports/...`) submits it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, TypeAdapter

from shared.errors import InvalidRequest, NotFound, PlatformError
from shared.kinds.base import ItemContext, ItemFailed, Kind, KindRequest, Plan, Ports
from shared.ports import KindRecords, StreamingBlobs
from shared.reports.memory import PeakMemory
from shared.reports.pipeline import JobStopped, MalformedInput, Progress, build_report
from shared.reports.types import REPORT_TYPES
from shared.settings import Settings

PROGRESS_COLLECTION = "report_progress"
CACHE_COLLECTION = "report_cache"
PROGRESS_INTERVAL_S = 1.0  # Firestore sustains about one write a second per document


class ReportFailed(PlatformError):
    """The report could not be written now (storage unavailable): retried with backoff."""

    code = "report_unavailable"
    http_status = 503
    transient = True


def output_object(*, owner: str, job_id: str, report_type: str) -> str:
    """Where a job's report is written: one name per job, so a repeated run overwrites, never adds."""
    return f"reports/{owner}/{job_id}/{REPORT_TYPES[report_type].file_name}"


class ReportJob(KindRequest):
    """What the reports service submits for one job (never a client: the kind is not public)."""

    report_type: str
    user_name: str
    input_object: str
    input_generation: int
    input_bytes: int
    cache_key: str
    cached: dict[str, Any] | None = None  # the finished report this job reuses (a cache hit)


class ReportItem(BaseModel):
    job_id: str
    owner: str
    report_type: str
    input_object: str
    input_generation: int
    input_bytes: int
    cache_key: str
    output_object: str
    cached: dict[str, Any] | None = None


class Report(Kind[ReportJob, ReportItem]):
    name = "report"
    request_model = ReportJob
    item_adapter = TypeAdapter(list[ReportItem])
    public = False

    def task_queue(self, settings: Settings) -> str | None:
        return settings.reports_tasks_queue

    async def plan(self, request: ReportJob, *, tenant: str, batch_id: str, ports: Ports) -> Plan[ReportItem]:
        if request.report_type not in REPORT_TYPES:
            raise InvalidRequest(
                f"unknown report type {request.report_type!r}",
                details=[{"field": "reportType", "problem": f"one of {', '.join(sorted(REPORT_TYPES))}"}],
            )
        item = ReportItem(
            owner=tenant,
            output_object=output_object(owner=tenant, job_id=batch_id, report_type=request.report_type),
            job_id=batch_id,
            **request.model_dump(exclude={"options", "user_name"}),
        )
        return Plan(
            items=[item],
            custom_ids=[batch_id],
            params={"reportType": request.report_type, "userName": request.user_name},
            # A job may wait behind others of the queue (two run at once) far longer than it runs.
            deadline=dt.timedelta(hours=ports.settings.reports_job_deadline_hours),
        )

    async def run(self, item: ReportItem, ctx: ItemContext) -> dict[str, Any]:
        files, records = ctx.ports.files, ctx.ports.records
        if files is None or records is None:
            raise ItemFailed("reports are not wired on this instance", code="not_configured")
        if item.cached is not None:
            # The job gets a copy of its own (Storage copies it, no byte passes here): the clean-up may
            # delete the first job's report while this one is still within its retention.
            copied = await files.copy(source=item.cached["objectName"], destination=item.output_object)
            if copied is not None:
                return item.cached | {
                    "objectName": item.output_object,
                    "fileSizeBytes": copied.size,
                    "completedAt": ctx.ports.clock().isoformat(),
                    "cacheHit": True,
                }
            # Cleaned up since the job was queued: computed again below.
        report_type = REPORT_TYPES.get(item.report_type)
        if report_type is None:
            raise ItemFailed(f"unknown report type {item.report_type!r}", code="unknown_report_type")
        progress = Progress()
        # The thread cannot be cancelled: it asks a block at a time whether to stop, which it must once the
        # engine's run is stopping (lease lost, batch stopped) or this coroutine is cancelled.
        cancelled = threading.Event()

        def stopped() -> bool:
            return cancelled.is_set() or ctx.stopping()

        publisher = asyncio.create_task(_publish_progress(records, item, progress))
        started = time.monotonic()
        try:
            work_dir = ctx.ports.settings.reports_work_dir or None
            with PeakMemory(spill_dir=work_dir or tempfile.gettempdir()) as meter:
                output = await asyncio.to_thread(_build, files, item, progress, work_dir, stopped)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        except JobStopped as exc:
            raise ItemFailed("the job was stopped before its report was written", code="stopped") from exc
        except MalformedInput as exc:
            # What was written of the zip is of no use: a failed job leaves no report behind.
            with contextlib.suppress(PlatformError):
                await files.delete(object_name=item.output_object)
            raise ItemFailed(str(exc), code="malformed_json") from exc
        except NotFound as exc:
            raise ItemFailed(f"the input is gone: {exc.message}", code="input_missing") from exc
        except PlatformError:
            raise
        except Exception as exc:  # noqa: BLE001 - storage errors come from the client's streams: retried
            raise ReportFailed(f"cannot write the report: {exc!r}"[:500]) from exc
        finally:
            publisher.cancel()
            await asyncio.gather(publisher, return_exceptions=True)
        written = await files.stat(object_name=item.output_object)
        fields = {
            "fileName": report_type.file_name,
            "objectName": item.output_object,
            "fileSizeBytes": written.size if written else 0,
            "recordsInvalid": output.invalid,
            "bytesRead": progress.bytes_read,
            "resumen": output.summary,
            "completedAt": ctx.ports.clock().isoformat(),
            "performanceMetrics": {
                "processingTimeMs": int((time.monotonic() - started) * 1000),
                "memoryUsageMB": meter.added_mb,
                "recordsProcessed": output.records,
            },
        }
        # Later jobs of the same input, type and options reuse this report (see the reports service).
        await records.merge(
            collection=CACHE_COLLECTION,
            doc_id=item.cache_key,
            fields={
                "owner": item.owner,
                "report_type": item.report_type,
                "job_id": item.job_id,
                "object_name": item.output_object,
                "size_bytes": fields["fileSizeBytes"],
                "result": fields,
                "created_at": ctx.ports.clock(),
            },
        )
        await _write_progress(records, item, progress, final=True)
        return fields | {"cacheHit": False}


def _build(
    files: StreamingBlobs,
    item: ReportItem,
    progress: Progress,
    work_dir: str | None,
    stopped: Callable[[], bool],
) -> Any:
    """Runs off the event loop (parsing and writing are CPU-bound): the loop keeps the lease renewed."""
    report_type = REPORT_TYPES[item.report_type]
    with files.open_read(object_name=item.input_object, generation=item.input_generation) as source:
        sink = files.open_write(object_name=item.output_object, content_type="application/zip")
        try:
            output = build_report(
                source=source,
                sink=sink,
                report_type=report_type,
                work_dir=work_dir,
                progress=progress,
                stopped=stopped,
            )
        except BaseException as exc:
            # The upload is abandoned, not finished: a failed or stopped attempt never leaves a partial
            # report, nor replaces the one a later delivery of the same job wrote.
            with contextlib.suppress(Exception):
                sink.__exit__(type(exc), exc, exc.__traceback__)
            raise
        sink.close()
    return output


async def _publish_progress(records: KindRecords, item: ReportItem, progress: Progress) -> None:
    while True:
        await asyncio.sleep(PROGRESS_INTERVAL_S)
        with contextlib.suppress(PlatformError):
            await _write_progress(records, item, progress, final=False)


async def _write_progress(records: KindRecords, item: ReportItem, progress: Progress, *, final: bool) -> None:
    await records.merge(
        collection=PROGRESS_COLLECTION,
        doc_id=item.job_id,
        fields={
            "owner": item.owner,
            "bytes_read": progress.bytes_read,
            "bytes_total": item.input_bytes,
            "records_read": progress.records,
            "final": final,
        },
    )
