"""A tenant's vector collections (what `POST /batch/embeddings` indexes into): list and delete."""

from __future__ import annotations

import datetime as dt
import re

from shared.errors import NotFound
from shared.kinds.embeddings import COLLECTION_NAME
from shared.models.auth import Principal
from shared.models.common import Answer
from shared.services.batches import CallerInfo
from shared.services.engine import Engine


class CollectionView(Answer):
    name: str
    document_count: int
    model: str
    dimension: int
    created_at: dt.datetime


async def list_collections(*, engine: Engine, principal: Principal) -> list[CollectionView]:
    """The caller's tenant's collections with their document counts (an admin's too: collections are the
    tenant's own, never shared)."""
    listed = await engine.vectors.list_collections(tenant=principal.tenant)
    return [
        CollectionView(
            name=info.name,
            document_count=info.document_count or 0,
            model=info.model,
            dimension=info.dimension,
            created_at=info.created_at,
        )
        for info in listed
    ]


async def delete_collection(*, engine: Engine, principal: Principal, name: str, caller: CallerInfo) -> None:
    """Delete the collection and its documents; NotFound when the tenant has none of that name."""
    # A name no collection can have (`__x__` is even an invalid Firestore id) is simply not there.
    if not re.match(COLLECTION_NAME, name) or not await engine.vectors.delete_collection(
        tenant=principal.tenant, name=name
    ):
        raise NotFound(f"no collection {name}")
    audit = caller.audit("collection.delete", tenant=principal.tenant, target=name, at=engine.clock())
    await engine.store.write_audit(audit)
