"""For tests that play the engine's deliveries themselves: a queue that keeps what the engine enqueues, a
clock they move, the engine wired with both, and a submit straight through the service."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

from shared import runtime
from shared.app import platform
from shared.models.auth import Principal, Role
from shared.models.common import utcnow
from shared.services import batches
from shared.services.engine import Engine


class RecordingQueue:
    """Keeps the tasks the engine enqueues instead of delivering them; names are unique, as in Cloud Tasks."""

    def __init__(self) -> None:
        self.tasks: dict[str, dict[str, Any]] = {}

    async def enqueue(
        self, *, task_id: str, function_name: str, body: bytes, schedule_time: object = None, **_: object
    ) -> bool:
        if task_id in self.tasks:
            return False
        self.tasks[task_id] = {
            "function": function_name,
            "body": json.loads(body),
            "schedule_time": schedule_time,
        }
        return True


class WrappedStore:
    """The real store, but for the methods a test's subclass overrides (to fail them, or to note in `events`
    what ran, in order)."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.events: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def submit(engine: Engine, tenant: str, requests: list[dict[str, Any]], **options: Any) -> str:
    """Submit a batch without waiting for it; its id."""
    body = json.dumps({"requests": requests, "options": {"wait": False, **options}}).encode()
    accepted, _ = runtime.run(
        batches.submit(
            engine=engine,
            principal=Principal(tenant=tenant, role=Role.USER),
            kind_name="generate",
            body=body,
            idempotency_key=None,
            caller=batches.CallerInfo(remote_addr="127.0.0.1", user_agent="test"),
        )
    )
    return accepted.batch_id


class Clock:
    """The true time plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = dt.timedelta()

    def __call__(self) -> dt.datetime:
        return utcnow() + self.offset


# A played batch stalls after this long without progress (the sweeper's BATCH_STALL_SECONDS).
STALL_S = 30.0


def played_engine(*, clock: Clock) -> Engine:
    """The platform's engine on the real emulators, with chunks of two requests, the test's clock, and a
    queue that keeps its tasks for the test to deliver (or lose)."""
    real = platform().engine
    settings = real.settings.model_copy(update={"batch_chunk_size": 2, "batch_stall_seconds": STALL_S})
    return dataclasses.replace(real, queue=RecordingQueue(), clock=clock, settings=settings)
