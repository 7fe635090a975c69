"""Gemini Batch Mode jobs paid with credits (`/batch/create`, `/batch/history`, `/batch/credits`).

A job is a batch of the engine's `batchmode` kind (shared/kinds/batchmode.py), started here with
`batches.start_planned`: its debit, its job record and the batch document are created in one commit, guarded
by the balance as read, so a job exists exactly when it was paid for. See the README's "Gemini Batch Mode".
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import hashlib
import hmac
import ipaddress
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from shared.errors import Conflict, Forbidden, InvalidRequest, NotFound, PayloadTooLarge, PlatformError
from shared.images import EXTENSIONS, NotAnImage, check_decodes
from shared.kinds.base import Plan
from shared.models.auth import Principal
from shared.models.batch import ResolvedOptions
from shared.models.batchmode import (
    CreatedJob,
    CreateRequest,
    CreditsView,
    Granted,
    GrantRequest,
    History,
    HistoryEntry,
    JobState,
    JobType,
    LedgerLine,
    Mode,
    RowInput,
    Step,
)
from shared.ports import (
    BatchmodeJobs,
    Credits,
    GeminiBatches,
    ImageObjects,
    LedgerEntry,
    PreconditionFailed,
    ReportStore,
    WebhookQueue,
)
from shared.services.batches import start_planned, validation_details
from shared.services.engine import Engine
from shared.services.pricing import credits_of, row_price_units
from shared.services.status import read_owned_batch
from shared.settings import Settings

KIND = "batchmode"
HISTORY_MAX_PAGE = 100
LEDGER_ENTRIES_SHOWN = 20
SIGNATURE_HEADER = "X-Batch-Signature"
# The poll stage may notice expiry up to one poll interval late; the engine's deadline comes after it.
DEADLINE_SLACK = dt.timedelta(minutes=30)


class InsufficientCredits(PlatformError):
    """The tenant's balance does not cover the job's cost."""

    code = "insufficient_credits"
    http_status = 402


@dataclass
class Batchmode:
    """The ports and settings of Batch Mode jobs, wired once by the composition root; the engine is attached
    after it is built (the engine hands this object to the kind, and this service starts the engine's
    batches)."""

    credits: Credits
    jobs: BatchmodeJobs
    gemini: GeminiBatches
    objects: ImageObjects
    webhooks: WebhookQueue
    trees: ReportStore  # deletes a job's batch documents
    settings: Settings
    engine: Engine | None = field(default=None)

    def attach(self, engine: Engine) -> None:
        self.engine = engine

    @property
    def running_engine(self) -> Engine:
        assert self.engine is not None, "Batchmode.attach(engine) was not called"
        return self.engine


def input_object(job_id: str, row: int) -> str:
    return f"batchmode/{job_id}/inputs/{row}"


def answer_object(job_id: str, row: int) -> str:
    return f"batchmode/{job_id}/answers/{row}.json"


def image_object(job_id: str, row: int, extension: str) -> str:
    return f"batchmode/{job_id}/images/{row}.{extension}"


# --- create -----------------------------------------------------------------------------------------------


async def create(*, service: Batchmode, principal: Principal, body: bytes) -> CreatedJob:
    """Check, price, debit and start a job; the seed's answer, plus the mode it runs in."""
    if principal.is_admin:
        raise Forbidden("an admin key cannot create batch jobs: use a tenant's key")
    settings = service.settings
    if len(body) > settings.batch_max_body_bytes:
        raise PayloadTooLarge(f"request body is larger than {settings.batch_max_body_bytes} bytes")
    try:
        request = CreateRequest.model_validate_json(body)
    except ValidationError as exc:
        raise InvalidRequest("the request body is not valid", details=validation_details(exc)) from exc
    rows = request.requests
    if len(rows) > settings.batchmode_max_requests:
        raise InvalidRequest(
            f"at most {settings.batchmode_max_requests} requests per batch job",
            details=[{"field": "requests", "problem": f"at most {settings.batchmode_max_requests}"}],
        )
    images = [
        _decode_image(row.image_base64, field=f"requests.{index}.imageBase64", settings=settings)
        if row.image_base64
        else None
        for index, row in enumerate(rows)
    ]
    inline_bytes = sum(len(image[0]) for image in images if image) + sum(len(row.prompt) for row in rows)
    if inline_bytes > settings.batchmode_max_inline_bytes:
        raise InvalidRequest(
            "the job's images are too large for one inline batch",
            details=[
                {"field": "requests", "problem": f"at most {settings.batchmode_max_inline_bytes} bytes"}
            ],
        )
    notify_url = (
        await check_webhook_url(request.notify.url, local=settings.is_local) if request.notify else None
    )
    batch_mode = not (request.mode is Mode.AUTO and _interactive_fits(request, settings))
    units_each = row_price_units(job_type=request.type.value, batch_mode=batch_mode)
    cost = units_each * len(rows)
    engine = service.running_engine
    now = engine.clock()
    job_id = uuid.uuid4().hex
    balance, _ = await service.credits.balance(tenant=principal.tenant)
    if balance < cost:  # before anything is uploaded; the commit checks the balance again
        raise _insufficient(cost, balance)
    inputs = [input_object(job_id, index) for index, image in enumerate(images) if image is not None]
    for index, image in enumerate(images):
        if image is not None:
            await service.objects.put(
                object_name=input_object(job_id, index), data=image[0], content_type=image[1]
            )
    plan = _plan(request, job_id=job_id, images=images, batch_mode=batch_mode, settings=settings)
    record = {
        "job_id": job_id,
        "owner": principal.tenant,
        "type": request.type.value,
        "mode": "batch" if batch_mode else "interactive",
        "display_name": request.display_name,
        "created_at": now,
        "expires_at": now + dt.timedelta(hours=settings.batchmode_max_hours),
        "request_count": len(rows),
        "units_per_row": units_each,
        "credit_cost_units": cost,
        "credits_refunded_units": 0,
        "state": JobState.PENDING.value,
        "status": JobState.PENDING.status,
        "success_count": 0,
        "fail_count": 0,
        "gemini_job": None,
        "notify_url": notify_url,
    }
    try:
        await _debit_and_start(service=service, principal=principal, job_id=job_id, plan=plan, record=record)
    except InsufficientCredits:
        # The balance moved since it was read: nothing of the job stays.
        await asyncio.gather(*(service.objects.delete(object_name=name) for name in inputs))
        raise
    if batch_mode:
        message = "Batch job created. Processing may take up to 24 hours (usually much faster)."
    else:
        message = (
            f"Job created and generated interactively at the interactive price: fewer than "
            f"{settings.batchmode_min_rows} requests or a deadline shorter than Batch Mode's turnaround."
        )
    return CreatedJob(
        id=job_id,
        status=JobState.PENDING.status,
        type=f"batch-{request.type.value}",
        request_count=len(rows),
        credit_cost=credits_of(cost),
        message=message,
        mode="batch" if batch_mode else "interactive",
        status_url=f"{settings.function_url('batch')}/status/{job_id}",
    )


def _interactive_fits(request: CreateRequest, settings: Settings) -> bool:
    """`"mode": "auto"`: whether the job is better run interactively (too small, or too urgent)."""
    too_small = len(request.requests) < settings.batchmode_min_rows
    urgent = (
        request.deadline_seconds is not None
        and request.deadline_seconds < settings.batchmode_turnaround_seconds
    )
    return too_small or urgent


def _decode_image(raw: str, *, field: str, settings: Settings) -> tuple[bytes, str]:
    """The image's bytes and its real MIME type (from its bytes, never from a declared type)."""
    data = raw.split(",", 1)[1] if raw.startswith("data:") else raw
    try:
        image = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(
            "imageBase64 is not base64", details=[{"field": field, "problem": "not base64"}]
        ) from exc
    limit = settings.batchmode_max_image_bytes
    if len(image) > limit:
        raise InvalidRequest(
            f"an image may be at most {limit} bytes",
            details=[{"field": field, "problem": f"at most {limit} bytes"}],
        )
    try:
        mime = check_decodes(image)
    except NotAnImage as exc:
        raise InvalidRequest(
            "imageBase64 is not an image", details=[{"field": field, "problem": str(exc)}]
        ) from exc
    return image, mime


def _plan(
    request: CreateRequest,
    *,
    job_id: str,
    images: list[tuple[bytes, str] | None],
    batch_mode: bool,
    settings: Settings,
) -> Plan[Any]:
    inputs = [
        RowInput(
            prompt=row.prompt,
            image_object=input_object(job_id, index) if images[index] else None,
            mime_type=image[1] if (image := images[index]) else None,
        )
        for index, row in enumerate(request.requests)
    ]
    params = {
        "type": request.type.value,
        "mode": "batch" if batch_mode else "interactive",
        "model": settings.batchmode_image_model,
        "rows": len(inputs),
        "firstRow": 2 if batch_mode else 0,
        "displayName": f"{request.display_name or request.type.value} [{job_id}]",
    }
    if not batch_mode:
        items = [Step(step="row", row=index, input=row) for index, row in enumerate(inputs)]
        return Plan(items=items, custom_ids=[None] * len(items), params=params)
    items = [Step(step="submit", rows=inputs), Step(step="poll")]
    items += [Step(step="row", row=index) for index in range(len(inputs))]
    return Plan(
        items=items,
        custom_ids=[None] * len(items),
        params=params,
        stage_starts=[0, 1, 2],
        deadline=dt.timedelta(hours=settings.batchmode_max_hours) + DEADLINE_SLACK,
    )


async def _debit_and_start(
    *, service: Batchmode, principal: Principal, job_id: str, plan: Plan[Any], record: dict[str, Any]
) -> None:
    """The debit, the job record and the batch in one commit, guarded by the balance as read: a concurrent
    movement of the balance makes it read and decide again."""
    engine = service.running_engine
    cost = int(record["credit_cost_units"])
    options = ResolvedOptions(
        concurrency=min(len(plan.items), engine.settings.batch_max_concurrency),
        fail_fast=False,
        timeout_ms=int(engine.settings.image_timeout_seconds * 1000),
        max_retries=engine.settings.batch_max_retries,
        base_delay_ms=1000,
        max_delay_ms=30_000,
        backoff_multiplier=2.0,
    )
    for _ in range(10):
        balance, version = await service.credits.balance(tenant=principal.tenant)
        if balance < cost:
            raise _insufficient(cost, balance)
        debit = LedgerEntry(
            entry_id=f"{job_id}:debit",
            tenant=principal.tenant,
            units=-cost,
            kind="debit",
            reason=f"batch job {job_id}: {record['request_count']} x {record['type']} ({record['mode']})",
            job_id=job_id,
            at=record["created_at"],
        )
        writes = service.credits.debit_writes(entry=debit, balance=balance, version=version)
        writes.append(service.jobs.create_write(job_id=job_id, data=record))
        try:
            await start_planned(
                engine=engine,
                tenant=principal.tenant,
                kind_name=KIND,
                batch_id=job_id,
                plan=plan,
                options=options,
                writes=writes,
            )
        except PreconditionFailed:
            continue
        return
    raise Conflict("the balance kept changing while the job was created: try again")


def _insufficient(cost: int, balance: int) -> InsufficientCredits:
    return InsufficientCredits(
        f"the job costs {credits_of(cost):g} credits and the balance is {credits_of(balance):g}",
        details=[{"creditCost": credits_of(cost), "balance": credits_of(balance)}],
    )


async def check_webhook_url(url: str, *, local: bool) -> str:
    """A tenant's webhook URL, refused when it could reach the platform's own network (SSRF): https only
    and public addresses only, outside local mode."""
    parts = urlsplit(url)
    problem = None
    if parts.scheme not in (("https", "http") if local else ("https",)) or not parts.hostname:
        problem = "must be an https URL" if not local else "must be an http(s) URL"
    elif parts.username or parts.password:
        problem = "must not carry credentials"
    elif not local:
        try:
            resolved = await asyncio.get_running_loop().getaddrinfo(parts.hostname, parts.port or 443)
            addresses = {info[4][0] for info in resolved}
        except (OSError, UnicodeError):
            addresses = set()
        if not addresses:
            problem = "the host does not resolve"
        elif not all(ipaddress.ip_address(str(address).split("%")[0]).is_global for address in addresses):
            problem = "the host resolves to a private, loopback or reserved address"
    if problem:
        raise InvalidRequest(f"notify.url {problem}", details=[{"field": "notify.url", "problem": problem}])
    return url


def webhook_secret(*, settings: Settings, tenant: str) -> str:
    """The tenant's webhook secret: derived from the platform's key, so nothing is stored and rotating
    BATCHMODE_WEBHOOK_KEY rotates every tenant's."""
    key = settings.batchmode_webhook_key.get_secret_value().encode()
    return hmac.new(key, f"webhook:{tenant}".encode(), hashlib.sha256).hexdigest()


def sign(*, secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value: `t=<unix time>,v1=<HMAC-SHA256 of "<t>." + body>`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


# --- credits, history -------------------------------------------------------------------------------------


async def credits_view(*, service: Batchmode, principal: Principal) -> CreditsView:
    balance, _ = await service.credits.balance(tenant=principal.tenant)
    entries = await service.credits.entries(tenant=principal.tenant, limit=LEDGER_ENTRIES_SHOWN)
    return CreditsView(
        tenant=principal.tenant,
        balance=credits_of(balance),
        entries=[
            LedgerLine(
                id=entry.entry_id,
                kind=entry.kind,
                amount=credits_of(entry.units),
                reason=entry.reason,
                job_id=entry.job_id,
                at=entry.at.isoformat(),
            )
            for entry in entries
        ],
    )


async def grant(*, service: Batchmode, principal: Principal, body: bytes) -> Granted:
    if not principal.is_admin:
        raise Forbidden("only an admin key can grant credits")
    try:
        request = GrantRequest.model_validate_json(body)
    except ValidationError as exc:
        raise InvalidRequest("the request body is not valid", details=validation_details(exc)) from exc
    units = round(request.amount * 100)
    entry = LedgerEntry(
        entry_id=f"grant:{uuid.uuid4().hex}",
        tenant=request.tenant,
        units=units,
        kind="grant",
        reason=f"{request.reason} (by {principal.tenant})",
        job_id=None,
        at=service.running_engine.clock(),
    )
    await service.credits.post(entries=[entry])
    balance, _ = await service.credits.balance(tenant=request.tenant)
    return Granted(
        tenant=request.tenant, granted=request.amount, balance=credits_of(balance), entry_id=entry.entry_id
    )


async def history(
    *, service: Batchmode, principal: Principal, job_type: str | None, limit: int, cursor: str | None
) -> tuple[History, str | None]:
    """The seed's list, newest first, and the cursor of the next page (None at the end)."""
    if not 1 <= limit <= HISTORY_MAX_PAGE:
        raise InvalidRequest(
            "invalid limit", details=[{"field": "limit", "problem": f"1 to {HISTORY_MAX_PAGE}"}]
        )
    if job_type is not None and job_type not in {t.value for t in JobType}:
        raise InvalidRequest(
            "unknown type", details=[{"field": "type", "problem": "character, food, product or text"}]
        )
    records = await service.jobs.history(
        tenant=principal.tenant, job_type=job_type, limit=limit, after=cursor
    )
    listed = [
        HistoryEntry(
            id=record["job_id"],
            status=record["status"],
            type=f"batch-{record['type']}",
            created_at=record["created_at"].isoformat(),
            request_count=record["request_count"],
            success_count=record["success_count"],
            credit_cost=credits_of(record["credit_cost_units"]),
            state=record["state"],
            credits_refunded=credits_of(record["credits_refunded_units"]),
            mode=record["mode"],
        )
        for record in records
    ]
    return History(listed), (listed[-1].id if len(listed) == limit else None)


async def delete_job(*, service: Batchmode, principal: Principal, job_id: str) -> None:
    """Delete a finished job: its Gemini job, its images and inputs, its record and its batch documents."""
    engine = service.running_engine
    read = await read_owned_batch(engine=engine, principal=principal, batch_id=job_id)
    record = await service.jobs.get(job_id=job_id)
    if read.batch.kind != KIND or record is None:
        raise NotFound(f"no batch job {job_id}")
    if not read.batch.finalized:
        raise Conflict(f"batch job {job_id} has not finished: cancel it first (DELETE /batch/{job_id})")
    if record.get("gemini_job"):
        await service.gemini.delete(name=record["gemini_job"])
    names = [
        name
        for row in range(int(record["request_count"]))
        for name in (
            input_object(job_id, row),
            answer_object(job_id, row),
            *(image_object(job_id, row, extension) for extension in EXTENSIONS.values()),
        )
    ]
    await asyncio.gather(*(service.objects.delete(object_name=name) for name in names))
    await service.trees.delete_batch_tree(batch_id=job_id)
    await service.jobs.delete(job_id=job_id)
