"""How a batch's items become chunks: how many lanes run at once, each chunk's share of the concurrency, and
the packing of items into chunk documents, all at once (a body's plan) or as they are read (a streamed plan,
written in groups so memory holds one group whatever the batch's size)."""

from __future__ import annotations

import math
from typing import Any

from pydantic_core import to_json

from shared.errors import InvalidRequest
from shared.kinds.base import Plan, StreamedItems
from shared.models.batch import ChunkDoc, Stage
from shared.services.engine import Engine
from shared.settings import Settings

# A chunk document stays well below Firestore's 1 MiB limit.
CHUNK_BYTE_BUDGET = 800 * 1024

MIN_LANE_CHUNK = 20


def plan_lanes(*, total: int, concurrency: int, settings: Settings) -> tuple[int, int]:
    """How many lanes of chunks run at once, and the chunk size: each lane gets at most
    `batch_lane_concurrency` of the batch's concurrency, and no lane a chunk of fewer than 20 requests."""
    lanes = max(1, min(math.ceil(concurrency / settings.batch_lane_concurrency), total // MIN_LANE_CHUNK))
    return lanes, min(settings.batch_chunk_size, math.ceil(total / lanes))


def lane_concurrency(*, chunk: int, lanes: int, concurrency: int) -> int:
    """The share of the batch's concurrency that chunk `chunk` runs with (lanes split it evenly)."""
    lane = chunk % lanes
    return concurrency // lanes + (1 if lane < concurrency % lanes else 0)


class Chunker:
    """Packs a stage's items, in order, into chunks of at most `size` items and CHUNK_BYTE_BUDGET bytes."""

    def __init__(self, *, batch_id: str, owner: str, size: int, first_chunk: int, start: int) -> None:
        self.batch_id, self.owner, self.size = batch_id, owner, size
        self.next_chunk, self.start = first_chunk, start
        self.items: list[bytes] = []
        self.custom_ids: list[str | None] = []
        self.bytes = 0

    def add(self, encoded: bytes, custom_id: str | None) -> ChunkDoc | None:
        """Add one item; the chunk it closed, if it starts a new one."""
        closed = None
        if self.items and (len(self.items) >= self.size or self.bytes + len(encoded) > CHUNK_BYTE_BUDGET):
            closed = self.close()
        self.items.append(encoded)
        self.custom_ids.append(custom_id)
        self.bytes += len(encoded)
        return closed

    def close(self) -> ChunkDoc:
        chunk = ChunkDoc(
            batch_id=self.batch_id,
            owner=self.owner,
            index=self.next_chunk,
            start=self.start,
            end=self.start + len(self.items),
            items=b"[" + b",".join(self.items) + b"]",
            custom_ids=self.custom_ids,
        )
        self.next_chunk, self.start = self.next_chunk + 1, chunk.end
        self.items, self.custom_ids, self.bytes = [], [], 0
        return chunk


def encoded_item(item: Any) -> bytes:
    """One item as its chunk stores it (a model, or a dict as a kind validated it)."""
    return to_json(item, exclude_none=True)


def stage_chunks(
    *,
    batch_id: str,
    owner: str,
    plan: Plan[Any],
    first: int,
    span: range,
    size: int,
) -> list[ChunkDoc]:
    """One stage's chunks: each `size` items encoded in one call (as each item's `encoded_item`, joined),
    unless a chunk would pass its byte budget; then the stage is packed item by item, by count and bytes."""
    chunks: list[ChunkDoc] = []
    for start in range(span.start, span.stop, size):
        end = min(start + size, span.stop)
        encoded = to_json(plan.items[start:end], exclude_none=True)
        if len(encoded) > CHUNK_BYTE_BUDGET:
            break
        chunk = ChunkDoc(
            batch_id=batch_id,
            owner=owner,
            index=first + len(chunks),
            start=start,
            end=end,
            items=encoded,
            custom_ids=plan.custom_ids[start:end],
        )
        chunks.append(chunk)
    else:
        return chunks
    chunker = Chunker(batch_id=batch_id, owner=owner, size=size, first_chunk=first, start=span.start)
    chunks = []
    for index in span:
        closed = chunker.add(encoded_item(plan.items[index]), plan.custom_ids[index])
        if closed is not None:
            chunks.append(closed)
    return [*chunks, chunker.close()]


def build_chunks(
    *,
    batch_id: str,
    owner: str,
    plan: Plan[Any],
    concurrency: int,
    settings: Settings,
) -> tuple[list[ChunkDoc], list[Stage], int]:
    """Split each stage's items into chunks by count and bytes (a chunk never spans two stages), and plan
    each stage's lanes. Returns the chunks, the stages and the largest chunk size."""
    chunks: list[ChunkDoc] = []
    stages: list[Stage] = []
    largest = 1
    bounds = [*plan.stage_starts, len(plan.items)]
    for stage_start, stage_end in zip(bounds, bounds[1:], strict=False):
        lanes, chunk_size = plan_lanes(
            total=stage_end - stage_start, concurrency=concurrency, settings=settings
        )
        largest = max(largest, chunk_size)
        first = len(chunks)
        chunks += stage_chunks(
            batch_id=batch_id,
            owner=owner,
            plan=plan,
            first=first,
            span=range(stage_start, stage_end),
            size=chunk_size,
        )
        lanes = min(lanes, len(chunks) - first)
        stages.append(Stage(first=first, count=len(chunks) - first, lanes=lanes))
        for chunk in chunks[first:]:
            chunk.concurrency = lane_concurrency(
                chunk=chunk.index - first, lanes=lanes, concurrency=concurrency
            )
    return chunks, stages, largest


# A streamed plan's chunks are written in groups of about this many bytes (the store splits them into commits
# of its own size), so memory holds one group, whatever the batch's size.
STREAM_WRITE_BYTES = 4 * 1024 * 1024


async def write_streamed_chunks(
    *, engine: Engine, batch_id: str, owner: str, streamed: StreamedItems[Any], concurrency: int
) -> tuple[list[Stage], int]:
    """Write a streamed plan's chunks as its items are read (one stage). Returns the stage and chunk size."""
    lanes, chunk_size = plan_lanes(total=streamed.total, concurrency=concurrency, settings=engine.settings)
    chunker = Chunker(batch_id=batch_id, owner=owner, size=chunk_size, first_chunk=0, start=0)
    group: list[ChunkDoc] = []

    async def _add(chunk: ChunkDoc) -> None:
        chunk.concurrency = lane_concurrency(chunk=chunk.index, lanes=lanes, concurrency=concurrency)
        group.append(chunk)
        if sum(len(c.items) for c in group) >= STREAM_WRITE_BYTES:
            await engine.store.put_chunks(batch_id=batch_id, chunks=group)
            group.clear()

    read = 0
    async for item, custom_id in streamed.read():
        read += 1
        closed = chunker.add(encoded_item(item), custom_id)
        if closed is not None:
            await _add(closed)
    if read != streamed.total:
        raise InvalidRequest(f"the input changed while it was read: {read} items, not {streamed.total}")
    await _add(chunker.close())
    await engine.store.put_chunks(batch_id=batch_id, chunks=group)
    count = chunker.next_chunk
    return [Stage(first=0, count=count, lanes=min(lanes, count))], chunk_size
