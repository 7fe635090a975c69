"""What a kind of work declares, and what the engine hands it.

A kind says what its request looks like, how a request becomes items, how one item runs (through the ports in
`ItemContext`, never a Google client) and what its result line is. Everything else (chunks, leases, results
pages, retries with backoff, failFast, timeouts, cancel, deadlines, the sweeper, fan-in, usage records, rate
limits, audit) belongs to the engine and is the same for every kind.
"""

from __future__ import annotations

import datetime as dt
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, TypeAdapter

from shared.errors import ModelError, PlatformError
from shared.models.batch import BatchDoc, BatchOptions, BatchStatus
from shared.models.common import ClientModel
from shared.models.usage import UsageEvent
from shared.ports import (
    BlobStore,
    EmbedCall,
    EmbeddingModel,
    EmbedReply,
    ImageCall,
    ImageModel,
    ImageReply,
    KindRecords,
    MetricsStore,
    ModelCall,
    ModelReply,
    StreamingBlobs,
    TextModel,
    VectorStore,
)
from shared.services.pricing import estimate_cost_usd
from shared.settings import Settings

RequestT = TypeVar("RequestT", bound=ClientModel)
ItemT = TypeVar("ItemT", bound=BaseModel)
ReplyT = TypeVar("ReplyT")


class KindRequest(ClientModel):
    """The part of every kind's request the engine reads: its options (concurrency, failFast, timeout,
    retryPolicy, wait). A kind's request model subclasses this, with an options model that subclasses
    `BatchOptions`."""

    options: BatchOptions = BatchOptions()


class ItemDeferred(PlatformError):
    """The item cannot finish yet (it waits on something outside the platform, such as a Gemini batch job):
    run it again `after` from now. The worker gives its chunk back and enqueues the chunk's task scheduled
    for then; no attempt is counted and nothing is recorded, so no delivery sleeps while it waits."""

    code = "deferred"
    http_status = 202

    def __init__(self, message: str, *, after: dt.timedelta) -> None:
        super().__init__(message)
        self.after = after


class ItemFailed(PlatformError):
    """One item failed for good (not retried); `code` names why in its result's error."""

    http_status = 422

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.item_code = code


@dataclass(frozen=True)
class Ports:
    """What a kind may use: the platform's ports and settings, never the engine's own store or queue."""

    model: TextModel
    embedder: EmbeddingModel
    vectors: VectorStore
    blobs: BlobStore
    settings: Settings
    clock: Callable[[], dt.datetime]
    # For kinds whose one item is a long job over a large file: its own small documents (progress, a cache)
    # and streamed Cloud Storage objects. None where the composition root wires none.
    records: KindRecords | None = None
    files: StreamingBlobs | None = None
    images: ImageModel | None = None
    # Ports only some kinds use, by name (wired by the composition root; e.g. the image queue's store).
    extras: Mapping[str, Any] = field(default_factory=dict)

    def extra(self, name: str) -> Any:
        """A kind's own port; KeyError names it when the composition root did not wire it."""
        try:
            return self.extras[name]
        except KeyError:
            raise KeyError(f"port {name!r} is not wired in shared/app.py") from None

    # The marketplace's data and the metric runs' documents (the metrics kind's own port).
    metrics: MetricsStore | None = None


@dataclass(frozen=True)
class StreamedItems(Generic[ItemT]):
    """Items too many to hold at once (requests read from a large file): counted and checked before, then
    read again in order, one at a time, while the engine writes them into chunks. `read` yields each item
    with its customId, exactly `total` of them."""

    total: int
    read: Callable[[], AsyncIterator[tuple[ItemT, str | None]]]


@dataclass(frozen=True)
class Plan(Generic[ItemT]):
    """A request as the engine runs it.

    `items` are the units of work (each runs, retries and records on its own); `custom_ids` are the callers'
    ids of the items. A kind whose result entries are not one per item (an index operation of 10,000
    documents runs as 100 items and shows as one result) gives `entry_starts`: the first item of each entry,
    ascending from 0; the engine then folds each entry's item lines with `Kind.fold`. `stage_starts` are the
    items where a new stage begins: every item of a stage is finished before the next stage starts (a search
    after an index into the same collection sees what it indexed). `params` are batch-wide settings of the
    kind, stored with the batch and handed to each item. `deadline`, when given, replaces the engine's own
    estimate of how long the batch may take (from its options), up to 24 hours: a kind whose batches wait in
    a queue of their own knows better. `streamed`, when given, holds the items instead of `items` and
    `custom_ids` (both empty): the engine writes them into chunks as they are read, never holding them all
    (one stage, one result entry per item).
    """

    items: list[ItemT]
    custom_ids: list[str | None]
    params: dict[str, Any] = field(default_factory=dict)
    entry_starts: list[int] | None = None
    stage_starts: list[int] = field(default_factory=lambda: [0])
    deadline: dt.timedelta | None = None
    streamed: StreamedItems[ItemT] | None = None

    @property
    def total(self) -> int:
        return self.streamed.total if self.streamed is not None else len(self.items)


@dataclass(frozen=True)
class Handover:
    """Lets an item start another batch's work in its own delivery, beside its own bookkeeping, instead of
    through a task hop: a service that starts a one-chunk batch when this item ends (the image queue's next
    item in the slot this one frees) starts it with `batches.start_planned(handover=...)`, which hands it
    over with `run(batch_id)` and enqueues its task `fallback_delay` later. The delayed task runs the chunk
    only if this delivery did not (it died first: the chunk's lease decides, as for any duplicate
    delivery)."""

    fallback_delay: dt.timedelta
    run: Callable[[str], None]


@dataclass
class ItemContext:
    """What one run of one item sees: who it runs for, its limits, the ports, and usage bookkeeping.

    Every model call goes through `generate` or `embed`, which record its usage event (kept with the item's
    result, in the same commit, so a call is counted exactly when its result is) and, for a call that
    succeeded, add its tokens and cost to the item's.
    """

    kind: str
    tenant: str
    job_id: str
    index: int
    attempt: int
    timeout_s: float
    params: dict[str, Any]
    ports: Ports
    deferrals: int = 0  # how many times this item's chunk was deferred (ItemDeferred) before this run
    handover: Handover | None = None  # None: this delivery takes no more work (its time budget)
    # True once this run should end early: its batch was stopped or cancelled, or this worker lost the
    # chunk's lease (another delivery owns it, and this run's result would not be recorded). A long item
    # checks it now and then.
    stopping: Callable[[], bool] = field(default=lambda: False)
    events: list[UsageEvent] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0
    calls: int = 0

    async def generate(self, call: ModelCall) -> ModelReply:
        return await self._tracked(
            call.model,
            "generateContent",
            self.ports.model.generate(call),
            lambda reply: (reply.input_tokens, reply.output_tokens, reply.cached_tokens),
        )

    async def edit_image(self, call: ImageCall) -> ImageReply:
        """A call of the image model (its usage recorded as `generateContent`, like any other call)."""
        if self.ports.images is None:
            raise KeyError("no image model is wired in shared/app.py")
        return await self._tracked(
            call.model,
            "generateContent",
            self.ports.images.edit(call),
            lambda reply: (reply.input_tokens, reply.output_tokens, 0),
        )

    async def embed(self, call: EmbedCall) -> EmbedReply:
        return await self._tracked(
            call.model,
            "batchEmbedContents",
            self.ports.embedder.embed(call),
            lambda reply: (reply.input_tokens, 0, 0),
        )

    def record_call(
        self, *, model: str, method: str, input_tokens: int, output_tokens: int, price_factor: float = 1.0
    ) -> None:
        """Record the usage of a model call made outside this run (an answer of a Gemini batch job, billed at
        `price_factor` of the interactive price), as a call of this item."""
        self._record(
            model,
            method,
            time.monotonic(),
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            price_factor=price_factor,
        )

    async def _tracked(
        self,
        model: str,
        method: str,
        reply_of: Awaitable[ReplyT],
        tokens_of: Callable[[ReplyT], tuple[int, int, int]],
    ) -> ReplyT:
        """Await one model call and record its usage event: its tokens (input, output, cached) when it
        answered, its error status when it failed."""
        started = time.monotonic()
        try:
            reply = await reply_of
        except ModelError as exc:
            self._record(model, method, started, error=exc)
            raise
        input_tokens, output_tokens, cached_tokens = tokens_of(reply)
        self._record(
            model,
            method,
            started,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cached_tokens=cached_tokens,
        )
        return reply

    def _record(
        self,
        model: str,
        method: str,
        started: float,
        *,
        error: ModelError | None = None,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cached_tokens: int = 0,
        price_factor: float = 1.0,
    ) -> None:
        self.calls += 1
        cost = price_factor * estimate_cost_usd(
            model=model, input_tokens=input_tokens, output_tokens=output_tokens, cached_tokens=cached_tokens
        )
        if error is None:
            self.input_tokens += input_tokens
            self.output_tokens += output_tokens
            self.cached_tokens += cached_tokens
            self.cost_usd += cost
        # Built from trusted values on the hot path: constructed without validating again.
        self.events.append(
            UsageEvent.model_construct(
                event_id=f"{self.job_id}-{self.index}-{self.attempt}-{self.calls}",
                tenant=self.tenant,
                model=model,
                endpoint=self.kind,
                method=method,
                source=f"batch:{self.kind}",
                job_id=self.job_id,
                latency_ms=int((time.monotonic() - started) * 1000),
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cached_tokens=cached_tokens,
                total_tokens=input_tokens + output_tokens,
                cost_usd=cost,
                cache_hit=cached_tokens > 0,
                outcome="ok" if error is None else f"error:{error.status or 'unknown'}",
                at=self.ports.clock(),
            )
        )


class Kind(ABC, Generic[RequestT, ItemT]):
    """One kind of work. Register an instance in `shared.kinds.registry.KINDS`; `POST /batch/{name}` then
    takes its requests and the engine runs them."""

    name: ClassVar[str]
    request_model: ClassVar[type[KindRequest]]
    item_adapter: ClassVar[TypeAdapter[Any]]  # reads a chunk's items back (one JSON array per chunk)
    #: False: `POST /batch/{name}` does not take it; only a service of the platform submits it.
    public: ClassVar[bool] = True

    def task_queue(self, settings: Settings) -> str | None:
        """The Cloud Tasks queue of this kind's chunk tasks (None: the engine's). A queue of its own gives the
        kind a limit of its own, such as at most N chunks running at once (`max_concurrent_dispatches`)."""
        return None

    def limits(self, request: RequestT, *, settings: Settings) -> list[dict[str, Any]]:
        """The request's problems with the platform's size limits, as `{"field", "problem"}` (none: [])."""
        return []

    @abstractmethod
    async def plan(self, request: RequestT, *, tenant: str, batch_id: str, ports: Ports) -> Plan[ItemT]:
        """Check what only the kind knows (raise InvalidRequest naming the field) and split into items.
        Runs before anything of the batch is written."""

    @abstractmethod
    async def run(self, item: ItemT, ctx: ItemContext) -> dict[str, Any]:
        """Run one item; its result fields (merged into the engine's result line). Raise ModelError (retried
        with backoff when transient), a transient PlatformError (retried the same way) or ItemFailed."""

    def fold(self, entry: int, lines: Sequence[dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
        """One result entry from its items' result lines (only for plans with `entry_starts`); `params` are
        the batch's (Plan.params)."""
        return dict(lines[0])

    def summarize(self, entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """What the kind adds to the engine's summary of a finished batch (nothing by default)."""
        return {}

    #: Whether `summarize` needs the entries: the fan-in then reads every result line (otherwise it copies
    #: them without parsing).
    summarizes: ClassVar[bool] = False

    async def on_cancel(self, batch: BatchDoc, *, ports: Ports) -> None:
        """Called once a batch of this kind is cancelled (`DELETE /batch/{id}`): stop work the kind started
        outside the platform. Must be safe to run twice."""

    async def on_final(
        self, batch: BatchDoc, *, status: BatchStatus, entries: Sequence[dict[str, Any]] | None, ports: Ports
    ) -> None:
        """Called by the fan-in before it marks the batch final with `status` (the entries are given when the
        kind `summarizes`). A fan-in that crashes runs it again: it must be safe to run twice."""

    async def status_view(
        self, batch: BatchDoc, *, entries: Sequence[dict[str, Any]], ports: Ports
    ) -> dict[str, Any] | None:
        """The status endpoint's answer for a batch of this kind, from its result entries (all of them); None:
        the engine's own view."""
        return None

    #: Whether `status_view` shapes this kind's status (the engine then reads every entry for it).
    shapes_status: ClassVar[bool] = False
