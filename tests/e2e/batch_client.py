"""Small client helpers for the batch API tests."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import wait_for

FINAL = {"completed", "failed", "cancelled"}


def submit(api: httpx.Client, prompts: list[str], **options: Any) -> dict[str, Any]:
    body = {
        "requests": [{"prompt": p, "customId": f"item-{i}"} for i, p in enumerate(prompts)],
        "options": options,
    }
    response = api.post("/batch/generate", json=body)
    assert response.status_code in (200, 202), response.text
    payload: dict[str, Any] = response.json()
    return payload


def status(api: httpx.Client, batch_id: str, **params: int) -> dict[str, Any]:
    response = api.get(f"/batch/status/{batch_id}", params=params)
    assert response.status_code == 200, response.text
    payload: dict[str, Any] = response.json()
    return payload


def wait_final(api: httpx.Client, batch_id: str, *, timeout: float = 90) -> dict[str, Any]:
    """Poll the status until the batch is final and fanned in (its results file exists)."""

    def _final() -> dict[str, Any] | None:
        current = status(api, batch_id)
        return current if current["status"] in FINAL and current["resultsUrl"] else None

    return wait_for(_final, timeout=timeout, interval=0.1, what=f"batch {batch_id} to finish")


def all_results(api: httpx.Client, batch_id: str, *, page: int = 100) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    offset: int | None = 0
    while offset is not None:
        current = status(api, batch_id, offset=offset, limit=page)
        results.extend(current["results"])
        offset = current["pagination"]["nextOffset"]
    return results
