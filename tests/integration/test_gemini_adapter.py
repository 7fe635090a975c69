"""The Gemini adapter through google-genai against the Gemini emulator: replies, and every kind of failure
as a ModelError that says whether a retry may help."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import pytest

from shared.adapters.gemini import GeminiTextModel, gemini_client, model_session
from shared.emulator_config import EmulatorConfig
from shared.errors import ModelError
from shared.ports import ModelCall, ModelReply
from tests.integration.processes import free_port

T = TypeVar("T")


def _call(prompt: str, *, model: str = "gemini-2.5-flash", timeout_s: float = 10) -> ModelCall:
    return ModelCall(
        model=model,
        prompt=prompt,
        system_instruction=None,
        temperature=None,
        max_tokens=None,
        timeout_s=timeout_s,
    )


def _generate(
    base_url: str, prompt: str, *, model: str = "gemini-2.5-flash", timeout_s: float = 10
) -> ModelReply:
    async def call() -> ModelReply:
        async with model_session() as session:
            client = gemini_client(api_key="local", base_url=base_url, session=session)
            return await GeminiTextModel(client).generate(_call(prompt, model=model, timeout_s=timeout_s))

    return asyncio.run(call())


def _failure(
    base_url: str, prompt: str, *, model: str = "gemini-2.5-flash", timeout_s: float = 10
) -> ModelError:
    with pytest.raises(ModelError) as caught:
        _generate(base_url, prompt, model=model, timeout_s=timeout_s)
    return caught.value


def test_a_reply_carries_the_text_and_token_usage(local_cloud: EmulatorConfig) -> None:
    reply = _generate(local_cloud.emulators.gemini.url, "Describe a spare part")

    assert reply.text
    assert reply.input_tokens > 0 and reply.output_tokens > 0
    assert reply.total_tokens == reply.input_tokens + reply.output_tokens


def test_server_failures_and_rate_limits_are_transient(local_cloud: EmulatorConfig) -> None:
    unavailable = _failure(local_cloud.emulators.gemini.url, "EMULATOR_FAIL_503")
    limited = _failure(local_cloud.emulators.gemini.url, "EMULATOR_FAIL_429")

    assert (unavailable.status, unavailable.is_transient) == (503, True)
    assert (limited.status, limited.is_transient) == (429, True)
    assert limited.retry_after_s is not None and limited.retry_after_s > 0


def test_an_unknown_model_is_permanent(local_cloud: EmulatorConfig) -> None:
    error = _failure(local_cloud.emulators.gemini.url, "hello", model="no-such-model")

    assert (error.status, error.is_transient) == (404, False)


def test_a_reply_later_than_the_timeout_is_a_transient_408(local_cloud: EmulatorConfig) -> None:
    error = _failure(local_cloud.emulators.gemini.url, "EMULATOR_SLEEP_2000", timeout_s=0.2)

    assert (error.status, error.is_transient) == (408, True)


def test_an_unreachable_model_is_a_transient_503_at_once() -> None:
    # Nothing listens on a just-freed port: the connection is refused.
    async def call() -> tuple[ModelError, float]:
        async with model_session() as session:
            base_url = f"http://127.0.0.1:{free_port()}"
            model = GeminiTextModel(gemini_client(api_key="local", base_url=base_url, session=session))
            started = time.monotonic()
            with pytest.raises(ModelError) as caught:
                await model.generate(_call("hello"))
            return caught.value, time.monotonic() - started

    error, elapsed_s = asyncio.run(call())

    assert (error.status, error.is_transient) == (503, True)
    assert "cannot reach the model" in error.message
    # No hidden retry inside google-genai (it sleeps 1-10 s before one on its own sessions): the engine
    # retries with its backoff.
    assert elapsed_s < 1


def test_a_call_runs_on_the_loop_alone(local_cloud: EmulatorConfig) -> None:
    # google-genai's own aiohttp sessions read ~/.netrc and the proxy variables in the loop's thread pool on
    # every call: two thread hops, tens of milliseconds each on a busy process.
    hops: list[str] = []

    class RecordingExecutor(ThreadPoolExecutor):
        def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
            hops.append(getattr(fn, "__name__", repr(fn)))
            return super().submit(fn, *args, **kwargs)

    async def calls() -> None:
        asyncio.get_running_loop().set_default_executor(RecordingExecutor(max_workers=1))
        async with model_session() as session:
            model = GeminiTextModel(
                gemini_client(api_key="local", base_url=local_cloud.emulators.gemini.url, session=session)
            )
            for prompt in ("Describe a brake disc", "Describe a gearbox"):
                assert (await model.generate(_call(prompt))).text

    asyncio.run(calls())

    assert hops == []
