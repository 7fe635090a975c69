"""Fan-in: when every chunk of a batch is finished (or the batch stopped), write the results file and the
summary and mark the batch final. Safe to run any number of times: it acts once, through compare-and-set.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

from pydantic_core import to_json

from shared.errors import PlatformError
from shared.models.batch import BatchDoc, BatchStatus, ChunkProgress, ChunkState, ResultTotals
from shared.ports import BatchSnapshot
from shared.services.engine import Engine, kind_of, results_object
from shared.services.results import entries, missing_result, parse
from shared.services.status import summarize


class NotReady(PlatformError):
    """Chunks of this batch are still running; Cloud Tasks delivers the finalize task again later."""

    code = "not_ready"
    http_status = 503
    transient = True


async def finalize(
    *,
    engine: Engine,
    batch_id: str,
    read: BatchSnapshot | None = None,
    chunks: list[ChunkProgress] | None = None,
) -> dict[str, Any]:
    """Fan the batch in. `read` and `chunks`: the batch and its chunks' progress, when the caller has just
    read them (the end of the last lane), so the fan-in does not read them again."""
    store = engine.store
    if read is None:
        read = await store.read_batch(batch_id)
    if read is None:
        return {"outcome": "unknown batch"}
    batch = read.batch
    if batch.finalized:
        return {"outcome": "already final"}
    now = engine.clock()
    if chunks is None:
        chunks = await store.chunk_progress(batch_id)
    if batch.status.is_final:
        # A stopped batch: wait only for chunks still working under a live lease (their in-flight requests).
        busy = sum(
            1
            for c in chunks
            if c.state is ChunkState.RUNNING and c.lease_expires_at and c.lease_expires_at > now
        )
    else:
        # A chunk the submit has not written yet is not finished either.
        busy = sum(1 for c in chunks if not c.state.is_terminal) + batch.chunk_count - len(chunks)
    if busy and batch.deadline_at > now:
        raise NotReady(f"{busy} chunk(s) of {batch_id} still running")
    object_name = results_object(batch_id)
    kind = kind_of(engine, batch.kind)
    results: list[dict[str, Any]] | None = None
    if batch.entry_starts is not None or kind.summarizes:
        # The caller's results are folded from the items' lines, or the kind sums them up: parse them.
        lines, totals = await _result_lines(engine=engine, batch=batch)
        items = dict(enumerate(parse(line) for line in lines))
        results = entries(kind=kind, batch=batch, start=0, end=batch.entries, items=items)
        if batch.entry_starts is not None:
            lines = [to_json(result).decode() for result in results]
        jsonl = ("\n".join(lines) + "\n").encode() if lines else b""

        async def _parts() -> AsyncIterator[bytes]:
            yield jsonl

    else:
        # One line per item, copied as recorded: streamed to the file a chunk at a time, so memory holds one
        # chunk's lines whatever the batch's size.
        totals = ResultTotals()

        async def _parts() -> AsyncIterator[bytes]:
            nonlocal totals
            totals = ResultTotals()
            async for part, page_totals in _result_parts(engine=engine, batch=batch):
                totals = totals.plus(page_totals)
                yield part

    # Uploaded once: of two finalizers racing (a duplicate delivery), or an attempt that stopped before its
    # commit and its retry, the first upload stands (the pages of a finished batch no longer change). Only a
    # file that differs (left by an attempt that ran past the deadline while chunks still wrote) is replaced:
    # that rare path holds the file in memory once to compare it.
    ndjson = "application/x-ndjson"
    if not await engine.blobs.put_parts(
        object_name=object_name, parts=_parts(), content_type=ndjson, if_absent=True
    ):
        fresh = b"".join([part async for part in _parts()])
        if await engine.blobs.get(object_name=object_name) != fresh:
            await engine.blobs.put(object_name=object_name, data=fresh, content_type=ndjson)
    # The kind's own fan-in (refunds, a notification) before the batch shows final: a crash in between runs
    # it again with the next delivery of this task.
    await kind.on_final(batch, status=_final_status(batch, totals, now), entries=results, ports=engine.ports)

    def _finalize(current: BatchDoc) -> dict[str, Any] | None:
        if current.finalized:
            return None
        status = current.status
        changes: dict[str, Any] = {
            "finalized": True,
            "results_object": object_name,
            "totals": totals.model_dump(),
        }
        if not status.is_final:
            status = _final_status(current, totals, now)
            if status is BatchStatus.FAILED:
                changes["stop_reason"] = "deadline exceeded"
            changes["status"] = status.value
        finished_at = current.finished_at or now
        changes["finished_at"] = finished_at
        final = current.model_copy(update={"status": status, "finished_at": finished_at, "finalized": True})
        summary = summarize(final, totals, results=results if batch.entry_starts is not None else None)
        changes["summary"] = summary | (kind.summarize(results) if results is not None else {})
        return changes

    final = await store.update_batch(batch_id, _finalize, read=read)
    return {"outcome": final.status.value if final else "unknown batch"}


def _final_status(batch: BatchDoc, totals: ResultTotals, now: dt.datetime) -> BatchStatus:
    if batch.status.is_final:
        return batch.status
    if batch.deadline_at <= now and totals.finished < batch.total:
        return BatchStatus.FAILED
    return BatchStatus.COMPLETED


async def _result_lines(*, engine: Engine, batch: BatchDoc) -> tuple[list[str], ResultTotals]:
    """One JSON line per item, in item order, joined to customId; and the exact totals.

    Pages come in chunk order and each request's result is on exactly one page, so sorting one chunk's
    lines at a time puts the whole file in order; the lines are copied as recorded, never parsed. A request
    without a result never ran (the batch stopped first); only then are the chunks' customIds read.
    """
    lines: list[str | None] = []  # None: the request at this index has no result
    totals = ResultTotals()
    chunk: int | None = None
    chunk_lines: dict[int, str] = {}

    def _write_chunk() -> None:
        for index in sorted(chunk_lines):
            lines.extend([None] * (index - len(lines)))
            lines.append(chunk_lines[index])
        chunk_lines.clear()

    async for page in engine.store.stream_pages(batch.batch_id):
        if page.chunk != chunk:
            _write_chunk()
            chunk = page.chunk
        chunk_lines.update(zip(page.indices, page.lines, strict=True))
        totals = totals.plus(page.totals)
    _write_chunk()
    lines.extend([None] * (batch.total - len(lines)))
    missing = [index for index, line in enumerate(lines) if line is None]
    custom_ids = await engine.store.custom_ids(batch.batch_id, missing[0], missing[-1] + 1) if missing else {}
    text = [
        line if line is not None else _never_ran(index, custom_ids.get(index))
        for index, line in enumerate(lines)
    ]
    return text, totals


async def _result_parts(*, engine: Engine, batch: BatchDoc) -> AsyncIterator[tuple[bytes, ResultTotals]]:
    """The results file in parts, one per chunk's pages, in item order, with the totals of the pages in it;
    a request without a result (it never ran: the batch stopped first) is written from its customId."""
    written = 0  # items written so far: the file holds items [0, written)

    async def _until(end: int) -> bytes:
        nonlocal written
        if end <= written:
            return b""
        custom_ids = await engine.store.custom_ids(batch.batch_id, written, end)
        part = "".join(_never_ran(index, custom_ids.get(index)) + "\n" for index in range(written, end))
        written = end
        return part.encode()

    async def _chunk_part(chunk_lines: dict[int, str]) -> bytes:
        nonlocal written
        parts = []
        for index in sorted(chunk_lines):
            parts.append(await _until(index))
            parts.append(chunk_lines[index].encode() + b"\n")
            written = index + 1
        return b"".join(parts)

    chunk: int | None = None
    chunk_lines: dict[int, str] = {}
    totals = ResultTotals()
    async for page in engine.store.stream_pages(batch.batch_id):
        if page.chunk != chunk and chunk_lines:
            yield await _chunk_part(chunk_lines), totals
            chunk_lines, totals = {}, ResultTotals()
        chunk = page.chunk
        chunk_lines.update(zip(page.indices, page.lines, strict=True))
        totals = totals.plus(page.totals)
    yield await _chunk_part(chunk_lines), totals
    yield await _until(batch.total), ResultTotals()


def _never_ran(index: int, custom_id: str | None) -> str:
    return to_json(missing_result(index, custom_id, stopped=True)).decode()
