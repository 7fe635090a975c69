"""Firestore adapter of the Batch Mode jobs and of the credits ledger.

Layout:
  credit_balances/{tenant}                 the balance, in hundredths of a credit (`units`)
  credit_balances/{tenant}/ledger/{entry}  one entry per movement: `{job}:debit`, `{job}:refund:{row}`,
                                           `grant:{id}`; created only if absent, in the commit that moves
                                           the balance, so the balance is always the sum of the entries
  batchmode_jobs/{jobId}                   the job as history lists it (owner, type, state, counts, credits)
"""

from __future__ import annotations

import dataclasses
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from shared.errors import StoreUnavailable
from shared.ports import GuardedWrite, LedgerEntry

BALANCES = "credit_balances"
LEDGER = "ledger"
JOBS = "batchmode_jobs"
TRANSIENT = (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.InternalServerError)


class FirestoreCredits:
    """Implements Credits."""

    def __init__(self, client: firestore.AsyncClient) -> None:
        self._db = client

    def _balance_ref(self, tenant: str) -> Any:
        return self._db.collection(BALANCES).document(tenant)

    def _entry_ref(self, tenant: str, entry_id: str) -> Any:
        return self._balance_ref(tenant).collection(LEDGER).document(entry_id)

    async def balance(self, *, tenant: str) -> tuple[int, Any]:
        snapshot = await self._balance_ref(tenant).get()
        if not snapshot.exists:
            return 0, None
        return int((snapshot.to_dict() or {}).get("units", 0)), snapshot.update_time

    def debit_writes(self, *, entry: LedgerEntry, balance: int, version: Any) -> list[GuardedWrite]:
        balance_path = f"{BALANCES}/{entry.tenant}"
        return [
            GuardedWrite(
                path=f"{balance_path}/{LEDGER}/{entry.entry_id}", op="create", data=dataclasses.asdict(entry)
            ),
            GuardedWrite(
                path=balance_path,
                op="update",
                data={"units": balance + entry.units, "updated_at": entry.at},
                version=version,
            ),
        ]

    async def post(self, *, entries: list[LedgerEntry]) -> int:
        if not entries:
            return 0
        tenant = entries[0].tenant
        assert all(entry.tenant == tenant for entry in entries), "one tenant's entries at a time"
        balance_ref = self._balance_ref(tenant)
        refs = [self._entry_ref(tenant, entry.entry_id) for entry in entries]

        @firestore.async_transactional
        async def _post(transaction: Any) -> int:
            # AsyncTransaction.get_all awaits an async generator (a bug): read through the client.
            reads = self._db.get_all(refs, transaction=transaction)
            existing = {snap.id async for snap in reads if snap.exists}
            balance = await balance_ref.get(transaction=transaction)
            units = int((balance.to_dict() or {}).get("units", 0)) if balance.exists else 0
            new = [entry for entry in entries if entry.entry_id not in existing]
            if not new:
                return 0
            posted = sum(entry.units for entry in new)
            for entry in new:
                transaction.create(self._entry_ref(tenant, entry.entry_id), dataclasses.asdict(entry))
            transaction.set(
                balance_ref, {"tenant": tenant, "units": units + posted, "updated_at": new[-1].at}
            )
            return posted

        try:
            result: int = await _post(self._db.transaction())
        except TRANSIENT as exc:
            raise StoreUnavailable(f"cannot post to the ledger: {exc.message}") from exc
        return result

    async def entries(self, *, tenant: str, limit: int) -> list[LedgerEntry]:
        query = (
            self._balance_ref(tenant)
            .collection(LEDGER)
            .order_by("at", direction=firestore.Query.DESCENDING)
            .limit(limit)
        )
        return [LedgerEntry(**(snap.to_dict() or {})) async for snap in query.stream()]

    async def ledger_sum(self, *, tenant: str) -> int:
        result = await self._balance_ref(tenant).collection(LEDGER).sum("units", alias="s").get()
        return int(result[0][0].value or 0)


class FirestoreBatchmodeJobs:
    """Implements BatchmodeJobs."""

    def __init__(self, client: firestore.AsyncClient) -> None:
        self._db = client

    def _ref(self, job_id: str) -> Any:
        return self._db.collection(JOBS).document(job_id)

    def create_write(self, *, job_id: str, data: dict[str, Any]) -> GuardedWrite:
        return GuardedWrite(path=f"{JOBS}/{job_id}", op="create", data=data)

    async def get(self, *, job_id: str) -> dict[str, Any] | None:
        snapshot = await self._ref(job_id).get()
        return snapshot.to_dict() if snapshot.exists else None

    async def merge(self, *, job_id: str, fields: dict[str, Any]) -> None:
        try:
            await self._ref(job_id).set(fields, merge=True)
        except TRANSIENT as exc:
            raise StoreUnavailable(f"cannot update job {job_id}: {exc.message}") from exc

    async def history(
        self, *, tenant: str, job_type: str | None, limit: int, after: str | None
    ) -> list[dict[str, Any]]:
        query: Any = self._db.collection(JOBS).where(filter=FieldFilter("owner", "==", tenant))
        if job_type is not None:
            query = query.where(filter=FieldFilter("type", "==", job_type))
        query = query.order_by("created_at", direction=firestore.Query.DESCENDING).order_by(
            "__name__", direction=firestore.Query.DESCENDING
        )
        if after is not None:
            cursor = await self._ref(after).get()
            if cursor.exists and (cursor.to_dict() or {}).get("owner") == tenant:
                query = query.start_after(cursor)
        return [snap.to_dict() or {} async for snap in query.limit(limit).stream()]

    async def delete(self, *, job_id: str) -> None:
        await self._ref(job_id).delete()
