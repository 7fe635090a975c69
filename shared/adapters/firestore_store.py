"""Firestore adapter: batches, chunks, results, usage events, API keys, rate counters, audit log.

Layout (no document is written by more than one worker at a time, and none more than about once a second):
  batches/{batchId}                  written at submit, cancel/stop and finalize only
  batches/{batchId}/chunks/{n}       the chunk's requests and its lease; written by its current worker
  batches/{batchId}/results/{index}  one per request, created once (create() rejects a duplicate)
  usage_events/{auto}                the usage events of one results commit, TTL field expire_at
  api_keys/{sha256(key)}, rate_limits/{tenant-window-shard}, audit_log/{auto}
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter
from pydantic import TypeAdapter

from shared.errors import StoreUnavailable
from shared.models.auth import ApiKeyRecord, AuditRecord
from shared.models.batch import (
    ACTIVE_STATUSES,
    BatchDoc,
    ChunkDoc,
    ChunkProgress,
    ChunkState,
    ResultDoc,
    ResultTotals,
    StoredRequest,
)
from shared.models.usage import UsageEvent, UsageRecord
from shared.ports import ChunkSnapshot, ExpiredLease, LeaseView

BATCHES = "batches"
CHUNKS = "chunks"
RESULTS = "results"
USAGE_EVENTS = "usage_events"
API_KEYS = "api_keys"
RATE_LIMITS = "rate_limits"
AUDIT_LOG = "audit_log"
MAX_WRITES_PER_COMMIT = 500
TRANSIENT = (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.InternalServerError, gexc.Aborted)


def chunk_id(index: int) -> str:
    return f"{index:06d}"


def result_id(index: int) -> str:
    # Zero-padded so document ids sort in request order.
    return f"{index:08d}"


def _usage_record(
    outcomes: list[tuple[ResultDoc, list[UsageEvent]]], retention: dt.timedelta
) -> UsageRecord | None:
    events = [event for _, item_events in outcomes for event in item_events]
    if not events:
        return None
    at = max(event.at for event in events)
    first = events[0]
    return UsageRecord(
        job_id=first.job_id,
        tenant=first.tenant,
        source=first.source,
        calls=len(events),
        events=events,
        at=at,
        expire_at=at + retention,
    )


_REQUESTS = TypeAdapter(list[StoredRequest])
_CUSTOM_IDS = TypeAdapter(list[str | None])
_EVENTS = TypeAdapter(list[UsageEvent])


def _dump_chunk(chunk: ChunkDoc) -> dict[str, Any]:
    # The requests are one JSON blob: an array of maps would be indexed field by field, which makes the
    # write of a large chunk many times slower (and in production they are exempt from indexing too).
    data = chunk.model_dump(mode="python", exclude={"requests", "custom_ids"})
    data["requests"] = _REQUESTS.dump_json(chunk.requests, exclude_none=True)
    data["custom_ids"] = _CUSTOM_IDS.dump_json(chunk.custom_ids)
    return data


def _load_chunk(data: dict[str, Any] | None) -> ChunkDoc:
    data = dict(data or {})
    requests = _REQUESTS.validate_json(data.pop("requests"))
    custom_ids = _CUSTOM_IDS.validate_json(data.pop("custom_ids"))
    return ChunkDoc.model_validate(data | {"requests": requests, "custom_ids": custom_ids})


def _dump_result(result: ResultDoc) -> dict[str, Any]:
    # Unset fields are left out: fewer fields to encode and index on the hottest write path.
    return result.model_dump(mode="python", exclude_none=True)


def _dump_usage(record: UsageRecord) -> dict[str, Any]:
    # The events are one JSON blob (an indexed array of maps costs index entries per element); the record's
    # own fields (job, tenant, source, time, call count, token and cost sums) stay queryable.
    data = record.model_dump(mode="python", exclude={"events"})
    data["events"] = _EVENTS.dump_json(record.events, exclude={"__all__": {"job_id", "tenant", "source"}})
    data["input_tokens"] = sum(event.input_tokens for event in record.events)
    data["output_tokens"] = sum(event.output_tokens for event in record.events)
    data["cost_usd"] = sum(event.cost_usd for event in record.events)
    return data


def _dump(model: Any) -> dict[str, Any]:
    data: dict[str, Any] = model.model_dump(mode="python", by_alias=False)
    return data


class FirestoreStore:
    """Implements BatchStore and KeyStore on the async Firestore client."""

    def __init__(self, client: firestore.AsyncClient) -> None:
        self._db = client

    # --- references -------------------------------------------------------------------------------

    def _batch_ref(self, batch_id: str) -> Any:
        return self._db.collection(BATCHES).document(batch_id)

    def _chunk_ref(self, batch_id: str, chunk: int) -> Any:
        return self._batch_ref(batch_id).collection(CHUNKS).document(chunk_id(chunk))

    def _results(self, batch_id: str) -> Any:
        return self._batch_ref(batch_id).collection(RESULTS)

    # --- batches ----------------------------------------------------------------------------------

    async def create_batch(self, *, batch: BatchDoc, chunks: list[ChunkDoc], audit: AuditRecord) -> bool:
        """Write the batch, its chunks and the audit record; False when the batch id already exists.

        The batch document is created in the LAST commit, so a batch never appears before its chunks do: a
        retried submit that finds the batch finds it whole.
        """
        writes: list[tuple[Any, dict[str, Any], bool]] = [
            (self._chunk_ref(batch.batch_id, c.index), _dump_chunk(c), False) for c in chunks
        ]
        writes.append((self._db.collection(AUDIT_LOG).document(), _dump(audit), False))
        writes.append((self._batch_ref(batch.batch_id), _dump(batch), True))
        try:
            for start in range(0, len(writes), MAX_WRITES_PER_COMMIT):
                commit = self._db.batch()
                for ref, data, create in writes[start : start + MAX_WRITES_PER_COMMIT]:
                    if create:
                        commit.create(ref, data)
                    else:
                        commit.set(ref, data)
                await commit.commit()
        except gexc.AlreadyExists:
            return False
        except TRANSIENT as exc:
            raise StoreUnavailable(f"cannot write batch: {exc.message}") from exc
        return True

    async def get_batch(self, batch_id: str) -> BatchDoc | None:
        snapshot = await self._get(self._batch_ref(batch_id))
        return BatchDoc.model_validate(snapshot.to_dict()) if snapshot.exists else None

    async def update_batch(
        self, batch_id: str, mutate: Callable[[BatchDoc], dict[str, Any] | None]
    ) -> BatchDoc | None:
        """Compare-and-set on the batch document: `mutate` returns the changes, or None to leave it.

        Returns the batch after the change (or unchanged), None when it does not exist. A concurrent writer
        makes the precondition fail and the read-decide-write runs again on fresh data.
        """
        ref = self._batch_ref(batch_id)
        for _ in range(20):
            snapshot = await self._get(ref)
            if not snapshot.exists:
                return None
            batch = BatchDoc.model_validate(snapshot.to_dict())
            changes = mutate(batch)
            if not changes:
                return batch
            try:
                await ref.update(changes, option=self._db.write_option(last_update_time=snapshot.update_time))
            except (gexc.FailedPrecondition, gexc.Aborted):
                continue
            except TRANSIENT as exc:
                raise StoreUnavailable(f"cannot update batch: {exc.message}") from exc
            return BatchDoc.model_validate(batch.model_dump() | changes)
        raise StoreUnavailable("batch document kept changing under compare-and-set")

    async def active_batches(self, owner: str | None, limit: int) -> list[BatchDoc]:
        query: Any = self._db.collection(BATCHES).where(
            filter=FieldFilter("status", "in", [s.value for s in ACTIVE_STATUSES])
        )
        if owner is not None:
            query = query.where(filter=FieldFilter("owner", "==", owner))
        docs = [BatchDoc.model_validate(s.to_dict()) async for s in query.limit(limit).stream()]
        return sorted(docs, key=lambda b: b.created_at, reverse=True)

    async def count_batches(self, owner: str | None, status: str) -> int:
        query: Any = self._db.collection(BATCHES).where(filter=FieldFilter("status", "==", status))
        if owner is not None:
            query = query.where(filter=FieldFilter("owner", "==", owner))
        result = await query.count(alias="n").get()
        return int(result[0][0].value)

    async def finished_batch_sums(self, owner: str | None) -> dict[str, float]:
        query: Any = self._db.collection(BATCHES).where(filter=FieldFilter("finalized", "==", True))
        if owner is not None:
            query = query.where(filter=FieldFilter("owner", "==", owner))
        aggregation = (
            query.count(alias="batches")
            .sum("summary.total", alias="items")
            .sum("summary.failed", alias="failed")
            .sum("summary.totalTokens", alias="tokens")
            .sum("summary.totalTime", alias="time_ms")
        )
        rows = await aggregation.get()
        return {r.alias: float(r.value or 0) for r in rows[0]}

    async def overdue_batches(self, now: dt.datetime, limit: int) -> list[BatchDoc]:
        query = (
            self._db.collection(BATCHES)
            .where(filter=FieldFilter("finalized", "==", False))
            .where(filter=FieldFilter("deadline_at", "<", now))
            .limit(limit)
        )
        return [BatchDoc.model_validate(s.to_dict()) async for s in query.stream()]

    async def write_audit(self, record: AuditRecord) -> None:
        await self._db.collection(AUDIT_LOG).add(_dump(record))

    # --- chunks -----------------------------------------------------------------------------------

    async def get_chunk(self, batch_id: str, chunk: int) -> ChunkSnapshot | None:
        snapshot = await self._get(self._chunk_ref(batch_id, chunk))
        if not snapshot.exists:
            return None
        return ChunkSnapshot(chunk=_load_chunk(snapshot.to_dict()), version=snapshot.update_time)

    async def get_lease(self, batch_id: str, chunk: int) -> LeaseView | None:
        ref = self._chunk_ref(batch_id, chunk)
        try:
            snapshot = await ref.get(field_paths=["lease_owner", "state"])
        except TRANSIENT as exc:
            raise StoreUnavailable(f"cannot read {ref.path}: {exc.message}") from exc
        if not snapshot.exists:
            return None
        data = snapshot.to_dict() or {}
        return LeaseView(
            lease_owner=data.get("lease_owner"), state=ChunkState(data["state"]), version=snapshot.update_time
        )

    async def update_chunk_if_unchanged(
        self, batch_id: str, chunk: int, *, version: Any, changes: dict[str, Any]
    ) -> bool:
        """Compare-and-set on a chunk: False when someone else wrote it since `version` was read."""
        try:
            await self._chunk_ref(batch_id, chunk).update(
                changes, option=self._db.write_option(last_update_time=version)
            )
        except (gexc.FailedPrecondition, gexc.Aborted):
            return False
        except TRANSIENT as exc:
            raise StoreUnavailable(f"cannot update chunk: {exc.message}") from exc
        return True

    async def custom_ids(self, batch_id: str, start: int, end: int) -> dict[int, str | None]:
        """The customId of each request in [start, end), from a projection of the chunks."""
        query = (
            self._batch_ref(batch_id)
            .collection(CHUNKS)
            .where(filter=FieldFilter("end", ">", start))
            .order_by("end")
            .select(["start", "custom_ids"])
        )
        ids: dict[int, str | None] = {}
        async for snapshot in query.stream():
            first, values = snapshot.get("start"), _CUSTOM_IDS.validate_json(snapshot.get("custom_ids"))
            if first >= end:
                break
            ids.update({first + position: value for position, value in enumerate(values)})
        return {index: value for index, value in ids.items() if start <= index < end}

    async def chunk_progress(self, batch_id: str) -> list[ChunkProgress]:
        query = (
            self._batch_ref(batch_id)
            .collection(CHUNKS)
            .select(["index", "state", "claims", "progress", "lease_expires_at"])
        )
        return [ChunkProgress.model_validate(s.to_dict()) async for s in query.stream()]

    async def expired_leases(self, now: dt.datetime, limit: int) -> list[ExpiredLease]:
        query = (
            self._db.collection_group(CHUNKS)
            .where(filter=FieldFilter("state", "==", ChunkState.RUNNING.value))
            .where(filter=FieldFilter("lease_expires_at", "<", now))
            .select(["batch_id", "index", "segment", "claims"])
            .limit(limit)
        )
        return [
            ExpiredLease(batch_id=d["batch_id"], chunk=d["index"], segment=d["segment"], claims=d["claims"])
            async for s in query.stream()
            if (d := s.to_dict()) is not None
        ]

    # --- results ----------------------------------------------------------------------------------

    async def finished_indices(self, batch_id: str, start: int, end: int) -> set[int]:
        query = (
            self._results(batch_id)
            .where(filter=FieldFilter("index", ">=", start))
            .where(filter=FieldFilter("index", "<", end))
            .select(["index"])
        )
        return {int(s.get("index")) async for s in query.stream()}

    async def write_results(
        self, outcomes: list[tuple[ResultDoc, list[UsageEvent]]], *, retention: dt.timedelta
    ) -> list[ResultDoc]:
        """Create each result, and one usage record for their calls, in one commit; returns the results
        this call created.

        If any result already exists (another worker raced us on the same chunk), the results are created
        one by one instead, so the first writer of each wins, and the usage record holds only the calls of
        the results this call created: nothing is counted twice.
        """
        created: list[ResultDoc] = []
        for start in range(0, len(outcomes), MAX_WRITES_PER_COMMIT - 1):
            created += await self._create_results(
                outcomes[start : start + MAX_WRITES_PER_COMMIT - 1], retention
            )
        return created

    async def _create_results(
        self, outcomes: list[tuple[ResultDoc, list[UsageEvent]]], retention: dt.timedelta
    ) -> list[ResultDoc]:
        refs = [self._results(r.batch_id).document(result_id(r.index)) for r, _ in outcomes]
        try:
            commit = self._db.batch()
            for ref, (result, _) in zip(refs, outcomes, strict=True):
                commit.create(ref, _dump_result(result))
            if record := _usage_record(outcomes, retention):
                commit.create(self._db.collection(USAGE_EVENTS).document(), _dump_usage(record))
            await commit.commit()
            return [result for result, _ in outcomes]
        except gexc.AlreadyExists:
            pass
        except TRANSIENT as exc:
            raise StoreUnavailable(f"cannot write results: {exc.message}") from exc
        mine: list[tuple[ResultDoc, list[UsageEvent]]] = []
        for ref, outcome in zip(refs, outcomes, strict=True):
            try:
                await ref.create(_dump_result(outcome[0]))
            except gexc.AlreadyExists:
                continue
            mine.append(outcome)
        if record := _usage_record(mine, retention):
            await self._db.collection(USAGE_EVENTS).add(_dump_usage(record))
        return [result for result, _ in mine]

    async def result_totals(
        self, batch_id: str, start: int | None = None, end: int | None = None
    ) -> ResultTotals:
        """Exact sums over the recorded results (of the whole batch, or of the index range [start, end))."""
        results: Any = self._results(batch_id)
        if start is not None and end is not None:
            results = results.where(filter=FieldFilter("index", ">=", start)).where(
                filter=FieldFilter("index", "<", end)
            )
        try:
            totals = await (
                results.count(alias="finished")
                .sum("input_tokens", alias="input_tokens")
                .sum("output_tokens", alias="output_tokens")
                .sum("cached_tokens", alias="cached_tokens")
                .sum("cost_usd", alias="cost_usd")
            ).get()
            failed = await results.where(filter=FieldFilter("success", "==", False)).count(alias="n").get()
        except TRANSIENT as exc:
            raise StoreUnavailable(f"cannot aggregate results: {exc.message}") from exc
        sums = {r.alias: r.value or 0 for r in totals[0]}
        return ResultTotals(
            finished=int(sums["finished"]),
            failed=int(failed[0][0].value),
            input_tokens=int(sums["input_tokens"]),
            output_tokens=int(sums["output_tokens"]),
            cached_tokens=int(sums["cached_tokens"]),
            cost_usd=float(sums["cost_usd"]),
        )

    async def list_results(self, batch_id: str, start: int, end: int) -> list[ResultDoc]:
        query = (
            self._results(batch_id)
            .where(filter=FieldFilter("index", ">=", start))
            .where(filter=FieldFilter("index", "<", end))
            .order_by("index")
        )
        return [ResultDoc.model_validate(s.to_dict()) async for s in query.stream()]

    async def stream_results(self, batch_id: str) -> AsyncIterator[ResultDoc]:
        async for snapshot in self._results(batch_id).order_by("index").stream():
            yield ResultDoc.model_validate(snapshot.to_dict())

    # --- keys and rate limits ---------------------------------------------------------------------

    async def get_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        snapshot = await self._get(self._db.collection(API_KEYS).document(key_hash))
        return ApiKeyRecord.model_validate(snapshot.to_dict()) if snapshot.exists else None

    async def put_api_key(self, key_hash: str, record: ApiKeyRecord) -> None:
        await self._db.collection(API_KEYS).document(key_hash).create(_dump(record))

    async def add_requests(
        self, *, tenant: str, window: int, count: int, shards: int, expire_at: dt.datetime
    ) -> int:
        """Add `count` requests to a tenant's fixed window; returns the window's total so far.

        The counter is sharded so a busy tenant does not turn one document into a hot spot.
        """
        collection = self._db.collection(RATE_LIMITS)
        shard_ids = [f"{tenant}-{window}-{n}" for n in range(shards)]
        mine = random.choice(shard_ids)  # noqa: S311 - load spreading, not security
        others = [collection.document(s) for s in shard_ids if s != mine]

        async def _others() -> int:
            return sum([int(s.get("count")) async for s in self._db.get_all(others) if s.exists])

        try:
            # One round trip: our shard's new value comes back with the write (transform result), the other
            # shards are read at the same time.
            written, other_total = await asyncio.gather(
                collection.document(mine).set(
                    {"count": firestore.Increment(count), "expire_at": expire_at}, merge=True
                ),
                _others(),
            )
        except TRANSIENT as exc:
            raise StoreUnavailable(f"cannot count requests: {exc.message}") from exc
        return int(written.transform_results[0].integer_value) + int(other_total)

    # --- helpers ----------------------------------------------------------------------------------

    async def _get(self, ref: Any) -> Any:
        try:
            return await ref.get()
        except TRANSIENT as exc:
            raise StoreUnavailable(f"cannot read {ref.path}: {exc.message}") from exc
