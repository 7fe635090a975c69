"""Gemini Batch Mode adapter (google-genai's async `batches`): inline requests keyed by metadata, the job's
state and its inline answers (errors as in shared/adapters/gemini.py)."""

from __future__ import annotations

from google import genai
from google.genai import types

from shared.adapters.gemini import _model_errors
from shared.errors import ModelError
from shared.ports import BatchAnswer, BatchRow, GeminiBatchJob

CALL_TIMEOUT_S = 60.0
ROW_KEY = "key"  # the metadata key each inline request carries and its answer returns


class GeminiBatchJobs:
    """Implements GeminiBatches."""

    def __init__(self, client: genai.Client) -> None:
        self._batches = client.aio.batches

    async def create(self, *, model: str, rows: list[BatchRow], display_name: str) -> GeminiBatchJob:
        config = types.GenerateContentConfig(response_modalities=["TEXT", "IMAGE"])
        requests = []
        for row in rows:
            parts = [types.Part.from_text(text=row.prompt)]
            if row.image is not None:
                parts.append(types.Part.from_bytes(data=row.image, mime_type=row.mime_type or "image/png"))
            requests.append(
                types.InlinedRequest(
                    contents=[types.Content(role="user", parts=parts)],
                    metadata={ROW_KEY: row.key},
                    config=config,
                )
            )
        async with _model_errors(CALL_TIMEOUT_S):
            job = await self._batches.create(
                model=model, src=requests, config=types.CreateBatchJobConfig(display_name=display_name)
            )
        return _job(job)

    async def get(self, *, name: str) -> GeminiBatchJob | None:
        try:
            async with _model_errors(CALL_TIMEOUT_S):
                return _job(await self._batches.get(name=name))
        except Exception as exc:
            if _not_found(exc):
                return None
            raise

    async def find(self, *, display_name_part: str) -> GeminiBatchJob | None:
        async with _model_errors(CALL_TIMEOUT_S):
            pager = await self._batches.list(config=types.ListBatchJobsConfig(page_size=100))
            async for job in pager:
                if display_name_part in (job.display_name or ""):
                    return _job(job)
        return None

    async def cancel(self, *, name: str) -> None:
        try:
            async with _model_errors(CALL_TIMEOUT_S):
                await self._batches.cancel(name=name)
        except Exception as exc:
            if not _not_found(exc):
                raise

    async def delete(self, *, name: str) -> None:
        try:
            async with _model_errors(CALL_TIMEOUT_S):
                await self._batches.delete(name=name)
        except Exception as exc:
            if not _not_found(exc):
                raise


def _not_found(exc: BaseException) -> bool:
    return isinstance(exc, ModelError) and exc.status == 404


def _job(job: types.BatchJob) -> GeminiBatchJob:
    state = job.state.value if job.state is not None else "JOB_STATE_UNSPECIFIED"
    answers = []
    for inlined in (job.dest.inlined_responses if job.dest else None) or []:
        answers.append(_answer(inlined))
    return GeminiBatchJob(
        name=job.name or "", display_name=job.display_name or "", state=state, answers=answers
    )


def _answer(inlined: types.InlinedResponse) -> BatchAnswer:
    key = (inlined.metadata or {}).get(ROW_KEY, "")
    response = inlined.response
    if response is None or inlined.error is not None:
        message = (inlined.error.message if inlined.error else None) or "the row has no answer"
        code = inlined.error.code if inlined.error else None
        return BatchAnswer(
            key=key,
            image=None,
            mime_type=None,
            text=None,
            error=f"{code}: {message}" if code else message,
            input_tokens=0,
            output_tokens=0,
        )
    image: bytes | None = None
    mime_type: str | None = None
    texts: list[str] = []
    for candidate in response.candidates or []:
        for part in (candidate.content.parts if candidate.content else None) or []:
            if image is None and part.inline_data is not None and part.inline_data.data:
                image, mime_type = part.inline_data.data, part.inline_data.mime_type
            elif part.text:
                texts.append(part.text)
    usage = response.usage_metadata
    return BatchAnswer(
        key=key,
        image=image,
        mime_type=mime_type,
        text="".join(texts) or None,
        error=None,
        input_tokens=(usage.prompt_token_count or 0) if usage else 0,
        output_tokens=(usage.candidates_token_count or 0) if usage else 0,
    )
