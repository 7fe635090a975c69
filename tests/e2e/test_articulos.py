"""Articles and the image queue end to end, through the gateway as a client would."""

from __future__ import annotations

import datetime as dt
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from infra.emulators.gemini.content import png
from shared.images import check_decodes
from shared.models.auth import Role
from shared.settings import get_settings
from tests.conftest import wait_for
from tests.e2e.articulos_client import (
    add,
    catalog,
    history,
    items_by_id,
    make_article,
    queue_ids,
    status,
    wait_image_deleted,
    wait_items_final,
)
from tests.e2e.conftest import new_api_key
from tests.e2e.delivery import Gateway, free_port, sweep_until, usage_events

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xd9"
WEBP = b"RIFF\x1a\x00\x00\x00WEBPVP8L\x0d\x00\x00\x00\x2f\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"


def item_usage_events(db: Any, batch_id: str) -> list[dict[str, Any]]:
    """The model calls of an item's engine batch, once the batch is fanned in: the item's queue document ends
    inside its run, a moment before the engine's commit records the run's result and usage."""
    wait_for(
        lambda: (
            (snapshot := db.collection("batches").document(batch_id).get()).exists
            and snapshot.get("finalized")
        ),
        timeout=60,
        what=f"batch {batch_id} to be fanned in",
    )
    return usage_events(db, batch_id)


def _bucket() -> Any:
    settings = get_settings()
    client = storage.Client(
        project=settings.project_id,
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": settings.storage_emulator_host},
    )
    return client.bucket(settings.results_bucket)


def test_articles_and_uploads_are_checked_by_their_bytes(api: httpx.Client) -> None:
    make_article(api, 1, 'Tornillo hexagonal 3/8"')
    original = png(seed=7)

    for data, mime in ((JPEG, "image/jpeg"), (WEBP, "image/webp"), (original, "image/png")):
        uploaded = api.put("/articulos/1/imagen", content=data, headers={"Content-Type": "text/plain"})
        assert uploaded.status_code == 200, (mime, uploaded.text)
    article = api.get("/articulos/1").json()["data"]
    assert httpx.get(article["imagen_url"]).content == original

    not_image = api.put(
        "/articulos/1/imagen", content=b"GIF89a not accepted", headers={"Content-Type": "image/png"}
    )
    too_large = api.put(
        "/articulos/1/imagen", content=b"\x89PNG\r\n\x1a\n" + b"0" * get_settings().image_max_bytes
    )
    unknown = api.put("/articulos/999/imagen", content=original)
    extra_field = api.put("/articulos/2", json={"nombre": "x", "imagen_object": "evil"})

    assert not_image.status_code == 400
    assert not_image.json()["error"]["details"][0]["field"] == "imagen"
    assert not_image.json()["success"] is False
    assert too_large.status_code == 413
    assert too_large.json()["error"]["details"][0]["field"] == "imagen"
    assert unknown.status_code == 404
    assert extra_field.status_code == 400
    assert api.get("/articulos/2").status_code == 404
    assert httpx.get(api.get("/articulos/1").json()["data"]["imagen_url"]).content == original


def test_articles_list_by_activo_with_pages(api: httpx.Client) -> None:
    for articulo_id in range(1, 6):
        body = {"nombre": f"a{articulo_id}", "activo": articulo_id != 3}
        assert api.put(f"/articulos/{articulo_id}", json=body).status_code == 200

    first = api.get("/articulos", params={"activo": "true", "limit": 2}).json()["data"]
    second = api.get(
        "/articulos", params={"activo": "true", "limit": 2, "cursor": first["nextCursor"]}
    ).json()
    inactive = api.get("/articulos", params={"activo": "false"}).json()["data"]["articulos"]

    assert [a["id"] for a in first["articulos"]] == [1, 2]
    assert [a["id"] for a in second["data"]["articulos"]] == [4, 5]
    assert [a["id"] for a in inactive] == [3]


def test_articles_list_by_categoria_id_with_activo_and_pages(api: httpx.Client) -> None:
    """The seed's use case 2: `GET /api/articulos?categoria_id=1` lists one category's articles."""
    categories = {1: 1, 2: 2, 3: 1, 4: None, 5: 1, 6: 1}
    for articulo_id, categoria_id in categories.items():
        body = {"nombre": f"a{articulo_id}", "categoria_id": categoria_id, "activo": articulo_id != 5}
        assert api.put(f"/articulos/{articulo_id}", json=body).status_code == 200

    tornillos = api.get("/articulos", params={"categoria_id": 1}).json()["data"]["articulos"]
    first = api.get("/articulos", params={"categoria_id": 1, "activo": "true", "limit": 2}).json()["data"]
    second = api.get(
        "/articulos", params={"categoria_id": 1, "activo": "true", "limit": 2, "cursor": first["nextCursor"]}
    ).json()["data"]
    inactive = api.get("/articulos", params={"categoria_id": 1, "activo": "false"}).json()["data"]
    none = api.get("/articulos", params={"categoria_id": 7}).json()["data"]

    assert [(a["id"], a["categoria_id"]) for a in tornillos] == [(1, 1), (3, 1), (5, 1), (6, 1)]
    assert [a["id"] for a in first["articulos"]] == [1, 3]
    assert ([a["id"] for a in second["articulos"]], second["nextCursor"]) == ([6], None)
    assert [a["id"] for a in inactive["articulos"]] == [5]
    assert none == {"articulos": [], "nextCursor": None}
    for bad in ("-1", "x", "1.5", str(2**63), ""):
        response = api.get("/articulos", params={"categoria_id": bad})
        assert response.status_code == 400, (bad, response.text)
        assert response.json()["error"]["details"][0]["field"] == "categoria_id"


def test_a_query_the_route_accepts_means_the_same_to_the_service(api: httpx.Client) -> None:
    """The route's query model is the one parser: a value it accepts (and the OpenAPI document allows: 2.0 is
    an integer) is not refused again by a second parse in the service."""
    for articulo_id in (1, 2, 3):
        assert api.put(f"/articulos/{articulo_id}", json={"nombre": f"a{articulo_id}"}).status_code == 200

    listed = [api.get("/articulos", params={"limit": limit}) for limit in ("2.0", "+2")]
    page = api.get("/articulos/processing-queue/history", params={"limit": "2.0"})
    cleaned = api.delete("/articulos/processing-queue/clean", params={"dias": "7.0"})

    for answer in listed:
        assert answer.status_code == 200, answer.text
        assert [a["id"] for a in answer.json()["data"]["articulos"]] == [1, 2]
    assert page.status_code == 200 and page.json()["data"]["limit"] == 2, page.text
    assert cleaned.status_code == 200 and cleaned.json()["data"] == {
        "eliminados": 0,
        "dias": 7,
        "imagenes_huerfanas": 0,
    }, cleaned.text


def _readme_queries() -> list[tuple[str, str]]:
    """The image queue section's example requests with a query string: its table's and its walk-through's."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## Catalog images") : readme.index("### How it runs")]
    walk = readme[readme.index("Walk-through on the local cloud (the seed's") :]
    walk = walk[: walk.index("```", walk.index("```") + 3)]
    table = re.findall(r"`(GET|DELETE) (/articulos[^` ]*\?[^` ]*)`", section)
    curls = re.findall(r'curl -s (?:-X (DELETE) )?"\$B([^"]*\?[^"]*)"', walk)
    return table + [(method or "GET", f"/articulos{path}") for method, path in curls]


def test_the_readme_query_examples_work_when_copied(api: httpx.Client) -> None:
    examples = _readme_queries()
    catalog(api, [1])

    answers = {(method, path): api.request(method, path.replace("{id}", "1")) for method, path in examples}

    assert len(examples) >= 6, examples
    assert {example: answer.status_code for example, answer in answers.items()} == dict.fromkeys(answers, 200)


def test_bulk_add_processes_each_article_once_with_a_new_image(
    api: httpx.Client, other_api: httpx.Client, firestore_db: Any
) -> None:
    catalog(api, [1, 2, 3])
    make_article(api, 4, "sin imagen")
    catalog(other_api, [50])
    before = {i: api.get(f"/articulos/{i}").json()["data"]["imagen_url"].split("?")[0] for i in (1, 2, 3)}

    added = add(api, [1, 2, 3, 2, 4, 5, 50])
    ids = queue_ids(added)
    rows = wait_items_final(api, list(ids.values()))

    data = added["data"]
    assert (data["agregados"], data["omitidos"]) == (3, 4)
    assert added["message"] == "3 artículo(s) agregado(s) a la cola de procesamiento"
    reasons = {(o["articuloId"], o["motivo"]) for o in data["detalles"]["omitidos"]}
    assert reasons == {
        (2, "repetido en la solicitud"),
        (4, "el artículo no tiene imagen"),
        (5, "el artículo no existe"),
        (50, "el artículo no existe"),  # another tenant's article is unknown here
    }
    for articulo_id, queue_id in ids.items():
        row = rows[queue_id]
        assert (row["estado"], row["intentos"], row["max_intentos"]) == ("completed", 1, 3)
        assert row["articulo_nombre"] == f"Artículo {articulo_id}"
        assert type(row["duracion_segundos"]) is int and row["completed_at"] >= row["started_at"]
        url = api.get(f"/articulos/{articulo_id}").json()["data"]["imagen_url"]
        image = httpx.get(url).content
        assert check_decodes(image) == "image/png" and image != png(seed=articulo_id)
        assert url.split("?")[0] != before[articulo_id]
        wait_image_deleted(before[articulo_id])
        events = item_usage_events(firestore_db, f"{queue_id}r0")
        assert [(e["endpoint"], e["outcome"]) for e in events] == [("images", "ok")]
    stats = status(api)["stats"]
    assert stats == {"pendientes": 0, "procesando": 0, "completados": 3, "fallidos": 0, "total": 3}


@pytest.mark.parametrize(
    ("marker", "mime", "extension"), [("JPEG", "image/jpeg", "jpg"), ("WEBP", "image/webp", "webp")]
)
def test_the_new_image_is_named_after_the_type_the_model_answered(
    api: httpx.Client, unique: str, marker: str, mime: str, extension: str
) -> None:
    make_article(api, 1, f"EMULATOR_IMAGE_{marker} Arandela", image=png(seed=1))
    queue_id = queue_ids(add(api, [1]))[1]

    final = wait_items_final(api, [queue_id])[queue_id]

    assert final["estado"] == "completed", final
    url = api.get("/articulos/1").json()["data"]["imagen_url"]
    downloaded = httpx.get(url)
    assert check_decodes(downloaded.content) == mime == downloaded.headers["content-type"]
    prefix, new_image = (
        f"articulos/tenant-{unique}/1/",
        f"articulos/tenant-{unique}/1/q-{queue_id}.{extension}",
    )
    assert unquote(urlsplit(url).path).endswith(f"/{new_image}")
    wait_for(
        lambda: [blob.name for blob in _bucket().list_blobs(prefix=prefix)] == [new_image],
        timeout=30,
        what="the original image to be deleted",
    )


def test_racing_bulk_adds_add_each_article_once(api: httpx.Client) -> None:
    ids = list(range(1, 9))
    catalog(api, ids, prefix="EMULATOR_SLEEP_1500 lento")

    with ThreadPoolExecutor(max_workers=3) as pool:
        answers = list(pool.map(lambda _: add(api, ids), range(3)))

    added = [queue_ids(answer) for answer in answers]
    assert sorted(i for one in added for i in one) == ids
    for answer in answers:
        for omitted in answer["data"]["detalles"]["omitidos"]:
            assert omitted["motivo"] in ("ya está en la cola (pending)", "ya está en la cola (processing)")
    wait_items_final(api, [q for one in added for q in one.values()], timeout=120)


def test_bad_input_is_400_naming_the_field_and_writes_nothing(api: httpx.Client) -> None:
    catalog(api, [1])
    cases = [
        ({"articuloIds": []}, "articuloIds"),
        ({"articuloIds": list(range(1, 1002))}, "articuloIds"),
        ({"articuloIds": [0]}, "articuloIds.0"),
        ({"articuloIds": [1], "estado": "completed"}, "estado"),
    ]
    for body, field in cases:
        response = api.post("/articulos/batch-process-images", json=body)
        assert response.status_code == 400, body
        assert response.json()["error"]["details"][0]["field"] == field
    for dias in ("-1", "0", "366", "x"):
        response = api.delete("/articulos/processing-queue/clean", params={"dias": dias})
        assert response.status_code == 400
        assert response.json()["error"]["details"][0]["field"] == "dias"
    assert status(api)["stats"]["total"] == 0


def test_three_failed_attempts_honour_retry_delay_then_retry_completes(
    api: httpx.Client, firestore_db: Any, gemini_control: httpx.Client
) -> None:
    gemini_control.post("/emulator/config", json={"retryDelayMs": 1500}).raise_for_status()
    make_article(api, 1, "EMULATOR_FAIL_429 agotado", image=png(seed=1))
    original = api.get("/articulos/1").json()["data"]["imagen_url"].split("?")[0]
    queue_id = queue_ids(add(api, [1]))[1]

    failed = wait_items_final(api, [queue_id], timeout=60)[queue_id]

    assert (failed["estado"], failed["intentos"]) == ("failed", 3)
    assert "exhausted" in failed["error_message"]
    events = item_usage_events(firestore_db, f"{queue_id}r0")
    assert [(e["endpoint"], e["outcome"]) for e in events] == [("images", "error:429")] * 3
    times = sorted(dt.datetime.fromisoformat(e["at"]) for e in events)
    assert all((b - a).total_seconds() >= 1.4 for a, b in zip(times, times[1:], strict=False))
    stored = firestore_db.collection("image_queue").document(queue_id).get().to_dict()
    assert "429" in stored["error_stack"] and "agotado" not in stored["error_stack"]
    assert api.get("/articulos/1").json()["data"]["imagen_url"].split("?")[0] == original
    assert httpx.get(original).status_code == 200

    # Fix the article, retry: fresh attempts (with the article as it is now), and it completes.
    make_article(api, 1, "Tornillo corregido")
    retried = api.post(f"/articulos/processing-queue/{queue_id}/retry")
    assert retried.status_code == 200, retried.text
    assert (retried.json()["data"]["estado"], retried.json()["data"]["intentos"]) == ("pending", 0)
    final = wait_items_final(api, [queue_id], timeout=30)[queue_id]

    assert (final["estado"], final["intentos"], final["error_message"]) == ("completed", 1, None)
    assert final["articulo_nombre"] == "Tornillo corregido"
    wait_image_deleted(original)
    again = api.post(f"/articulos/processing-queue/{queue_id}/retry")
    assert again.status_code == 409 and again.json()["success"] is False


def test_a_new_high_priority_item_starts_before_older_low_priority_ones(api: httpx.Client) -> None:
    slots = get_settings().image_queue_concurrency
    busy = list(range(1, slots + 1))
    low = list(range(100, 108))
    # The busy items end one after another: slots free one at a time, each to the best waiting item.
    for k in busy:
        make_article(api, k, f"EMULATOR_SLEEP_{1000 + 700 * k} ocupado", image=png(seed=k))
    catalog(api, [*low, 200])
    assert len(queue_ids(add(api, busy))) == slots
    # Every slot is busy for over 1.5 s: the low-priority items wait, then a high-priority one arrives.
    low_ids = queue_ids(add(api, low, prioridad=0))
    high_id = queue_ids(add(api, [200], prioridad=10))[200]

    running: list[int] = []

    def _all_final() -> bool:
        current = status(api)
        running.append(len(current["articulosActuales"]))
        return current["stats"]["pendientes"] + current["stats"]["procesando"] == 0

    wait_for(_all_final, timeout=120, interval=0.1, what="the queue to drain")
    rows = items_by_id(api)

    started = {queue_id: rows[queue_id]["started_at"] for queue_id in [*low_ids.values(), high_id]}
    timeline = sorted((rows[q]["started_at"], rows[q]["articulo_id"], rows[q]["intentos"]) for q in started)
    assert all(started[high_id] < started[q] for q in low_ids.values()), timeline
    assert max(running) == slots  # every slot in use, never more (IMAGE_QUEUE_CONCURRENCY)
    # Among equals, oldest first: the first `slots` low items all start before the last ones.
    order = [low_ids[i] for i in low]
    assert max(started[q] for q in order[:2]) < min(started[q] for q in order[-2:])


def test_history_pages_newest_first_with_cursor_and_estado(api: httpx.Client) -> None:
    catalog(api, [1, 2, 3, 4, 5])
    make_article(api, 6, "EMULATOR_FAIL_400 roto", image=png(seed=6))
    ids = queue_ids(add(api, [1, 2, 3, 4, 5, 6]))
    wait_items_final(api, list(ids.values()))
    newest_first = [ids[i] for i in (6, 5, 4, 3, 2, 1)]

    by_offset = [row["id"] for off in (0, 2, 4) for row in history(api, limit=2, offset=off)["historial"]]
    by_cursor: list[str] = []
    cursor: str | None = None
    while True:
        page = history(api, limit=4, **({"cursor": cursor} if cursor else {}))
        by_cursor += [row["id"] for row in page["historial"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    failed = history(api, estado="failed")["historial"]

    assert by_offset == newest_first
    assert by_cursor == newest_first
    assert [row["id"] for row in failed] == [ids[6]]
    assert failed[0]["intentos"] == 1  # a permanent error fails at once
    assert set(failed[0]) == {
        "id", "articulo_id", "articulo_nombre", "estado", "prioridad", "intentos", "max_intentos",
        "error_message", "created_at", "started_at", "completed_at", "duracion_segundos",
    }  # fmt: skip
    assert api.get("/articulos/processing-queue/history", params={"estado": "done"}).status_code == 400


def test_clean_deletes_only_finished_items_older_than_dias(api: httpx.Client, firestore_db: Any) -> None:
    catalog(api, [1, 2])
    ids = queue_ids(add(api, [1, 2]))
    wait_items_final(api, list(ids.values()))
    old = firestore_db.collection("image_queue").document(ids[1])
    old.update({"completed_at": dt.datetime.now(dt.UTC) - dt.timedelta(days=10)})
    catalog(api, [3], prefix="EMULATOR_SLEEP_1500 en curso")
    running = queue_ids(add(api, [3]))[3]
    firestore_db.collection("image_queue").document(running).update(
        {"completed_at": dt.datetime.now(dt.UTC) - dt.timedelta(days=30)}
    )

    cleaned = api.delete("/articulos/processing-queue/clean", params={"dias": 7})

    assert cleaned.status_code == 200
    assert cleaned.json()["data"]["eliminados"] == 1
    remaining = items_by_id(api)
    assert ids[1] not in remaining and ids[2] in remaining and running in remaining
    wait_items_final(api, [running])


def test_an_admins_clean_takes_tenant_as_its_reads_do(
    api: httpx.Client, other_api: httpx.Client, firestore_db: Any, gateway_url: str, unique: str
) -> None:
    ids = {}
    for client in (api, other_api):
        catalog(client, [1])
        ids[client] = queue_ids(add(client, [1]))[1]
    wait_items_final(api, [ids[api]])
    wait_items_final(other_api, [ids[other_api]])
    items = {client: firestore_db.collection("image_queue").document(ids[client]) for client in ids}
    for item in items.values():
        item.update({"completed_at": dt.datetime.now(dt.UTC) - dt.timedelta(days=10)})
    admin_key = new_api_key(f"admin-{unique}", Role.ADMIN)

    with httpx.Client(base_url=gateway_url, headers={"Authorization": f"Bearer {admin_key}"}) as admin:
        one = admin.delete(
            "/articulos/processing-queue/clean", params={"dias": 7, "tenant": f"tenant-{unique}"}
        )
        kept = items[other_api].get().exists
        every = admin.delete("/articulos/processing-queue/clean", params={"dias": 7})

    assert one.status_code == 200 and one.json()["data"]["eliminados"] == 1, one.text
    assert not items[api].get().exists and kept
    assert every.status_code == 200 and every.json()["data"]["eliminados"] >= 1, every.text
    assert not items[other_api].get().exists  # without `tenant`, an admin's clean takes every tenant's


def test_tenants_see_and_touch_only_their_own(
    api: httpx.Client, other_api: httpx.Client, gateway_url: str, unique: str
) -> None:
    catalog(api, [1])
    make_article(api, 2, "EMULATOR_FAIL_400 roto", image=png(seed=2))
    ids = queue_ids(add(api, [1, 2]))
    wait_items_final(api, list(ids.values()))

    assert other_api.get("/articulos/1").status_code == 404
    assert other_api.put("/articulos/1/imagen", content=png(seed=9)).status_code == 404
    assert other_api.post(f"/articulos/processing-queue/{ids[2]}/retry").status_code == 404
    assert other_api.get("/articulos/processing-queue/history", params={"cursor": ids[1]}).status_code == 404
    assert status(other_api)["stats"]["total"] == 0
    assert history(other_api)["historial"] == []
    assert other_api.delete("/articulos/processing-queue/clean", params={"dias": 1}).status_code == 200
    assert len(items_by_id(api)) == 2

    admin_key = new_api_key(f"admin-{unique}", Role.ADMIN)
    with httpx.Client(base_url=gateway_url, headers={"Authorization": f"Bearer {admin_key}"}) as admin:
        seen = {row["id"] for row in history(admin, limit=200)["historial"]}
        assert set(ids.values()) <= seen
        tenant = f"tenant-{unique}"
        assert admin.get("/articulos/1", params={"tenant": tenant}).json()["data"]["id"] == 1
        # An admin's `tenant` narrows the queue's reads to that tenant, as it does the articles'.
        theirs = history(admin, limit=200, tenant=tenant)["historial"]
        assert {row["id"] for row in theirs} == set(ids.values())
        counts = status(admin, tenant=tenant)["stats"]
        assert counts["total"] == 2 and counts["fallidos"] == 1
    # A tenant's own `tenant` changes nothing: it still sees only its own.
    assert status(other_api, tenant=f"tenant-{unique}")["stats"]["total"] == 0


def test_a_worker_killed_mid_item_is_recovered_as_a_counted_attempt(
    own_queue: str, unique: str, firestore_db: Any
) -> None:
    gateway = Gateway(port=free_port(), queue=own_queue, lease_seconds=2)
    gateway.start()
    tenant = f"kill-{unique}"
    key = new_api_key(tenant)
    api = httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
    try:
        catalog(api, [1], prefix="EMULATOR_SLEEP_3000 matado")
        queue_id = queue_ids(add(api, [1]))[1]
        wait_for(
            lambda: (status(api)["articuloActual"] or {}).get("id") == queue_id,
            timeout=30,
            what="the item to start",
        )

        gateway.kill()
        gateway.start()
        # Once the dead worker's lease has expired, the sweeper hands the item out again.
        sweep_until(gateway.url, lambda: items_by_id(api)[queue_id]["estado"] == "completed")
        final = wait_items_final(api, [queue_id], timeout=60)[queue_id]

        assert (final["estado"], final["intentos"]) == ("completed", 2)
        # One new image, the old one deleted (a moment after the item reads `completed`).
        prefix, new_image = f"articulos/{tenant}/1/", [f"articulos/{tenant}/1/q-{queue_id}.png"]
        wait_for(
            lambda: [blob.name for blob in _bucket().list_blobs(prefix=prefix)] == new_image,
            timeout=30,
            what="the previous image to be deleted",
        )
        ok = [e for e in item_usage_events(firestore_db, f"{queue_id}r0") if e["outcome"] == "ok"]
        assert len(ok) == 1
    finally:
        api.close()
        gateway.kill()
