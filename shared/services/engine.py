"""What every job-engine service needs, wired once by the composition root (shared.app)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from shared.errors import NotFound
from shared.kinds.base import Kind, Ports
from shared.models.batch import BatchDoc, FinalizeMessage, Stage, WorkMessage
from shared.models.common import utcnow
from shared.ports import (
    BatchStore,
    BlobStore,
    EmbeddingModel,
    ImageModel,
    KindRecords,
    MetricsStore,
    StreamingBlobs,
    TaskQueue,
    TextModel,
    VectorStore,
)
from shared.settings import Settings

WORKER_FUNCTION = "batch_worker"
FINALIZER_FUNCTION = "batch_finalizer"
SWEEPER_FUNCTION = "batch_sweeper"


@dataclass(frozen=True)
class Engine:
    """The engine's own store and queue, the ports its kinds use, and the table of kinds it runs."""

    store: BatchStore
    queue: TaskQueue
    blobs: BlobStore
    model: TextModel
    embedder: EmbeddingModel
    vectors: VectorStore
    settings: Settings
    kinds: Mapping[str, Kind[Any, Any]]
    clock: Callable[[], dt.datetime] = field(default=utcnow)
    records: KindRecords | None = None
    files: StreamingBlobs | None = None
    images: ImageModel | None = None
    # Ports of particular kinds, by name: handed to the kinds as `Ports.extras`.
    extras: Mapping[str, Any] = field(default_factory=dict)
    metrics: MetricsStore | None = None

    @cached_property
    def ports(self) -> Ports:
        """What a kind may use: the ports, never the engine's store or queue."""
        return Ports(
            model=self.model,
            embedder=self.embedder,
            vectors=self.vectors,
            blobs=self.blobs,
            settings=self.settings,
            clock=self.clock,
            records=self.records,
            files=self.files,
            images=self.images,
            extras=self.extras,
            metrics=self.metrics,
        )

    def chunk_queue(self, kind_name: str) -> str | None:
        """The queue of a kind's chunk tasks (None: the engine's own)."""
        kind = self.kinds.get(kind_name)
        return kind.task_queue(self.settings) if kind is not None else None


def chunk_task_id(batch_id: str, chunk: int, segment: int, suffix: str = "") -> str:
    """Deterministic Cloud Tasks id of a chunk's work: a repeated enqueue is rejected by name."""
    return f"{batch_id}-c{chunk}-s{segment}{suffix}"


def finalize_task_id(batch_id: str, suffix: str = "") -> str:
    return f"{batch_id}-final{suffix}"


def results_object(batch_id: str) -> str:
    return f"batches/{batch_id}/results.jsonl"


async def enqueue_chunk(
    *,
    engine: Engine,
    batch_id: str,
    chunk: int,
    segment: int,
    suffix: str = "",
    kind: str | None = None,
    schedule_time: dt.datetime | None = None,
    version: dt.datetime | None = None,
) -> bool:
    """Enqueue a chunk's work under its deterministic task name, on its kind's queue (not before
    `schedule_time`, when given; with the chunk's `version` as just written, if known); False when that
    name is taken."""
    message = WorkMessage(batch_id=batch_id, chunk=chunk, segment=segment, version=version)
    return await engine.queue.enqueue(
        task_id=chunk_task_id(batch_id, chunk, segment, suffix),
        function_name=WORKER_FUNCTION,
        body=message.model_dump_json(exclude_none=True).encode(),
        service_account=engine.settings.tasks_service_account,
        queue_name=engine.chunk_queue(kind) if kind is not None else None,
        schedule_time=schedule_time,
    )


async def enqueue_finalize(*, engine: Engine, batch_id: str, suffix: str = "") -> bool:
    """Enqueue the batch's fan-in; repeated enqueues of one name are rejected by Cloud Tasks."""
    return await engine.queue.enqueue(
        task_id=finalize_task_id(batch_id, suffix),
        function_name=FINALIZER_FUNCTION,
        body=FinalizeMessage(batch_id=batch_id).model_dump_json().encode(),
        service_account=engine.settings.tasks_service_account,
    )


def kind_of(engine: Engine, name: str) -> Kind[Any, Any]:
    kind = engine.kinds.get(name)
    if kind is None:
        raise NotFound(f"no kind of batch {name!r}")
    return kind


async def enqueue_stage(
    *,
    engine: Engine,
    batch: BatchDoc,
    stage: Stage,
    schedule_time: dt.datetime | None = None,
    versions: Mapping[int, dt.datetime] | None = None,
) -> None:
    """Start a stage: the first chunk of each of its lanes, at once or at `schedule_time` (named tasks:
    enqueuing twice is harmless), with the chunks' `versions` as just written, when known."""
    await asyncio.gather(
        *(
            enqueue_chunk(
                engine=engine,
                batch_id=batch.batch_id,
                chunk=first,
                segment=0,
                kind=batch.kind,
                schedule_time=schedule_time,
                version=(versions or {}).get(first),
            )
            for first in range(stage.first, stage.first + stage.lanes)
        )
    )
