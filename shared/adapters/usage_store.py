"""Firestore adapter of the usage analytics: usage records (written by the engine) and their rollups.

Layout:
  usage_events/{auto}                          a results commit's calls (see firestore_store._dump_usage)
  usage_tail/{yyyymmddHHMM}-{shard}            the same commits' summaries by minute (see usage_tail)
  usage_rollups/{grain}-{yyyymmddHHMM}-{scope} one scope's statistics over a minute, hour or day (set by the
                                               one scheduled roller, so no document is hot)
  analytics_state/rollup                       the roller's watermark
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter
from google.cloud.firestore_v1.field_path import FieldPath
from pydantic import TypeAdapter

from shared.adapters.firestore_store import MAX_WRITES_PER_COMMIT, TRANSIENT, USAGE_EVENTS
from shared.adapters.usage_tail import USAGE_TAIL, tail_refs
from shared.errors import StoreUnavailable
from shared.models.usage import UsageEvent, UsageRecord
from shared.models.usage_stats import UsageStats
from shared.ports import ALL_TENANTS, Rollup, UsageSummary

USAGE_ROLLUPS = "usage_rollups"
ANALYTICS_STATE = "analytics_state"
_EVENTS = TypeAdapter(list[dict[str, Any]])


def rollup_id(*, scope: str, grain: str, start: dt.datetime) -> str:
    return f"{grain}-{start:%Y%m%d%H%M}-{scope}"


def _dump_rollup(rollup: Rollup) -> dict[str, Any]:
    return {
        "scope": rollup.scope,
        "grain": rollup.grain,
        "start": rollup.start,
        "stats": rollup.stats.dump(),
        "expire_at": rollup.expire_at,
    }


def _load_rollup(data: dict[str, Any]) -> Rollup:
    return Rollup(
        scope=data["scope"],
        grain=data["grain"],
        start=data["start"],
        stats=UsageStats.load(data["stats"]),
        expire_at=data["expire_at"],
    )


class FirestoreUsageStore:
    """Implements UsageStore on the async Firestore client."""

    def __init__(self, client: firestore.AsyncClient) -> None:
        self._db = client

    def _records(self, *, tenant: str | None, start: dt.datetime, end: dt.datetime) -> Any:
        query: Any = self._db.collection(USAGE_EVENTS)
        if tenant is not None:
            query = query.where(filter=FieldFilter("tenant", "==", tenant))
        return query.where(filter=FieldFilter("at", ">=", start)).where(filter=FieldFilter("at", "<", end))

    async def usage_summaries(
        self, *, tenant: str | None, start: dt.datetime, end: dt.datetime
    ) -> list[UsageSummary]:
        query = self._records(tenant=tenant, start=start, end=end).select(["tenant", "at", "summary"])
        try:
            return [
                UsageSummary(tenant=d["tenant"], at=d["at"], stats=UsageStats.load(d.get("summary")))
                async for s in query.stream()
                if (d := s.to_dict()) is not None
            ]
        except TRANSIENT as exc:
            raise StoreUnavailable(f"cannot read usage records: {exc.message}") from exc

    async def tail_summaries(
        self, *, tenant: str | None, spans: list[tuple[dt.datetime, dt.datetime]]
    ) -> list[UsageSummary]:
        # Lookups by id of the spans' minutes' tail documents: no query (see usage_tail).
        refs = tail_refs(db=self._db, spans=spans)
        summaries = []
        try:
            async for snapshot in self._db.get_all(refs, field_paths=["records"]):
                entries = snapshot.get("records") if snapshot.exists else None
                for entry in (entries or {}).values():
                    at = entry["at"]
                    if (tenant is None or entry["tenant"] == tenant) and any(a <= at < b for a, b in spans):
                        stats = UsageStats.load(entry["summary"])
                        summaries.append(UsageSummary(tenant=entry["tenant"], at=at, stats=stats))
        except TRANSIENT as exc:
            raise StoreUnavailable(f"cannot read the usage tail: {exc.message}") from exc
        return summaries

    async def usage_records(
        self, *, tenant: str | None, start: dt.datetime, end: dt.datetime
    ) -> AsyncIterator[UsageRecord]:
        query = self._records(tenant=tenant, start=start, end=end).order_by("at")
        page_size = 200  # bounded queries: a broken-off stream would keep whole responses alive
        cursor: Any = None
        while True:
            page = query.limit(page_size) if cursor is None else query.start_after(cursor).limit(page_size)
            snapshots = [s async for s in page.stream()]
            for snapshot in snapshots:
                data = snapshot.to_dict() or {}
                # The blob's events leave out the record's own fields: they are put back here.
                own = {"job_id": data["job_id"], "tenant": data["tenant"], "source": data["source"]}
                events = [
                    UsageEvent.model_validate(event | own) for event in _EVENTS.validate_json(data["events"])
                ]
                yield UsageRecord(
                    job_id=data["job_id"],
                    tenant=data["tenant"],
                    source=data["source"],
                    calls=data["calls"],
                    events=events,
                    at=data["at"],
                    expire_at=data["expire_at"],
                )
            if len(snapshots) < page_size:
                return
            cursor = snapshots[-1]

    async def earliest_usage_at(self) -> dt.datetime | None:
        query = self._db.collection(USAGE_EVENTS).order_by("at").limit(1).select(["at"])
        found = [s.get("at") async for s in query.stream()]
        return found[0] if found else None

    async def put_rollups(self, rollups: list[Rollup]) -> None:
        collection = self._db.collection(USAGE_ROLLUPS)
        try:
            for first in range(0, len(rollups), MAX_WRITES_PER_COMMIT):
                commit = self._db.batch()
                for rollup in rollups[first : first + MAX_WRITES_PER_COMMIT]:
                    ref = collection.document(
                        rollup_id(scope=rollup.scope, grain=rollup.grain, start=rollup.start)
                    )
                    commit.set(ref, _dump_rollup(rollup))
                await commit.commit()
        except TRANSIENT as exc:
            raise StoreUnavailable(f"cannot write rollups: {exc.message}") from exc

    async def rollups(
        self, *, scope: str | None, grain: str, start: dt.datetime, end: dt.datetime
    ) -> list[Rollup]:
        query: Any = self._db.collection(USAGE_ROLLUPS)
        if scope is not None:
            query = query.where(filter=FieldFilter("scope", "==", scope))
        query = (
            query.where(filter=FieldFilter("grain", "==", grain))
            .where(filter=FieldFilter("start", ">=", start))
            .where(filter=FieldFilter("start", "<", end))
        )
        try:
            return [_load_rollup(s.to_dict() or {}) async for s in query.stream()]
        except TRANSIENT as exc:
            raise StoreUnavailable(f"cannot read rollups: {exc.message}") from exc

    async def rollups_at(self, *, scope: str, periods: list[tuple[str, dt.datetime]]) -> list[Rollup]:
        # Lookups by id: no query, so the cost does not grow with the number of rollups stored.
        collection = self._db.collection(USAGE_ROLLUPS)
        refs = [collection.document(rollup_id(scope=scope, grain=g, start=at)) for g, at in periods]
        try:
            return [_load_rollup(s.to_dict() or {}) async for s in self._db.get_all(refs) if s.exists]
        except TRANSIENT as exc:
            raise StoreUnavailable(f"cannot read rollups: {exc.message}") from exc

    async def get_watermark(self) -> dt.datetime | None:
        snapshot = await self._db.collection(ANALYTICS_STATE).document("rollup").get()
        return snapshot.get("watermark") if snapshot.exists else None

    async def set_watermark(self, at: dt.datetime) -> None:
        await self._db.collection(ANALYTICS_STATE).document("rollup").set({"watermark": at})

    async def delete_usage(self, *, tenant: str | None) -> tuple[int, int]:
        query: Any = self._db.collection(USAGE_EVENTS)
        if tenant is not None:
            query = query.where(filter=FieldFilter("tenant", "==", tenant))
        await self._delete_tail(tenant=tenant)
        records = calls = 0
        while True:
            snapshots = [s async for s in query.select(["calls"]).limit(MAX_WRITES_PER_COMMIT).stream()]
            if not snapshots:
                return records, calls
            commit = self._db.batch()
            for snapshot in snapshots:
                commit.delete(snapshot.reference)
            try:
                await commit.commit()
            except TRANSIENT as exc:
                raise StoreUnavailable(f"cannot delete usage records: {exc.message}") from exc
            records += len(snapshots)
            calls += sum(int(s.get("calls") or 0) for s in snapshots)

    async def _delete_tail(self, *, tenant: str | None) -> None:
        """Take a tenant's entries out of the usage tail (or delete it all)."""
        collection = self._db.collection(USAGE_TAIL)
        if tenant is None:
            await self._delete_all(collection.select([]))
            return
        query = collection.where(filter=FieldFilter("tenants", "array_contains", tenant)).limit(100)
        while True:
            documents = [s async for s in query.stream()]
            if not documents:
                return
            commit = self._db.batch()
            for document in documents:
                entries = document.get("records") or {}
                mine = [key for key, entry in entries.items() if entry["tenant"] == tenant]
                changes: dict[str, Any] = {"tenants": firestore.ArrayRemove([tenant])}
                changes |= {FieldPath("records", key).to_api_repr(): firestore.DELETE_FIELD for key in mine}
                # Only as read: an entry the engine adds meanwhile is not left behind unlisted.
                option = self._db.write_option(last_update_time=document.update_time)
                commit.update(document.reference, changes, option=option)
            try:
                await commit.commit()
            except (gexc.FailedPrecondition, gexc.Aborted):
                continue  # an engine commit wrote one of them: read again
            except TRANSIENT as exc:
                raise StoreUnavailable(f"cannot delete the usage tail: {exc.message}") from exc

    async def delete_rollups(self, *, tenant: str | None) -> int:
        collection = self._db.collection(USAGE_ROLLUPS)
        if tenant is None:
            return await self._delete_all(collection.select([]))
        query = collection.where(filter=FieldFilter("scope", "==", tenant))
        deleted = 0
        while True:
            # Each of the tenant's rollups leaves the all-tenant rollup of the same period in the commit
            # that deletes it (compare-and-set on the all-tenant one): a repeat finds nothing left to take.
            mine = [_load_rollup(s.to_dict() or {}) async for s in query.limit(200).stream()]
            if not mine:
                return deleted
            refs = [
                collection.document(rollup_id(scope=ALL_TENANTS, grain=r.grain, start=r.start)) for r in mine
            ]
            totals = {s.id: s async for s in self._db.get_all(refs)}
            commit = self._db.batch()
            for rollup, ref in zip(mine, refs, strict=True):
                total = totals.get(ref.id)
                if total is not None and total.exists:
                    left = UsageStats.load(total.get("stats")).merge(rollup.stats, sign=-1)
                    option = self._db.write_option(last_update_time=total.update_time)
                    commit.update(ref, {"stats": left.dump()}, option=option)
                commit.delete(
                    collection.document(rollup_id(scope=tenant, grain=rollup.grain, start=rollup.start))
                )
            try:
                await commit.commit()
            except (gexc.FailedPrecondition, gexc.Aborted):
                continue  # the roller rewrote one of them: read again
            deleted += len(mine)

    async def delete_expired(self, *, now: dt.datetime, limit: int) -> int:
        deleted = 0
        for name in (USAGE_EVENTS, USAGE_TAIL, USAGE_ROLLUPS):
            query = self._db.collection(name).where(filter=FieldFilter("expire_at", "<", now)).select([])
            deleted += await self._delete_all(query, limit=limit)
        return deleted

    async def _delete_all(self, query: Any, *, limit: int | None = None) -> int:
        deleted = 0
        while limit is None or deleted < limit:
            size = MAX_WRITES_PER_COMMIT if limit is None else min(MAX_WRITES_PER_COMMIT, limit - deleted)
            snapshots = [s async for s in query.limit(size).stream()]
            if not snapshots:
                break
            commit = self._db.batch()
            for snapshot in snapshots:
                commit.delete(snapshot.reference)
            try:
                await commit.commit()
            except TRANSIENT as exc:
                raise StoreUnavailable(f"cannot delete: {exc.message}") from exc
            deleted += len(snapshots)
        return deleted
