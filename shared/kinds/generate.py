"""Batch text generation (`POST /batch/generate`): one item per prompt, one Gemini generateContent call each.

Prompts larger than BATCH_INLINE_LIMIT_BYTES travel by reference in Cloud Storage, and so do responses: a
chunk document stays under Firestore's 1 MiB and a result page under its page budget.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, ClassVar

from pydantic import BaseModel, Field, TypeAdapter

from shared.errors import PlatformError
from shared.kinds.base import ItemContext, ItemFailed, Kind, KindRequest, Plan, Ports
from shared.models.batch import BatchOptions
from shared.models.common import ClientModel
from shared.ports import ModelCall
from shared.settings import Settings

MODEL_PATTERN = r"^(models/)?[A-Za-z0-9][A-Za-z0-9._-]*$"


class GenerateItem(ClientModel):
    prompt: str = Field(min_length=1)
    model: str | None = Field(default=None, max_length=100, pattern=MODEL_PATTERN)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    max_tokens: int | None = Field(default=None, ge=1, le=65_536)
    custom_id: str | None = Field(default=None, max_length=256)
    system_instruction: str | None = None


class GenerateBatchRequest(KindRequest):
    requests: list[GenerateItem] = Field(min_length=1)
    options: BatchOptions = BatchOptions()


class StoredPrompt(BaseModel):
    """One prompt inside a chunk document; `ref` names a Cloud Storage object when it was too large."""

    prompt: str | None = None
    ref: str | None = None
    model: str
    temperature: float | None = None
    max_tokens: int | None = None
    system_instruction: str | None = None


def request_object(batch_id: str, index: int) -> str:
    return f"batches/{batch_id}/requests/{index:08d}.json"


def response_object(batch_id: str, index: int) -> str:
    return f"batches/{batch_id}/responses/{index:08d}.txt"


class Generate(Kind[GenerateBatchRequest, StoredPrompt]):
    name: ClassVar[str] = "generate"
    request_model: ClassVar[type[KindRequest]] = GenerateBatchRequest
    item_adapter: ClassVar[TypeAdapter[Any]] = TypeAdapter(list[StoredPrompt])

    def limits(self, request: GenerateBatchRequest, *, settings: Settings) -> list[dict[str, Any]]:
        if len(request.requests) > settings.batch_max_requests:
            return [{"field": "requests", "problem": f"at most {settings.batch_max_requests} requests"}]
        return []

    async def plan(
        self, request: GenerateBatchRequest, *, tenant: str, batch_id: str, ports: Ports
    ) -> Plan[StoredPrompt]:
        settings = ports.settings
        items: list[StoredPrompt] = []
        uploads = []
        for index, item in enumerate(request.requests):
            stored = StoredPrompt(
                prompt=item.prompt,
                model=item.model or settings.batch_default_model,
                temperature=item.temperature,
                max_tokens=item.max_tokens,
                system_instruction=item.system_instruction,
            )
            size = len(item.prompt.encode()) + len((item.system_instruction or "").encode()) + 200
            if size > settings.batch_inline_limit_bytes:
                object_name = request_object(batch_id, index)
                payload = json.dumps({"prompt": item.prompt, "systemInstruction": item.system_instruction})
                uploads.append(
                    ports.blobs.put(
                        object_name=object_name, data=payload.encode(), content_type="application/json"
                    )
                )
                stored = stored.model_copy(
                    update={"prompt": None, "system_instruction": None, "ref": object_name}
                )
            items.append(stored)
        await asyncio.gather(*uploads)
        return Plan(items=items, custom_ids=[item.custom_id for item in request.requests])

    async def run(self, item: StoredPrompt, ctx: ItemContext) -> dict[str, Any]:
        prompt, system_instruction = await _load_prompt(ctx, item)
        reply = await ctx.generate(
            ModelCall(
                model=item.model,
                prompt=prompt,
                system_instruction=system_instruction,
                temperature=item.temperature,
                max_tokens=item.max_tokens,
                timeout_s=ctx.timeout_s,
            )
        )
        if len(reply.text.encode()) > ctx.ports.settings.batch_inline_limit_bytes:
            object_name = response_object(ctx.job_id, ctx.index)
            await ctx.ports.blobs.put(
                object_name=object_name, data=reply.text.encode(), content_type="text/plain"
            )
            return {"response": None, "responseRef": object_name}
        return {"response": reply.text, "responseRef": None}


async def _load_prompt(ctx: ItemContext, item: StoredPrompt) -> tuple[str, str | None]:
    if item.ref is None:
        return item.prompt or "", item.system_instruction
    try:
        payload = json.loads(await ctx.ports.blobs.get(object_name=item.ref))
    except PlatformError as exc:
        if exc.transient:
            raise
        raise ItemFailed(
            f"the request's payload is unavailable: {exc.message}", code="payload_unavailable"
        ) from exc
    return str(payload["prompt"]), payload.get("systemInstruction")
