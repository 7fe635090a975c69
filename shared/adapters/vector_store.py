"""Firestore adapter for a tenant's vector collections: embedded documents searched by Firestore's own KNN.

Layout (tenants are isolated by the path: every read and write starts from the tenant's document):
  tenants/{tenant}/vector_collections/{name}                 name, model, dimension, created_at
  tenants/{tenant}/vector_collections/{name}/documents/{id}  text, metadata (a map), embedding (a Vector)

Similarity is always computed by Firestore (`find_nearest`, cosine distance), never in Python. In production
the search needs the vector index on `documents.embedding` declared in infra/firestore.indexes.json, and a
`where` pre-filter needs a composite vector index on the metadata fields it filters (the emulator needs none).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter
from google.cloud.firestore_v1.base_vector_query import DistanceMeasure
from google.cloud.firestore_v1.field_path import FieldPath
from google.cloud.firestore_v1.vector import Vector

from shared.adapters.firestore_store import MAX_WRITES_PER_COMMIT, TRANSIENT
from shared.errors import StoreUnavailable
from shared.ports import CollectionInfo, VectorDocument, VectorMatch

TENANTS = "tenants"
VECTOR_COLLECTIONS = "vector_collections"
DOCUMENTS = "documents"
EMBEDDING = "embedding"
DISTANCE = "vector_distance"
MAX_NEIGHBOURS = 1000  # Firestore's bound on a vector query's limit
_METADATA_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _document_id(value: str, *, what: str) -> str:
    # A "/" would turn the id into a path of several segments: the tenant's isolation rests on this check.
    if not value or "/" in value:
        raise ValueError(f"invalid {what}: {value!r}")
    return value


def _dump_collection(info: CollectionInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "model": info.model,
        "dimension": info.dimension,
        "created_at": info.created_at,
    }


def _load_collection(data: dict[str, Any] | None, *, document_count: int | None = None) -> CollectionInfo:
    data = data or {}
    created_at: dt.datetime = data["created_at"]
    return CollectionInfo(
        name=data["name"],
        model=data["model"],
        dimension=int(data["dimension"]),
        created_at=created_at,
        document_count=document_count,
    )


def _dump_document(document: VectorDocument) -> dict[str, Any]:
    return {"text": document.text, "metadata": document.metadata, "embedding": Vector(document.embedding)}


class FirestoreVectorStore:
    """Implements VectorStore on the async Firestore client."""

    def __init__(self, client: firestore.AsyncClient) -> None:
        self._db = client

    # --- references -------------------------------------------------------------------------------

    def _collections(self, tenant: str) -> Any:
        return (
            self._db.collection(TENANTS)
            .document(_document_id(tenant, what="tenant"))
            .collection(VECTOR_COLLECTIONS)
        )

    def _collection_ref(self, tenant: str, name: str) -> Any:
        return self._collections(tenant).document(_document_id(name, what="collection name"))

    def _documents(self, tenant: str, name: str) -> Any:
        return self._collection_ref(tenant, name).collection(DOCUMENTS)

    # --- collections ------------------------------------------------------------------------------

    async def get_collection(self, *, tenant: str, name: str) -> CollectionInfo | None:
        """The collection as stored, None when the tenant has none by that name."""
        ref = self._collection_ref(tenant, name)
        try:
            snapshot = await ref.get()
        except TRANSIENT as exc:
            raise StoreUnavailable(f"cannot read collection: {exc.message}") from exc
        return _load_collection(snapshot.to_dict()) if snapshot.exists else None

    async def ensure_collection(self, *, tenant: str, info: CollectionInfo) -> CollectionInfo:
        """Create the collection if absent; returns the collection as stored (compare model and dimension).

        `create()` makes two concurrent first calls safe: one creates, the other reads what the first wrote.
        """
        ref = self._collection_ref(tenant, info.name)
        data = _dump_collection(info)
        try:
            await ref.create(data)
        except gexc.AlreadyExists:
            stored = await self.get_collection(tenant=tenant, name=info.name)
            if stored is None:  # deleted between our create and our read
                raise StoreUnavailable("collection changed while it was being created") from None
            return stored
        except TRANSIENT as exc:
            raise StoreUnavailable(f"cannot create collection: {exc.message}") from exc
        return _load_collection(data)

    async def list_collections(self, *, tenant: str) -> list[CollectionInfo]:
        """Every collection of the tenant with its document count, by name."""

        async def _count(ref: Any) -> int:
            result = await ref.collection(DOCUMENTS).count(alias="n").get()
            return int(result[0][0].value)

        try:
            snapshots = [s async for s in self._collections(tenant).stream()]
            counts = await asyncio.gather(*(_count(s.reference) for s in snapshots))
        except TRANSIENT as exc:
            raise StoreUnavailable(f"cannot list collections: {exc.message}") from exc
        collections = [
            _load_collection(s.to_dict(), document_count=count)
            for s, count in zip(snapshots, counts, strict=True)
        ]
        return sorted(collections, key=lambda c: c.name)

    async def delete_collection(self, *, tenant: str, name: str) -> bool:
        """Delete the collection and its documents; False when it did not exist.

        The documents go first and the collection document last, so a delete cut short leaves the collection
        listed and a retry finishes it. The client's `recursive_delete` is not used: on the async client it
        runs a thread-based BulkWriter whose flush blocks the event loop.
        """
        ref = self._collection_ref(tenant, name)
        try:
            await self._delete_documents(ref.collection(DOCUMENTS))
            await ref.delete(option=self._db.write_option(exists=True))
        except gexc.NotFound:
            return False
        except TRANSIENT as exc:
            raise StoreUnavailable(f"cannot delete collection: {exc.message}") from exc
        return True

    # --- documents --------------------------------------------------------------------------------

    async def upsert(self, *, tenant: str, name: str, documents: list[VectorDocument]) -> None:
        """Write the documents under their ids (replacing any), in one commit: safe to repeat."""
        if len(documents) > MAX_WRITES_PER_COMMIT:
            raise ValueError(f"at most {MAX_WRITES_PER_COMMIT} documents per upsert, not {len(documents)}")
        if not documents:
            return
        collection = self._documents(tenant, name)
        commit = self._db.batch()
        for document in documents:
            commit.set(
                collection.document(_document_id(document.doc_id, what="doc_id")), _dump_document(document)
            )
        try:
            await commit.commit()
        except TRANSIENT as exc:
            raise StoreUnavailable(f"cannot write documents: {exc.message}") from exc

    async def find_nearest(
        self, *, tenant: str, name: str, vector: list[float], top_k: int, where: dict[str, Any]
    ) -> list[VectorMatch]:
        """The `top_k` documents nearest to `vector` by cosine distance, best first, among those whose
        metadata equals `where` on every key (a pre-filter of Firestore's vector search).

        Raises:
            ValueError: a `where` key that is not a plain identifier, or `top_k` outside 1..1000.
        """
        if not 1 <= top_k <= MAX_NEIGHBOURS:
            raise ValueError(f"top_k must be between 1 and {MAX_NEIGHBOURS}, not {top_k}")
        query: Any = self._documents(tenant, name)
        for key, value in where.items():
            # The key becomes part of a field path: a "." or a backquote would reach outside `metadata`.
            if not _METADATA_KEY.fullmatch(key):
                raise ValueError(f"invalid metadata key: {key!r}")
            query = query.where(filter=FieldFilter(f"metadata.{key}", "==", value))
        # The projection leaves out the embeddings (the bulk of each document); the distance field must be
        # named in it, or it is projected away too.
        nearest = query.select(["text", "metadata", DISTANCE]).find_nearest(
            vector_field=EMBEDDING,
            query_vector=Vector(vector),
            distance_measure=DistanceMeasure.COSINE,
            limit=top_k,
            distance_result_field=DISTANCE,
        )
        try:
            snapshots = [s async for s in nearest.stream()]
        except TRANSIENT as exc:
            raise StoreUnavailable(f"cannot search collection: {exc.message}") from exc
        # Firestore returns the nearest first; the score is its cosine distance turned into a similarity.
        return [
            VectorMatch(
                doc_id=s.id,
                text=data["text"],
                metadata=dict(data.get("metadata") or {}),
                score=round(1 - float(data[DISTANCE]), 6),
            )
            for s in snapshots
            if (data := s.to_dict()) is not None
        ]

    # --- helpers ----------------------------------------------------------------------------------

    async def _delete_documents(self, documents: Any) -> None:
        """Delete every document of the subcollection, a commit of up to 500 at a time."""
        query = documents.select([FieldPath.document_id()]).limit(MAX_WRITES_PER_COMMIT)
        while True:
            page = [s async for s in query.stream()]
            if not page:
                return
            commit = self._db.batch()
            for snapshot in page:
                commit.delete(snapshot.reference)
            await commit.commit()
            if len(page) < MAX_WRITES_PER_COMMIT:
                return
            # A cursor past the last page, rather than a fresh scan that would walk over the deleted entries.
            query = query.start_after(page[-1])
