"""The image queue's Firestore adapter against the emulator: the model-call counter and the slots hold when
many callers race (what keeps IMAGE_MODEL_RPM and IMAGE_QUEUE_CONCURRENCY across instances), and the pace
makes a call over IMAGE_MODEL_RPM wait for the next clock minute; a slot's assignment is committed with the
item's engine batch (the engine's real adapter; the test plays Cloud Tasks)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import random
import time
from typing import Any

from google.cloud import firestore

from shared import runtime
from shared.adapters.catalog_store import QUEUE, FirestoreCatalogStore
from shared.adapters.firestore_listen import DocumentListener
from shared.adapters.firestore_store import FirestoreStore
from shared.app import platform
from shared.emulator_config import EmulatorConfig
from shared.kinds.base import Plan
from shared.models.articulos import Dispatch, ImageWork, QueueItem, QueueState
from shared.ports import GuardedWrite, PreconditionFailed
from shared.services import batches
from shared.services.engine import Engine
from shared.services.image_dispatch import ImageQueue, item_options
from shared.services.image_processing import _pace
from shared.settings import get_settings
from tests.integration.engine_harness import RecordingQueue


def _run(project_id: str, work: Any) -> Any:
    async def _with_client() -> Any:
        client = firestore.AsyncClient(project=project_id)
        try:
            return await work(FirestoreCatalogStore(client))
        finally:
            client.close()

    return asyncio.run(_with_client())


def _pending_items(unique: str, count: int) -> list[QueueItem]:
    """`count` pending queue items of tenant `t-{unique}`, for articles 1, 2, ..."""
    now = dt.datetime.now(dt.UTC)
    return [
        QueueItem(
            id=f"{unique}{n}",
            tenant=f"t-{unique}",
            articulo_id=n + 1,
            articulo_nombre="x",
            estado=QueueState.PENDING,
            prioridad=0,
            max_intentos=3,
            created_at=now,
            updated_at=now,
        )
        for n in range(count)
    ]


def test_racing_model_calls_get_distinct_counts(local_cloud: EmulatorConfig) -> None:
    minute = dt.datetime(2001, 1, 1, random.randrange(24), random.randrange(60), tzinfo=dt.UTC)

    async def _race(store: FirestoreCatalogStore) -> list[int]:
        return list(await asyncio.gather(*(store.count_model_call(minute) for _ in range(30))))

    counts = _run(local_cloud.project_id, _race)

    assert sorted(counts) == list(range(1, 31))


class MinuteEndClock:
    """The engine's clock, held at `start` until `release()`; from its first reading after that it runs
    with real time from `start`. Started half a second before a minute ends: a wait for the next minute is
    short."""

    def __init__(self, start: dt.datetime) -> None:
        self.start = start
        self.released = False
        self.running_since: float | None = None

    def release(self) -> None:
        self.released = True

    def __call__(self) -> dt.datetime:
        if not self.released:
            return self.start
        if self.running_since is None:
            self.running_since = time.monotonic()
        return self.start + dt.timedelta(seconds=time.monotonic() - self.running_since)


def test_a_model_call_over_the_rpm_waits_for_the_next_clock_minute(
    local_cloud: EmulatorConfig, unique: str
) -> None:
    """IMAGE_MODEL_RPM=2: two calls in a minute go at once; the third is counted in that minute, over the
    limit, waits for the next minute and is counted there."""
    project = f"{local_cloud.project_id}-{unique}"  # a counter of the test's own
    minute = dt.datetime(2001, 1, 1, 12, 0, tzinfo=dt.UTC)
    clock = MinuteEndClock(minute + dt.timedelta(seconds=59.5))
    real = platform().image_queue
    settings = real.settings.model_copy(update={"image_model_rpm": 2})
    engine = dataclasses.replace(real.running_engine, clock=clock)

    async def _calls(store: FirestoreCatalogStore) -> list[tuple[str, dt.datetime]]:
        queue = ImageQueue(store=store, objects=real.objects, settings=settings, engine=engine)
        returned: list[tuple[str, dt.datetime]] = []
        for name in ("first", "second", "third"):
            if name == "third":
                clock.release()  # from here the clock runs: half a second to the next minute
            await _pace(queue)
            returned.append((name, clock()))
        return returned

    returned = _run(project, _calls)
    db = firestore.Client(project=project)
    counts = {s.id: s.get("calls") for s in db.collection("image_model_calls").stream()}
    db.close()

    assert [name for name, _ in returned] == ["first", "second", "third"]
    assert [at for _, at in returned[:2]] == [clock.start] * 2  # within the limit: no wait
    assert returned[2][1] >= minute + dt.timedelta(minutes=1)  # over it: after the minute ended
    assert counts == {"200101011200": 3, "200101011201": 1}


def test_two_dispatchers_never_give_one_slot_to_two_items(local_cloud: EmulatorConfig, unique: str) -> None:
    """Each dispatcher commits its assignment with the item's engine batch: of two racing for one slot,
    exactly one item gets the slot and a batch; the other gets neither."""
    # A project of the test's own on the emulator: the local cloud's dispatcher (its per-minute repair, a slot
    # freed by another test's item) never sees these items, so both are still waiting when the race starts.
    project = f"{local_cloud.project_id}-{unique}"
    items = _pending_items(unique, 2)

    async def _start(engine: Engine, item: QueueItem, writes: list[GuardedWrite]) -> bool:
        try:
            return await batches.start_planned(
                engine=engine,
                tenant=item.tenant,
                kind_name="images",
                batch_id=item.batch_id,
                plan=Plan(
                    items=[ImageWork(queue_id=item.id, tenant=item.tenant, articulo_id=item.articulo_id)],
                    custom_ids=[item.id],
                ),
                options=item_options(get_settings()),
                writes=writes,
            )
        except PreconditionFailed:
            return False

    real = platform().engine  # built outside the loop `_race` runs on

    async def _race() -> tuple[list[tuple[bool, QueueItem]], dict[str, bool]]:
        client = firestore.AsyncClient(project=project)
        try:
            engine: Engine = dataclasses.replace(
                real,
                store=FirestoreStore(
                    client,
                    listener=DocumentListener.connect(
                        project=project, emulator_host=local_cloud.emulators.firestore.address
                    ),
                ),
                queue=RecordingQueue(),  # type: ignore[arg-type]
            )
            store = FirestoreCatalogStore(client)
            for item in items:
                assert await store.add_item(item) is None
            await store.create_slots([0])
            slot = (await store.slots(1))[0]
            waiting = await store.waiting(10)
            assert [w.item.id for w in waiting] == [item.id for item in items]
            assignments = [store.assignment(slot, w, dt.datetime.now(dt.UTC)) for w in waiting]
            started = await asyncio.gather(*(_start(engine, item, writes) for writes, item in assignments))
            created = {item.id: await engine.store.get_batch(item.batch_id) is not None for item in items}
            return [(ok, item) for ok, (_, item) in zip(started, assignments, strict=True)], created
        finally:
            client.close()

    raced, batches_created = runtime.run(_race())
    db = firestore.Client(project=project)
    stored = {item.id: db.collection("image_queue").document(item.id).get().to_dict() for item in items}
    db.close()

    winners = [item for ok, item in raced if ok]
    assert len(winners) == 1 and winners[0].slot == 0
    winner = winners[0].id
    assert stored[winner]["despacho"] == Dispatch.DISPATCHED.value and stored[winner]["slot"] == 0
    assert batches_created == {item.id: item.id == winner for item in items}
    (loser,) = [item.id for item in items if item.id != winner]
    assert stored[loser]["despacho"] == Dispatch.WAITING.value and stored[loser].get("slot") is None


def test_the_queue_snapshot_counts_each_item_once_while_items_change_state(
    local_cloud: EmulatorConfig, unique: str
) -> None:
    """The status's counts and items in progress are read at one instant: with items moving between states all
    the while, every snapshot counts each item exactly once and lists exactly the items it counts in
    progress."""
    project = f"{local_cloud.project_id}-{unique}"  # out of sight of the local cloud's dispatcher
    tenant = f"t-{unique}"
    items = _pending_items(unique, 4)
    cycle = [QueueState.PROCESSING, QueueState.COMPLETED, QueueState.FAILED, QueueState.PENDING]

    async def _race(store: FirestoreCatalogStore) -> list[tuple[dict[QueueState, int], int]]:
        for item in items:
            assert await store.add_item(item) is None
        client = firestore.AsyncClient(project=project)
        moving = True

        async def _move() -> None:
            step = 0
            while moving:
                item = items[step % len(items)]
                estado = cycle[(step // len(items)) % len(cycle)]
                await client.collection(QUEUE).document(item.id).update({"estado": estado.value})
                step += 1

        mover = asyncio.create_task(_move())
        try:
            snapshots = []
            for _ in range(40):
                counts, running = await store.queue_snapshot(tenant, running_limit=10)
                snapshots.append((counts, len(running)))
            return snapshots
        finally:
            moving = False
            await mover
            client.close()

    snapshots = _run(project, _race)

    assert all(sum(counts.values()) == len(items) for counts, _ in snapshots), snapshots
    assert all(counts[QueueState.PROCESSING] == running for counts, running in snapshots), snapshots
    assert len({tuple(counts.values()) for counts, _ in snapshots}) > 1  # the items did move meanwhile
