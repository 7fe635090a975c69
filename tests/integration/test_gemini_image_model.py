"""The Gemini emulator's image model edits an inline image: through google-genai, as the platform calls it."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from infra.emulators.gemini.content import png
from shared.adapters.gemini import gemini_client, model_session
from shared.adapters.gemini_images import GeminiImageModel
from shared.emulator_config import EmulatorConfig
from shared.errors import ModelError
from shared.images import check_decodes
from shared.ports import ImageCall, ImageReply


def _edit(base_url: str, prompt: str, image: bytes, *, timeout_s: float = 10) -> ImageReply:
    async def call() -> ImageReply:
        async with model_session() as session:
            client = gemini_client(api_key="local", base_url=base_url, session=session)
            return await GeminiImageModel(client).edit(
                ImageCall(
                    model="gemini-2.5-flash-image",
                    prompt=prompt,
                    image=image,
                    mime_type="image/png",
                    timeout_s=timeout_s,
                )
            )

    return asyncio.run(call())


def _image(base_url: str, prompt: str, image: bytes) -> bytes:
    reply = _edit(base_url, prompt, image)
    assert reply.image is not None and reply.mime_type == "image/png"
    assert reply.input_tokens > 0 and reply.output_tokens > 0
    return reply.image


def test_the_image_model_returns_a_different_valid_png_derived_from_image_and_prompt(
    local_cloud: EmulatorConfig, gemini_control: httpx.Client
) -> None:
    url = local_cloud.emulators.gemini.url
    photo, other_photo = png(seed=1), png(seed=2)

    edited = _image(url, "Catalog photo of a bolt", photo)

    assert check_decodes(edited) == "image/png"
    assert edited != photo
    assert _image(url, "Catalog photo of a bolt", photo) == edited  # deterministic
    assert _image(url, "Catalog photo of a bolt", other_photo) != edited  # derived from the image
    assert _image(url, "Catalog photo of a nut", photo) != edited  # and from the prompt


def test_latency_applies_to_image_calls(local_cloud: EmulatorConfig, gemini_control: httpx.Client) -> None:
    gemini_control.post("/emulator/config", json={"latencyMs": 300}).raise_for_status()

    with pytest.raises(ModelError) as failed:
        _edit(local_cloud.emulators.gemini.url, "x", png(seed=1), timeout_s=0.1)

    assert failed.value.status == 408 and failed.value.is_transient
