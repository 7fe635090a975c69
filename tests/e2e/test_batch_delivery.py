"""At-least-once delivery: duplicate and concurrent deliveries, a worker killed mid-chunk, finalizer twice."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from tests.conftest import wait_for
from tests.e2e.batch_client import all_results, status, submit, wait_final
from tests.e2e.conftest import new_api_key
from tests.e2e.delivery import Gateway, call_internal, free_port, sweep_until, usage_events


def test_duplicate_and_concurrent_deliveries_run_each_request_once(
    api: httpx.Client, gateway_url: str, firestore_db: Any
) -> None:
    body = submit(api, [f"EMULATOR_SLEEP_40 item {i}" for i in range(40)], concurrency=4, wait=False)
    batch_id = body["batchId"]
    message = {"batch_id": batch_id, "chunk": 0, "segment": 0}

    # Two more deliveries of the same chunk, at once, racing the one Cloud Tasks makes.
    with ThreadPoolExecutor(max_workers=2) as pool:
        responses = list(pool.map(lambda _: call_internal(gateway_url, "batch_worker", message), range(2)))
    assert {r.status_code for r in responses} <= {200, 409}
    final = wait_final(api, batch_id)

    assert final["status"] == "completed"
    assert final["progress"]["successful"] == 40
    events = usage_events(firestore_db, batch_id)
    assert sorted(int(e["event_id"].split("-")[1]) for e in events) == list(range(40)), (
        "each request ran once"
    )
    assert final["tokens"]["total"] == sum(e["total_tokens"] for e in events)

    # A late duplicate of the finished chunk, and the finalizer delivered twice more: no effect.
    late = call_internal(gateway_url, "batch_worker", message)
    finals = [call_internal(gateway_url, "batch_finalizer", {"batch_id": batch_id}) for _ in range(2)]
    assert late.status_code == 200
    assert [f.json()["outcome"] for f in finals] == ["already final", "already final"]
    assert len(usage_events(firestore_db, batch_id)) == 40
    assert status(api, batch_id)["tokens"] == final["tokens"]


def test_worker_killed_mid_chunk_recovers_through_lease_and_sweeper(
    own_queue: str, unique: str, firestore_db: Any
) -> None:
    gateway = Gateway(port=free_port(), queue=own_queue, lease_seconds=2)
    gateway.start()
    key = new_api_key(f"kill-{unique}")
    api = httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
    try:
        batch_id = submit(
            api, [f"EMULATOR_SLEEP_200 item {i}" for i in range(30)], concurrency=2, wait=False
        )["batchId"]
        wait_for(lambda: status(api, batch_id)["progress"]["finished"] >= 4, timeout=60, what="some results")

        gateway.kill()
        gateway.start()
        # Once the dead worker's lease has expired, the sweeper hands the chunk out again.
        sweep_until(gateway.url, lambda: status(api, batch_id)["status"] == "completed")
        final = wait_final(api, batch_id, timeout=120)

        assert final["status"] == "completed"
        results = all_results(api, batch_id)
        assert [r["status"] for r in results] == ["succeeded"] * 30
        ok_events = [e for e in usage_events(firestore_db, batch_id) if e["outcome"] == "ok"]
        assert sorted(int(e["event_id"].split("-")[1]) for e in ok_events) == list(range(30))
        assert final["tokens"]["total"] == sum(e["total_tokens"] for e in ok_events)
    finally:
        api.close()
        gateway.kill()
