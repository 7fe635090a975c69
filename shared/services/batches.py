"""The engine's public side, for every kind: submit (validate, plan, store, enqueue) and cancel."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from shared.errors import Conflict, InvalidRequest, NotFound, PayloadTooLarge, PlatformError
from shared.kinds.base import Handover, Kind, KindRequest, Plan
from shared.models.auth import AuditRecord, Principal
from shared.models.batch import (
    BatchDoc,
    BatchStatus,
    ChunkDoc,
    ResolvedOptions,
    SubmitResponse,
)
from shared.ports import GuardedWrite
from shared.services.chunking import build_chunks, write_streamed_chunks
from shared.services.engine import Engine, enqueue_finalize, enqueue_stage, kind_of
from shared.services.status import (
    MAX_PAGE,
    current_totals,
    display_status,
    read_owned_batch,
    results_page,
    summarize,
    wait_until_finished,
)
from shared.settings import Settings

log = logging.getLogger(__name__)

MAX_DEADLINE = dt.timedelta(hours=24)
# A kind's own deadline (Plan.deadline) may be longer: a Gemini batch job may take up to two days.
MAX_PLANNED_DEADLINE = dt.timedelta(hours=48)
DEADLINE_SLACK = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class CallerInfo:
    remote_addr: str
    user_agent: str

    def audit(self, action: str, *, tenant: str, target: str, at: dt.datetime) -> AuditRecord:
        """The audit record of this caller's `action` on `target`."""
        return AuditRecord(
            tenant=tenant,
            action=action,
            target=target,
            at=at,
            remote_addr=self.remote_addr,
            user_agent=self.user_agent,
        )


def validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    """pydantic errors as `{"field": "requests.0.prompt", "problem": "..."}`."""
    return [
        {"field": ".".join(str(part) for part in error["loc"]) or "body", "problem": error["msg"]}
        for error in exc.errors(include_url=False, include_input=False)
    ]


def parse_request(body: bytes, *, kind: Kind[Any, Any], settings: Settings) -> KindRequest:
    if len(body) > settings.batch_max_body_bytes:
        raise PayloadTooLarge(
            f"request body is {len(body)} bytes; the limit is {settings.batch_max_body_bytes}"
        )
    try:
        # Strict: in JSON `false` is not a number nor "1" an integer, as the OpenAPI document says.
        request = kind.request_model.model_validate_json(body, strict=True)
    except ValidationError as exc:
        raise InvalidRequest("the request body is not valid", details=validation_details(exc)) from exc
    problems = kind.limits(request, settings=settings)
    options = request.options
    if options.concurrency is not None and options.concurrency > settings.batch_concurrency_limit:
        problems.append(
            {"field": "options.concurrency", "problem": f"must be 1 to {settings.batch_concurrency_limit}"}
        )
    if options.timeout is not None and options.timeout > settings.batch_timeout_limit:
        problems.append({"field": "options.timeout", "problem": f"at most {settings.batch_timeout_limit} ms"})
    if problems:
        raise InvalidRequest("the request exceeds the platform's limits", details=problems)
    return request


def resolve_options(request: KindRequest, *, settings: Settings) -> ResolvedOptions:
    options = request.options
    policy = options.retry_policy
    return ResolvedOptions(
        concurrency=options.concurrency or settings.batch_max_concurrency,
        fail_fast=options.fail_fast,
        timeout_ms=options.timeout or settings.batch_default_timeout,
        max_retries=policy.max_retries if policy else settings.batch_max_retries,
        base_delay_ms=policy.base_delay if policy else 1000,
        max_delay_ms=policy.max_delay if policy else 30_000,
        backoff_multiplier=policy.backoff_multiplier if policy else 2.0,
    )


def _deadline(now: dt.datetime, total: int, options: ResolvedOptions) -> dt.datetime:
    waves = math.ceil(total / options.concurrency)
    worst = dt.timedelta(milliseconds=options.timeout_ms * (options.max_retries + 1) * waves)
    return now + min(worst + DEADLINE_SLACK, MAX_DEADLINE)


async def _planned_batch(
    *,
    engine: Engine,
    tenant: str,
    kind: Kind[Any, Any],
    batch_id: str,
    plan: Plan[Any],
    options: ResolvedOptions,
    now: dt.datetime,
    body_hash: str,
    idempotency_key: str | None,
) -> tuple[BatchDoc, list[ChunkDoc]]:
    """The batch document of a plan (its deadline the kind's, or the engine's estimate), and its chunks (a
    streamed plan's are written here already: none are returned)."""
    chunks: list[ChunkDoc] = []
    if plan.streamed is not None:
        stages, chunk_size = await write_streamed_chunks(
            engine=engine,
            batch_id=batch_id,
            owner=tenant,
            streamed=plan.streamed,
            concurrency=options.concurrency,
        )
        chunk_count = stages[0].count
    else:
        chunks, stages, chunk_size = build_chunks(
            batch_id=batch_id,
            owner=tenant,
            plan=plan,
            concurrency=options.concurrency,
            settings=engine.settings,
        )
        chunk_count = len(chunks)
    deadline_at = (
        _deadline(now, plan.total, options)
        if plan.deadline is None
        else now + min(plan.deadline, MAX_PLANNED_DEADLINE)
    )
    batch = BatchDoc(
        batch_id=batch_id,
        owner=tenant,
        kind=kind.name,
        status=BatchStatus.QUEUED,
        created_at=now,
        deadline_at=deadline_at,
        total=plan.total,
        chunk_count=chunk_count,
        chunk_size=chunk_size,
        stages=stages,
        options=options,
        params=plan.params,
        entry_starts=plan.entry_starts,
        body_hash=body_hash,
        idempotency_key=idempotency_key,
    )
    return batch, chunks


def batch_id_for(principal: Principal, idempotency_key: str | None) -> str:
    if idempotency_key is None:
        return uuid.uuid4().hex
    # Same tenant + key -> same batch id, so a retried submit lands on the batch it already created.
    return hashlib.sha256(f"{principal.tenant}\x00{idempotency_key}".encode()).hexdigest()[:32]


async def submit(
    *,
    engine: Engine,
    principal: Principal,
    kind_name: str,
    body: bytes,
    idempotency_key: str | None,
    caller: CallerInfo,
    private: bool = False,
) -> tuple[SubmitResponse, int]:
    """Validate, store the batch and its chunks, enqueue the first chunks; wait for the batch when asked.
    `private`: a service of the platform submits, so kinds that are not public are accepted too."""
    kind = kind_of(engine, kind_name)
    if not kind.public and not private:
        raise NotFound(f"no kind of batch {kind_name!r}")
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= 200:
        raise InvalidRequest(
            "invalid Idempotency-Key",
            details=[{"field": "Idempotency-Key", "problem": "1 to 200 characters"}],
        )
    settings = engine.settings
    request = parse_request(body, kind=kind, settings=settings)
    options = resolve_options(request, settings=settings)
    now = engine.clock()
    batch_id = batch_id_for(principal, idempotency_key)
    # Compared only when a retried submit (same Idempotency-Key) finds its batch: without a key, not computed
    # (at 50,000 requests, re-encoding the request costs about a tenth of the submit). Without its nulls: a
    # field sent as null is the same request as one left out, whether the kind keeps models or dicts.
    body_hash = (
        hashlib.sha256(f"{kind.name}\x00{request.model_dump_json(exclude_none=True)}".encode()).hexdigest()
        if idempotency_key is not None
        else ""
    )
    plan = await kind.plan(request, tenant=principal.tenant, batch_id=batch_id, ports=engine.ports)
    # A retried streamed submit must not write its chunks again over a batch that may be running already.
    existing = (
        await engine.store.get_batch(batch_id)
        if plan.streamed is not None and idempotency_key is not None
        else None
    )
    created = False
    versions: dict[int, Any] | None = None  # of the chunks this submit wrote
    later_chunks: list[ChunkDoc] = []
    if existing is None:
        batch, chunks = await _planned_batch(
            engine=engine,
            tenant=principal.tenant,
            kind=kind,
            batch_id=batch_id,
            plan=plan,
            options=options,
            now=now,
            body_hash=body_hash,
            idempotency_key=idempotency_key,
        )
        # The batch and the first chunk of each lane in one commit, the rest once their work has started.
        chunks, later_chunks = _first_chunks(batch, chunks)
        if later_chunks:
            batch = batch.model_copy(update={"plan_written": False})
        audit = caller.audit("batch.submit", tenant=principal.tenant, target=batch_id, at=now)
        versions = await engine.store.create_batch(batch=batch, chunks=chunks, audit=audit)
        created = versions is not None
        if not created:
            existing = await engine.store.get_batch(batch_id)
    if not created:
        if existing is None or existing.owner != principal.tenant or existing.body_hash != body_hash:
            raise Conflict("this Idempotency-Key was already used with a different request body")
        batch = existing
    # Enqueue even when the batch existed: a submit that crashed before this line is repaired by its retry,
    # and the task name makes a second enqueue a no-op.
    await enqueue_stage(engine=engine, batch=batch, stage=batch.stages[0], versions=versions)
    if created and later_chunks:
        # After the first chunks' tasks, not beside them: encoding megabytes of chunks holds this event loop,
        # which would delay the enqueue, and with it the first results, by tens of milliseconds. Until a
        # chunk is written, the task that reaches it finds no chunk and is retried by Cloud Tasks, and no
        # stage check or fan-in counts it as finished. A retried submit (same Idempotency-Key) writes none:
        # should this one die before the end, the sweeper stops the batch once it has stalled, keeping what
        # ran. No chunk is written twice, so none runs twice.
        await engine.store.add_later_chunks(batch_id=batch_id, chunks=later_chunks)
    wait = request.options.wait
    if wait is None:
        wait = batch.entries <= settings.batch_wait_threshold
    status_url = f"{settings.function_url('batch')}/status/{batch_id}"
    if not wait:
        message = "batch accepted" if created else "batch already submitted with this Idempotency-Key"
        return SubmitResponse(
            message=message, batch_id=batch_id, kind=kind.name, status=batch.status, status_url=status_url
        ), 202
    longest = min(settings.batch_max_wait_seconds, (batch.deadline_at - engine.clock()).total_seconds())
    await wait_until_finished(engine=engine, batch=batch, seconds=longest)
    finished = await engine.store.get_batch(batch_id) or batch
    results = await results_page(engine=engine, batch=finished, offset=0, limit=MAX_PAGE)
    totals, started = await current_totals(engine=engine, batch=finished)
    done = finished.finalized
    return (
        SubmitResponse(
            message="batch finished" if done else "batch still running; poll the status URL",
            batch_id=batch_id,
            kind=kind.name,
            status=display_status(finished, totals, started=started),
            results=results,
            summary=finished.summary if done and finished.summary else summarize(finished, totals),
            status_url=status_url,
        ),
        200 if done else 202,
    )


def _first_chunks(batch: BatchDoc, chunks: list[ChunkDoc]) -> tuple[list[ChunkDoc], list[ChunkDoc]]:
    """The chunks the first stage's lanes start with, and the others."""
    first = batch.stages[0]
    return chunks[: first.first + first.lanes], chunks[first.first + first.lanes :]


async def cancel(*, engine: Engine, principal: Principal, batch_id: str, caller: CallerInfo) -> BatchDoc:
    """Stop the batch: no new request starts; finished results are kept; status `cancelled`."""
    read = await read_owned_batch(engine=engine, principal=principal, batch_id=batch_id)
    now = engine.clock()

    cancelled_now = False

    def _cancel(batch: BatchDoc) -> dict[str, Any] | None:
        nonlocal cancelled_now
        cancelled_now = not batch.status.is_final
        if not cancelled_now:
            return None
        return {
            "status": BatchStatus.CANCELLED.value,
            "stop_reason": "cancelled by request",
            "finished_at": now,
        }

    audit = caller.audit("batch.cancel", tenant=principal.tenant, target=batch_id, at=now)
    # One commit for the change and its audit record, decided on the batch as just read.
    batch = await engine.store.update_batch(batch_id, _cancel, read=read, audit=audit)
    if batch is None:
        raise NotFound(f"no batch {batch_id}")
    if not cancelled_now:
        raise Conflict(f"batch {batch_id} already {batch.status.value}")
    try:
        await kind_of(engine, batch.kind).on_cancel(batch, ports=engine.ports)
    except PlatformError as exc:
        # The batch is cancelled already; the kind's fan-in (`on_final`) gets another chance to stop its work.
        log.warning("on_cancel of batch %s failed: %r", batch_id, exc)
    # The fan-in at once: a chunk waiting for a scheduled task (ItemDeferred) would otherwise hold it back
    # until that task runs. It waits for chunks still running under a lease, and acts only once; its own
    # name, so the `-final` task a running chunk enqueues when it stops is still taken.
    await enqueue_finalize(engine=engine, batch_id=batch_id, suffix="-cancel")
    return batch


async def start_planned(
    *,
    engine: Engine,
    tenant: str,
    kind_name: str,
    batch_id: str,
    plan: Plan[Any],
    options: ResolvedOptions,
    writes: Sequence[GuardedWrite] = (),
    handover: Handover | None = None,
) -> bool:
    """Store and start a batch a service planned itself (not a client's body): for services that run a kind
    behind an API of their own, as the image queue does. Idempotent by `batch_id`: a second call creates
    nothing and its enqueue is rejected by name. Returns whether this call created the batch. `writes` are
    committed atomically with the batch document (a debit of the service's own ledger, a record of its own);
    when one's precondition fails nothing is created and PreconditionFailed is raised. With a `handover` (a
    running delivery's, `ItemContext.handover`) the first chunk runs in that delivery as soon as the batch is
    written, beside the enqueue of its task, which is delayed by `handover.fallback_delay`."""
    kind = kind_of(engine, kind_name)
    now = engine.clock()
    batch, chunks = await _planned_batch(
        engine=engine,
        tenant=tenant,
        kind=kind,
        batch_id=batch_id,
        plan=plan,
        options=options,
        now=now,
        body_hash="",
        idempotency_key=None,
    )
    audit = AuditRecord(
        tenant=tenant,
        action="batch.submit",
        target=batch_id,
        at=now,
        remote_addr="internal",
        user_agent=kind.name,
    )
    versions = await engine.store.create_batch(batch=batch, chunks=chunks, audit=audit, writes=writes)
    if handover is not None:
        # Should this delivery die before the enqueue, the chunk is recovered as any other: the sweeper
        # re-enqueues it once its lease expires, and the service that started it starts it again.
        handover.run(batch_id)
    await enqueue_stage(
        engine=engine,
        batch=batch,
        stage=batch.stages[0],
        schedule_time=now + handover.fallback_delay if handover is not None else None,
        versions=versions,
    )
    return versions is not None
