"""The Gemini API emulator's HTTP app (starlette): the paths google-genai calls, under v1 and v1beta."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
import logging
import random
import re
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from infra.emulators.gemini.broken import BREAK_SCHEMA_MARKER, INVALID_JSON_MARKER, break_schema, invalid_json
from infra.emulators.gemini.content import (
    WEBP_1X1,
    count_tokens,
    embed,
    generate_text,
    inline_images,
    jpeg,
    png,
    seed_of,
    text_of,
)
from infra.emulators.gemini.structured import value_for_schema

log = logging.getLogger("gemini-emulator")

KNOWN_MODEL = re.compile(
    r"^(gemini-[\w.-]+|text-embedding-[\w.-]+|embedding-[\w.-]+|gemini-embedding-[\w.-]+)$"
)
STATUS_NAMES = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED", 409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
    502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}  # fmt: skip
FAIL_MARKER = re.compile(r"EMULATOR_FAIL_(\d{3})")
SLEEP_MARKER = re.compile(r"EMULATOR_SLEEP_(\d+)")
# An image model answers a PNG, or the type a prompt's `EMULATOR_IMAGE_JPEG` / `EMULATOR_IMAGE_WEBP` asks for.
IMAGE_TYPE_MARKER = re.compile(r"EMULATOR_IMAGE_(JPEG|WEBP)")
# A request marker a test puts in its prompts, so it can count the calls the emulator answered for each item
# (GET /emulator/calls): the ground truth of how many times a model call really ran.
CALL_MARKER = re.compile(rb"EMULATOR_MARK_[A-Za-z0-9_-]+")
CALL_LOG_LIMIT = 500_000  # the oldest calls are dropped past this many


@dataclass
class Config:
    latencyMs: int = 0  # noqa: N815 - the control endpoint's JSON names
    errorRate: float = 0.0  # noqa: N815
    errorStatus: int = 429  # noqa: N815
    retryDelayMs: int = 1000  # noqa: N815
    batchPendingMs: int = 300  # noqa: N815
    batchRunningMs: int = 300  # noqa: N815
    # A batch not finished this long after its creation expires (0: never), as Google's do after 48 h.
    batchExpireMs: int = 0  # noqa: N815
    # Order of a finished batch's inline responses: "reversed" (default), "shuffled" or "in-order". Google
    # does not promise the request order, so clients must match responses by their metadata keys.
    batchResponseOrder: str = "reversed"  # noqa: N815


@dataclass
class Batch:
    name: str
    model: str
    display_name: str
    requests: list[dict[str, Any]]
    created: float
    create_time: str
    cancelled_at: float | None = None
    pending_ms: int = 0
    running_ms: int = 0
    expire_ms: int = 0
    responses: list[dict[str, Any]] | None = None  # computed once, when the batch first shows succeeded


@dataclass
class State:
    config: Config = field(default_factory=Config)
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    seen_prefixes: set[str] = field(default_factory=set)
    batches: dict[str, Batch] = field(default_factory=dict)
    calls: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=CALL_LOG_LIMIT))


class ApiError(Exception):
    def __init__(self, status: int, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details or []


def _error_response(error: ApiError) -> JSONResponse:
    body = {
        "error": {
            "code": error.status,
            "message": error.message,
            "status": STATUS_NAMES.get(error.status, "UNKNOWN"),
            "details": error.details,
        }
    }
    return JSONResponse(body, status_code=error.status)


def _rfc3339(moment: float) -> str:
    return dt.datetime.fromtimestamp(moment, dt.UTC).isoformat().replace("+00:00", "Z")


def _model_id(raw: str) -> str:
    model = raw.removeprefix("models/")
    if not KNOWN_MODEL.match(model):
        raise ApiError(404, f"models/{model} is not found for API version v1beta, or is not supported.")
    return model


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"Invalid JSON payload received. {exc}") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "Invalid JSON payload received: expected an object.")
    return body


def _check_key(request: Request) -> None:
    if not (request.headers.get("x-goog-api-key") or request.query_params.get("key")):
        raise ApiError(403, "Method doesn't allow unregistered callers. Please use an API key.")


async def _faults(state: State, text: str, *, inject: bool = True) -> None:
    """Latency first (as a slow server would), then markers and the configured error rate."""
    delay_ms = state.config.latencyMs
    if (sleep := SLEEP_MARKER.search(text)) is not None:
        delay_ms += int(sleep.group(1))
    if delay_ms:
        await asyncio.sleep(delay_ms / 1000)
    if (fail := FAIL_MARKER.search(text)) is not None:
        raise _injected(state, int(fail.group(1)))
    if inject and state.config.errorRate > 0 and state.rng.random() < state.config.errorRate:
        raise _injected(state, state.config.errorStatus)


def _injected(state: State, status: int) -> ApiError:
    details: list[dict[str, Any]] = []
    message = "Injected failure."
    if status == 429:
        message = "Resource has been exhausted (e.g. check quota)."
        details = [
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [
                    {"quotaMetric": "generativelanguage.googleapis.com/generate_content_requests"}
                ],
            },
            {
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": f"{state.config.retryDelayMs / 1000:g}s",
            },
        ]
    return ApiError(status, message, details)


def _picture(prompt: str, seed: int, *, size: int) -> tuple[str, bytes]:
    """An image model's picture and its MIME type: a PNG unless the prompt asks for JPEG or WebP."""
    wanted = IMAGE_TYPE_MARKER.search(prompt)
    if wanted is None:
        return "image/png", png(seed=seed, size=size)
    if wanted.group(1) == "JPEG":
        return "image/jpeg", jpeg(seed=seed)
    return "image/webp", WEBP_1X1


def generate(state: State, model: str, body: dict[str, Any]) -> dict[str, Any]:
    """The response of generateContent for `body` (pure given the state's cache memory)."""
    contents = body.get("contents")
    if not contents:
        raise ApiError(400, "* GenerateContentRequest.contents: contents is not specified")
    prompt = text_of(contents)
    system = text_of(body.get("systemInstruction"))
    config = body.get("generationConfig") or {}
    schema = config.get("responseSchema") or config.get("responseJsonSchema")
    seed = seed_of(model, prompt, system, config.get("temperature"), schema)
    parts: list[dict[str, Any]]
    finish = "STOP"
    if config.get("responseMimeType") == "application/json":
        user_text = text_of(contents, user_only=True)
        parts = [{"text": _json_answer(schema, seed=seed, prompt=prompt, user_text=user_text)}]
    else:
        text, truncated = generate_text(seed=seed, prompt=prompt, max_tokens=config.get("maxOutputTokens"))
        finish = "MAX_TOKENS" if truncated else "STOP"
        parts = [{"text": text}]
    if "image" in model:
        # An image model derives its picture from the prompt and the images it was given (an edit), so the
        # same article with another photo or another prompt gets another picture, never the one it sent.
        try:
            given = inline_images(contents)
        except ValueError as exc:
            raise ApiError(400, f"* GenerateContentRequest.contents: {exc}") from exc
        image_seed = seed_of(seed, *(hashlib.sha256(image).hexdigest() for image in given))
        mime, picture = _picture(prompt, image_seed, size=32 if given else 16)
        parts.append({"inlineData": {"mimeType": mime, "data": base64.b64encode(picture).decode()}})
    prompt_tokens = count_tokens(prompt) + count_tokens(system)
    output_tokens = sum(count_tokens(p.get("text", "")) for p in parts) + (258 if "image" in model else 0)
    usage: dict[str, Any] = {
        "promptTokenCount": prompt_tokens,
        "candidatesTokenCount": output_tokens,
        "totalTokenCount": prompt_tokens + output_tokens,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_tokens}],
    }
    # Implicit caching: a system instruction seen before is served from cache.
    if system:
        if system in state.seen_prefixes:
            usage["cachedContentTokenCount"] = count_tokens(system)
        state.seen_prefixes.add(system)
    return {
        "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": finish, "index": 0}],
        "usageMetadata": usage,
        "modelVersion": model,
        "responseId": uuid.UUID(int=seed_of("response", seed, time.time_ns()) % 2**128).hex[:22],
    }


def _json_answer(schema: Any, *, seed: int, prompt: str, user_text: str) -> str:
    """The JSON text of a JSON-mode answer; its meaning is read from the user's text only."""
    if isinstance(schema, dict) and schema:
        value = value_for_schema(schema, random.Random(seed), text=user_text)
        if BREAK_SCHEMA_MARKER in user_text:
            value = break_schema(value, schema)
    else:
        value = {"answer": generate_text(seed=seed, prompt=prompt, max_tokens=None)[0]}
    text = json.dumps(value, ensure_ascii=False)
    return invalid_json(text) if INVALID_JSON_MARKER in user_text else text


def build_app(state: State | None = None) -> Starlette:
    state = state or State()

    async def model_call(request: Request) -> Response:
        response = await _model_call(request)
        markers = sorted({m.decode() for m in CALL_MARKER.findall(await request.body())})
        if markers:
            state.calls.append(
                {
                    "method": request.path_params["method"],
                    "model": request.path_params["model"],
                    "status": response.status_code,
                    "markers": markers,
                    "at": _rfc3339(time.time()),
                }
            )
        return response

    async def _model_call(request: Request) -> Response:
        try:
            _check_key(request)
            model = _model_id(request.path_params["model"])
            method = request.path_params["method"]
            body = await _json_body(request)
            started = time.monotonic()
            if method == "generateContent":
                await _faults(state, text_of(body.get("contents")) + text_of(body.get("systemInstruction")))
                response: Response = JSONResponse(generate(state, model, body))
            elif method == "streamGenerateContent":
                await _faults(state, text_of(body.get("contents")))
                response = _stream(generate(state, model, body))
            elif method == "countTokens":
                await _faults(state, "", inject=True)
                contents = body.get("contents") or (body.get("generateContentRequest") or {}).get("contents")
                response = JSONResponse({"totalTokens": count_tokens(text_of(contents))})
            elif method in ("batchEmbedContents", "embedContent"):
                response = JSONResponse(await _embed(state, method, body))
            elif method == "batchGenerateContent":
                response = JSONResponse(_create_batch(state, model, body))
            else:
                raise ApiError(404, f"Method {method} is not supported by the emulator.")
            log.info(json.dumps({"severity": "INFO", "model": model, "method": method, "status": 200,
                                 "latency_ms": int((time.monotonic() - started) * 1000)}))  # fmt: skip
            return response
        except ApiError as error:
            return _error_response(error)

    async def batches(request: Request) -> Response:
        try:
            _check_key(request)
            return _batches(state, request)
        except ApiError as error:
            return _error_response(error)

    async def config(request: Request) -> Response:
        if request.method == "POST":
            try:
                changes = await _json_body(request)
                unknown = set(changes) - set(Config.__dataclass_fields__)
                if unknown:
                    raise ApiError(400, f"unknown config fields: {sorted(unknown)}")
                if not 0 <= float(changes.get("errorRate", 0)) <= 1:
                    raise ApiError(400, "errorRate must be between 0 and 1")
                if changes.get("batchResponseOrder", "reversed") not in ("reversed", "shuffled", "in-order"):
                    raise ApiError(400, "batchResponseOrder must be reversed, shuffled or in-order")
                for name, value in changes.items():
                    setattr(state.config, name, type(getattr(state.config, name))(value))
            except (ApiError, TypeError, ValueError) as error:
                return _error_response(error if isinstance(error, ApiError) else ApiError(400, str(error)))
        return JSONResponse(state.config.__dict__)

    async def calls(request: Request) -> Response:
        prefix = request.query_params.get("marker", "EMULATOR_MARK_")
        if request.method == "DELETE":
            state.calls.clear()
            return JSONResponse({"calls": []})
        matching = [call for call in state.calls if any(m.startswith(prefix) for m in call["markers"])]
        return JSONResponse({"calls": matching})

    async def reset(request: Request) -> Response:
        state.calls.clear()
        state.config = Config()
        state.rng = random.Random(0)
        state.seen_prefixes.clear()
        state.batches.clear()
        return JSONResponse(state.config.__dict__)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    routes = [
        Route("/health", health),
        Route("/emulator/config", config, methods=["GET", "POST"]),
        Route("/emulator/reset", reset, methods=["POST"]),
        Route("/emulator/calls", calls, methods=["GET", "DELETE"]),
    ]
    for version in ("v1", "v1beta", "v1alpha"):
        routes += [
            Route(f"/{version}/models/{{model}}:{{method}}", model_call, methods=["POST"]),
            Route(f"/{version}/batches", batches, methods=["GET"]),
            Route(f"/{version}/batches/{{rest:path}}", batches, methods=["GET", "POST", "DELETE"]),
        ]
    return Starlette(routes=routes)


def _stream(response: dict[str, Any]) -> StreamingResponse:
    """The same answer split across several SSE events, as streamGenerateContent?alt=sse sends it."""
    parts = response["candidates"][0]["content"]["parts"]
    text = parts[0].get("text", "")
    pieces = [text[i : i + 40] for i in range(0, len(text), 40)] or [""]

    async def events() -> AsyncIterator[bytes]:
        for number, piece in enumerate(pieces):
            last = number == len(pieces) - 1
            chunk_parts = [{"text": piece}] + (parts[1:] if last else [])
            event: dict[str, Any] = {
                "candidates": [{"content": {"role": "model", "parts": chunk_parts}, "index": 0}],
                "modelVersion": response["modelVersion"],
                "responseId": response["responseId"],
            }
            if last:
                event["candidates"][0]["finishReason"] = response["candidates"][0]["finishReason"]
                event["usageMetadata"] = response["usageMetadata"]
            yield f"data: {json.dumps(event)}\r\n\r\n".encode()

    return StreamingResponse(events(), media_type="text/event-stream")


async def _embed(state: State, method: str, body: dict[str, Any]) -> dict[str, Any]:
    requests = body.get("requests") if method == "batchEmbedContents" else [body]
    if not requests:
        raise ApiError(400, "* BatchEmbedContentsRequest.requests: requests is not specified")
    texts = [text_of(r.get("content")) for r in requests]
    await _faults(state, "\n".join(texts))
    embeddings = []
    for request, text in zip(requests, texts, strict=True):
        dimension = int(request.get("outputDimensionality") or 768)
        embeddings.append({"values": embed(text, dimension=dimension)})
    if method == "embedContent":
        return {"embedding": embeddings[0]}
    return {"embeddings": embeddings}


# --- Gemini Batch Mode ------------------------------------------------------------------------------


def _create_batch(state: State, model: str, body: dict[str, Any]) -> dict[str, Any]:
    batch_body = body.get("batch") or {}
    inline = ((batch_body.get("inputConfig") or {}).get("requests") or {}).get("requests")
    if not inline:
        raise ApiError(400, "batch.inputConfig.requests.requests is required (inline requests)")
    now = time.time()
    name = f"batches/{uuid.uuid4().hex[:20]}"
    config = state.config
    # The timings are the configuration's when the batch is created: a later change does not move it.
    state.batches[name] = Batch(
        name=name,
        model=f"models/{model}",
        display_name=batch_body.get("displayName") or name,
        requests=inline,
        created=now,
        create_time=_rfc3339(now),
        pending_ms=config.batchPendingMs,
        running_ms=config.batchRunningMs,
        expire_ms=config.batchExpireMs,
    )
    return _batch_view(state, state.batches[name])


def _batch_state(state: State, batch: Batch) -> tuple[str, float | None]:
    if batch.cancelled_at is not None:
        return "BATCH_STATE_CANCELLED", batch.cancelled_at
    elapsed_ms = (time.time() - batch.created) * 1000
    pending, running = batch.pending_ms, batch.running_ms
    if 0 < batch.expire_ms <= elapsed_ms and batch.expire_ms < pending + running:
        return "BATCH_STATE_EXPIRED", batch.created + batch.expire_ms / 1000
    if elapsed_ms < pending:
        return "BATCH_STATE_PENDING", None
    if elapsed_ms < pending + running:
        return "BATCH_STATE_RUNNING", None
    return "BATCH_STATE_SUCCEEDED", batch.created + (pending + running) / 1000


def _batch_view(state: State, batch: Batch) -> dict[str, Any]:
    batch_state, ended = _batch_state(state, batch)
    metadata: dict[str, Any] = {
        "@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
        "model": batch.model,
        "displayName": batch.display_name,
        "state": batch_state,
        "createTime": batch.create_time,
        "updateTime": _rfc3339(ended or time.time()),
        "name": batch.name,
        "batchStats": {"requestCount": str(len(batch.requests))},
    }
    view: dict[str, Any] = {"name": batch.name, "metadata": metadata}
    if ended is not None:
        metadata["endTime"] = _rfc3339(ended)
    if batch_state == "BATCH_STATE_SUCCEEDED":
        if batch.responses is None:
            batch.responses = _ordered(state, _batch_responses(state, batch))
        responses = batch.responses
        metadata["output"] = {"inlinedResponses": {"inlinedResponses": responses}}
        succeeded = sum("response" in r for r in responses)
        metadata["batchStats"]["successfulRequestCount"] = str(succeeded)
        if succeeded < len(responses):
            metadata["batchStats"]["failedRequestCount"] = str(len(responses) - succeeded)
        view["done"] = True
    elif batch_state in ("BATCH_STATE_CANCELLED", "BATCH_STATE_EXPIRED"):
        view["done"] = True
    return view


def _batch_responses(state: State, batch: Batch) -> list[dict[str, Any]]:
    """One inline response per request, in request order: an answer, or the error a prompt marker asks for
    (`EMULATOR_FAIL_<status>` fails that row alone, as a row of a real batch fails on its own)."""
    responses = []
    model = batch.model.removeprefix("models/")
    for item in batch.requests:
        entry: dict[str, Any] = {}
        if item.get("metadata"):
            entry["metadata"] = item["metadata"]
        request_body = item.get("request") or {}
        try:
            fail = FAIL_MARKER.search(text_of(request_body.get("contents")))
            if fail is not None:
                raise ApiError(int(fail.group(1)), "Injected failure.")
            entry["response"] = generate(state, model, request_body)
        except ApiError as error:
            entry["error"] = {"code": error.status, "message": error.message}
        responses.append(entry)
    return responses


def _ordered(state: State, responses: list[dict[str, Any]]) -> list[dict[str, Any]]:
    order = state.config.batchResponseOrder
    if order == "reversed":
        return responses[::-1]
    if order == "shuffled":
        shuffled = list(responses)
        state.rng.shuffle(shuffled)
        return shuffled
    return responses


def _batches(state: State, request: Request) -> Response:
    rest = request.path_params.get("rest")
    if rest is None:  # list
        page_size = int(request.query_params.get("pageSize") or 50)
        start = int(request.query_params.get("pageToken") or 0)
        ordered = sorted(state.batches.values(), key=lambda b: b.created, reverse=True)
        page = ordered[start : start + page_size]
        body: dict[str, Any] = {"operations": [_batch_view(state, b) for b in page]}
        if start + page_size < len(ordered):
            body["nextPageToken"] = str(start + page_size)
        return JSONResponse(body)
    batch_id, _, action = rest.partition(":")
    batch = state.batches.get(f"batches/{batch_id}")
    if batch is None:
        raise ApiError(404, f"Batch batches/{batch_id} not found.")
    if request.method == "DELETE":
        del state.batches[batch.name]
        return JSONResponse({})
    if request.method == "POST" and action == "cancel":
        if _batch_state(state, batch)[0] in ("BATCH_STATE_PENDING", "BATCH_STATE_RUNNING"):
            batch.cancelled_at = time.time()
        return JSONResponse({})
    if request.method == "GET" and not action:
        return JSONResponse(_batch_view(state, batch))
    raise ApiError(404, f"unsupported batches call {request.method} {rest}")
