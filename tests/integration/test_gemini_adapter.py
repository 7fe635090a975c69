"""The Gemini adapter through google-genai against the Gemini emulator: replies, and every kind of failure
as a ModelError that says whether a retry may help."""

from __future__ import annotations

import asyncio
import time

import pytest

from shared.adapters.gemini import GeminiTextModel, gemini_client, model_session
from shared.emulator_config import EmulatorConfig
from shared.errors import ModelError
from shared.ports import ModelCall, ModelReply
from tests.integration.processes import free_port


def _generate(
    base_url: str, prompt: str, *, model: str = "gemini-2.5-flash", timeout_s: float = 10
) -> ModelReply:
    async def call() -> ModelReply:
        async with model_session() as session:
            client = gemini_client(api_key="local", base_url=base_url, session=session)
            return await GeminiTextModel(client).generate(
                ModelCall(
                    model=model,
                    prompt=prompt,
                    system_instruction=None,
                    temperature=None,
                    max_tokens=None,
                    timeout_s=timeout_s,
                )
            )

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
    started = time.monotonic()
    error = _failure(f"http://127.0.0.1:{free_port()}", "hello")

    assert (error.status, error.is_transient) == (503, True)
    assert "cannot reach the model" in error.message
    # No hidden retry inside google-genai (it sleeps 1-10 s before one on its own sessions): the engine
    # retries with its backoff.
    assert time.monotonic() - started < 1
