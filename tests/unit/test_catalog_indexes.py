"""The catalog's article listing has the composite indexes production needs: the Firestore emulator runs any
query without them, so a filter added without its index would only fail in Google Cloud."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore
from google.cloud.firestore_v1.types import StructuredQuery

from shared.adapters.catalog_store import FirestoreCatalogStore

INDEXES = Path(__file__).resolve().parents[2] / "infra" / "firestore.indexes.json"


def _needed_index(query: Any) -> tuple[str, set[str], list[tuple[str, str]]]:
    """The collection, the fields under equality and the order of a query, as the index it needs."""
    structured = query._to_protobuf()
    where = structured.where
    filters = (
        [f.field_filter for f in where.composite_filter.filters]
        if "composite_filter" in where
        else ([where.field_filter] if "field_filter" in where else [])
    )
    assert all(f.op == StructuredQuery.FieldFilter.Operator.EQUAL for f in filters)
    orders = [(o.field.field_path, StructuredQuery.Direction(o.direction).name) for o in structured.order_by]
    return structured.from_[0].collection_id, {f.field.field_path for f in filters}, orders


def _declared(collection: str) -> list[list[tuple[str, str]]]:
    indexes = json.loads(INDEXES.read_text())["indexes"]
    return [
        [(field["fieldPath"], field["order"]) for field in index["fields"]]
        for index in indexes
        if index["collectionGroup"] == collection and index["queryScope"] == "COLLECTION"
    ]


@pytest.mark.parametrize("activo", [None, True])
@pytest.mark.parametrize("categoria_id", [None, 1])
def test_every_article_listing_has_its_composite_index(activo: bool | None, categoria_id: int | None) -> None:
    client = firestore.AsyncClient(project="demo-indexes", credentials=AnonymousCredentials())
    query = FirestoreCatalogStore(client).articles_query("t", activo=activo, categoria_id=categoria_id)

    collection, equalities, orders = _needed_index(query)

    assert orders == [("id", "ASCENDING")]
    if not equalities:
        return  # one field ordered: Firestore's automatic single-field index
    n = len(equalities)
    matches = [
        fields
        for fields in _declared(collection)
        if {name for name, _ in fields[:n]} == equalities and fields[n:] == orders
    ]
    assert matches, f"no index in {INDEXES.name} for equality on {sorted(equalities)} ordered by {orders}"
