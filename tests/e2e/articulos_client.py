"""Small client helpers for the articles and image-queue tests."""

from __future__ import annotations

from typing import Any

import httpx

from infra.emulators.gemini.content import png
from tests.conftest import wait_for

FINAL = {"completed", "failed"}


def make_article(api: httpx.Client, articulo_id: int, nombre: str, *, image: bytes | None = None) -> None:
    response = api.put(
        f"/articulos/{articulo_id}", json={"nombre": nombre, "descripcion": "d", "unidad": "u"}
    )
    assert response.status_code == 200, response.text
    if image is not None:
        uploaded = api.put(f"/articulos/{articulo_id}/imagen", content=image)
        assert uploaded.status_code == 200, uploaded.text


def catalog(api: httpx.Client, ids: list[int], *, prefix: str = "Artículo") -> None:
    """Articles with an image each (a distinct PNG per id)."""
    for articulo_id in ids:
        make_article(api, articulo_id, f"{prefix} {articulo_id}", image=png(seed=articulo_id))


def add(api: httpx.Client, ids: list[int], prioridad: int = 0) -> dict[str, Any]:
    response = api.post("/articulos/batch-process-images", json={"articuloIds": ids, "prioridad": prioridad})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["success"] is True
    return body


def queue_ids(added: dict[str, Any]) -> dict[int, str]:
    return {entry["articuloId"]: entry["queueId"] for entry in added["data"]["detalles"]["agregados"]}


def history(api: httpx.Client, **params: Any) -> dict[str, Any]:
    response = api.get("/articulos/processing-queue/history", params=params)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def items_by_id(api: httpx.Client) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in history(api, limit=200)["historial"]}


def wait_items_final(api: httpx.Client, ids: list[str], *, timeout: float = 90) -> dict[str, dict[str, Any]]:
    def _final() -> dict[str, dict[str, Any]] | None:
        rows = items_by_id(api)
        return rows if all(rows.get(i, {}).get("estado") in FINAL for i in ids) else None

    return wait_for(_final, timeout=timeout, interval=0.1, what=f"queue items {ids} to finish")


def status(api: httpx.Client, **params: Any) -> dict[str, Any]:
    response = api.get("/articulos/processing-queue/status", params=params)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def wait_image_deleted(url: str) -> None:
    """Poll until an article's previous image is gone: its deletion follows the commit that completes the item
    (after the freed slot's next item is dispatched), so an item can read `completed` a moment before."""
    wait_for(lambda: httpx.get(url).status_code == 404, timeout=30, what=f"{url} to be deleted")
