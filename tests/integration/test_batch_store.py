"""The batch document's compare-and-set, on the real Firestore adapter and emulator: a change decided on a
read that another writer has since overtaken is decided again on fresh data, and its audit record is written
with the change, once."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest
from google.cloud.firestore_v1.base_query import FieldFilter

from shared import runtime
from shared.app import platform
from shared.emulator_config import EmulatorConfig
from shared.models.auth import AuditRecord
from shared.models.batch import BatchDoc, BatchStatus
from shared.ports import BatchSnapshot
from shared.services.batches import CallerInfo
from shared.services.engine import Engine
from tests.integration.engine_harness import RecordingQueue, submit


@pytest.fixture
def engine(local_cloud: EmulatorConfig) -> Engine:
    return dataclasses.replace(platform().engine, queue=RecordingQueue())  # type: ignore[arg-type]


def _audit(batch_id: str) -> AuditRecord:
    caller = CallerInfo(remote_addr="127.0.0.1", user_agent="test")
    return caller.audit("batch.test", tenant="store-test", target=batch_id, at=dt.datetime.now(dt.UTC))


def _read_then_overtaken(engine: Engine, tenant: str, changes: dict[str, Any]) -> tuple[str, BatchSnapshot]:
    """A new batch, as read before another writer made `changes` to it."""
    batch_id = submit(engine, tenant, [{"prompt": "p"}])
    stale = runtime.run(engine.store.read_batch(batch_id))
    assert stale is not None
    runtime.run(engine.store.update_batch(batch_id, lambda _: changes))
    return batch_id, stale


def _audit_actions(firestore_db: Any, batch_id: str) -> list[str]:
    query = firestore_db.collection("audit_log").where(filter=FieldFilter("target", "==", batch_id))
    return sorted(snapshot.get("action") for snapshot in query.stream())


def _stop_unless_final(batch: BatchDoc) -> dict[str, Any] | None:
    return None if batch.status.is_final else {"status": BatchStatus.CANCELLED.value}


def test_a_change_decided_on_a_stale_read_is_decided_again(
    engine: Engine, firestore_db: Any, unique: str
) -> None:
    store = engine.store
    # Another writer finishes the batch after our read.
    batch_id, stale = _read_then_overtaken(engine, f"store-{unique}", {"status": BatchStatus.FAILED.value})

    seen: list[BatchStatus] = []

    def _decide(batch: BatchDoc) -> dict[str, Any] | None:
        seen.append(batch.status)
        return _stop_unless_final(batch)

    after = runtime.run(store.update_batch(batch_id, _decide, read=stale, audit=_audit(batch_id)))

    # The stale read's decision did not apply; on fresh data there was nothing to change, so no audit record.
    assert seen == [BatchStatus.QUEUED, BatchStatus.FAILED]
    assert after is not None and after.status is BatchStatus.FAILED
    assert runtime.run(store.get_batch(batch_id)).status is BatchStatus.FAILED  # type: ignore[union-attr]
    assert _audit_actions(firestore_db, batch_id) == ["batch.submit"]


def test_a_change_and_its_audit_record_are_written_once(
    engine: Engine, firestore_db: Any, unique: str
) -> None:
    store = engine.store
    # A concurrent write that leaves the decision standing (but moves the version on).
    batch_id, stale = _read_then_overtaken(engine, f"store-{unique}", {"lanes": 1})

    after = runtime.run(store.update_batch(batch_id, _stop_unless_final, read=stale, audit=_audit(batch_id)))

    assert after is not None and after.status is BatchStatus.CANCELLED
    assert _audit_actions(firestore_db, batch_id) == ["batch.submit", "batch.test"]
    again = runtime.run(store.update_batch(batch_id, _stop_unless_final, audit=_audit(batch_id)))
    assert again is not None and again.status is BatchStatus.CANCELLED
    assert _audit_actions(firestore_db, batch_id) == ["batch.submit", "batch.test"]


def test_a_missing_batch_is_none(engine: Engine, unique: str) -> None:
    assert runtime.run(engine.store.read_batch(f"missing{unique}")) is None
    assert runtime.run(engine.store.update_batch(f"missing{unique}", _stop_unless_final)) is None


def test_a_submit_of_many_megabytes_is_written_in_commits_the_store_accepts(
    engine: Engine, firestore_db: Any, unique: str
) -> None:
    # 120 prompts of 60 KB, each kept inline (under BATCH_INLINE_LIMIT_BYTES): over 7 MB of chunks, more than
    # one commit may carry (the emulator takes 4 MiB a message, production 10 MiB a request).
    prompts = [{"prompt": f"{i} " + "x" * 60_000, "customId": f"c{i}"} for i in range(120)]

    batch_id = submit(engine, f"big-{unique}", prompts, concurrency=1)

    chunks = list(firestore_db.collection("batches").document(batch_id).collection("chunks").stream())
    assert sum(len(chunk.get("items")) for chunk in chunks) > 6 * 1024 * 1024
    assert sorted(chunk.get("start") for chunk in chunks)[0] == 0
    assert max(chunk.get("end") for chunk in chunks) == 120
    batch = runtime.run(engine.store.get_batch(batch_id))
    assert batch is not None and batch.chunk_count == len(chunks)
