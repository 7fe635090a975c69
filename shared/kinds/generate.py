"""Batch text generation (`POST /batch/generate`): one item per prompt, one Gemini generateContent call each.

The prompts come in the body (up to BATCH_MAX_REQUESTS, under the 32 MB body limit) or, past that, as a JSONL
object in Cloud Storage (`inputUri`, up to BATCH_INPUT_MAX_REQUESTS), streamed into chunks (jsonl_input.py).

Prompts larger than BATCH_INLINE_LIMIT_BYTES travel by reference in Cloud Storage, and so do responses: a
chunk document stays under Firestore's 1 MiB and a result page under its page budget.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Coroutine
from typing import Annotated, Any, ClassVar, NotRequired

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator, with_config
from pydantic.alias_generators import to_camel
from typing_extensions import TypedDict  # pydantic reads TypedDicts from typing only on Python 3.12+

from shared.errors import PlatformError
from shared.kinds.base import ItemContext, ItemFailed, Kind, KindRequest, Plan, Ports, StreamedItems
from shared.kinds.jsonl_input import INPUT_PORT, JsonlInput
from shared.models.batch import BatchOptions
from shared.ports import ModelCall
from shared.settings import Settings

MODEL_PATTERN = r"^(models/)?[A-Za-z0-9][A-Za-z0-9._-]*$"
DEFAULT_MODEL_PARAM = "defaultModel"


@with_config(ConfigDict(extra="forbid"))
class GenerateItem(TypedDict):
    """One request as validated: a dict of the JSON keys the client sent (camelCase, unknown keys refused),
    which its chunk stores as it is. 50,000 requests validate about three times faster as dicts than as
    models (a model per request, and the collector scanning them as they pile up) and encode twice as fast."""

    prompt: Annotated[str, Field(min_length=1)]
    model: NotRequired[Annotated[str | None, Field(max_length=100, pattern=MODEL_PATTERN)]]
    temperature: NotRequired[Annotated[float | None, Field(ge=0.0, le=2.0)]]
    maxTokens: NotRequired[Annotated[int | None, Field(ge=1, le=65_536)]]
    customId: NotRequired[Annotated[str | None, Field(max_length=256)]]
    systemInstruction: NotRequired[str | None]


GENERATE_ITEM = TypeAdapter(GenerateItem)


class GenerateBatchRequest(KindRequest):
    """The requests in the body, or (past what a body carries) in a JSONL object named by `inputUri`."""

    requests: list[GenerateItem] | None = Field(default=None, min_length=1)
    input_uri: str | None = Field(default=None, min_length=1, max_length=1024)
    options: BatchOptions = BatchOptions()

    @model_validator(mode="after")
    def _one_source(self) -> GenerateBatchRequest:
        if (self.requests is None) == (self.input_uri is None):
            raise ValueError("give either requests or inputUri")
        return self


class StoredPrompt(BaseModel):
    """One prompt inside a chunk document, read back from the JSON of the request's `GenerateItem` (camelCase;
    its `customId` is ignored: the chunk keeps customIds apart; chunks written before kept snake_case) or,
    when the prompt was too large, of a StoredPrompt whose `ref` names a Cloud Storage object. No `model`:
    the batch's default (Plan.params)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    prompt: str | None = None
    ref: str | None = None
    model: str | None = None
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
        if request.requests is not None and len(request.requests) > settings.batch_max_requests:
            return [{"field": "requests", "problem": f"at most {settings.batch_max_requests} requests"}]
        return []

    async def plan(
        self, request: GenerateBatchRequest, *, tenant: str, batch_id: str, ports: Ports
    ) -> Plan[Any]:  # items: GenerateItem, or StoredPrompt by reference; read back as StoredPrompt
        if request.input_uri is not None:
            return await _streamed_plan(request.input_uri, tenant=tenant, batch_id=batch_id, ports=ports)
        assert request.requests is not None
        # Each request is stored as it was validated (no second object per request: 50,000 of them in a
        # large submit); only a prompt too large to keep inline is replaced by a reference.
        items: list[Any] = list(request.requests)
        uploads = []
        for index, item in enumerate(request.requests):
            stored, upload = _stored(item, index=index, batch_id=batch_id, ports=ports)
            if upload is not None:
                items[index] = stored
                uploads.append(upload)
        await asyncio.gather(*uploads)
        return Plan(
            items=items,
            custom_ids=[item.get("customId") for item in request.requests],
            params=_params(ports.settings),
        )

    async def run(self, item: StoredPrompt, ctx: ItemContext) -> dict[str, Any]:
        prompt, system_instruction = await _load_prompt(ctx, item)
        reply = await ctx.generate(
            ModelCall(
                model=item.model
                or ctx.params.get(DEFAULT_MODEL_PARAM)
                or ctx.ports.settings.batch_default_model,
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


def _params(settings: Settings) -> dict[str, Any]:
    """The batch's own settings: the model of requests that name none, fixed when the batch is submitted."""
    return {DEFAULT_MODEL_PARAM: settings.batch_default_model}


def _stored(
    item: GenerateItem, *, index: int, batch_id: str, ports: Ports
) -> tuple[GenerateItem | StoredPrompt, Coroutine[Any, Any, None] | None]:
    """A request as its chunk stores it (itself, or a reference when its prompt is too large to keep
    inline), and the upload of that prompt."""
    limit = ports.settings.batch_inline_limit_bytes
    prompt, system_instruction = item["prompt"], item.get("systemInstruction")
    characters = len(prompt) + len(system_instruction or "")
    if characters * 4 + 200 <= limit:  # at most 4 bytes a character in UTF-8: no need to encode
        return item, None
    if len(prompt.encode()) + len((system_instruction or "").encode()) + 200 <= limit:
        return item, None
    object_name = request_object(batch_id, index)
    payload = json.dumps({"prompt": prompt, "systemInstruction": system_instruction})
    upload = ports.blobs.put(object_name=object_name, data=payload.encode(), content_type="application/json")
    stored = StoredPrompt(
        ref=object_name,
        model=item.get("model"),
        temperature=item.get("temperature"),
        max_tokens=item.get("maxTokens"),
    )
    return stored, upload


async def _streamed_plan(uri: str, *, tenant: str, batch_id: str, ports: Ports) -> Plan[Any]:
    """The requests of a JSONL object (`inputUri`): checked in a first streamed pass, read in a second as the
    engine writes the chunks."""
    settings = ports.settings
    source = await JsonlInput.open(
        files=ports.extra(INPUT_PORT),
        uri=uri,
        bucket_name=settings.results_bucket,
        tenant=tenant,
        max_bytes=settings.batch_input_max_bytes,
        adapter=GENERATE_ITEM,
    )
    total = await source.check(max_items=settings.batch_input_max_requests)

    async def read() -> AsyncIterator[tuple[GenerateItem | StoredPrompt, str | None]]:
        index = 0
        async for item in source.read():
            stored, upload = _stored(item, index=index, batch_id=batch_id, ports=ports)
            if upload is not None:
                await upload
            yield stored, item.get("customId")
            index += 1

    return Plan(
        items=[], custom_ids=[], params=_params(settings), streamed=StreamedItems(total=total, read=read)
    )


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
