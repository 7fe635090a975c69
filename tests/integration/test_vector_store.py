"""The vector store on the real Firestore adapter and emulator: Firestore's own nearest-neighbour search
with metadata pre-filters, idempotent upserts, collections isolated by tenant, a delete that takes all."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from google.cloud import firestore

from shared import runtime
from shared.adapters.vector_store import FirestoreVectorStore
from shared.emulator_config import EmulatorConfig
from shared.ports import CollectionInfo, VectorDocument

DIMENSION = 8
CREATED_AT = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
QUERY = [2.0, 0, 0, 0, 0, 0, 0, 0]  # the direction of "north", at another length


def _vector(*head: float) -> list[float]:
    return [*head, *[0.0] * (DIMENSION - len(head))]


# Cosine similarity to QUERY, by hand: 1, 3/sqrt(10), 1/sqrt(2), 0, -1/sqrt(2).
_ROWS: list[tuple[str, str, dict[str, Any], list[float]]] = [
    ("north", "due north", {"lang": "en", "topic": "geo"}, _vector(1)),
    ("near", "a little east of north", {"lang": "fr"}, _vector(3, 1)),
    ("diagonal", "north-east", {"lang": "en", "topic": "geo"}, _vector(1, 1)),
    ("east", "due east", {"lang": "en"}, _vector(0, 1)),
    ("away", "south and up", {"lang": "fr"}, _vector(-1, 0, 1)),
]
DOCUMENTS = [VectorDocument(doc_id=i, text=t, metadata=m, embedding=e) for i, t, m, e in _ROWS]
BY_SIMILARITY = ["north", "near", "diagonal", "east", "away"]


@pytest.fixture(scope="module")
def store(local_cloud: EmulatorConfig) -> FirestoreVectorStore:
    async def _build() -> FirestoreVectorStore:
        # Built on the runtime's loop: the async client binds to the loop it first runs on.
        return FirestoreVectorStore(firestore.AsyncClient(project=local_cloud.project_id))

    return runtime.run(_build())


@pytest.fixture
def tenant(firestore_db: Any, unique: str) -> Iterator[str]:
    """A tenant of its own; whatever the test leaves under it is deleted afterwards."""
    name = f"vec-{unique}"
    yield name
    firestore_db.recursive_delete(firestore_db.collection("tenants").document(name))


def _info(name: str, *, model: str = "text-embedding-004", dimension: int = DIMENSION) -> CollectionInfo:
    return CollectionInfo(name=name, model=model, dimension=dimension, created_at=CREATED_AT)


def _indexed(store: FirestoreVectorStore, tenant: str, name: str) -> None:
    runtime.run(store.ensure_collection(tenant=tenant, info=_info(name)))
    runtime.run(store.upsert(tenant=tenant, name=name, documents=DOCUMENTS))


def _nearest(
    store: FirestoreVectorStore,
    tenant: str,
    name: str,
    *,
    top_k: int = 10,
    where: dict[str, Any] | None = None,
) -> list[tuple[str, float]]:
    matches = runtime.run(
        store.find_nearest(tenant=tenant, name=name, vector=QUERY, top_k=top_k, where=where or {})
    )
    return [(match.doc_id, match.score) for match in matches]


def _count(store: FirestoreVectorStore, tenant: str, name: str) -> int | None:
    listed = runtime.run(store.list_collections(tenant=tenant))
    return next(info.document_count for info in listed if info.name == name)


def test_nearest_first_with_cosine_scores(store: FirestoreVectorStore, tenant: str, unique: str) -> None:
    name = f"docs-{unique}"

    _indexed(store, tenant, name)
    matches = runtime.run(store.find_nearest(tenant=tenant, name=name, vector=QUERY, top_k=10, where={}))

    assert [m.doc_id for m in matches] == BY_SIMILARITY
    assert [m.score for m in matches] == pytest.approx([1.0, 0.948683, 0.707107, 0.0, -0.707107], abs=1e-6)
    assert (matches[0].text, matches[0].metadata) == ("due north", {"lang": "en", "topic": "geo"})


def test_top_k_and_where_narrow_the_matches(store: FirestoreVectorStore, tenant: str, unique: str) -> None:
    name = f"docs-{unique}"

    _indexed(store, tenant, name)

    assert [doc_id for doc_id, _ in _nearest(store, tenant, name, top_k=2)] == ["north", "near"]
    assert [doc_id for doc_id, _ in _nearest(store, tenant, name, where={"lang": "fr"})] == ["near", "away"]
    both = _nearest(store, tenant, name, where={"lang": "en", "topic": "geo"})
    assert [doc_id for doc_id, _ in both] == ["north", "diagonal"]
    assert _nearest(store, tenant, name, where={"lang": "de"}) == []


def test_a_repeated_upsert_replaces_and_adds_nothing(
    store: FirestoreVectorStore, tenant: str, unique: str
) -> None:
    name = f"docs-{unique}"
    _indexed(store, tenant, name)
    reindexed = VectorDocument(
        doc_id="north", text="due north, again", metadata={"lang": "de"}, embedding=_vector(1)
    )

    runtime.run(store.upsert(tenant=tenant, name=name, documents=DOCUMENTS))
    runtime.run(store.upsert(tenant=tenant, name=name, documents=[reindexed]))

    assert _count(store, tenant, name) == len(DOCUMENTS)
    # Replaced, not merged: the old metadata's "topic" is gone with the rest of it.
    geo = _nearest(store, tenant, name, where={"topic": "geo"})
    assert [doc_id for doc_id, _ in geo] == ["diagonal"]
    top = runtime.run(store.find_nearest(tenant=tenant, name=name, vector=QUERY, top_k=1, where={}))
    assert (top[0].doc_id, top[0].text, top[0].metadata) == ("north", "due north, again", {"lang": "de"})


def test_another_tenant_sees_nothing(store: FirestoreVectorStore, tenant: str, unique: str) -> None:
    name = f"docs-{unique}"
    other = f"{tenant}-other"
    _indexed(store, tenant, name)

    assert runtime.run(store.get_collection(tenant=other, name=name)) is None
    assert runtime.run(store.list_collections(tenant=other)) == []
    assert _nearest(store, other, name) == []
    assert len(_nearest(store, tenant, name)) == len(DOCUMENTS)


def test_ensure_collection_returns_what_is_stored(
    store: FirestoreVectorStore, tenant: str, unique: str
) -> None:
    name = f"docs-{unique}"

    created = runtime.run(store.ensure_collection(tenant=tenant, info=_info(name)))
    again = runtime.run(
        store.ensure_collection(tenant=tenant, info=_info(name, model="other-model", dimension=16))
    )

    assert (created.model, created.dimension) == ("text-embedding-004", DIMENSION)
    assert (again.name, again.model, again.dimension, again.created_at) == (
        name,
        "text-embedding-004",
        DIMENSION,
        CREATED_AT,
    )
    assert runtime.run(store.get_collection(tenant=tenant, name=name)) == again
    assert _nearest(store, tenant, name) == [], "a collection without documents matches nothing"


def test_list_collections_counts_documents_by_name(
    store: FirestoreVectorStore, tenant: str, unique: str
) -> None:
    _indexed(store, tenant, f"b-{unique}")
    runtime.run(store.ensure_collection(tenant=tenant, info=_info(f"a-{unique}")))

    listed = runtime.run(store.list_collections(tenant=tenant))

    assert [(c.name, c.document_count) for c in listed] == [
        (f"a-{unique}", 0),
        (f"b-{unique}", len(DOCUMENTS)),
    ]


def test_delete_collection_removes_everything_once(
    store: FirestoreVectorStore, tenant: str, firestore_db: Any, unique: str
) -> None:
    name = f"docs-{unique}"
    _indexed(store, tenant, name)

    assert runtime.run(store.delete_collection(tenant=tenant, name=name)) is True

    assert runtime.run(store.get_collection(tenant=tenant, name=name)) is None
    assert runtime.run(store.list_collections(tenant=tenant)) == []
    assert _nearest(store, tenant, name) == []
    documents = firestore_db.collection("tenants", tenant, "vector_collections", name, "documents")
    assert list(documents.limit(1).stream()) == []
    assert runtime.run(store.delete_collection(tenant=tenant, name=name)) is False


def test_invalid_arguments_are_refused(store: FirestoreVectorStore, tenant: str, unique: str) -> None:
    name = f"docs-{unique}"
    too_many = [
        VectorDocument(doc_id=f"d{n}", text="t", metadata={}, embedding=_vector(1)) for n in range(501)
    ]

    with pytest.raises(ValueError, match="at most 500"):
        runtime.run(store.upsert(tenant=tenant, name=name, documents=too_many))
    with pytest.raises(ValueError, match="metadata key"):
        runtime.run(store.find_nearest(tenant=tenant, name=name, vector=QUERY, top_k=1, where={"a.b": 1}))
    with pytest.raises(ValueError, match="top_k"):
        runtime.run(store.find_nearest(tenant=tenant, name=name, vector=QUERY, top_k=0, where={}))
    assert runtime.run(store.get_collection(tenant=tenant, name=name)) is None
