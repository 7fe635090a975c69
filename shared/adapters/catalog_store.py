"""Firestore adapter of the catalog and its image queue.

Layout (every multi-document change is one commit whose writes carry preconditions: compare-and-set on the
documents it read, `create` for those that must not exist):
  tenants/{tenant}/articulos/{id:012d}   an article; its image is an object name
  image_queue/{queueId}                  a queue item (the seed's fields, its tenant, its slot)
  image_queue_active/{sha(tenant,id)}    the article's item while it is pending or processing (dedupe)
  image_slots/{k}                        slot k of IMAGE_QUEUE_CONCURRENCY: the item holding it (none once
                                         it ended: the commit that ends an item frees its slot)
  image_model_calls/{YYYYmmddHHMM}       model calls started in that minute, across instances
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from shared.errors import Conflict, NotFound, StoreUnavailable
from shared.models.articulos import Articulo, Dispatch, QueueItem, QueueState
from shared.ports import GuardedWrite

QUEUE = "image_queue"
ACTIVE = "image_queue_active"
SLOTS = "image_slots"
CALLS = "image_model_calls"
TRANSIENT = (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.InternalServerError)
CONTENDED = (gexc.FailedPrecondition, gexc.Aborted, gexc.AlreadyExists, gexc.NotFound)
ATTEMPTS = 20


class Contended(Exception):
    """A precondition of a compare-and-set failed: read again and decide again."""


@dataclass(frozen=True)
class Waiting:
    """A waiting item as the queue's head query read it: its update time is the assignment's precondition."""

    item: QueueItem
    version: Any


@dataclass(frozen=True)
class Slot:
    index: int
    queue_id: str | None
    version: Any  # update time, or None when the slot document does not exist yet


@dataclass(frozen=True)
class Swapped:
    """What `complete_swap` did: its outcome, and the slot its commit freed (None if it freed none)."""

    outcome: str
    freed_slot: Slot | None = None


def _active_id(tenant: str, articulo_id: int) -> str:
    return hashlib.sha256(f"{tenant}\x00{articulo_id}".encode()).hexdigest()[:40]


def _item(snapshot: Any) -> QueueItem:
    return QueueItem.model_validate(snapshot.to_dict())


class FirestoreCatalogStore:
    """Articles, queue items, slots and the model-call counter on the async Firestore client."""

    def __init__(self, client: firestore.AsyncClient) -> None:
        self._db = client

    # --- references and the commit helper ---------------------------------------------------------

    def _article_ref(self, tenant: str, articulo_id: int) -> Any:
        return self._db.document("tenants", quote(tenant, safe=""), "articulos", f"{articulo_id:012d}")

    def _item_ref(self, queue_id: str) -> Any:
        return self._db.collection(QUEUE).document(queue_id)

    def _active_ref(self, tenant: str, articulo_id: int) -> Any:
        return self._db.collection(ACTIVE).document(_active_id(tenant, articulo_id))

    def _cas_option(self, snapshot: Any) -> Any:
        return self._db.write_option(last_update_time=snapshot.update_time)

    async def _retrying(self, attempt: Callable[[], Any], what: str) -> Any:
        """Run a read-decide-commit until its preconditions hold."""
        for _ in range(ATTEMPTS):
            try:
                return await attempt()
            except (Contended, *CONTENDED):
                continue
            except TRANSIENT as exc:
                raise StoreUnavailable(f"cannot {what}: {exc.message}") from exc
        raise StoreUnavailable(f"cannot {what}: the documents kept changing")

    # --- articles -----------------------------------------------------------------------------------

    async def get_article(self, tenant: str, articulo_id: int) -> Articulo | None:
        snapshot = await self._article_ref(tenant, articulo_id).get()
        return Articulo.model_validate(snapshot.to_dict()) if snapshot.exists else None

    async def has_active_item(self, tenant: str, articulo_id: int) -> bool:
        """Whether the article has an item pending or processing (its dedupe document exists)."""
        snapshot = await self._active_ref(tenant, articulo_id).get()
        return bool(snapshot.exists)

    async def get_articles(self, tenant: str, ids: list[int]) -> dict[int, Articulo]:
        refs = [self._article_ref(tenant, i) for i in ids]
        found: dict[int, Articulo] = {}
        async for snapshot in self._db.get_all(refs):
            if snapshot.exists:
                article = Articulo.model_validate(snapshot.to_dict())
                found[article.id] = article
        return found

    async def put_article(
        self, tenant: str, articulo_id: int, fields: dict[str, Any], now: dt.datetime
    ) -> Articulo:
        """Create or update the article's own fields (its image and creation time are kept)."""
        ref = self._article_ref(tenant, articulo_id)

        async def _attempt() -> Articulo:
            snapshot = await ref.get()
            commit = self._db.batch()
            if snapshot.exists:
                data = snapshot.to_dict() | fields | {"updated_at": now}
                commit.update(ref, fields | {"updated_at": now}, option=self._cas_option(snapshot))
            else:
                data = fields | {"tenant": tenant, "id": articulo_id, "created_at": now, "updated_at": now}
                commit.create(ref, data)
            await commit.commit()
            return Articulo.model_validate(data)

        result: Articulo = await self._retrying(_attempt, "write the article")
        return result

    async def set_article_image(
        self, tenant: str, articulo_id: int, *, object_name: str, content_type: str, now: dt.datetime
    ) -> str | None:
        """Point the article at a new image; returns the object it pointed at before."""
        ref = self._article_ref(tenant, articulo_id)

        async def _attempt() -> str | None:
            snapshot = await ref.get()
            if not snapshot.exists:
                raise NotFound(f"no articulo {articulo_id}")
            previous: str | None = (snapshot.to_dict() or {}).get("imagen_object")
            changes = {"imagen_object": object_name, "imagen_content_type": content_type, "updated_at": now}
            commit = self._db.batch()
            commit.update(ref, changes, option=self._cas_option(snapshot))
            await commit.commit()
            return previous

        result: str | None = await self._retrying(_attempt, "set the article's image")
        return result

    def articles_query(self, tenant: str, *, activo: bool | None, categoria_id: int | None) -> Any:
        """A tenant's articles in id order, by equality on `activo` and `categoria_id` when given (each
        combination has its composite index in infra/firestore.indexes.json)."""
        query: Any = self._db.collection("tenants", quote(tenant, safe=""), "articulos")
        if categoria_id is not None:
            query = query.where(filter=FieldFilter("categoria_id", "==", categoria_id))
        if activo is not None:
            query = query.where(filter=FieldFilter("activo", "==", activo))
        return query.order_by("id")

    async def list_articles(
        self,
        tenant: str,
        *,
        activo: bool | None,
        categoria_id: int | None,
        limit: int,
        after_id: int | None,
    ) -> list[Articulo]:
        query = self.articles_query(tenant, activo=activo, categoria_id=categoria_id)
        if after_id is not None:
            query = query.start_after({"id": after_id})
        return [Articulo.model_validate(s.to_dict()) async for s in query.limit(limit).stream()]

    # --- queue items --------------------------------------------------------------------------------

    async def add_item(self, item: QueueItem) -> str | None:
        """Add the item unless its article already has one pending or processing: None when added, else
        the state of the item already there. One commit creates both the item and the article's dedupe
        document, so of two racing adds exactly one succeeds."""
        active = self._active_ref(item.tenant, item.articulo_id)
        commit = self._db.batch()
        commit.create(active, {"queue_id": item.id, "tenant": item.tenant, "articulo_id": item.articulo_id})
        commit.create(self._item_ref(item.id), item.model_dump(mode="python"))
        try:
            await commit.commit()
        except gexc.AlreadyExists:
            holder = await active.get()
            existing = await self.get_item(str(holder.get("queue_id"))) if holder.exists else None
            return existing.estado.value if existing else QueueState.PENDING.value
        except TRANSIENT as exc:
            raise StoreUnavailable(f"cannot add to the queue: {exc.message}") from exc
        return None

    async def get_item(self, queue_id: str) -> QueueItem | None:
        snapshot = await self._item_ref(queue_id).get()
        return _item(snapshot) if snapshot.exists else None

    async def update_item(
        self, queue_id: str, decide: Callable[[QueueItem], dict[str, Any] | None]
    ) -> QueueItem | None:
        """Compare-and-set on one item: `decide` returns the changes or None; the item after it."""
        ref = self._item_ref(queue_id)

        async def _attempt() -> QueueItem | None:
            snapshot = await ref.get()
            if not snapshot.exists:
                return None
            item = _item(snapshot)
            changes = decide(item)
            if not changes:
                return item
            commit = self._db.batch()
            commit.update(ref, changes, option=self._cas_option(snapshot))
            if changes.get("despacho") == Dispatch.DONE.value:
                await self._release_holders(commit, item)
            await commit.commit()
            return QueueItem.model_validate(item.model_dump() | changes)

        result: QueueItem | None = await self._retrying(_attempt, "update the queue item")
        return result

    async def _release_holders(self, commit: Any, item: QueueItem) -> None:
        """Add to `commit` what an item's end releases: the article's dedupe document and the item's slot
        (each only if this item holds it)."""
        refs = [self._active_ref(item.tenant, item.articulo_id)]
        if item.slot is not None:
            refs.append(self._slot_ref(item.slot))
        async for holder in self._db.get_all(refs):
            self._release(commit, holder, item)

    def _release(self, commit: Any, holder: Any, item: QueueItem) -> bool:
        """Add to `commit` the release of a dedupe or slot document `holder` (as read), if `item` holds it;
        whether it did."""
        if not holder.exists or holder.get("queue_id") != item.id:
            return False
        if holder.reference.parent.id == SLOTS:
            commit.update(holder.reference, {"queue_id": None}, option=self._cas_option(holder))
        else:
            commit.delete(holder.reference, option=self._cas_option(holder))
        return True

    async def complete_swap(
        self,
        item: QueueItem,
        *,
        expected_object: str,
        new_object: str,
        content_type: str,
        changes: dict[str, Any],
        uploaded: Awaitable[Any],
        now: dt.datetime,
    ) -> Swapped:
        """Point the item's article at `new_object` (only if it still shows `expected_object`) and mark the
        item completed, in one commit, once `uploaded` (the new object's upload, which the reads overlap) is
        done. Its outcome: `completed`, `changed` (the article has another image now: nothing written) or the
        item's state when it is not processing; and the slot the commit freed, as the commit left it."""
        item_ref = self._item_ref(item.id)
        article_ref = self._article_ref(item.tenant, item.articulo_id)
        active_ref = self._active_ref(item.tenant, item.articulo_id)

        async def _attempt() -> Swapped:
            # One round trip for the documents the commit depends on.
            refs = [item_ref, article_ref, active_ref] + (
                [self._slot_ref(item.slot)] if item.slot is not None else []
            )
            found = {s.reference.path: s async for s in self._db.get_all(refs)}
            item_snapshot, article = found[item_ref.path], found[article_ref.path]
            if not item_snapshot.exists:
                return Swapped(outcome="missing")
            current = _item(item_snapshot)
            if current.estado is not QueueState.PROCESSING:
                return Swapped(outcome=current.estado.value)
            if not article.exists or (article.to_dict() or {}).get("imagen_object") not in (
                expected_object,
                new_object,
            ):
                return Swapped(outcome="changed")
            await uploaded
            commit = self._db.batch()
            commit.update(
                article_ref,
                {"imagen_object": new_object, "imagen_content_type": content_type, "updated_at": now},
                option=self._cas_option(article),
            )
            commit.update(item_ref, changes, option=self._cas_option(item_snapshot))
            released = [self._release(commit, found[holder.path], item) for holder in refs[2:]]
            results = await commit.commit()
            freed = None
            if item.slot is not None and released[-1]:  # the slot's release is the commit's last write
                freed = Slot(index=item.slot, queue_id=None, version=results[-1].update_time)
            return Swapped(outcome=QueueState.COMPLETED.value, freed_slot=freed)

        result: Swapped = await self._retrying(_attempt, "swap the article's image")
        return result

    async def retry_item(self, queue_id: str, changes: Callable[[QueueItem], dict[str, Any]]) -> QueueItem:
        """Put a failed item back in the queue (and take its article's dedupe document again)."""
        ref = self._item_ref(queue_id)

        async def _attempt() -> QueueItem:
            snapshot = await ref.get()
            if not snapshot.exists:
                raise NotFound(f"no queue item {queue_id}")
            item = _item(snapshot)
            if item.estado is not QueueState.FAILED:
                raise Conflict(f"queue item {queue_id} is {item.estado.value}, not failed")
            update = changes(item)
            active = self._active_ref(item.tenant, item.articulo_id)
            commit = self._db.batch()
            commit.update(ref, update, option=self._cas_option(snapshot))
            commit.create(
                active, {"queue_id": item.id, "tenant": item.tenant, "articulo_id": item.articulo_id}
            )
            try:
                await commit.commit()
            except gexc.AlreadyExists as exc:
                holder = await active.get()
                if holder.exists and holder.get("queue_id") != item.id:
                    raise Conflict(f"articulo {item.articulo_id} already has an item in the queue") from exc
                raise
            return QueueItem.model_validate(item.model_dump() | update)

        result: QueueItem = await self._retrying(_attempt, "retry the queue item")
        return result

    def _items(self, tenant: str | None) -> Any:
        query: Any = self._db.collection(QUEUE)
        if tenant is not None:
            query = query.where(filter=FieldFilter("tenant", "==", tenant))
        return query

    async def queue_snapshot(
        self, tenant: str | None, running_limit: int
    ) -> tuple[dict[QueueState, int], list[QueueItem]]:
        """The count of items in each state and the items in progress, all read at one instant (a read-only
        transaction), so an item that moves between states meanwhile is counted once, in one state."""

        @firestore.async_transactional
        async def _read(transaction: Any) -> tuple[dict[QueueState, int], list[QueueItem]]:
            def in_state(estado: QueueState) -> Any:
                return self._items(tenant).where(filter=FieldFilter("estado", "==", estado.value))

            async def count(estado: QueueState) -> int:
                result = await in_state(estado).count().get(transaction=transaction)
                return int(result[0][0].value)

            async def running() -> list[QueueItem]:
                query = in_state(QueueState.PROCESSING).limit(running_limit)
                return [_item(s) async for s in query.stream(transaction=transaction)]

            counts, items = await asyncio.gather(
                asyncio.gather(*(count(estado) for estado in QueueState)), running()
            )
            return dict(zip(QueueState, counts, strict=True)), items

        return await _read(self._db.transaction(read_only=True))

    async def history(
        self, tenant: str | None, *, estado: QueueState | None, limit: int, offset: int, after: str | None
    ) -> list[QueueItem]:
        """Newest first (by created_at, then id); `after` is the id of the last item of the previous page."""
        query = self._items(tenant)
        if estado is not None:
            query = query.where(filter=FieldFilter("estado", "==", estado.value))
        query = query.order_by("created_at", direction="DESCENDING").order_by("id", direction="DESCENDING")
        if after is not None:
            last = await self._item_ref(after).get()
            if not last.exists:
                raise NotFound(f"no queue item {after} to continue after")
            query = query.start_after(last)
        elif offset:
            query = query.offset(offset)
        return [_item(s) async for s in query.limit(limit).stream()]

    async def finished_before(self, tenant: str | None, before: dt.datetime, limit: int) -> list[QueueItem]:
        query = (
            self._items(tenant)
            .where(filter=FieldFilter("despacho", "==", Dispatch.DONE.value))
            .where(filter=FieldFilter("completed_at", "<", before))
        )
        return [_item(s) async for s in query.limit(limit).stream()]

    async def delete_finished(self, queue_id: str) -> bool:
        """Delete an item if it is still completed or failed."""

        async def _attempt() -> bool:
            snapshot = await self._item_ref(queue_id).get()
            if not snapshot.exists or not _item(snapshot).estado.is_final:
                return False
            await self._item_ref(queue_id).delete(option=self._cas_option(snapshot))
            return True

        result: bool = await self._retrying(_attempt, "delete the queue item")
        return result

    # --- slots --------------------------------------------------------------------------------------

    def _slot_ref(self, index: int) -> Any:
        return self._db.collection(SLOTS).document(str(index))

    async def slots(self, count: int) -> list[Slot]:
        refs = [self._slot_ref(k) for k in range(count)]
        found = {s.id: s async for s in self._db.get_all(refs)}
        slots = []
        for k in range(count):
            snapshot = found.get(str(k))
            if snapshot is None or not snapshot.exists:
                slots.append(Slot(index=k, queue_id=None, version=None))
            else:
                slots.append(Slot(index=k, queue_id=snapshot.get("queue_id"), version=snapshot.update_time))
        return slots

    async def get_items(self, ids: list[str]) -> dict[str, QueueItem]:
        refs = [self._item_ref(i) for i in ids]
        return {s.id: _item(s) async for s in self._db.get_all(refs) if s.exists}

    async def waiting(self, limit: int) -> list[Waiting]:
        """The next items to run: highest `prioridad` first, then oldest, over every tenant."""
        query = (
            self._db.collection(QUEUE)
            .where(filter=FieldFilter("despacho", "==", Dispatch.WAITING.value))
            .order_by("prioridad", direction="DESCENDING")
            .order_by("created_at")
            .limit(limit)
        )
        return [Waiting(item=_item(s), version=s.update_time) async for s in query.stream()]

    async def create_slots(self, indices: list[int]) -> None:
        """Create the slot documents that do not exist yet, free, so that every assignment is a
        compare-and-set on a slot as read (`assignment`). Safe to race: a slot already there is kept."""

        async def _create(index: int) -> None:
            try:
                await self._slot_ref(index).create({"queue_id": None})
            except gexc.AlreadyExists:
                pass
            except TRANSIENT as exc:
                raise StoreUnavailable(f"cannot create slot {index}: {exc.message}") from exc

        await asyncio.gather(*(_create(index) for index in indices))

    def assignment(
        self, slot: Slot, waiting: Waiting, now: dt.datetime
    ) -> tuple[list[GuardedWrite], QueueItem]:
        """The writes that give `slot` (as read; it exists) to a waiting item (as read), each a
        compare-and-set, to be committed with the item's engine batch; and the item as they leave it."""
        if slot.version is None:
            raise ValueError(f"slot {slot.index} does not exist yet: create_slots first")
        queue_id = waiting.item.id
        changes = {"despacho": Dispatch.DISPATCHED.value, "slot": slot.index, "updated_at": now}
        writes = [
            GuardedWrite(
                path=f"{SLOTS}/{slot.index}",
                op="update",
                data={"queue_id": queue_id, "assigned_at": now},
                version=slot.version,
            ),
            GuardedWrite(path=f"{QUEUE}/{queue_id}", op="update", data=changes, version=waiting.version),
        ]
        return writes, QueueItem.model_validate(waiting.item.model_dump() | changes)

    # --- model calls per minute ---------------------------------------------------------------------

    async def count_model_call(self, minute: dt.datetime) -> int:
        """Count one model call in `minute`; the count including it (an atomic increment, no transaction)."""
        ref = self._db.collection(CALLS).document(f"{minute:%Y%m%d%H%M}")
        try:
            result = await ref.set(
                {"calls": firestore.Increment(1), "expire_at": minute + dt.timedelta(days=1)}, merge=True
            )
        except TRANSIENT as exc:
            raise StoreUnavailable(f"cannot count the model call: {exc.message}") from exc
        transformed = list(getattr(result, "transform_results", []) or [])
        if transformed:
            return int(transformed[0].integer_value)
        snapshot = await ref.get()
        return int(snapshot.get("calls"))
