"""Conformance of the Gemini emulator's Batch Mode, through google-genai's async client unchanged: image
models in batch, inline requests with metadata keys, responses out of order, per-row failures, expiry, cancel,
list, delete."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from google import genai
from google.genai import errors, types

from shared.emulator_config import EmulatorConfig

IMAGE_MODEL = "gemini-2.5-flash-image"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def gemini(local_cloud: EmulatorConfig, gemini_control: httpx.Client) -> Iterator[genai.Client]:
    with genai.Client(
        api_key="local", http_options=types.HttpOptions(base_url=local_cloud.emulators.gemini.url)
    ) as client:
        yield client


def _requests(prompts: list[str]) -> list[types.InlinedRequest]:
    config = types.GenerateContentConfig(response_modalities=["TEXT", "IMAGE"])
    return [
        types.InlinedRequest(
            contents=[types.Content(role="user", parts=[types.Part.from_text(text=prompt)])],
            metadata={"key": f"row-{index}"},
            config=config,
        )
        for index, prompt in enumerate(prompts)
    ]


async def _until_done(client: genai.Client, name: str, timeout: float = 10) -> types.BatchJob:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        job = await client.aio.batches.get(name=name)
        if job.done:
            return job
        assert loop.time() < deadline, f"batch {name} not done after {timeout} s"
        await asyncio.sleep(0.05)


def test_an_image_batch_answers_every_row_by_key_out_of_order_with_per_row_failures(
    gemini: genai.Client, gemini_control: httpx.Client
) -> None:
    gemini_control.post("/emulator/config", json={"batchPendingMs": 100, "batchRunningMs": 100})
    prompts = ["a red chair, front pose", "EMULATOR_FAIL_400 a broken row", "a blue chair, side pose"]

    async def scenario() -> tuple[types.BatchJob, types.BatchJob]:
        created = await gemini.aio.batches.create(
            model=IMAGE_MODEL, src=_requests(prompts), config={"display_name": "job-abc123"}
        )
        assert created.name and created.state == types.JobState.JOB_STATE_PENDING
        assert created.display_name == "job-abc123"
        running = await gemini.aio.batches.get(name=created.name)
        done = await _until_done(gemini, created.name)
        await gemini.aio.aclose()
        return running, done

    first, done = asyncio.run(scenario())

    assert first.state in (types.JobState.JOB_STATE_PENDING, types.JobState.JOB_STATE_RUNNING)
    assert done.state == types.JobState.JOB_STATE_SUCCEEDED
    assert done.dest and done.dest.inlined_responses
    responses = done.dest.inlined_responses
    keys = [(r.metadata or {})["key"] for r in responses]
    assert keys == ["row-2", "row-1", "row-0"]  # out of request order: only the keys say which is which
    by_key = {(r.metadata or {})["key"]: r for r in responses}
    failed = by_key["row-1"]
    assert failed.response is None and failed.error and failed.error.code == 400
    for key in ("row-0", "row-2"):
        answer = by_key[key].response
        assert answer and answer.candidates and answer.candidates[0].content
        images = [p.inline_data for p in answer.candidates[0].content.parts or [] if p.inline_data]
        assert images and images[0].data and images[0].data.startswith(PNG_MAGIC)
        assert images[0].mime_type == "image/png"
    first_image = by_key["row-0"].response
    second_image = by_key["row-2"].response
    assert first_image and second_image and first_image.candidates and second_image.candidates
    assert first_image.candidates[0] != second_image.candidates[0]


def test_a_batch_expires_and_a_pending_batch_can_be_cancelled_listed_and_deleted(
    gemini: genai.Client, gemini_control: httpx.Client
) -> None:
    gemini_control.post(
        "/emulator/config", json={"batchPendingMs": 60_000, "batchExpireMs": 150}
    ).raise_for_status()

    async def scenario() -> tuple[types.BatchJob, types.BatchJob, list[str]]:
        expiring = await gemini.aio.batches.create(
            model=IMAGE_MODEL, src=_requests(["a cat"]), config={"display_name": "expiring"}
        )
        gemini_control.post("/emulator/config", json={"batchExpireMs": 0}).raise_for_status()
        cancelled = await gemini.aio.batches.create(
            model=IMAGE_MODEL, src=_requests(["a dog"]), config={"display_name": "cancelled"}
        )
        assert expiring.name and cancelled.name
        await gemini.aio.batches.cancel(name=cancelled.name)
        names = [job.name or "" async for job in await gemini.aio.batches.list(config={"page_size": 1})]
        expired = await _until_done(gemini, expiring.name)
        after_cancel = await gemini.aio.batches.get(name=cancelled.name)
        await gemini.aio.aclose()
        return expired, after_cancel, names

    expired, cancelled, listed = asyncio.run(scenario())

    assert expired.state == types.JobState.JOB_STATE_EXPIRED and expired.end_time is not None
    assert not (expired.dest and expired.dest.inlined_responses)
    assert cancelled.state == types.JobState.JOB_STATE_CANCELLED
    assert {expired.name, cancelled.name} <= set(listed)  # pages of one, followed by the pager
    assert expired.name and cancelled.name
    gemini.batches.delete(name=cancelled.name)
    with pytest.raises(errors.ClientError) as missing:
        gemini.batches.get(name=cancelled.name)
    assert missing.value.code == 404


def test_the_response_order_is_configurable(gemini: genai.Client, gemini_control: httpx.Client) -> None:
    gemini_control.post(
        "/emulator/config", json={"batchPendingMs": 0, "batchRunningMs": 0, "batchResponseOrder": "in-order"}
    ).raise_for_status()
    bad = gemini_control.post("/emulator/config", json={"batchResponseOrder": "sorted"})

    job = gemini.batches.create(model=IMAGE_MODEL, src=_requests(["a", "b", "c"]))
    done = gemini.batches.get(name=job.name or "")

    assert bad.status_code == 400
    assert done.dest and done.dest.inlined_responses
    assert [(r.metadata or {})["key"] for r in done.dest.inlined_responses] == ["row-0", "row-1", "row-2"]
