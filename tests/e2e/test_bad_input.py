"""Bad input never becomes a 500 (issue 17, point 5): malformed JSON, invalid UTF-8, deep nesting, a wrong
top-level type and unknown fields on every JSON body of every document; wrong types and huge numbers field by
field: each a 400 naming the field, and nothing written. Also the regressions of what fuzzing and probing
found.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from shared.api import Access
from tests.e2e.conftest import tenant_client
from tests.e2e.test_access_matrix import OPS, Op

JSON_OPS = [op for op in OPS if op.media_type == "application/json" and op.access is Access.USER]
# Deeper than any parser's recursion limit, within the smallest body limit (analytics', 4 KiB).
DEEP = ("[" * 2_000 + "]" * 2_000).encode()
MALFORMED = {
    "malformed JSON": b'{"requests": [',
    "invalid UTF-8": b'{"text": "\xff\xfe"}',
    "deep nesting": DEEP,
    "not an object": b"[]",
    "a bare number": b"1e999999",
}


@pytest.fixture(scope="module")
def fresh(gateway_url: str) -> Iterator[httpx.Client]:
    """One tenant that only ever sends bad input: at the end, it must own nothing."""
    with tenant_client(gateway_url, f"bad-input-{uuid.uuid4().hex[:10]}") as client:
        yield client


def _fields(response: httpx.Response) -> list[str]:
    return [detail["field"] for detail in response.json()["error"].get("details", [])]


@pytest.mark.parametrize("label", sorted(MALFORMED))
@pytest.mark.parametrize("op", JSON_OPS, ids=str)
def test_a_malformed_body_is_400_naming_the_body(fresh: httpx.Client, op: Op, label: str) -> None:
    response = fresh.request(
        op.method, op.url(), content=MALFORMED[label], headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 400, response.text[:300]
    assert response.json()["error"]["code"] == "invalid_request"
    assert _fields(response), response.text[:300]


@pytest.mark.parametrize("op", JSON_OPS, ids=str)
def test_an_unknown_field_is_400_naming_it(fresh: httpx.Client, op: Op) -> None:
    response = fresh.request(op.method, op.url(), json={"surpriseField": 1})

    assert response.status_code == 400
    assert "surpriseField" in _fields(response)


DOC = {"text": "brake disc"}
FIELD_CASES: list[tuple[str, str, dict[str, Any], str]] = [
    ("POST", "/batch/generate", {"requests": [{"prompt": 5}]}, "requests.0.prompt"),
    ("POST", "/batch/generate", {"requests": [{"prompt": "x", "maxTokens": 10**30}]}, "requests.0.maxTokens"),
    # Found by schemathesis: JSON's false was taken for the number 0.
    (
        "POST",
        "/batch/generate",
        {"requests": [{"prompt": "x", "temperature": False}]},
        "requests.0.temperature",
    ),
    ("POST", "/batch/generate", {"requests": [{"prompt": "x", "maxTokens": "10"}]}, "requests.0.maxTokens"),
    ("POST", "/batch/generate", {"requests": "x"}, "requests"),
    ("POST", "/batch/analyze", {"texts": [{"text": 1.5}]}, "texts.0"),
    # Found by probing: metadata Firestore cannot store left the batch running for ever.
    (
        "POST",
        "/batch/embeddings",
        {"operations": [{"type": "index", "name": "kb", "documents": [{**DOC, "metadata": {"n": 10**30}}]}]},
        "operations.0.documents.0.metadata",
    ),
    (
        "POST",
        "/batch/embeddings",
        {
            "operations": [
                {
                    "type": "index",
                    "name": "kb",
                    "documents": [{**DOC, "metadata": json.loads('{"a":' * 12 + "1" + "}" * 12)}],
                }
            ]
        },
        "operations.0.documents.0.metadata",
    ),
    (
        "POST",
        "/batch/embeddings",
        {"operations": [{"type": "search", "name": "kb", "query": "q", "filter": {"n": -(10**30)}}]},
        "operations.0.filter.n",
    ),
    ("POST", "/reports/queue-json", {"reportType": 7, "userName": "a", "jsonData": "[]"}, "reportType"),
    (
        "POST",
        "/reports/queue-json",
        {"reportType": "FacturacionMasiva", "userName": "a", "jsonData": "[]", "isLargeDataset": 10**30},
        "isLargeDataset",
    ),
    (
        "POST",
        "/reports/uploads",
        {"fileName": "f", "sizeBytes": "9", "reportType": "VentasPorCiudad"},
        "sizeBytes",
    ),
    (
        "POST",
        "/reports/queue",
        {"reportType": "FacturacionMasiva", "userName": "a", "uploadId": 5},
        "uploadId",
    ),
    # Found by probing: an integer past 64 bits reached Firestore (500).
    ("PUT", "/articulos/7", {"nombre": "x", "categoria_id": 10**30}, "categoria_id"),
    ("PUT", "/articulos/7", {"nombre": "x", "activo": "yes"}, "activo"),
    ("POST", "/articulos/batch-process-images", {"articuloIds": [1], "prioridad": 10**30}, "prioridad"),
    ("POST", "/articulos/batch-process-images", {"articuloIds": ["uno"]}, "articuloIds.0"),
    ("POST", "/analytics/export", {"format": 5}, "format"),
]


@pytest.mark.parametrize(("method", "path", "body", "field"), FIELD_CASES, ids=lambda v: str(v)[:40])
def test_a_wrong_type_or_a_huge_number_is_400_naming_the_field(
    fresh: httpx.Client, method: str, path: str, body: dict[str, Any], field: str
) -> None:
    response = fresh.request(method, path, json=body)

    assert response.status_code == 400, response.text[:300]
    assert any(name.startswith(field) for name in _fields(response)), response.text[:300]


QUERY_CASES = [
    ("/batch/status/0123456789abcdef0123456789abcdef?limit=abc", "limit"),
    ("/batch/status/0123456789abcdef0123456789abcdef?offset=-1", "offset"),
    # Found by probing: a cursor past 64 bits reached Firestore (500).
    ("/articulos/?cursor=99999999999999999999999999", "cursor"),
    ("/articulos/?limit=1e3", "limit"),
    ("/articulos/?categoria_id=99999999999999999999", "categoria_id"),
    ("/articulos/processing-queue/history?estado=lost", "estado"),
    ("/articulos/processing-queue/clean?dias=100000000000000000000", "dias"),
    ("/dashboards/metrics/calculated?limit=100000000000000000000000", "limit"),
    ("/analytics/stream?events=everything", "events"),
]


@pytest.mark.parametrize(("url", "field"), QUERY_CASES)
def test_a_bad_query_parameter_is_400_naming_it(fresh: httpx.Client, url: str, field: str) -> None:
    method = "DELETE" if "clean" in url else "GET"
    response = fresh.request(method, url)

    assert response.status_code == 400, response.text[:300]
    assert field in _fields(response)


def test_a_collection_name_no_collection_can_have_is_404(fresh: httpx.Client) -> None:
    # Found by probing: `__x__` is an invalid Firestore id and answered 500.
    for name in ("__x__", ".", "..", "a" * 200):
        assert fresh.delete(f"/batch/collections/{name}").status_code == 404


def test_the_tenant_that_sent_only_bad_input_owns_nothing(fresh: httpx.Client) -> None:
    """Runs last in this module: nothing any bad request above sent was written."""
    stats = fresh.get("/batch/stats").json()
    assert sum(stats["batches"].values()) == 0, stats
    assert fresh.get("/batch/active").json() == {"batches": []}
    assert fresh.get("/batch/collections").json() == {"collections": []}
    assert fresh.get("/reports/active-jobs").json() == {"jobs": []}
    assert fresh.get("/articulos/").json()["data"] == {"articulos": [], "nextCursor": None}
    assert fresh.get("/articulos/7").status_code == 404
