"""Gemini adapter of the image model: the original image inline with the prompt, the first inline image of
the answer back (google-genai's async client; errors as in shared/adapters/gemini.py)."""

from __future__ import annotations

from google import genai
from google.genai import types

from shared.adapters.gemini import _model_errors
from shared.ports import ImageCall, ImageReply


class GeminiImageModel:
    """Implements ImageModel."""

    def __init__(self, client: genai.Client) -> None:
        self._models = client.aio.models

    async def edit(self, call: ImageCall) -> ImageReply:
        contents = [types.Part.from_text(text=call.prompt)]
        if call.image is not None:
            contents.append(types.Part.from_bytes(data=call.image, mime_type=call.mime_type or "image/png"))
        config = types.GenerateContentConfig(response_modalities=["TEXT", "IMAGE"])
        async with _model_errors(call.timeout_s):
            response = await self._models.generate_content(model=call.model, contents=contents, config=config)
        image: bytes | None = None
        mime_type: str | None = None
        for candidate in response.candidates or []:
            for part in (candidate.content.parts if candidate.content else None) or []:
                if image is None and part.inline_data is not None and part.inline_data.data:
                    image, mime_type = part.inline_data.data, part.inline_data.mime_type
        usage = response.usage_metadata
        return ImageReply(
            image=image,
            mime_type=mime_type,
            input_tokens=(usage.prompt_token_count or 0) if usage else 0,
            output_tokens=(usage.candidates_token_count or 0) if usage else 0,
        )
