"""What every job-engine service needs, wired once by the composition root (shared.app)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from shared.models.batch import FinalizeMessage, WorkMessage
from shared.models.common import utcnow
from shared.ports import BatchStore, BlobStore, TaskQueue, TextModel
from shared.settings import Settings

WORKER_FUNCTION = "batch_worker"
FINALIZER_FUNCTION = "batch_finalizer"
SWEEPER_FUNCTION = "batch_sweeper"


@dataclass(frozen=True)
class Engine:
    store: BatchStore
    queue: TaskQueue
    blobs: BlobStore
    model: TextModel
    settings: Settings
    clock: Callable[[], dt.datetime] = field(default=utcnow)


def chunk_task_id(batch_id: str, chunk: int, segment: int, suffix: str = "") -> str:
    """Deterministic Cloud Tasks id of a chunk's work: a repeated enqueue is rejected by name."""
    return f"{batch_id}-c{chunk}-s{segment}{suffix}"


def finalize_task_id(batch_id: str, suffix: str = "") -> str:
    return f"{batch_id}-final{suffix}"


def results_object(batch_id: str) -> str:
    return f"batches/{batch_id}/results.jsonl"


def request_object(batch_id: str, index: int) -> str:
    return f"batches/{batch_id}/requests/{index:08d}.json"


def response_object(batch_id: str, index: int) -> str:
    return f"batches/{batch_id}/responses/{index:08d}.txt"


async def enqueue_chunk(*, engine: Engine, batch_id: str, chunk: int, segment: int, suffix: str = "") -> bool:
    """Enqueue a chunk's work under its deterministic task name; False when that name is taken."""
    return await engine.queue.enqueue(
        task_id=chunk_task_id(batch_id, chunk, segment, suffix),
        function_name=WORKER_FUNCTION,
        body=WorkMessage(batch_id=batch_id, chunk=chunk, segment=segment).model_dump_json().encode(),
        service_account=engine.settings.tasks_service_account,
    )


async def enqueue_finalize(*, engine: Engine, batch_id: str, suffix: str = "") -> bool:
    """Enqueue the batch's fan-in; repeated enqueues of one name are rejected by Cloud Tasks."""
    return await engine.queue.enqueue(
        task_id=finalize_task_id(batch_id, suffix),
        function_name=FINALIZER_FUNCTION,
        body=FinalizeMessage(batch_id=batch_id).model_dump_json().encode(),
        service_account=engine.settings.tasks_service_account,
    )
