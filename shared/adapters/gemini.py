"""Gemini adapter: google-genai's async client; vendor errors become ModelError (transient or not)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx2
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from shared.errors import ModelError
from shared.ports import EmbedCall, EmbedReply, ModelCall, ModelReply

# As python-genai's own retry list: request timeout, rate limit and server-side failures.
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_DURATION = re.compile(r"^\s*([0-9.]+)s\s*$")


def retry_delay_seconds(details: Any) -> float | None:
    """The `RetryInfo.retryDelay` of a Google error body (e.g. "1.5s"), if the server sent one."""
    error = details.get("error", details) if isinstance(details, dict) else None
    if not isinstance(error, dict):
        return None
    for detail in error.get("details") or []:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            match = _DURATION.match(str(detail.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None


def model_session() -> aiohttp.ClientSession:
    """The HTTP session of the platform's Gemini client, for the running event loop (a session belongs to the
    loop it was built on, like every async client of the platform).

    google-genai sends through aiohttp when it is installed, but on sessions of its own that trust the
    environment: every call then reads ~/.netrc and the proxy variables in the loop's thread pool, two thread
    hops that cost CPU and, on a busy process, tens of milliseconds per call. This session trusts no
    environment (the platform uses no proxy) and, like google-genai's, sets no connection limit: the batches'
    concurrency bounds the calls.
    """
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), trust_env=False)


def gemini_client(*, api_key: str, base_url: str | None, session: aiohttp.ClientSession) -> genai.Client:
    """google-genai's client sending through `session`: one attempt per call, as google-genai's default, but
    without its hidden 1-10 s sleep before a second try on a connection error (the engine retries with its
    own backoff)."""
    return genai.Client(
        api_key=api_key,
        http_options=types.HttpOptions(
            base_url=base_url, aiohttp_client=session, retry_options=types.HttpRetryOptions(attempts=1)
        ),
    )


class GeminiTextModel:
    """Implements TextModel."""

    def __init__(self, client: genai.Client) -> None:
        self._models = client.aio.models

    async def generate(self, call: ModelCall) -> ModelReply:
        config = None
        # Only build a config when something is set: google-genai spends about 1 ms of CPU per call on one.
        if (call.system_instruction, call.temperature, call.max_tokens, call.response_schema) != (None,) * 4:
            config = types.GenerateContentConfig(
                system_instruction=call.system_instruction,
                temperature=call.temperature,
                max_output_tokens=call.max_tokens,
                response_mime_type="application/json" if call.response_schema is not None else None,
                response_json_schema=call.response_schema,
            )
        async with _model_errors(call.timeout_s):
            response = await self._models.generate_content(
                model=call.model, contents=call.prompt, config=config
            )
        usage = response.usage_metadata
        input_tokens = (usage.prompt_token_count or 0) if usage else 0
        output_tokens = (usage.candidates_token_count or 0) if usage else 0
        return ModelReply(
            text=response.text or "",
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cached_tokens=(usage.cached_content_token_count or 0) if usage else 0,
            total_tokens=(usage.total_token_count or input_tokens + output_tokens) if usage else 0,
        )


class GeminiEmbeddingModel:
    """Implements EmbeddingModel: one batchEmbedContents call for up to 100 texts."""

    def __init__(self, client: genai.Client) -> None:
        self._models = client.aio.models

    async def embed(self, call: EmbedCall) -> EmbedReply:
        config = types.EmbedContentConfig(output_dimensionality=call.dimension, task_type=call.task_type)
        async with _model_errors(call.timeout_s):
            response = await self._models.embed_content(
                model=call.model, contents=list(call.texts), config=config
            )
        vectors = [list(embedding.values or []) for embedding in response.embeddings or []]
        if len(vectors) != len(call.texts):
            raise ModelError(
                f"the model returned {len(vectors)} embeddings for {len(call.texts)} texts",
                status=502,
                transient=False,
            )
        # The Gemini API reports no token counts for embeddings: about four characters a token.
        return EmbedReply(vectors=vectors, input_tokens=sum(-(-len(text) // 4) for text in call.texts))


@contextlib.asynccontextmanager
async def _model_errors(timeout_s: float) -> AsyncIterator[None]:
    """The call's time limit, and google-genai's errors as ModelError (transient or not, with RetryInfo)."""
    try:
        async with asyncio.timeout(timeout_s):
            yield
    except TimeoutError as exc:
        raise ModelError(f"no answer within {timeout_s:g} s", status=408, transient=True) from exc
    except genai_errors.APIError as exc:
        raise ModelError(
            exc.message or str(exc),
            status=exc.code,
            transient=exc.code in TRANSIENT_STATUSES,
            retry_after_s=retry_delay_seconds(exc.details),
        ) from exc
    except (aiohttp.ClientError, httpx2.TransportError) as exc:  # google-genai's HTTP transports
        raise ModelError(f"cannot reach the model: {exc}", status=503, transient=True) from exc
