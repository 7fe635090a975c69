"""Firestore adapter of the reports' own documents (the jobs themselves are the engine's batches).

Layout:
  reports/{jobId}                  what a report job was queued with (owner, userName, input, cache key)
  report_uploads/{uploadId}        an upload session opened by a client, until a job is queued from it
  report_tokens/{sha256(token)}    a download token, stored hashed, with its expiry (TTL field expire_at)
  report_cache/{cacheKey}          a finished report reusable for the same input, type and options
  report_stats/{tenant}            cache hits and misses (Increment: no read-modify-write)
  report_progress/{jobId}          bytes and records read so far, written by the running job
  report_token_misses/{addr-min}   unknown download tokens per client address and minute
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from shared.errors import StoreUnavailable

TRANSIENT = (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.InternalServerError, gexc.Aborted)


class FirestoreReportStore:
    """Implements ReportStore (and KindRecords, what the report kind writes while it runs)."""

    def __init__(self, client: firestore.AsyncClient) -> None:
        self._db = client

    def _ref(self, collection: str, doc_id: str) -> Any:
        return self._db.collection(collection).document(doc_id)

    async def get(self, *, collection: str, doc_id: str) -> dict[str, Any] | None:
        try:
            snapshot = await self._ref(collection, doc_id).get()
        except TRANSIENT as exc:
            raise StoreUnavailable(f"cannot read {collection}/{doc_id}: {exc.message}") from exc
        data: dict[str, Any] | None = snapshot.to_dict() if snapshot.exists else None
        return data

    async def merge(self, *, collection: str, doc_id: str, fields: dict[str, Any]) -> None:
        try:
            await self._ref(collection, doc_id).set(fields, merge=True)
        except TRANSIENT as exc:
            raise StoreUnavailable(f"cannot write {collection}/{doc_id}: {exc.message}") from exc

    async def increment(self, *, collection: str, doc_id: str, counts: dict[str, int]) -> None:
        fields = {name: firestore.Increment(count) for name, count in counts.items()}
        await self.merge(collection=collection, doc_id=doc_id, fields=fields)

    async def create(self, *, collection: str, doc_id: str, fields: dict[str, Any]) -> bool:
        """Create the document; False when it exists (a repeated create is harmless)."""
        try:
            await self._ref(collection, doc_id).create(fields)
        except gexc.AlreadyExists:
            return False
        except TRANSIENT as exc:
            raise StoreUnavailable(f"cannot write {collection}/{doc_id}: {exc.message}") from exc
        return True

    async def delete(self, *, collection: str, doc_id: str) -> None:
        try:
            await self._ref(collection, doc_id).delete()
        except TRANSIENT as exc:
            raise StoreUnavailable(f"cannot delete {collection}/{doc_id}: {exc.message}") from exc

    async def older_than(
        self, *, collection: str, field: str, before: dt.datetime, limit: int
    ) -> list[tuple[str, dict[str, Any]]]:
        """Documents whose `field` is before `before` (oldest first), with their ids."""
        query = (
            self._db.collection(collection)
            .where(filter=FieldFilter(field, "<", before))
            .order_by(field)
            .limit(limit)
        )
        return [(snapshot.id, snapshot.to_dict() or {}) async for snapshot in query.stream()]

    async def cache_sums(self, *, owner: str) -> tuple[int, int]:
        """The tenant's cache entries and their bytes (one aggregation query)."""
        query: Any = self._db.collection("report_cache").where(filter=FieldFilter("owner", "==", owner))
        rows = await query.count(alias="entries").sum("size_bytes", alias="bytes").get()
        values = {row.alias: row.value for row in rows[0]}
        return int(values.get("entries") or 0), int(values.get("bytes") or 0)

    async def delete_batch_tree(self, *, batch_id: str) -> None:
        try:
            await self._db.recursive_delete(self._db.collection("batches").document(batch_id))
        except TRANSIENT as exc:
            raise StoreUnavailable(f"cannot delete batches/{batch_id}: {exc.message}") from exc
