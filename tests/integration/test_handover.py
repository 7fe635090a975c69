"""An item hands another batch's first chunk over to its own delivery (`ItemContext.handover`): the delivery
runs it at once and awaits it before it answers, the handed batch's task is only a delayed fallback, and that
task, delivered later, finds the work done and records nothing twice. Real Firestore adapter; the test plays
Cloud Tasks."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any, ClassVar

from pydantic import BaseModel, TypeAdapter

from shared import runtime
from shared.app import platform
from shared.emulator_config import EmulatorConfig
from shared.kinds.base import Handover, ItemContext, Kind, KindRequest, Plan, Ports
from shared.kinds.registry import KINDS
from shared.models.batch import ChunkState, WorkMessage
from shared.services import batches
from shared.services.engine import Engine
from shared.services.image_dispatch import item_options
from shared.services.worker import process_chunk
from shared.settings import get_settings
from tests.integration.engine_harness import RecordingQueue


class Hop(BaseModel):
    left: int  # batches still to hand over after this one


class Relay(Kind[KindRequest, Hop]):
    """Each item starts the next batch of the relay and hands it over to its delivery."""

    name: ClassVar[str] = "relay"
    request_model: ClassVar[type[KindRequest]] = KindRequest
    item_adapter: ClassVar[TypeAdapter[Any]] = TypeAdapter(list[Hop])
    public: ClassVar[bool] = False

    def __init__(self) -> None:
        self.engine: Engine | None = None
        self.started: list[str] = []

    async def plan(self, request: KindRequest, *, tenant: str, batch_id: str, ports: Ports) -> Plan[Hop]:
        raise NotImplementedError("started only with batches.start_planned")

    async def run(self, item: Hop, ctx: ItemContext) -> dict[str, Any]:
        if item.left and ctx.handover is not None:
            assert self.engine is not None
            following = uuid.uuid4().hex
            await start(self.engine, ctx.tenant, following, left=item.left - 1, handover=ctx.handover)
        return {"left": item.left}


async def start(
    engine: Engine, tenant: str, batch_id: str, *, left: int, handover: Handover | None = None
) -> None:
    relay = engine.kinds["relay"]
    assert isinstance(relay, Relay)
    relay.started.append(batch_id)
    await batches.start_planned(
        engine=engine,
        tenant=tenant,
        kind_name="relay",
        batch_id=batch_id,
        plan=Plan(items=[Hop(left=left)], custom_ids=[None]),
        options=item_options(get_settings()),  # one item at a time, as the image queue's batches
        handover=handover,
    )


def _chunk_state(engine: Engine, batch_id: str) -> ChunkState:
    snapshot = runtime.run(engine.store.get_chunk(batch_id, 0))
    assert snapshot is not None
    return snapshot.chunk.state


def test_a_handed_over_batch_runs_in_the_delivery_and_its_delayed_task_finds_it_done(
    local_cloud: EmulatorConfig, unique: str
) -> None:
    relay = Relay()
    queue = RecordingQueue()
    engine: Engine = dataclasses.replace(
        platform().engine,
        kinds={**KINDS, "relay": relay},
        queue=queue,  # type: ignore[arg-type]
    )
    relay.engine = engine
    tenant = f"relay-{unique}"
    first = uuid.uuid4().hex
    runtime.run(start(engine, tenant, first, left=2))

    outcome = runtime.run(
        process_chunk(engine=engine, message=WorkMessage(batch_id=first, chunk=0), retry_count=0)
    )

    _, *handed = relay.started
    assert len(handed) == 2 and len(outcome["handedOver"]) == 2  # the second handed the third over in turn
    assert all(_chunk_state(engine, batch_id) is ChunkState.DONE for batch_id in relay.started)
    assert queue.tasks[f"{first}-c0-s0"]["schedule_time"] is None
    assert all(queue.tasks[f"{batch_id}-c0-s0"]["schedule_time"] is not None for batch_id in handed)
    # The fallback task, delivered later, runs nothing again (the kind would start another batch).
    late = runtime.run(
        process_chunk(engine=engine, message=WorkMessage(batch_id=handed[0], chunk=0), retry_count=0)
    )
    assert "handedOver" not in late and len(relay.started) == 3
