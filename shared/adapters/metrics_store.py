"""Firestore adapter of the metric runs (MetricsStore).

asesores/{id}, solicitudes/{id}, ofertas/{id}, calificaciones/{id}   the marketplace's data, read only
metricas_calculadas/{nombre}__{periodo}__{digest}                     one calculated metric, TTL on expira_en
metricas_runs/{job}__{periodo}                                        a run, keyed by job and period
metricas_runs/{run}/resultados/{batch}__{tarea}                       one task's outcome in one attempt
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from shared.errors import InvalidRequest, StoreUnavailable
from shared.ports import MetricQuery

METRICS = "metricas_calculadas"
RUNS = "metricas_runs"
OUTCOMES = "resultados"
MAX_WRITES = 500
TRANSIENT = (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.InternalServerError, gexc.Aborted)


class FirestoreMetricsStore:
    def __init__(self, client: firestore.AsyncClient) -> None:
        self._db = client

    async def stream_range(
        self, *, collection: str, start: dt.datetime, end: dt.datetime
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        # One query, consumed to its end: the client streams it (RunQuery's server stream, flow-controlled),
        # so a slice is never in memory whole. Paging with cursors costs a scan per page on the emulator: 5
        # times slower for a day of 100,000 offers (the benchmark's metrics section).
        query = (
            self._db.collection(collection)
            .where(filter=FieldFilter("creada_en", ">=", start))
            .where(filter=FieldFilter("creada_en", "<", end))
        )
        try:
            async for snap in query.stream():
                yield snap.id, snap.to_dict() or {}
        except TRANSIENT as exc:
            raise StoreUnavailable(f"cannot read {collection}: {exc.message}") from exc

    async def created_at(self, *, collection: str, ids: list[str]) -> dict[str, dt.datetime]:
        found: dict[str, dt.datetime] = {}
        for offset in range(0, len(ids), 300):
            refs = [self._db.collection(collection).document(i) for i in ids[offset : offset + 300]]
            try:
                async for snap in self._db.get_all(refs, field_paths=["creada_en"]):
                    if snap.exists:
                        found[snap.id] = snap.get("creada_en")
            except TRANSIENT as exc:
                raise StoreUnavailable(f"cannot read {collection}: {exc.message}") from exc
        return found

    async def replace_metrics(self, *, nombre: str, periodo_inicio: dt.datetime, docs: dict[str, Any]) -> int:
        collection = self._db.collection(METRICS)
        try:
            items = list(docs.items())
            for offset in range(0, len(items), MAX_WRITES):
                batch = self._db.batch()
                for doc_id, data in items[offset : offset + MAX_WRITES]:
                    batch.set(collection.document(doc_id), data)
                await batch.commit()
            stale = [
                snap.reference
                async for snap in collection.where(filter=FieldFilter("nombre", "==", nombre))
                .where(filter=FieldFilter("periodo_inicio", "==", periodo_inicio))
                .select([])
                .stream()
                if snap.id not in docs
            ]
            for offset in range(0, len(stale), MAX_WRITES):
                batch = self._db.batch()
                for ref in stale[offset : offset + MAX_WRITES]:
                    batch.delete(ref)
                await batch.commit()
        except TRANSIENT as exc:
            raise StoreUnavailable(f"cannot write metrics {nombre}: {exc.message}") from exc
        return len(stale)

    async def query_metrics(
        self, *, query: MetricQuery, limit: int, after: tuple[dt.datetime, str] | None
    ) -> list[tuple[str, dict[str, Any]]]:
        q: Any = self._db.collection(METRICS)
        if query.nombre:
            q = q.where(filter=FieldFilter("nombre", "==", query.nombre))
        if query.tipo:
            q = q.where(filter=FieldFilter("tipo", "==", query.tipo))
        if query.dimension:
            key, value = query.dimension
            q = q.where(filter=FieldFilter(f"dimensiones.`{key}`", "==", value))
        if query.desde:
            q = q.where(filter=FieldFilter("periodo_inicio", ">=", query.desde))
        if query.hasta:
            q = q.where(filter=FieldFilter("periodo_inicio", "<", query.hasta))
        q = q.order_by("periodo_inicio", direction="DESCENDING").order_by("__name__", direction="DESCENDING")
        if after is not None:
            q = q.start_after(
                {"periodo_inicio": after[0], "__name__": self._db.collection(METRICS).document(after[1])}
            )
        try:
            return [(snap.id, snap.to_dict() or {}) async for snap in q.limit(limit).stream()]
        except gexc.FailedPrecondition as exc:
            # Production Firestore asks for a composite index per combination of filters.
            raise InvalidRequest(
                "this combination of filters has no index (see infra/firestore.indexes.json)",
                details=[{"field": "dimension", "problem": "combine it with nombre_metrica or nothing else"}],
            ) from exc
        except TRANSIENT as exc:
            raise StoreUnavailable(f"cannot read metrics: {exc.message}") from exc

    def _run_ref(self, run_key: str) -> Any:
        return self._db.collection(RUNS).document(run_key)

    async def get_run(self, run_key: str) -> dict[str, Any] | None:
        try:
            snap = await self._run_ref(run_key).get()
        except TRANSIENT as exc:
            raise StoreUnavailable(f"cannot read run {run_key}: {exc.message}") from exc
        return snap.to_dict() if snap.exists else None

    async def begin_run(
        self, run_key: str, decide: Callable[[dict[str, Any] | None], dict[str, Any] | None]
    ) -> tuple[dict[str, Any], bool]:
        ref = self._run_ref(run_key)

        @firestore.async_transactional
        async def _begin(transaction: Any) -> tuple[dict[str, Any], bool]:
            snap = await ref.get(transaction=transaction)
            current = snap.to_dict() if snap.exists else None
            chosen = decide(current)
            if chosen is None:
                assert current is not None
                return current, False
            transaction.set(ref, chosen)
            return chosen, True

        try:
            result: tuple[dict[str, Any], bool] = await _begin(self._db.transaction())
        except TRANSIENT as exc:
            raise StoreUnavailable(f"cannot start run {run_key}: {exc.message}") from exc
        return result

    async def update_run(self, run_key: str, changes: dict[str, Any]) -> None:
        try:
            await self._run_ref(run_key).update(changes)
        except TRANSIENT as exc:
            raise StoreUnavailable(f"cannot update run {run_key}: {exc.message}") from exc

    async def put_outcome(self, run_key: str, outcome_id: str, data: dict[str, Any]) -> None:
        try:
            await self._run_ref(run_key).collection(OUTCOMES).document(outcome_id).set(data)
        except TRANSIENT as exc:
            raise StoreUnavailable(f"cannot record outcome of {run_key}: {exc.message}") from exc

    async def outcomes(self, run_key: str, batch_id: str) -> list[dict[str, Any]]:
        query = (
            self._run_ref(run_key).collection(OUTCOMES).where(filter=FieldFilter("batch_id", "==", batch_id))
        )
        try:
            return [snap.to_dict() or {} async for snap in query.stream()]
        except TRANSIENT as exc:
            raise StoreUnavailable(f"cannot read outcomes of {run_key}: {exc.message}") from exc

    async def last_run(self, job_id: str) -> dict[str, Any] | None:
        query = (
            self._db.collection(RUNS)
            .where(filter=FieldFilter("job_id", "==", job_id))
            .order_by("iniciado_en", direction="DESCENDING")
            .limit(1)
        )
        try:
            found = [snap.to_dict() or {} async for snap in query.stream()]
        except TRANSIENT as exc:
            raise StoreUnavailable(f"cannot read runs of {job_id}: {exc.message}") from exc
        return found[0] if found else None

    async def delete_expired(self, *, collection: str, field_name: str, now: dt.datetime, limit: int) -> int:
        query = self._db.collection(collection).where(filter=FieldFilter(field_name, "<", now)).limit(limit)
        try:
            refs = [snap.reference async for snap in query.select([]).stream()]
            if collection == RUNS:
                # A run's outcomes go with it, one commit per run (a run has a few dozen).
                for ref in refs:
                    batch = self._db.batch()
                    async for outcome in ref.collection(OUTCOMES).select([]).stream():
                        batch.delete(outcome.reference)
                    batch.delete(ref)
                    await batch.commit()
                return len(refs)
            for offset in range(0, len(refs), MAX_WRITES):
                batch = self._db.batch()
                for ref in refs[offset : offset + MAX_WRITES]:
                    batch.delete(ref)
                await batch.commit()
        except TRANSIENT as exc:
            raise StoreUnavailable(f"cannot clean {collection}: {exc.message}") from exc
        return len(refs)

    async def ping(self) -> None:
        try:
            await self._run_ref("health-check").get()
        except TRANSIENT as exc:
            raise StoreUnavailable(f"Firestore does not answer: {exc.message}") from exc
