"""Firestore adapter: batches, chunks, results, usage events, API keys, rate counters, audit log.

Layout (no document is written by more than one worker at a time, and none more than about once a second):
  batches/{batchId}                  written at submit, cancel/stop and finalize only
  batches/{batchId}/chunks/{n}       the chunk's requests and its lease; written by its current worker
  batches/{batchId}/pages/{auto}     the results of one commit of a chunk's lease holder, as JSON lines
  usage_events/{auto}                the usage events of one results commit, TTL field expire_at
  usage_tail/{minute}-{shard}        the same commit's summary filed under its minute (see usage_tail)
  api_keys/{sha256(key)}, rate_limits/{tenant-window-shard}, audit_log/{auto}
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter
from pydantic import TypeAdapter

from shared.adapters.firestore_listen import DocumentListener
from shared.adapters.usage_tail import tail_write
from shared.errors import StoreUnavailable
from shared.models.auth import ApiKeyRecord, AuditRecord
from shared.models.batch import (
    ACTIVE_STATUSES,
    BatchDoc,
    BatchStatus,
    ChunkDoc,
    ChunkProgress,
    ChunkState,
    ResultTotals,
)
from shared.models.usage import UsageEvent, UsageRecord
from shared.models.usage_stats import summarize
from shared.ports import (
    BatchSnapshot,
    BatchStop,
    ChunkSnapshot,
    ExpiredLease,
    GuardedWrite,
    LeaseView,
    PreconditionFailed,
    ResultPage,
)

BATCHES = "batches"
CHUNKS = "chunks"
PAGES = "pages"
USAGE_EVENTS = "usage_events"
API_KEYS = "api_keys"
RATE_LIMITS = "rate_limits"
AUDIT_LOG = "audit_log"
MAX_WRITES_PER_COMMIT = 500
# A commit's documents stay under 3 MiB: production takes 10 MiB a request, the emulator 4 MiB a gRPC message.
COMMIT_MAX_BYTES = 3 * 1024 * 1024
# The later chunks of a submit (see `add_later_chunks`) go in commits of about this size, all at once.
LATER_COMMIT_BYTES = 768 * 1024
TRANSIENT = (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.InternalServerError, gexc.Aborted)


def chunk_id(index: int) -> str:
    return f"{index:06d}"


_CUSTOM_IDS = TypeAdapter(list[str | None])
_EVENTS = TypeAdapter(list[UsageEvent])
_INDICES = TypeAdapter(list[int])


def _dump_chunk(chunk: ChunkDoc) -> dict[str, Any]:
    # The items are one JSON blob, as the kind wrote them: an array of maps would be indexed field by field,
    # which makes the write of a large chunk many times slower (in production they are exempt from indexing).
    data = chunk.model_dump(mode="python", exclude={"custom_ids"})
    data["custom_ids"] = _CUSTOM_IDS.dump_json(chunk.custom_ids)
    return data


def _load_chunk(data: dict[str, Any] | None) -> ChunkDoc:
    data = dict(data or {})
    custom_ids = _CUSTOM_IDS.validate_json(data.pop("custom_ids"))
    return ChunkDoc.model_validate(data | {"items": bytes(data.pop("items")), "custom_ids": custom_ids})


def _dump_page(page: ResultPage) -> dict[str, Any]:
    # The lines and their indices are opaque blobs: nothing queries them, and indexing them would cost
    # index entries for every result. A read of a range of results finds its pages by their first and last.
    return {
        "chunk": page.chunk,
        "first": min(page.indices),
        "last": max(page.indices),
        "indices": _INDICES.dump_json(page.indices),
        "lines": "\n".join(page.lines).encode(),
        "totals": page.totals.model_dump(),
    }


def _load_page(data: dict[str, Any] | None) -> ResultPage:
    data = data or {}
    lines = bytes(data["lines"]).decode()
    return ResultPage(
        chunk=data["chunk"],
        indices=_INDICES.validate_json(data["indices"]),
        lines=lines.split("\n") if lines else [],
        totals=ResultTotals.model_validate(data["totals"]),
    )


def _dump_usage(record: UsageRecord) -> dict[str, Any]:
    # The events are one JSON blob (an indexed array of maps costs index entries per element); the record's
    # own fields (job, tenant, source, time, call count, token and cost sums) stay queryable.
    data = record.model_dump(mode="python", exclude={"events"})
    data["events"] = _EVENTS.dump_json(record.events, exclude={"__all__": {"job_id", "tenant", "source"}})
    data["input_tokens"] = sum(event.input_tokens for event in record.events)
    data["output_tokens"] = sum(event.output_tokens for event in record.events)
    data["cost_usd"] = sum(event.cost_usd for event in record.events)
    # Per (model, endpoint) sums and latency histogram of the events, which the analytics rollups merge
    # without decoding the events: no extra write, about 1 KB more per (model, endpoint) pair.
    data["summary"] = summarize(record.events).dump()
    return data


def add_usage(*, db: firestore.AsyncClient | firestore.Client, commit: Any, record: UsageRecord) -> None:
    """Add a usage record to a commit, with its summary's entry in the usage tail (same commit)."""
    ref = db.collection(USAGE_EVENTS).document()
    data = _dump_usage(record)
    commit.create(ref, data)
    tail_ref, tail_data = tail_write(db=db, record_id=ref.id, record=record, summary=data["summary"])
    commit.set(tail_ref, tail_data, merge=True)


Write = tuple[Any, dict[str, Any], str, Any]  # (document, data, "set" | "create" | "update", version)


def _commit_groups(writes: list[Write], *, max_bytes: int = COMMIT_MAX_BYTES) -> list[list[Write]]:
    """Writes in order, grouped into commits of at most 500 writes and about `max_bytes` of chunk payload (a
    32 MB submit's chunks take a dozen commits of COMMIT_MAX_BYTES)."""
    groups: list[list[Write]] = [[]]
    size = 0
    for write in writes:
        data = write[1]
        payload = len(data.get("items") or b"") + len(data.get("custom_ids") or b"") + 1024
        if groups[-1] and (len(groups[-1]) >= MAX_WRITES_PER_COMMIT or size + payload > max_bytes):
            groups.append([])
            size = 0
        groups[-1].append(write)
        size += payload
    return groups


def _dump(model: Any) -> dict[str, Any]:
    data: dict[str, Any] = model.model_dump(mode="python", by_alias=False)
    return data


class FirestoreStore:
    """Implements BatchStore and KeyStore on the async Firestore client."""

    def __init__(self, client: firestore.AsyncClient, *, listener: DocumentListener) -> None:
        self._db = client
        self._listener = listener

    # --- references -------------------------------------------------------------------------------

    def _batch_ref(self, batch_id: str) -> Any:
        return self._db.collection(BATCHES).document(batch_id)

    def _chunk_ref(self, batch_id: str, chunk: int) -> Any:
        return self._batch_ref(batch_id).collection(CHUNKS).document(chunk_id(chunk))

    def _pages(self, batch_id: str) -> Any:
        return self._batch_ref(batch_id).collection(PAGES)

    # --- batches ----------------------------------------------------------------------------------

    async def create_batch(
        self,
        *,
        batch: BatchDoc,
        chunks: list[ChunkDoc],
        audit: AuditRecord,
        writes: Sequence[GuardedWrite] = (),
    ) -> dict[int, Any] | None:
        """Write the batch, its chunks and the audit record: the chunks' versions as written, by index (a
        first delivery claims its chunk on it without reading it first); None when the batch id exists.

        The batch document is created in the LAST commit, so a batch never appears before its chunks do: a
        retried submit that finds the batch finds it whole. The guarded `writes` go in that same commit, so
        they happen exactly when the batch is created (PreconditionFailed when one's document changed).
        """
        planned: list[Write] = [
            (self._chunk_ref(batch.batch_id, c.index), _dump_chunk(c), "set", None) for c in chunks
        ]
        planned.append((self._db.collection(AUDIT_LOG).document(), _dump(audit), "set", None))
        last = [(self._db.document(w.path), w.data, w.op, w.version) for w in writes]
        last.append((self._batch_ref(batch.batch_id), _dump(batch), "create", None))
        if len(last) > MAX_WRITES_PER_COMMIT:
            raise ValueError(f"at most {MAX_WRITES_PER_COMMIT - 1} guarded writes")
        commits = _commit_groups([*planned, *last])
        if len(commits[-1]) < len(last):  # the guarded writes and the batch must share the last commit
            commits = [*_commit_groups(planned), last]
        chunk_refs = {self._chunk_ref(batch.batch_id, c.index).path: c.index for c in chunks}
        versions: dict[int, Any] = {}
        try:
            for group in commits:
                commit = self._db.batch()
                for ref, data, op, version in group:
                    if op == "create":
                        commit.create(ref, data)
                    elif op == "update":
                        option = self._db.write_option(last_update_time=version) if version else None
                        commit.update(ref, data, option=option)
                    else:
                        commit.set(ref, data)
                written = await commit.commit()
                for (ref, _, _, _), result in zip(group, written, strict=True):
                    if ref.path in chunk_refs:
                        versions[chunk_refs[ref.path]] = result.update_time
        except gexc.AlreadyExists:
            return None
        except (gexc.FailedPrecondition, gexc.NotFound) as exc:
            raise PreconditionFailed(str(exc)) from exc
        except TRANSIENT as exc:
            raise StoreUnavailable(f"cannot write batch: {exc.message}") from exc
        return versions

    async def put_chunks(self, *, batch_id: str, chunks: list[ChunkDoc]) -> None:
        """Write chunks ahead of their batch document (see `create_batch`)."""
        writes: list[Write] = [
            (self._chunk_ref(batch_id, c.index), _dump_chunk(c), "set", None) for c in chunks
        ]
        try:
            for group in _commit_groups(writes):
                commit = self._db.batch()
                for ref, data, _, _ in group:
                    commit.set(ref, data)
                await commit.commit()
        except TRANSIENT as exc:
            raise StoreUnavailable(f"cannot write chunks: {exc.message}") from exc

    async def add_later_chunks(self, *, batch_id: str, chunks: list[ChunkDoc]) -> None:
        # Several smaller commits at once rather than one large one (2.8 MB at 50,000 requests), then the
        # mark, once every one of them is applied.
        groups = _commit_groups(
            [(self._chunk_ref(batch_id, c.index), _dump_chunk(c), "create", None) for c in chunks],
            max_bytes=LATER_COMMIT_BYTES,
        )

        async def _create(group: list[Write]) -> None:
            commit = self._db.batch()
            for ref, data, _, _ in group:
                commit.create(ref, data)
            with contextlib.suppress(gexc.AlreadyExists):  # only this commit, retried, wrote them
                await commit.commit()

        try:
            await asyncio.gather(*(_create(group) for group in groups))
            await self._batch_ref(batch_id).update({"plan_written": True})
        except TRANSIENT as exc:
            raise StoreUnavailable(f"cannot write chunks: {exc.message}") from exc

    async def get_batch(self, batch_id: str) -> BatchDoc | None:
        read = await self.read_batch(batch_id)
        return read.batch if read else None

    async def read_batch(self, batch_id: str) -> BatchSnapshot | None:
        """The batch with its version, for an `update_batch` that follows without reading it again."""
        snapshot = await self._get(self._batch_ref(batch_id))
        if not snapshot.exists:
            return None
        return BatchSnapshot(batch=BatchDoc.model_validate(snapshot.to_dict()), version=snapshot.update_time)

    async def update_batch(
        self,
        batch_id: str,
        mutate: Callable[[BatchDoc], dict[str, Any] | None],
        *,
        read: BatchSnapshot | None = None,
        audit: AuditRecord | None = None,
    ) -> BatchDoc | None:
        """Compare-and-set on the batch document: `mutate` returns the changes, or None to leave it.

        Returns the batch after the change (or unchanged), None when it does not exist. A concurrent writer
        makes the precondition fail and the read-decide-write runs again on fresh data. `read` is the batch
        as the caller last read it: the first attempt decides on it instead of reading again. `audit` is
        written in the same commit as the change, and only with a change.
        """
        ref = self._batch_ref(batch_id)
        for _ in range(20):
            current = read or await self.read_batch(batch_id)
            read = None
            if current is None:
                return None
            changes = mutate(current.batch)
            if not changes:
                return current.batch
            commit = self._db.batch()
            commit.update(ref, changes, option=self._db.write_option(last_update_time=current.version))
            if audit is not None:
                commit.create(self._db.collection(AUDIT_LOG).document(), _dump(audit))
            try:
                await commit.commit()
            except (gexc.FailedPrecondition, gexc.Aborted, gexc.NotFound):
                continue
            except TRANSIENT as exc:
                raise StoreUnavailable(f"cannot update batch: {exc.message}") from exc
            return BatchDoc.model_validate(current.batch.model_dump() | changes)
        raise StoreUnavailable("batch document kept changing under compare-and-set")

    async def active_batches(self, owner: str | None, limit: int) -> list[BatchDoc]:
        query: Any = self._db.collection(BATCHES).where(
            filter=FieldFilter("status", "in", [s.value for s in ACTIVE_STATUSES])
        )
        if owner is not None:
            query = query.where(filter=FieldFilter("owner", "==", owner))
        docs = [BatchDoc.model_validate(s.to_dict()) async for s in query.limit(limit).stream()]
        return sorted(docs, key=lambda b: b.created_at, reverse=True)

    async def list_batches(
        self, *, owner: str | None, kind: str | None, status: str | None, limit: int, after: str | None
    ) -> list[BatchDoc]:
        query: Any = self._db.collection(BATCHES)
        for field, value in (("owner", owner), ("kind", kind), ("status", status)):
            if value is not None:
                query = query.where(filter=FieldFilter(field, "==", value))
        query = query.order_by("created_at", direction=firestore.Query.DESCENDING)
        if after is not None:
            last = await self._db.collection(BATCHES).document(after).get()
            if not last.exists:
                return []
            query = query.start_after(last)
        return [BatchDoc.model_validate(s.to_dict()) async for s in query.limit(limit).stream()]

    async def count_batches(self, owner: str | None, kind: str, status: str) -> int:
        query: Any = (
            self._db.collection(BATCHES)
            .where(filter=FieldFilter("kind", "==", kind))
            .where(filter=FieldFilter("status", "==", status))
        )
        if owner is not None:
            query = query.where(filter=FieldFilter("owner", "==", owner))
        result = await query.count(alias="n").get()
        return int(result[0][0].value)

    async def finished_batch_sums(self, owner: str | None, kind: str) -> dict[str, float]:
        query: Any = (
            self._db.collection(BATCHES)
            .where(filter=FieldFilter("kind", "==", kind))
            .where(filter=FieldFilter("finalized", "==", True))
        )
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

    async def unfinished_batches(self, created_before: dt.datetime, limit: int) -> list[BatchDoc]:
        query = (
            self._db.collection(BATCHES)
            .where(filter=FieldFilter("finalized", "==", False))
            .where(filter=FieldFilter("created_at", "<", created_before))
            .limit(limit)
        )
        return [BatchDoc.model_validate(s.to_dict()) async for s in query.stream()]

    # --- chunks -----------------------------------------------------------------------------------

    async def get_chunk(self, batch_id: str, chunk: int) -> ChunkSnapshot | None:
        snapshot = await self._get(self._chunk_ref(batch_id, chunk))
        if not snapshot.exists:
            return None
        return ChunkSnapshot(chunk=_load_chunk(snapshot.to_dict()), version=snapshot.update_time)

    async def get_stop(self, batch_id: str) -> BatchStop | None:
        snapshot = await self._get(self._batch_ref(batch_id), fields=["status", "stop_reason"])
        if not snapshot.exists:
            return None
        data = snapshot.to_dict() or {}
        return BatchStop(status=BatchStatus(data["status"]), stop_reason=data.get("stop_reason"))

    async def until_finalized(self, batch_id: str) -> bool:
        """Return once the batch is fanned in (True), told by a listener on its document; False if there is
        no such batch, or it is deleted meanwhile. The caller bounds the wait."""
        return await self._listener.until_true(f"{BATCHES}/{batch_id}", "finalized")

    async def get_lease(self, batch_id: str, chunk: int) -> LeaseView | None:
        snapshot = await self._get(self._chunk_ref(batch_id, chunk), fields=["lease_owner", "state"])
        if not snapshot.exists:
            return None
        data = snapshot.to_dict() or {}
        return LeaseView(
            lease_owner=data.get("lease_owner"), state=ChunkState(data["state"]), version=snapshot.update_time
        )

    async def update_chunk_if_unchanged(
        self, batch_id: str, chunk: int, *, version: Any, changes: dict[str, Any]
    ) -> Any | None:
        """Compare-and-set on a chunk: its new version, or None when someone else wrote it since `version`."""
        try:
            written = await self._chunk_ref(batch_id, chunk).update(
                changes, option=self._db.write_option(last_update_time=version)
            )
        except (gexc.FailedPrecondition, gexc.Aborted):
            return None
        except TRANSIENT as exc:
            raise StoreUnavailable(f"cannot update chunk: {exc.message}") from exc
        return written.update_time

    async def custom_ids(self, batch_id: str, start: int, end: int) -> dict[int, str | None]:
        """The customId of each request in [start, end), from a projection of the chunks overlapping it."""
        query = (
            self._batch_ref(batch_id)
            .collection(CHUNKS)
            .where(filter=FieldFilter("end", ">", start))
            .where(filter=FieldFilter("start", "<", end))
            .select(["start", "custom_ids"])
        )
        ids: dict[int, str | None] = {}
        async for snapshot in query.stream():
            first, values = snapshot.get("start"), _CUSTOM_IDS.validate_json(snapshot.get("custom_ids"))
            ids.update({first + position: value for position, value in enumerate(values)})
        return {index: value for index, value in ids.items() if start <= index < end}

    async def chunk_progress(self, batch_id: str) -> list[ChunkProgress]:
        return await self._progress(self._batch_ref(batch_id).collection(CHUNKS))

    async def claimed_chunk_progress(self, batch_id: str) -> list[ChunkProgress]:
        """The progress of the chunks ever claimed: the others have none, and a batch of 100 chunks has a few
        claimed at first (each chunk read costs about half a millisecond of CPU)."""
        chunks = self._batch_ref(batch_id).collection(CHUNKS)
        return await self._progress(chunks.where(filter=FieldFilter("claims", ">", 0)))

    async def _progress(self, query: Any) -> list[ChunkProgress]:
        fields = ["index", "state", "claims", "progress", "lease_expires_at", "segment", "finished_at"]
        return [
            ChunkProgress.model_validate((s.to_dict() or {}) | {"version": s.update_time})
            async for s in query.select(fields).stream()
        ]

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

    # --- results ---------------------------------------------------------------------------------

    async def record_results(
        self,
        batch_id: str,
        chunk: int,
        *,
        version: Any,
        page: ResultPage | None,
        usage: UsageRecord | None,
        changes: dict[str, Any],
    ) -> Any | None:
        """Create a page of results and its usage record and update the chunk, in one commit that applies
        only if the chunk is unchanged since `version` (the caller still holds its lease).

        Returns the chunk's new version, or None when another writer changed the chunk (the lease is lost and
        nothing was written): a result is recorded by one lease holder only, so never twice.
        """
        commit = self._db.batch()
        if page is not None:
            commit.create(self._pages(batch_id).document(), _dump_page(page))
        if usage is not None:
            add_usage(db=self._db, commit=commit, record=usage)
        chunk_ref = self._chunk_ref(batch_id, chunk)
        commit.update(chunk_ref, changes, option=self._db.write_option(last_update_time=version))
        try:
            written = await commit.commit()
        except (gexc.FailedPrecondition, gexc.Aborted):
            return None
        except TRANSIENT as exc:
            raise StoreUnavailable(f"cannot record results: {exc.message}") from exc
        return written[-1].update_time

    async def chunk_results(self, batch_id: str, chunk: int) -> list[ResultPage]:
        """The pages recorded for one chunk."""
        query = self._pages(batch_id).where(filter=FieldFilter("chunk", "==", chunk))
        try:
            return [_load_page(s.to_dict()) async for s in query.stream()]
        except TRANSIENT as exc:
            raise StoreUnavailable(f"cannot read results: {exc.message}") from exc

    async def result_lines(self, batch_id: str, start: int, end: int) -> dict[int, str]:
        """The recorded results with an index in [start, end), as JSON lines by index."""
        # Only the pages whose span of indices overlaps the range (two range filters: a composite index in
        # production). A commit's results finish close together, so a short range reads one or two pages.
        query = (
            self._pages(batch_id)
            .where(filter=FieldFilter("last", ">=", start))
            .where(filter=FieldFilter("first", "<", end))
        )
        lines: dict[int, str] = {}
        async for snapshot in query.stream():
            page = _load_page(snapshot.to_dict())
            pairs = zip(page.indices, page.lines, strict=True)
            lines.update((index, line) for index, line in pairs if start <= index < end)
        return lines

    async def stream_pages(self, batch_id: str) -> AsyncIterator[ResultPage]:
        """Every page of the batch, in chunk order."""
        async for snapshot in self._pages(batch_id).order_by("chunk").stream():
            yield _load_page(snapshot.to_dict())

    async def write_audit(self, record: AuditRecord) -> None:
        try:
            await self._db.collection(AUDIT_LOG).document().create(_dump(record))
        except TRANSIENT as exc:
            raise StoreUnavailable(f"cannot write the audit record: {exc.message}") from exc

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

    async def _get(self, ref: Any, *, fields: list[str] | None = None) -> Any:
        """The document (only `fields`, when given: a projection costs less to send and decode)."""
        try:
            return await ref.get(field_paths=fields)
        except TRANSIENT as exc:
            raise StoreUnavailable(f"cannot read {ref.path}: {exc.message}") from exc
