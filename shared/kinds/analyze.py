"""Batch analysis (`POST /batch/analyze`): one item per text, one Gemini call asking for JSON.

Each analysis type is a pydantic model; Gemini is given its JSON Schema and what comes back is validated
against the same model. Model output is untrusted: an answer that is not JSON, breaks the schema or names a
category that was not offered is asked for once more, then the item fails with `invalid_model_output`. It is
never returned as a success.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from enum import StrEnum
from functools import lru_cache
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model
from pydantic.alias_generators import to_camel

from shared.kinds.base import ItemContext, ItemFailed, Kind, KindRequest, Plan, Ports
from shared.kinds.generate import MODEL_PATTERN
from shared.models.batch import BatchOptions
from shared.models.common import ClientModel
from shared.ports import ModelCall
from shared.settings import Settings

MAX_TEXT_CHARS = 100_000
OUTPUT_ATTEMPTS = 2  # an invalid answer is asked for once more


class AnalysisType(StrEnum):
    SENTIMENT = "sentiment"
    SUMMARY = "summary"
    KEYWORDS = "keywords"
    ENTITIES = "entities"
    CLASSIFICATION = "classification"
    LANGUAGE = "language"


class TextItem(ClientModel):
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    custom_id: str | None = Field(default=None, max_length=256)


class AnalyzeOptions(BatchOptions):
    include_confidence: bool = False
    detailed_analysis: bool = False
    categories: list[Annotated[str, Field(min_length=1, max_length=100)]] | None = Field(
        default=None, min_length=1, max_length=100
    )
    model: str | None = Field(default=None, max_length=100, pattern=MODEL_PATTERN)


class AnalyzeRequest(KindRequest):
    texts: list[Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS)] | TextItem] = Field(
        min_length=1
    )
    analysis_type: AnalysisType
    options: AnalyzeOptions = AnalyzeOptions()


class StoredText(BaseModel):
    text: str


# --- what Gemini is asked for, per type -------------------------------------------------------------------


class _Output(BaseModel):
    """An answer of the model: camelCase keys, nothing else allowed."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)


Polarity = Literal["positive", "neutral", "negative", "mixed"]


class Aspect(_Output):
    aspect: str
    label: Polarity


class Keyword(_Output):
    term: str = Field(min_length=1)
    relevance: float = Field(ge=0.0, le=1.0)


class Entity(_Output):
    text: str = Field(min_length=1)
    type: str
    salience: float = Field(ge=0.0, le=1.0)


LANGUAGE_CODE = r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$"

# The fields of each type's answer, then the ones added by detailedAnalysis.
FIELDS: dict[AnalysisType, dict[str, Any]] = {
    AnalysisType.SENTIMENT: {"label": (Polarity, ...), "score": (float, Field(ge=-1.0, le=1.0))},
    AnalysisType.SUMMARY: {"summary": (str, Field(min_length=1))},
    AnalysisType.KEYWORDS: {"keywords": (list[Keyword], ...)},
    AnalysisType.ENTITIES: {"entities": (list[Entity], ...)},
    AnalysisType.CLASSIFICATION: {},  # `category`, from the offered categories
    AnalysisType.LANGUAGE: {"language": (str, Field(pattern=LANGUAGE_CODE))},
}
DETAILED: dict[AnalysisType, dict[str, Any]] = {
    AnalysisType.SENTIMENT: {
        "aspects": (list[Aspect], ...),
        "emotions": (list[str], ...),
        "explanation": (str, ...),
    },
    AnalysisType.SUMMARY: {"key_points": (list[str], ...)},
}
INSTRUCTIONS: dict[AnalysisType, str] = {
    AnalysisType.SENTIMENT: "Classify the sentiment of the user's text: label positive, neutral, negative or "
    "mixed, and a score from -1 (most negative) to 1 (most positive).",
    AnalysisType.SUMMARY: "Summarise the user's text in one or two sentences, in its own language.",
    AnalysisType.KEYWORDS: "List the key terms of the user's text with a relevance from 0 to 1, most "
    "relevant first.",
    AnalysisType.ENTITIES: "List the named entities of the user's text: their text, type (PERSON, "
    "ORGANIZATION, LOCATION, PRODUCT, OTHER) and salience from 0 to 1.",
    AnalysisType.CLASSIFICATION: "Classify the user's text into exactly one of the given categories.",
    AnalysisType.LANGUAGE: "Identify the language of the user's text as a BCP-47 code (e.g. en, es, pt-BR).",
}
DETAIL_INSTRUCTIONS: dict[AnalysisType, str] = {
    AnalysisType.SENTIMENT: " Also give the aspects the text judges with their own label, the emotions it "
    "shows and a one-line explanation.",
    AnalysisType.SUMMARY: " Also list its key points.",
}


@lru_cache(maxsize=256)
def output_model(
    analysis_type: AnalysisType, *, detailed: bool, confidence: bool, categories: tuple[str, ...] | None
) -> type[_Output]:
    """The pydantic model of one type's answer, with the options' extra fields."""
    fields = dict(FIELDS[analysis_type])
    if analysis_type is AnalysisType.CLASSIFICATION:
        assert categories
        fields["category"] = (Literal[categories], ...)
    if detailed:
        fields |= DETAILED.get(analysis_type, {})
    if confidence:
        fields["confidence"] = (float, Field(ge=0.0, le=1.0))
    name = f"{analysis_type.value.capitalize()}Analysis"
    model: type[_Output] = create_model(name, __base__=_Output, **fields)
    return model


@lru_cache(maxsize=256)
def _schema(model: type[_Output]) -> dict[str, Any]:
    return model.model_json_schema(by_alias=True)


class Analyze(Kind[AnalyzeRequest, StoredText]):
    name: ClassVar[str] = "analyze"
    request_model: ClassVar[type[KindRequest]] = AnalyzeRequest
    item_adapter: ClassVar[TypeAdapter[Any]] = TypeAdapter(list[StoredText])
    summarizes: ClassVar[bool] = True

    def limits(self, request: AnalyzeRequest, *, settings: Settings) -> list[dict[str, Any]]:
        problems: list[dict[str, Any]] = []
        if len(request.texts) > settings.batch_max_requests:
            problems.append({"field": "texts", "problem": f"at most {settings.batch_max_requests} texts"})
        categories = request.options.categories
        if request.analysis_type is AnalysisType.CLASSIFICATION and not categories:
            problems.append({"field": "options.categories", "problem": "required for classification"})
        if categories and len(set(categories)) != len(categories):
            problems.append({"field": "options.categories", "problem": "categories must be distinct"})
        return problems

    async def plan(
        self, request: AnalyzeRequest, *, tenant: str, batch_id: str, ports: Ports
    ) -> Plan[StoredText]:
        texts = [TextItem(text=text) if isinstance(text, str) else text for text in request.texts]
        options = request.options
        return Plan(
            items=[StoredText(text=text.text) for text in texts],
            custom_ids=[text.custom_id for text in texts],
            params={
                "analysisType": request.analysis_type.value,
                "model": options.model or ports.settings.analyze_default_model,
                "detailed": options.detailed_analysis,
                "confidence": options.include_confidence,
                "categories": options.categories,
            },
        )

    async def run(self, item: StoredText, ctx: ItemContext) -> dict[str, Any]:
        params = ctx.params
        analysis_type = AnalysisType(params["analysisType"])
        categories = tuple(params["categories"]) if params.get("categories") else None
        detailed, confidence = bool(params["detailed"]), bool(params["confidence"])
        model = output_model(analysis_type, detailed=detailed, confidence=confidence, categories=categories)
        instruction = INSTRUCTIONS[analysis_type] + (
            DETAIL_INSTRUCTIONS.get(analysis_type, "") if detailed else ""
        )
        if categories:
            instruction += " Categories: " + ", ".join(categories) + "."
        if confidence:
            instruction += " Give your confidence from 0 to 1."
        call = ModelCall(
            model=str(params["model"]),
            prompt=item.text,
            system_instruction=instruction,
            temperature=0.0,
            max_tokens=None,
            timeout_s=ctx.timeout_s,
            response_schema=_schema(model),
        )
        problem = ""
        for _ in range(OUTPUT_ATTEMPTS):
            reply = await ctx.generate(call)
            try:
                answer = model.model_validate_json(reply.text)
            except ValidationError as exc:
                problem = str(exc.errors(include_url=False, include_input=False)[:3])
                continue
            return {"analysisType": analysis_type.value, "analysis": answer.model_dump(by_alias=True)}
        raise ItemFailed(
            f"the model's answer did not match the {analysis_type.value} schema twice: {problem}"[:2000],
            code="invalid_model_output",
        )

    def summarize(self, entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """How the answers are spread: by label, category or language for the types that have one."""
        for field, key in (("label", "byLabel"), ("category", "byCategory"), ("language", "byLanguage")):
            values = [entry["analysis"].get(field) for entry in entries if entry.get("analysis")]
            if any(value is not None for value in values):
                return {key: dict(Counter(str(value) for value in values if value is not None))}
        return {}
