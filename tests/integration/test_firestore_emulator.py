"""Conformance of the local Firestore (the official emulator) through google-cloud-firestore."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from google.api_core import exceptions as gexc
from google.cloud import firestore

from shared.emulator_config import EmulatorConfig


@pytest.fixture
def db(local_cloud: EmulatorConfig) -> Iterator[firestore.Client]:
    client = firestore.Client(project=local_cloud.project_id)
    yield client
    client.close()


def test_conflicting_transactions_retry_and_both_apply(db: firestore.Client, unique: str) -> None:
    ref = db.collection(f"conformance-{unique}").document("counter")
    ref.set({"n": 0})
    attempts = {"a": 0, "b": 0}
    # Both transactions read before either writes, so they conflict; one is aborted and retried.
    both_read = threading.Barrier(2, timeout=30)

    def increment(name: str) -> None:
        @firestore.transactional
        def _increment(transaction: firestore.Transaction) -> None:
            attempts[name] += 1
            value = ref.get(transaction=transaction).get("n")
            if attempts[name] == 1:
                both_read.wait()
            transaction.update(ref, {"n": value + 1})

        _increment(db.transaction())

    threads = [threading.Thread(target=increment, args=(name,)) for name in attempts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert ref.get().get("n") == 2
    assert sum(attempts.values()) >= 3, f"one transaction should have been retried: {attempts}"


def test_create_refuses_an_existing_document(db: firestore.Client, unique: str) -> None:
    ref = db.collection(f"conformance-{unique}").document("once")
    ref.create({"v": 1})
    with pytest.raises(gexc.Conflict):
        ref.create({"v": 2})
    assert ref.get().get("v") == 1


def test_update_time_precondition_is_enforced(db: firestore.Client, unique: str) -> None:
    ref = db.collection(f"conformance-{unique}").document("cas")
    ref.set({"v": 1})
    stale = ref.get().update_time
    ref.update({"v": 2})
    with pytest.raises(gexc.FailedPrecondition):
        ref.update({"v": 3}, option=db.write_option(last_update_time=stale))
    assert ref.get().get("v") == 2


def test_count_and_sum_aggregations(db: firestore.Client, unique: str) -> None:
    collection = db.collection(f"conformance-{unique}")
    batch = db.batch()
    for i in range(10):
        batch.set(collection.document(f"{i:03d}"), {"tokens": i, "ok": i % 3 != 0})
    batch.commit()
    totals = collection.count(alias="n").sum("tokens", alias="tokens").get()[0]
    values = {r.alias: r.value for r in totals}
    assert values == {"n": 10, "tokens": 45}
    failed = collection.where(filter=firestore.FieldFilter("ok", "==", False)).count().get()[0][0].value
    assert failed == 4
