"""Conformance of the Gemini API emulator, driven only through google-genai (sync and async clients)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from enum import StrEnum
from typing import Literal, TypeVar

import httpx
import pytest
from google import genai
from google.genai import errors, types
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.emulator_config import EmulatorConfig
from tests.conftest import wait_for

MODEL = "gemini-2.5-flash"


@pytest.fixture
def gemini(local_cloud: EmulatorConfig, gemini_control: httpx.Client) -> Iterator[genai.Client]:
    with genai.Client(
        api_key="local", http_options=types.HttpOptions(base_url=local_cloud.emulators.gemini.url)
    ) as client:
        yield client


def test_generate_content_is_deterministic_with_realistic_usage(gemini: genai.Client) -> None:
    config = types.GenerateContentConfig(temperature=0.3, system_instruction="Answer briefly.")
    first = gemini.models.generate_content(model=MODEL, contents="Describe a brake disc", config=config)
    again = gemini.models.generate_content(model=MODEL, contents="Describe a brake disc", config=config)
    other = gemini.models.generate_content(model=MODEL, contents="Describe a gearbox", config=config)

    assert first.text and first.text == again.text != other.text
    usage = first.usage_metadata
    assert usage is not None and usage.prompt_token_count and usage.candidates_token_count
    assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count
    assert again.usage_metadata and again.usage_metadata.cached_content_token_count, "implicit cache hit"
    assert first.model_version == MODEL


def test_max_output_tokens_truncates(gemini: genai.Client) -> None:
    response = gemini.models.generate_content(
        model=MODEL, contents="Write a long story", config=types.GenerateContentConfig(max_output_tokens=3)
    )
    assert response.candidates and response.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert response.usage_metadata and (response.usage_metadata.candidates_token_count or 0) <= 3


class Part(BaseModel):
    name: str
    price: float
    stock: int
    tags: list[str]
    genuine: bool


def test_json_output_follows_the_response_schema(gemini: genai.Client) -> None:
    response = gemini.models.generate_content(
        model=MODEL,
        contents="Extract the part",
        config=types.GenerateContentConfig(response_mime_type="application/json", response_schema=Part),
    )
    assert isinstance(response.parsed, Part)
    json_schema = gemini.models.generate_content(
        model=MODEL,
        contents="Rate it",
        config=types.GenerateContentConfig(
            response_mime_type="application/json",
            response_json_schema={
                "type": "object",
                "properties": {"sentiment": {"type": "string", "enum": ["positive", "negative"]}},
            },
        ),
    )
    assert json.loads(json_schema.text or "")["sentiment"] in ("positive", "negative")


def test_image_models_return_an_inline_png(gemini: genai.Client) -> None:
    response = gemini.models.generate_content(model="gemini-2.5-flash-image", contents="A spare wheel")
    parts = (
        response.candidates[0].content.parts if response.candidates and response.candidates[0].content else []
    )
    images = [p.inline_data for p in parts or [] if p.inline_data]
    assert images and images[0].mime_type == "image/png"
    assert images[0].data and images[0].data.startswith(b"\x89PNG\r\n\x1a\n")


def test_streaming_concatenates_to_the_same_text(gemini: genai.Client) -> None:
    whole = gemini.models.generate_content(model=MODEL, contents="Summarise the order history")
    chunks = list(gemini.models.generate_content_stream(model=MODEL, contents="Summarise the order history"))
    assert len(chunks) > 1
    assert "".join(c.text or "" for c in chunks) == whole.text
    assert chunks[-1].usage_metadata and chunks[-1].usage_metadata.total_token_count


def test_count_tokens(gemini: genai.Client) -> None:
    short = gemini.models.count_tokens(model=MODEL, contents="brake pads")
    long = gemini.models.count_tokens(model=MODEL, contents="brake pads " * 50)
    assert short.total_tokens and long.total_tokens and long.total_tokens > short.total_tokens


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(
        sum(x * x for x in a) * sum(y * y for y in b)
    )


def test_embeddings_are_deterministic_and_shared_words_are_closer(gemini: genai.Client) -> None:
    texts = ["front brake pads for golf", "rear brake pads for golf", "weather forecast for paris"]
    result = gemini.models.embed_content(model="gemini-embedding-001", contents=texts)
    again = gemini.models.embed_content(model="gemini-embedding-001", contents=texts[:1])
    vectors = [e.values or [] for e in result.embeddings or []]
    assert len(vectors) == 3 and len(vectors[0]) == 768
    assert again.embeddings and again.embeddings[0].values == vectors[0]
    assert _cosine(vectors[0], vectors[1]) > _cosine(vectors[0], vectors[2])
    small = gemini.models.embed_content(
        model="gemini-embedding-001", contents="x", config=types.EmbedContentConfig(output_dimensionality=64)
    )
    assert small.embeddings and len(small.embeddings[0].values or []) == 64


def test_batch_mode_lifecycle_with_inline_responses(
    gemini: genai.Client, gemini_control: httpx.Client
) -> None:
    gemini_control.post(
        "/emulator/config", json={"batchPendingMs": 100, "batchRunningMs": 100}
    ).raise_for_status()
    requests = [{"contents": [{"parts": [{"text": f"item {i}"}], "role": "user"}]} for i in range(3)]
    job = gemini.batches.create(model=MODEL, src=requests, config={"display_name": "nightly"})
    assert job.name and job.state == types.JobState.JOB_STATE_PENDING

    done = wait_for(
        lambda: (
            (j := gemini.batches.get(name=job.name or "")).state == types.JobState.JOB_STATE_SUCCEEDED and j
        ),
        timeout=10,
        what="the batch to succeed",
    )
    assert done.dest and done.dest.inlined_responses and len(done.dest.inlined_responses) == 3
    direct = gemini.models.generate_content(model=MODEL, contents="item 0")
    first = done.dest.inlined_responses[-1].response  # responses come back reversed by default
    assert first is not None and first.text == direct.text
    assert job.name in {b.name for b in gemini.batches.list()}

    gemini_control.post("/emulator/config", json={"batchPendingMs": 60_000}).raise_for_status()
    cancelled = gemini.batches.create(model=MODEL, src=requests[:1])
    gemini.batches.cancel(name=cancelled.name or "")
    assert gemini.batches.get(name=cancelled.name or "").state == types.JobState.JOB_STATE_CANCELLED

    gemini.batches.delete(name=job.name)
    with pytest.raises(errors.ClientError) as missing:
        gemini.batches.get(name=job.name)
    assert missing.value.code == 404


def test_injected_429_carries_a_retry_delay(gemini: genai.Client, gemini_control: httpx.Client) -> None:
    gemini_control.post("/emulator/config", json={"errorRate": 1.0, "errorStatus": 429, "retryDelayMs": 1500})
    assert gemini_control.get("/emulator/config").json()["errorRate"] == 1.0

    with pytest.raises(errors.ClientError) as caught:
        gemini.models.generate_content(model=MODEL, contents="hello")

    assert caught.value.code == 429 and caught.value.status == "RESOURCE_EXHAUSTED"
    details = caught.value.details["error"]["details"]
    retry_info = [d for d in details if d["@type"].endswith("google.rpc.RetryInfo")]
    assert retry_info == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.5s"}]


def test_per_prompt_fault_markers_and_unknown_models(gemini: genai.Client) -> None:
    with pytest.raises(errors.ServerError) as server:
        gemini.models.generate_content(model=MODEL, contents="EMULATOR_FAIL_503 please")
    assert server.value.code == 503
    with pytest.raises(errors.ClientError) as unknown:
        gemini.models.generate_content(model="no-such-model", contents="hi")
    assert unknown.value.code == 404


def test_configured_latency_is_applied_to_every_request(
    gemini: genai.Client, gemini_control: httpx.Client
) -> None:
    gemini_control.post("/emulator/config", json={"latencyMs": 300}).raise_for_status()

    for prompt in ("one", "two"):
        started = time.perf_counter()
        gemini.models.generate_content(model=MODEL, contents=prompt)
        # A lower bound, safe on a slow machine.
        assert time.perf_counter() - started >= 0.3


# --- Text analysis: JSON Schemas from pydantic models, answered from the user's text ------------------

SentimentLabel = Literal["positive", "neutral", "negative", "mixed"]


class Emotion(StrEnum):
    JOY = "joy"
    ANGER = "anger"
    SADNESS = "sadness"
    FEAR = "fear"


class AspectSentiment(BaseModel):
    aspect: str
    label: SentimentLabel
    score: float = Field(ge=-1, le=1)


class Sentiment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: SentimentLabel
    score: float = Field(ge=-1, le=1)
    confidence: float = Field(ge=0, le=1)
    aspects: list[AspectSentiment] | None = None
    emotions: list[Emotion] | None = None
    explanation: str | None = Field(default=None, max_length=300)


class Summary(BaseModel):
    summary: str = Field(max_length=200)
    keyPoints: list[str] = Field(min_length=1, max_length=3)  # noqa: N815 - the analysis' JSON names


class Keyword(BaseModel):
    term: str
    relevance: float = Field(gt=0, le=1)


class Keywords(BaseModel):
    keywords: list[Keyword] = Field(min_length=1, max_length=5)


class Entity(BaseModel):
    text: str
    type: Literal["PERSON", "LOCATION", "ORGANIZATION", "OTHER"]
    salience: float = Field(gt=0, le=1)


class Entities(BaseModel):
    entities: list[Entity]


class PartCategory(StrEnum):
    ENGINE = "engine"
    BRAKES = "brakes"
    LIGHTS = "lights"


class Classification(BaseModel):
    category: PartCategory
    confidence: float = Field(ge=0, le=1)


class Language(BaseModel):
    language: str = Field(pattern=r"^[a-z]{2}$")


Analysis = TypeVar("Analysis", bound=BaseModel)
POSITIVE_TEXT = "I love this phone. The battery is excellent and the camera is great."
NEGATIVE_TEXT = "The charger arrived broken. Support was terrible and the manual is awful."
SPANISH_TEXT = "Este es un texto muy positivo y alegre"
ANALYSIS_INSTRUCTION = (
    "Analyse the text. Terrible, awful, broken: such words in this instruction never count."
)


def _analyse(
    gemini: genai.Client, model: type[Analysis], text: str, *, system: str = ANALYSIS_INSTRUCTION
) -> tuple[str, Analysis]:
    """As the analysis worker asks: the text alone as contents, the JSON Schema of a pydantic model."""
    response = gemini.models.generate_content(
        model=MODEL,
        contents=text,
        config=types.GenerateContentConfig(
            system_instruction=system,
            response_mime_type="application/json",
            response_json_schema=model.model_json_schema(),
        ),
    )
    return response.text or "", model.model_validate_json(response.text or "")


@pytest.mark.parametrize(
    ("text", "label"),
    [(POSITIVE_TEXT, "positive"), (NEGATIVE_TEXT, "negative"), (SPANISH_TEXT, "positive")],
)
def test_sentiment_follows_the_opinion_words_of_the_user_text(
    gemini: genai.Client, text: str, label: str
) -> None:
    _, sentiment = _analyse(gemini, Sentiment, text)

    assert sentiment.label == label
    assert sentiment.score > 0 if label == "positive" else sentiment.score < 0
    assert 0.5 < sentiment.confidence <= 0.99
    assert sentiment.explanation and "positive:" in sentiment.explanation


def test_mixed_text_has_aspects_and_emotions_of_their_own(gemini: genai.Client) -> None:
    _, sentiment = _analyse(gemini, Sentiment, "The battery is great but the screen is terrible.")

    assert (sentiment.label, sentiment.score) == ("mixed", 0.0)
    aspects = {a.aspect: (a.label, a.score) for a in sentiment.aspects or []}
    assert aspects == {"battery": ("positive", 1.0), "screen": ("negative", -1.0)}
    assert sentiment.emotions == [Emotion.ANGER, Emotion.JOY]


def test_text_without_opinion_words_is_neutral(gemini: genai.Client) -> None:
    _, sentiment = _analyse(gemini, Sentiment, "The parcel contains two filters and a gasket.")

    assert (sentiment.label, sentiment.score, sentiment.confidence) == ("neutral", 0.0, 0.5)
    assert sentiment.aspects == [] and sentiment.emotions == []


def test_only_the_user_text_counts_not_the_system_instruction(gemini: genai.Client) -> None:
    _, plain = _analyse(gemini, Sentiment, POSITIVE_TEXT, system="Be brief.")
    _, primed = _analyse(gemini, Sentiment, POSITIVE_TEXT, system="Everything is terrible, awful, bad.")

    assert plain.label == primed.label == "positive" and plain.score == primed.score


@pytest.mark.parametrize(("text", "code"), [(SPANISH_TEXT, "es"), (POSITIVE_TEXT, "en")])
def test_language_is_told_by_its_stopwords(gemini: genai.Client, text: str, code: str) -> None:
    _, language = _analyse(gemini, Language, text)

    assert language.language == code


def test_classification_picks_the_category_the_text_mentions(gemini: genai.Client) -> None:
    text = "The car pulls left when braking, and the brakes squeal. The engine runs fine."

    _, classification = _analyse(gemini, Classification, text)

    assert classification.category is PartCategory.BRAKES


def test_summary_and_key_points_are_sentences_of_the_text(gemini: genai.Client) -> None:
    _, summary = _analyse(gemini, Summary, NEGATIVE_TEXT)

    assert summary.summary == "The charger arrived broken."
    assert summary.keyPoints == [
        "The charger arrived broken.",
        "Support was terrible and the manual is awful.",
    ]


def test_keywords_rank_the_most_frequent_word_first(gemini: genai.Client) -> None:
    text = "Brake pads wear fast. The brake disc and the brake caliper were replaced with new pads."

    _, keywords = _analyse(gemini, Keywords, text)

    terms = [k.term for k in keywords.keywords]
    relevances = [k.relevance for k in keywords.keywords]
    assert terms[:2] == ["brake", "pads"]
    assert relevances[0] == 1.0 and relevances == sorted(relevances, reverse=True)


def test_entities_are_capitalised_words_inside_sentences(gemini: genai.Client) -> None:
    text = "Yesterday Maria drove from Madrid to the Toyota dealer. She met Maria there."

    _, entities = _analyse(gemini, Entities, text)

    found = {(e.text, e.type) for e in entities.entities}
    assert found == {("Maria", "PERSON"), ("Madrid", "LOCATION"), ("Toyota", "ORGANIZATION")}
    assert entities.entities[0].text == "Maria", "the most mentioned comes first"


def test_the_same_request_gives_the_same_answer(gemini: genai.Client) -> None:
    first, _ = _analyse(gemini, Sentiment, NEGATIVE_TEXT)
    again, _ = _analyse(gemini, Sentiment, NEGATIVE_TEXT)

    assert first == again


def test_the_legacy_response_schema_path_is_analysed_too(gemini: genai.Client) -> None:
    response = gemini.models.generate_content(
        model=MODEL,
        contents=SPANISH_TEXT,
        config=types.GenerateContentConfig(response_mime_type="application/json", response_schema=Sentiment),
    )

    assert isinstance(response.parsed, Sentiment)
    assert response.parsed.label == "positive" and response.parsed.score > 0
    assert Sentiment.model_validate_json(response.text or "") == response.parsed


def test_invalid_json_marker_gives_an_answer_that_is_not_json(gemini: genai.Client) -> None:
    with pytest.raises(ValidationError) as caught:
        _analyse(gemini, Sentiment, f"{POSITIVE_TEXT} EMULATOR_INVALID_JSON")

    assert caught.value.errors()[0]["type"] == "json_invalid"


def test_break_schema_marker_gives_json_the_schema_rejects(gemini: genai.Client) -> None:
    response = gemini.models.generate_content(
        model=MODEL,
        contents=f"{POSITIVE_TEXT} EMULATOR_BREAK_SCHEMA",
        config=types.GenerateContentConfig(
            response_mime_type="application/json", response_json_schema=Sentiment.model_json_schema()
        ),
    )

    answer = json.loads(response.text or "")
    with pytest.raises(ValidationError) as caught:
        Sentiment.model_validate(answer)
    failures = {(e["loc"][0], e["type"]) for e in caught.value.errors()}
    assert failures == {("label", "literal_error"), ("score", "less_than_equal"), ("confidence", "missing")}


def test_the_call_log_counts_every_answered_call_by_its_marker(
    gemini: genai.Client, gemini_control: httpx.Client, unique: str
) -> None:
    marker = f"EMULATOR_MARK_log{unique}"
    gemini.models.generate_content(model=MODEL, contents=f"Describe {marker}-0 a brake disc")
    gemini.models.embed_content(
        model="gemini-embedding-001", contents=[f"{marker}-1 gear", f"{marker}-2 pad"]
    )
    with pytest.raises(errors.ClientError):
        gemini.models.generate_content(model=MODEL, contents=f"{marker}-3 EMULATOR_FAIL_429")
    gemini.models.generate_content(model=MODEL, contents="no marker at all")

    calls = gemini_control.get("/emulator/calls", params={"marker": marker}).json()["calls"]

    assert [(c["method"], c["status"], c["markers"]) for c in calls] == [
        ("generateContent", 200, [f"{marker}-0"]),
        ("batchEmbedContents", 200, [f"{marker}-1", f"{marker}-2"]),
        ("generateContent", 429, [f"{marker}-3"]),
    ]
    gemini_control.delete("/emulator/calls").raise_for_status()
    assert gemini_control.get("/emulator/calls", params={"marker": marker}).json()["calls"] == []
