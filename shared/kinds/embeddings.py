"""Batch embeddings (`POST /batch/embeddings`): index documents into named collections of a tenant, search.

An index operation runs as items of up to 100 documents (one batchEmbedContents call and one Firestore commit
each), so a large index runs in parallel within the batch's concurrency; its result is folded back into one
entry per operation. Operations on the same collection keep their order: an operation that touches a
collection an earlier one of the batch indexes into (or an index into a collection an earlier one touches)
starts a new stage, which runs once the stages before it are finished.

A document's id is its `metadata.id`, or else a digest of its text and metadata, so indexing twice (or a
delivery that runs twice) writes the same documents again instead of adding copies.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, Field, TypeAdapter

from shared.errors import InvalidRequest
from shared.kinds.base import ItemContext, ItemFailed, Kind, KindRequest, Plan, Ports
from shared.kinds.generate import MODEL_PATTERN
from shared.models.batch import BatchOptions
from shared.models.common import ClientModel
from shared.ports import CollectionInfo, EmbedCall, VectorDocument
from shared.settings import Settings

COLLECTION_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$"
METADATA_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")
DOCUMENT_ID = re.compile(r"^(?!\.\.?$)(?!__.*__$)[^/]{1,500}$")
# About 2,048 tokens, Gemini embedding models' input limit; with the metadata cap, a search's 100 matches fit
# a result page (Firestore's 1 MiB per document).
MAX_TEXT_CHARS = 8_000
MAX_METADATA_BYTES = 1_024
EMBED_BATCH = 100  # texts per batchEmbedContents call (the API's limit)
ITEM_BYTE_BUDGET = 256 * 1024  # of document text per item, so a chunk of items stays within its budget

FilterValue = str | int | float | bool
# What Firestore stores: 64-bit integers, maps and arrays nested at most 20 deep (kept well inside).
INT64 = (-(2**63), 2**63 - 1)
MAX_METADATA_DEPTH = 8


def unstorable(value: Any, *, depth: int = 0) -> str | None:
    """Why Firestore cannot store this JSON value (an integer past 64 bits, nesting too deep), or None."""
    if isinstance(value, bool) or value is None or isinstance(value, str | float):
        return None
    if isinstance(value, int):
        return None if INT64[0] <= value <= INT64[1] else "integers must fit in 64 bits"
    if depth >= MAX_METADATA_DEPTH:
        return f"nested at most {MAX_METADATA_DEPTH} deep"
    children = value.values() if isinstance(value, dict) else value
    return next((found for child in children if (found := unstorable(child, depth=depth + 1))), None)


class Document(ClientModel):
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    metadata: dict[str, Any] = {}


class IndexOperation(ClientModel):
    type: Literal["index"]
    name: str = Field(pattern=COLLECTION_NAME)
    documents: list[Document] = Field(min_length=1)


class SearchOperation(ClientModel):
    type: Literal["search"]
    name: str = Field(pattern=COLLECTION_NAME)
    query: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    top_k: int = Field(default=5, ge=1, le=100)
    filter: dict[str, FilterValue] = {}


class EmbeddingsOptions(BatchOptions):
    model: str | None = Field(default=None, max_length=100, pattern=MODEL_PATTERN)
    output_dimensionality: int | None = Field(default=None, ge=1, le=2048)


class EmbeddingsRequest(KindRequest):
    operations: list[Annotated[IndexOperation | SearchOperation, Field(discriminator="type")]] = Field(
        min_length=1
    )
    options: EmbeddingsOptions = EmbeddingsOptions()


class StoredDocument(BaseModel):
    id: str
    text: str
    metadata: dict[str, Any] = {}


class IndexItem(BaseModel):
    """Up to 100 documents of one index operation."""

    type: Literal["index"] = "index"
    name: str
    documents: list[StoredDocument]


class SearchItem(BaseModel):
    type: Literal["search"] = "search"
    name: str
    query: str
    top_k: int
    filter: dict[str, FilterValue] = {}


EmbeddingsItem = Annotated[IndexItem | SearchItem, Field(discriminator="type")]


def document_id(document: Document) -> str:
    """`metadata.id` when given, else a digest of the text and metadata: the same document, the same id."""
    given = document.metadata.get("id")
    if given is not None:
        return str(given)
    canonical = json.dumps({"text": document.text, "metadata": document.metadata}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


class Embeddings(Kind[EmbeddingsRequest, IndexItem | SearchItem]):
    name: ClassVar[str] = "embeddings"
    request_model: ClassVar[type[KindRequest]] = EmbeddingsRequest
    item_adapter: ClassVar[TypeAdapter[Any]] = TypeAdapter(list[EmbeddingsItem])

    def limits(self, request: EmbeddingsRequest, *, settings: Settings) -> list[dict[str, Any]]:
        problems: list[dict[str, Any]] = []
        if len(request.operations) > settings.batch_max_requests:
            problems.append(
                {"field": "operations", "problem": f"at most {settings.batch_max_requests} operations"}
            )
        documents = sum(len(op.documents) for op in request.operations if isinstance(op, IndexOperation))
        if documents > settings.embeddings_max_documents:
            problems.append(
                {"field": "operations", "problem": f"at most {settings.embeddings_max_documents} documents"}
            )
        for number, operation in enumerate(request.operations):
            if isinstance(operation, SearchOperation):
                problems += [
                    {
                        "field": f"operations.{number}.filter.{key}",
                        "problem": "a letter or _, then [A-Za-z0-9_]",
                    }
                    for key in operation.filter
                    if not METADATA_KEY.match(key)
                ]
                problems += [
                    {"field": f"operations.{number}.filter.{key}", "problem": problem}
                    for key, value in operation.filter.items()
                    if (problem := unstorable(value))
                ]
                continue
            for position, document in enumerate(operation.documents):
                field = f"operations.{number}.documents.{position}.metadata"
                if len(json.dumps(document.metadata)) > MAX_METADATA_BYTES:
                    problems.append(
                        {"field": field, "problem": f"at most {MAX_METADATA_BYTES} bytes as JSON"}
                    )
                elif problem := unstorable(document.metadata):
                    problems.append({"field": field, "problem": problem})
                given = document.metadata.get("id")
                if given is not None and not (isinstance(given, str | int) and DOCUMENT_ID.match(str(given))):
                    problems.append(
                        {"field": f"{field}.id", "problem": "a string of 1 to 500 characters without '/'"}
                    )
        return problems

    async def plan(
        self, request: EmbeddingsRequest, *, tenant: str, batch_id: str, ports: Ports
    ) -> Plan[IndexItem | SearchItem]:
        settings = ports.settings
        model = (request.options.model or settings.embeddings_default_model).removeprefix("models/")
        dimension = request.options.output_dimensionality or settings.embeddings_default_dimension
        await _check_collections(request, tenant=tenant, model=model, dimension=dimension, ports=ports)
        items: list[IndexItem | SearchItem] = []
        entry_starts: list[int] = []
        stage_starts: list[int] = [0]
        touched: dict[str, set[str]] = {}  # collection -> the operation types of the current stage on it
        for operation in request.operations:
            kinds_on_it = touched.get(operation.name, set())
            if kinds_on_it and (operation.type == "index" or "index" in kinds_on_it):
                stage_starts.append(len(items))
                touched = {}
            touched.setdefault(operation.name, set()).add(operation.type)
            entry_starts.append(len(items))
            if isinstance(operation, SearchOperation):
                items.append(
                    SearchItem(
                        name=operation.name,
                        query=operation.query,
                        top_k=operation.top_k,
                        filter=operation.filter,
                    )
                )
            else:
                items += _index_items(operation)
        return Plan(
            items=items,
            custom_ids=[None] * len(items),
            params={"model": model, "dimension": dimension, "types": [op.type for op in request.operations]},
            entry_starts=entry_starts,
            stage_starts=stage_starts,
        )

    async def run(self, item: IndexItem | SearchItem, ctx: ItemContext) -> dict[str, Any]:
        model, dimension = str(ctx.params["model"]), int(ctx.params["dimension"])
        vectors = ctx.ports.vectors
        if isinstance(item, IndexItem):
            wanted = CollectionInfo(
                name=item.name, model=model, dimension=dimension, created_at=ctx.ports.clock()
            )
            stored = await vectors.ensure_collection(tenant=ctx.tenant, info=wanted)
            _check_same_space(stored, model=model, dimension=dimension)
            reply = await ctx.embed(
                EmbedCall(
                    model=model,
                    texts=[document.text for document in item.documents],
                    dimension=dimension,
                    task_type="RETRIEVAL_DOCUMENT",
                    timeout_s=ctx.timeout_s,
                )
            )
            await vectors.upsert(
                tenant=ctx.tenant,
                name=item.name,
                documents=[
                    VectorDocument(doc_id=d.id, text=d.text, metadata=d.metadata, embedding=vector)
                    for d, vector in zip(item.documents, reply.vectors, strict=True)
                ],
            )
            return {
                "type": "index",
                "indexed": len(item.documents),
                "documentIds": [d.id for d in item.documents],
            }
        collection = await vectors.get_collection(tenant=ctx.tenant, name=item.name)
        if collection is None:
            raise ItemFailed(f"no collection {item.name}", code="collection_not_found")
        _check_same_space(collection, model=model, dimension=dimension)
        reply = await ctx.embed(
            EmbedCall(
                model=model,
                texts=[item.query],
                dimension=dimension,
                task_type="RETRIEVAL_QUERY",
                timeout_s=ctx.timeout_s,
            )
        )
        matches = await vectors.find_nearest(
            tenant=ctx.tenant, name=item.name, vector=reply.vectors[0], top_k=item.top_k, where=item.filter
        )
        return {
            "type": "search",
            "matches": [
                {"id": match.doc_id, "text": match.text, "metadata": match.metadata, "score": match.score}
                for match in matches
            ],
        }

    def fold(self, entry: int, lines: Sequence[dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
        """An operation's result from its items': an index operation sums its items' documents."""
        statuses = {line["status"] for line in lines}
        status = next(s for s in ("failed", "cancelled", "pending", "succeeded") if s in statuses)
        kind = params["types"][entry]
        result: dict[str, Any] = {
            "index": entry,
            "type": kind,
            "status": status,
            "success": status == "succeeded",
        }
        done = [line for line in lines if line.get("success")]
        if kind == "search":
            result["matches"] = done[0]["matches"] if done else []
        else:
            result["indexed"] = sum(line["indexed"] for line in done)
            result["documentIds"] = [document for line in done for document in line["documentIds"]]
        result["error"] = next((line["error"] for line in lines if line.get("error")), None)
        tokens = {
            key: sum(line.get("tokens", {}).get(key, 0) for line in lines)
            for key in ("input", "output", "cached", "total")
        }
        result["tokensUsed"] = tokens["total"]
        result["tokens"] = tokens
        result["processingTime"] = max((line.get("processingTime") or 0) for line in lines)
        result["attempts"] = max((line.get("attempts") or 0) for line in lines)
        return result

    def summarize(self, entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return {
            "documentsIndexed": sum(entry.get("indexed", 0) for entry in entries),
            "searches": sum(1 for entry in entries if "matches" in entry),
        }


def _index_items(operation: IndexOperation) -> list[IndexItem]:
    """The operation's documents in items of up to 100 (and ITEM_BYTE_BUDGET of text)."""
    items: list[IndexItem] = []
    current: list[StoredDocument] = []
    size = 0
    for document in operation.documents:
        if current and (len(current) >= EMBED_BATCH or size + len(document.text) > ITEM_BYTE_BUDGET):
            items.append(IndexItem(name=operation.name, documents=current))
            current, size = [], 0
        current.append(
            StoredDocument(id=document_id(document), text=document.text, metadata=document.metadata)
        )
        size += len(document.text)
    items.append(IndexItem(name=operation.name, documents=current))
    return items


def _check_same_space(collection: CollectionInfo, *, model: str, dimension: int) -> None:
    if (collection.model, collection.dimension) != (model, dimension):
        raise ItemFailed(
            f"collection {collection.name} holds {collection.model} vectors of {collection.dimension} "
            f"dimensions, not {model} of {dimension}",
            code="collection_mismatch",
        )


async def _check_collections(
    request: EmbeddingsRequest, *, tenant: str, model: str, dimension: int, ports: Ports
) -> None:
    """400 for a search on a collection that neither exists nor is indexed earlier in the batch, and for an
    operation on a collection of another model or dimension. Nothing is written."""
    names = sorted({operation.name for operation in request.operations})
    existing = {name: await ports.vectors.get_collection(tenant=tenant, name=name) for name in names}
    indexed: set[str] = set()
    problems: list[dict[str, Any]] = []
    for number, operation in enumerate(request.operations):
        collection = existing[operation.name]
        if collection is not None and (collection.model, collection.dimension) != (model, dimension):
            problems.append(
                {
                    "field": f"operations.{number}.name",
                    "problem": f"collection {operation.name} holds {collection.model} vectors of "
                    f"{collection.dimension} dimensions; options.model and options.outputDimensionality "
                    "must match",
                }
            )
        elif isinstance(operation, SearchOperation) and collection is None and operation.name not in indexed:
            problems.append(
                {"field": f"operations.{number}.name", "problem": f"no collection {operation.name}"}
            )
        if isinstance(operation, IndexOperation):
            indexed.add(operation.name)
    if problems:
        raise InvalidRequest("the request does not fit the tenant's collections", details=problems)
