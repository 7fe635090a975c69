"""A worker's hold on a chunk: the lease (compare-and-set on the chunk document) and the commits that record
results under it.

Each commit creates a page of results and its usage record and updates the chunk, under a precondition on
the chunk's version: only the lease holder records anything, and nothing is recorded twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from shared.errors import LeaseHeld
from shared.kinds.base import Handover, Kind
from shared.models.batch import BatchDoc, ChunkDoc, ChunkState, ResultTotals
from shared.models.usage import UsageEvent, UsageRecord
from shared.ports import BatchStop, ChunkSnapshot, ResultPage
from shared.services.engine import Engine

# Results are recorded together with a write of the chunk document (lease and progress), and Firestore
# sustains about one write per second per document: one commit a second, the first as soon as the chunk's
# first result is in, so progress shows early. A full page is written at once.
COMMIT_INTERVAL_S = 1.0
PAGE_MAX_RESULTS = 500
PAGE_MAX_BYTES = 512 * 1024  # of JSON lines, so a page stays well under Firestore's 1 MiB per document


@dataclass(frozen=True)
class Outcome:
    """A finished item: its result as the API shows it (a JSON line), its sums, its model calls."""

    index: int
    line: str
    totals: ResultTotals
    events: list[UsageEvent]


@dataclass
class ChunkRun:
    """The state of one worker's run of one chunk."""

    engine: Engine
    kind: Kind[Any, Any]
    batch: BatchDoc
    chunk: ChunkDoc
    worker_id: str
    version: Any  # the chunk document's version as this worker last wrote it (compare-and-set)
    deadline: float  # loop time when this delivery stops starting items (time budget)
    pending: list[Outcome] = field(default_factory=list)  # finished, not yet recorded
    pending_bytes: int = 0
    first_result_in: bool = False  # the run has had a result (the first is recorded at once)
    stopped: BatchStop | None = None  # set when the batch was cancelled or failed fast (its final status)
    lease_lost: bool = False
    out_of_time: bool = False
    commit_wanted: asyncio.Event = field(default_factory=asyncio.Event)
    closing: bool = False
    progress: ResultTotals = field(default_factory=ResultTotals)
    recorded: int = 0
    drained: asyncio.Event = field(default_factory=asyncio.Event)  # no more items of the chunk will start
    carried_on: bool = False  # this delivery claimed the lane's next chunk and runs it
    carry_on_decided: asyncio.Event = field(default_factory=asyncio.Event)
    items: list[Any] | None = None  # the chunk's items, read with the kind's adapter on first use
    deferred: dt.timedelta | None = None  # an item asked to run again this much later (ItemDeferred)
    handover: Handover | None = None  # how its items start other batches' work in this delivery

    @property
    def stopping(self) -> bool:
        return self.stopped is not None or self.lease_lost

    def item(self, index: int) -> Any:
        if self.items is None:
            self.items = self.kind.item_adapter.validate_json(self.chunk.items)
        return self.items[index - self.chunk.start]


class Superseded(Exception):
    """A delivery of an earlier segment of a chunk that now waits for a later segment's task."""

    def __init__(self, chunk: ChunkDoc) -> None:
        super().__init__(f"chunk {chunk.index} of {chunk.batch_id} waits for segment {chunk.segment}")
        self.chunk = chunk


@dataclass(frozen=True)
class ClaimedAsWritten:
    """A chunk claimed on its version as the submit wrote it: the changes made, and its version after them."""

    changes: dict[str, Any]
    version: Any


async def claim_as_written(
    *, engine: Engine, batch_id: str, index: int, worker_id: str, written: Any
) -> ClaimedAsWritten | None:
    """Take the lease of a chunk nothing has touched since the submit wrote it at version `written`, without
    reading it first (the caller reads it beside this, for its items): a compare-and-set on that version, so
    of two deliveries one at most succeeds. None when the chunk changed since (then `claim` as usual)."""
    now = engine.clock()
    changes = {
        "state": ChunkState.RUNNING.value,
        "lease_owner": worker_id,
        "lease_expires_at": now + dt.timedelta(seconds=engine.settings.batch_lease_seconds),
        "claims": 1,
        "started_at": now,
    }
    version = await engine.store.update_chunk_if_unchanged(batch_id, index, version=written, changes=changes)
    return ClaimedAsWritten(changes=changes, version=version) if version is not None else None


async def claim(
    *,
    engine: Engine,
    batch_id: str,
    index: int,
    worker_id: str,
    segment: int | None = None,
    read: ChunkSnapshot | None = None,
    claimed: ClaimedAsWritten | None = None,
) -> tuple[ChunkDoc, Any]:
    """Take the chunk's lease: the chunk as claimed and its version (a finished chunk is returned as is).
    With the delivery's `segment`: Superseded when the chunk was handed on to a later segment's task and waits
    for it (a duplicate or late delivery must not run it beside that task). `read`: the chunk as the caller
    just read it, for the first compare-and-set (a round trip less); `claimed`: the lease already taken
    beside that read (`claim_as_written`), whose requests are the same whether it read the chunk before or
    after that claim."""
    if claimed is not None and read is not None:
        claimed_state = claimed.changes | {"state": ChunkState.RUNNING}
        return read.chunk.model_copy(update=claimed_state), claimed.version
    lease = dt.timedelta(seconds=engine.settings.batch_lease_seconds)
    snapshot = read
    for attempt in range(5):
        if attempt or snapshot is None:
            snapshot = await engine.store.get_chunk(batch_id, index)
        if snapshot is None:
            raise LeaseHeld("chunk vanished", retry_after_s=1)
        chunk = snapshot.chunk
        if segment is not None and chunk.state is ChunkState.PENDING and chunk.segment > segment:
            raise Superseded(chunk)
        now = engine.clock()
        held_by_other = (
            chunk.state is ChunkState.RUNNING
            and chunk.lease_owner not in (None, worker_id)
            and chunk.lease_expires_at is not None
            and chunk.lease_expires_at > now
        )
        if held_by_other:
            assert chunk.lease_expires_at is not None
            remaining = (chunk.lease_expires_at - now).total_seconds()
            raise LeaseHeld(
                f"chunk {index} of {batch_id} is leased by another worker",
                retry_after_s=max(1, int(remaining) + 1),
            )
        if chunk.state.is_terminal:
            return chunk, snapshot.version
        changes = {
            "state": ChunkState.RUNNING.value,
            "lease_owner": worker_id,
            "lease_expires_at": now + lease,
            "claims": chunk.claims + 1,
            "started_at": chunk.started_at or now,
        }
        version = await engine.store.update_chunk_if_unchanged(
            batch_id, index, version=snapshot.version, changes=changes
        )
        if version is not None:
            return chunk.model_copy(update=changes | {"state": ChunkState.RUNNING}), version
    raise LeaseHeld(f"chunk {index} of {batch_id} is contended", retry_after_s=1)


def add_pending(run: ChunkRun, outcome: Outcome) -> None:
    run.pending.append(outcome)
    run.pending_bytes += len(outcome.line)
    # The first result is recorded at once, so progress shows early; not for a stopped run, whose release
    # records what is pending as soon as its items in flight are done.
    first, run.first_result_in = not run.first_result_in and not run.stopping, True
    if first or len(run.pending) >= PAGE_MAX_RESULTS or run.pending_bytes >= PAGE_MAX_BYTES:
        run.commit_wanted.set()


def result_page(chunk: ChunkDoc, outcomes: list[Outcome]) -> ResultPage:
    totals = ResultTotals()
    for outcome in outcomes:
        totals = totals.plus(outcome.totals)
    return ResultPage(
        chunk=chunk.index,
        indices=[outcome.index for outcome in outcomes],
        lines=[outcome.line for outcome in outcomes],
        totals=totals,
    )


def _usage_record(outcomes: list[Outcome], retention: dt.timedelta) -> UsageRecord | None:
    """The model calls of one commit's results, as one usage record (one document, not one per call)."""
    events = [event for outcome in outcomes for event in outcome.events]
    if not events:
        return None
    at = max(event.at for event in events)
    first = events[0]
    return UsageRecord(
        job_id=first.job_id,
        tenant=first.tenant,
        source=first.source,
        calls=len(events),
        events=events,
        at=at,
        expire_at=at + retention,
    )


async def commit(run: ChunkRun, changes: dict[str, Any] | None = None) -> bool:
    """Record the pending results, extend the lease and publish progress, in one compare-and-set commit
    (with `changes` to the chunk, if any). False when the lease was lost: nothing was recorded, and the new
    holder runs the pending items again."""
    engine = run.engine
    pending, run.pending, run.pending_bytes = run.pending, [], 0
    page = result_page(run.chunk, pending) if pending else None
    progress = run.progress.plus(page.totals) if page else run.progress
    lease = dt.timedelta(seconds=engine.settings.batch_lease_seconds)
    update = {"lease_expires_at": engine.clock() + lease, "progress": progress.model_dump()} | (changes or {})
    retention = dt.timedelta(days=engine.settings.analytics_retention_days)
    try:
        version = await engine.store.record_results(
            run.batch.batch_id,
            run.chunk.index,
            version=run.version,
            page=page,
            usage=_usage_record(pending, retention),
            changes=update,
        )
    except BaseException:
        run.pending = pending + run.pending
        run.pending_bytes += sum(len(outcome.line) for outcome in pending)
        raise
    if version is None:
        run.lease_lost = True
        return False
    run.version = version
    run.progress = progress
    run.recorded += len(pending)
    return True


async def committer(run: ChunkRun) -> None:
    """While the chunk runs: commit its results once a second (at once for the first result and when a page
    is full), and extend the lease at least as often when no result comes in. A lost lease stops the run."""
    loop = asyncio.get_running_loop()
    wait = COMMIT_INTERVAL_S
    while not run.closing and not run.lease_lost:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await run.commit_wanted.wait()
        run.commit_wanted.clear()
        if run.closing:
            return
        started = loop.time()
        await commit(run)
        wait = max(0.0, COMMIT_INTERVAL_S - (loop.time() - started))


async def release(*, run: ChunkRun, changes: dict[str, Any]) -> bool:
    """Record what is pending and give the chunk up with `changes`, if this worker still holds its lease."""
    update = {"lease_owner": None, "lease_expires_at": None} | changes
    if changes.get("state") in (ChunkState.DONE.value, ChunkState.CANCELLED.value, ChunkState.FAILED.value):
        update["finished_at"] = run.engine.clock()
    return not run.lease_lost and await commit(run, update)


async def hand_back(run: ChunkRun) -> None:
    """Give the lease up without recording anything, if this worker still holds it."""
    if not run.lease_lost:
        await run.engine.store.update_chunk_if_unchanged(
            run.batch.batch_id,
            run.chunk.index,
            version=run.version,
            changes={"state": ChunkState.PENDING.value, "lease_owner": None, "lease_expires_at": None},
        )


async def set_chunk_state(*, engine: Engine, batch_id: str, index: int, state: ChunkState) -> None:
    """Mark an unfinished chunk `state` without running it (its batch stopped before it started)."""
    lease_view = await engine.store.get_lease(batch_id, index)
    if lease_view is None or lease_view.state.is_terminal:
        return
    await engine.store.update_chunk_if_unchanged(
        batch_id,
        index,
        version=lease_view.version,
        changes={
            "state": state.value,
            "lease_owner": None,
            "lease_expires_at": None,
            "finished_at": engine.clock(),
        },
    )
