"""The kinds' pure parts: how requests become items, stages and entries, how entries fold, what an analysis
answer must look like; and the engine's chunking of stages. No emulator."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

from shared.kinds.analyze import AnalysisType, output_model
from shared.kinds.base import Plan, Ports
from shared.kinds.embeddings import Document, Embeddings, EmbeddingsRequest, document_id
from shared.kinds.registry import KINDS
from shared.ports import CollectionInfo
from shared.services.chunking import CHUNK_BYTE_BUDGET, build_chunks
from shared.settings import Settings


class Collections:
    """The part of VectorStore a plan reads: the collections `names`, of the default model and dimension."""

    def __init__(self, *names: str) -> None:
        now = dt.datetime.now(dt.UTC)
        self._infos = {
            n: CollectionInfo(name=n, model="gemini-embedding-001", dimension=768, created_at=now)
            for n in names
        }

    async def get_collection(self, *, tenant: str, name: str) -> CollectionInfo | None:
        return self._infos.get(name)


def ports(settings: Settings, *collections: str) -> Ports:
    return Ports(
        model=None,  # type: ignore[arg-type]
        embedder=None,  # type: ignore[arg-type]
        vectors=Collections(*collections),  # type: ignore[arg-type]
        blobs=None,  # type: ignore[arg-type]
        settings=settings,
        clock=lambda: dt.datetime.now(dt.UTC),
    )


def docs(count: int, prefix: str = "doc") -> list[dict[str, Any]]:
    return [{"text": f"{prefix} {i}"} for i in range(count)]


def test_every_kind_is_registered_under_its_name() -> None:
    assert set(KINDS) == {"generate", "embeddings", "analyze", "images", "metrics", "report", "batchmode"}
    assert all(name == kind.name for name, kind in KINDS.items())


def test_operations_on_one_collection_keep_their_order_in_stages() -> None:
    request = EmbeddingsRequest.model_validate(
        {
            "operations": [
                {"type": "index", "name": "kb", "documents": docs(250)},
                {"type": "search", "name": "kb", "query": "q"},  # after the index of kb: a new stage
                {"type": "search", "name": "other", "query": "q"},  # nothing indexes `other`: same stage
                {"type": "search", "name": "kb", "query": "q2"},  # two searches of kb: same stage
                {
                    "type": "index",
                    "name": "other",
                    "documents": docs(10),
                },  # after a search of other: new stage
            ]
        }
    )
    settings = Settings()

    plan = asyncio.run(Embeddings().plan(request, tenant="t", batch_id="b", ports=ports(settings, "other")))

    assert [len(item.documents) if item.type == "index" else item.type for item in plan.items] == [
        100,
        100,
        50,
        "search",
        "search",
        "search",
        10,
    ]
    assert plan.entry_starts == [0, 3, 4, 5, 6]
    assert plan.stage_starts == [0, 3, 6]
    assert plan.params == {
        "model": "gemini-embedding-001",
        "dimension": 768,
        "types": ["index", "search", "search", "search", "index"],
    }


def test_a_search_of_a_collection_nobody_indexes_is_refused() -> None:
    request = EmbeddingsRequest.model_validate(
        {"operations": [{"type": "search", "name": "kb", "query": "q"}]}
    )

    with pytest.raises(Exception) as caught:
        asyncio.run(Embeddings().plan(request, tenant="t", batch_id="b", ports=ports(Settings())))

    assert caught.value.details[0]["field"] == "operations.0.name"  # type: ignore[attr-defined]


def test_document_ids_are_given_or_derived_from_content() -> None:
    same = document_id(Document(text="oil filter", metadata={"brand": "x"}))

    assert same == document_id(Document(text="oil filter", metadata={"brand": "x"}))
    assert same != document_id(Document(text="oil filter", metadata={"brand": "y"}))
    assert document_id(Document(text="oil filter", metadata={"id": "sku-1"})) == "sku-1"


def test_an_index_operation_folds_its_items_into_one_result() -> None:
    lines = [
        {
            "status": "succeeded",
            "success": True,
            "indexed": 100,
            "documentIds": ["a"],
            "tokens": {"total": 5},
        },
        {
            "status": "failed",
            "success": False,
            "error": {"code": "model_error", "message": "boom"},
            "tokens": {"total": 0},
        },
        {
            "status": "succeeded",
            "success": True,
            "indexed": 2,
            "documentIds": ["b", "c"],
            "tokens": {"total": 3},
        },
    ]

    folded = Embeddings().fold(4, lines, {"types": ["search"] * 4 + ["index"]})

    assert folded["index"] == 4 and folded["type"] == "index"
    assert (folded["status"], folded["success"], folded["indexed"]) == ("failed", False, 102)
    assert folded["documentIds"] == ["a", "b", "c"]
    assert folded["error"]["code"] == "model_error"
    assert folded["tokensUsed"] == 8


def test_a_search_not_yet_run_folds_to_pending_without_matches() -> None:
    folded = Embeddings().fold(
        0, [{"index": 7, "status": "pending", "success": False}], {"types": ["search"]}
    )

    assert (folded["type"], folded["status"], folded["matches"]) == ("search", "pending", [])


def test_a_classification_answer_must_name_an_offered_category() -> None:
    model = output_model(
        AnalysisType.CLASSIFICATION, detailed=False, confidence=True, categories=("engine", "brakes")
    )

    assert model.model_validate_json('{"category": "brakes", "confidence": 0.9}')
    with pytest.raises(ValidationError):
        model.model_validate_json('{"category": "tyres", "confidence": 0.9}')
    with pytest.raises(ValidationError):
        model.model_validate_json('{"category": "brakes", "confidence": 0.9, "extra": 1}')
    assert model.model_json_schema()["properties"]["category"]["enum"] == ["engine", "brakes"]


def test_a_sentiment_answer_keeps_its_ranges() -> None:
    model = output_model(AnalysisType.SENTIMENT, detailed=True, confidence=False, categories=None)

    with pytest.raises(ValidationError):
        model.model_validate_json(
            '{"label": "positive", "score": 3, "aspects": [], "emotions": [], "explanation": ""}'
        )
    with pytest.raises(ValidationError):
        model.model_validate_json(
            '{"label": "ecstatic", "score": 0.5, "aspects": [], "emotions": [], "explanation": ""}'
        )


class Item(BaseModel):
    text: str


ITEMS = TypeAdapter(list[Item])


def test_a_chunk_is_its_items_json_and_a_chunk_past_its_byte_budget_is_split_by_bytes() -> None:
    settings = Settings(batch_chunk_size=10)
    small = Plan(items=[Item(text=str(i)) for i in range(25)], custom_ids=[f"c{i}" for i in range(25)])
    large = Plan(items=[Item(text="x" * 300_000) for _ in range(7)], custom_ids=[None] * 7)

    chunks, _, _ = build_chunks(batch_id="b", owner="t", plan=small, concurrency=1, settings=settings)
    split, _, _ = build_chunks(batch_id="b", owner="t", plan=large, concurrency=1, settings=settings)

    assert [(c.index, c.start, c.end) for c in chunks] == [(0, 0, 10), (1, 10, 20), (2, 20, 25)]
    assert ITEMS.validate_json(chunks[1].items) == small.items[10:20]
    assert chunks[2].custom_ids == ["c20", "c21", "c22", "c23", "c24"]
    # 800 KB a chunk: two items of 300 KB each, whatever the chunk size
    assert [(c.start, c.end) for c in split] == [(0, 2), (2, 4), (4, 6), (6, 7)]
    assert all(len(c.items) <= CHUNK_BYTE_BUDGET for c in split)


def test_chunks_never_span_two_stages_and_each_stage_plans_its_lanes() -> None:
    settings = Settings(batch_chunk_size=30, batch_lane_concurrency=2)
    plan = Plan(
        items=[Item(text=str(i)) for i in range(100)], custom_ids=[None] * 100, stage_starts=[0, 45, 50]
    )

    chunks, stages, _ = build_chunks(batch_id="b", owner="t", plan=plan, concurrency=4, settings=settings)

    assert [(c.start, c.end) for c in chunks] == [(0, 23), (23, 45), (45, 50), (50, 75), (75, 100)]
    assert [(s.first, s.count, s.lanes) for s in stages] == [(0, 2, 2), (2, 1, 1), (3, 2, 2)]
    # Each stage's lanes split the batch's concurrency among them.
    assert [c.concurrency for c in chunks] == [2, 2, 4, 2, 2]
