"""Batch embeddings through the gateway: index into a tenant's collections, search them with Firestore's
vector search, list and delete collections; at-least-once delivery neither loses nor doubles a document."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import wait_for
from tests.e2e.batch_client import FINAL, status, wait_final
from tests.e2e.conftest import new_api_key
from tests.e2e.delivery import Gateway, free_port, sweep_until, usage_events

TOPICS = ["gearbox oil", "wiper blade", "cabin filter", "spark plug", "fuel pump", "door handle"]
TARGET = "titanium caliper for vintage racing motorcycles"


def corpus(size: int) -> list[dict[str, Any]]:
    """`size` documents about other parts, and one whose words the test query shares."""
    documents = [
        {"text": f"catalog entry {i} {TOPICS[i % len(TOPICS)]} stock {i % 7}", "metadata": {"id": f"doc-{i}"}}
        for i in range(size - 1)
    ]
    documents.insert(size // 2, {"text": TARGET, "metadata": {"id": "target", "category": "brakes"}})
    return documents


def embeddings(api: httpx.Client, operations: list[dict[str, Any]], **options: Any) -> httpx.Response:
    return api.post("/batch/embeddings", json={"operations": operations, "options": options})


def run(api: httpx.Client, operations: list[dict[str, Any]], **options: Any) -> dict[str, Any]:
    """Submit and wait for the batch to finish; its final status with every operation's result."""
    response = embeddings(api, operations, wait=False, **options)
    assert response.status_code == 202, response.text
    final = wait_final(api, response.json()["batchId"], timeout=180)
    assert final["kind"] == "embeddings"
    return final


def collections(api: httpx.Client) -> dict[str, dict[str, Any]]:
    response = api.get("/batch/collections")
    assert response.status_code == 200, response.text
    return {c["name"]: c for c in response.json()["collections"]}


def test_an_index_of_2000_documents_then_a_search_in_one_batch(api: httpx.Client, unique: str) -> None:
    name = f"kb_{unique}"
    documents = corpus(2000)

    final = run(
        api,
        [
            {"type": "index", "name": name, "documents": documents},
            {"type": "search", "name": name, "query": "vintage racing motorcycles caliper", "topK": 5},
        ],
        concurrency=10,
    )

    assert final["status"] == "completed", final
    index, search = final["results"]
    assert (index["index"], index["type"], index["success"], index["indexed"]) == (0, "index", True, 2000)
    assert index["documentIds"] == [d["metadata"]["id"] for d in documents]
    assert index["tokensUsed"] > 0 and isinstance(index["tokensUsed"], int)
    # The search ran after the index (a stage of its own) and sees every document.
    assert (search["index"], search["type"], search["success"]) == (1, "search", True)
    best = search["matches"][0]
    assert (best["id"], best["text"], best["metadata"]) == (
        "target",
        TARGET,
        {"id": "target", "category": "brakes"},
    )
    scores = [m["score"] for m in search["matches"]]
    assert len(scores) == 5 and scores == sorted(scores, reverse=True)
    assert final["summary"]["total"] == 2 and final["summary"]["documentsIndexed"] == 2000
    listed = collections(api)[name]
    assert (listed["documentCount"], listed["model"], listed["dimension"]) == (
        2000,
        "gemini-embedding-001",
        768,
    )


def test_indexing_again_replaces_documents_and_a_filter_narrows_matches(
    api: httpx.Client, unique: str
) -> None:
    name = f"parts_{unique}"
    documents = [
        {
            "text": f"brake pad set {i} for front axle",
            "metadata": {"category": "brakes" if i % 2 else "engine"},
        }
        for i in range(40)
    ]
    first = run(api, [{"type": "index", "name": name, "documents": documents}])
    # Derived ids: the same documents again (the same text and metadata) land on the same ids.
    again = run(api, [{"type": "index", "name": name, "documents": documents}])

    assert first["results"][0]["documentIds"] == again["results"][0]["documentIds"]
    assert len(set(first["results"][0]["documentIds"])) == 40
    assert collections(api)[name]["documentCount"] == 40

    searched = run(
        api,
        [
            {"type": "search", "name": name, "query": "brake pad front axle", "topK": 30},
            {
                "type": "search",
                "name": name,
                "query": "brake pad",
                "topK": 30,
                "filter": {"category": "brakes"},
            },
        ],
    )
    unfiltered, filtered = (r["matches"] for r in searched["results"])
    assert len(unfiltered) == 30
    assert len(filtered) == 20 and {m["metadata"]["category"] for m in filtered} == {"brakes"}


@pytest.mark.parametrize(
    "operations,field",
    [
        ([], "operations"),
        ([{"type": "upsert", "name": "kb", "documents": [{"text": "x"}]}], "operations.0"),
        ([{"type": "search", "name": "missing_{unique}", "query": "q"}], "operations.0.name"),
        ([{"type": "search", "name": "kb", "query": "q", "topK": 0}], "operations.0.search.topK"),
        ([{"type": "search", "name": "kb", "query": "q", "topK": 101}], "operations.0.search.topK"),
        ([{"type": "index", "name": "kb", "documents": []}], "operations.0.index.documents"),
        ([{"type": "index", "name": "a/b", "documents": [{"text": "x"}]}], "operations.0.index.name"),
        ([{"type": "search", "name": "kb", "query": "q", "filter": {"a.b": 1}}], "operations.0.filter.a.b"),
    ],
)
def test_bad_operations_are_400_naming_the_field_and_write_nothing(
    api: httpx.Client, unique: str, operations: list[dict[str, Any]], field: str
) -> None:
    for operation in operations:
        operation["name"] = operation.get("name", "").replace("{unique}", unique)

    response = embeddings(api, operations)

    assert response.status_code == 400, response.text
    fields = [d["field"] for d in response.json()["error"]["details"]]
    assert any(f.startswith(field) for f in fields), fields
    assert api.get("/batch/active").json()["batches"] == []
    assert collections(api) == {}


def test_a_search_with_another_model_or_dimension_is_400(api: httpx.Client, unique: str) -> None:
    name = f"dims_{unique}"
    run(api, [{"type": "index", "name": name, "documents": [{"text": "oil filter"}]}])

    other_dimension = embeddings(
        api, [{"type": "search", "name": name, "query": "filter"}], outputDimensionality=256
    )
    other_model = embeddings(
        api, [{"type": "search", "name": name, "query": "filter"}], model="text-embedding-004"
    )

    for response in (other_dimension, other_model):
        assert response.status_code == 400, response.text
        assert response.json()["error"]["details"][0]["field"] == "operations.0.name"


def test_collections_are_the_tenants_own(api: httpx.Client, other_api: httpx.Client, unique: str) -> None:
    name = f"private_{unique}"
    run(api, [{"type": "index", "name": name, "documents": [{"text": "secret part list"}]}])

    assert name not in collections(other_api)
    assert other_api.delete(f"/batch/collections/{name}").status_code == 404
    foreign_search = embeddings(other_api, [{"type": "search", "name": name, "query": "secret"}])
    assert foreign_search.status_code == 400  # to the other tenant, no such collection

    assert api.delete(f"/batch/collections/{name}").status_code == 200
    assert name not in collections(api)
    assert api.delete(f"/batch/collections/{name}").status_code == 404


def test_a_worker_killed_mid_index_loses_and_doubles_nothing(
    own_queue: str, unique: str, firestore_db: Any
) -> None:
    gateway = Gateway(port=free_port(), queue=own_queue, lease_seconds=2)
    gateway.start()
    key = new_api_key(f"kill-embed-{unique}")
    api = httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
    name = f"killed_{unique}"
    # 30 items of 100 documents, each embedding call slowed down, in one lane of concurrency 2.
    documents = [{"text": f"EMULATOR_SLEEP_150 part {i} of the catalog"} for i in range(3000)]
    try:
        operations = [{"type": "index", "name": name, "documents": documents}]
        response = embeddings(api, operations, concurrency=2, wait=False)
        assert response.status_code == 202, response.text
        batch_id = response.json()["batchId"]
        wait_for(lambda: status(api, batch_id)["progress"]["finished"] >= 4, timeout=60, what="some items")

        gateway.kill()
        gateway.start()
        sweep_until(gateway.url, lambda: status(api, batch_id)["status"] in FINAL)
        final = wait_final(api, batch_id, timeout=180)

        assert final["status"] == "completed", final
        assert final["results"][0]["indexed"] == 3000
        assert len(set(final["results"][0]["documentIds"])) == 3000
        assert collections(api)[name]["documentCount"] == 3000
        events = usage_events(firestore_db, batch_id)
        ok_items = [int(e["event_id"].split("-")[1]) for e in events if e["outcome"] == "ok"]
        assert sorted(ok_items) == list(range(30)), "each item's call recorded exactly once"
        assert {(e["endpoint"], e["method"]) for e in events} == {("embeddings", "batchEmbedContents")}
    finally:
        api.close()
        gateway.kill()
