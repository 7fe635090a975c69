"""The image queue's clean-up deletes the images a crash left (no article shows them: an upload whose article
was not updated, an original or a processed image an item's attempt did not delete), once older than `dias`,
and never an image an article shows or one of an article with an item in flight. The queue's clock runs 8
days ahead here, so images written now are older than 7 days to it."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from google.cloud import firestore

from infra.emulators.gemini.content import png
from shared import runtime
from shared.adapters.catalog_store import ACTIVE, FirestoreCatalogStore, _active_id
from shared.app import platform
from shared.emulator_config import EmulatorConfig
from shared.models.articulos import ArticuloIn
from shared.models.auth import Principal, Role
from shared.services import image_queue
from shared.services.image_dispatch import ImageQueue

FAR_FUTURE = dt.datetime(2999, 1, 1, tzinfo=dt.UTC)


def test_clean_deletes_old_images_no_article_shows_but_not_an_article_in_flights(
    local_cloud: EmulatorConfig, unique: str
) -> None:
    real = platform().image_queue
    tenant = f"orphans-{unique}"
    prefix = f"articulos/{tenant}/"
    ahead = dataclasses.replace(
        real.running_engine, clock=lambda: dt.datetime.now(dt.UTC) + dt.timedelta(days=8)
    )
    shown = {n: f"{prefix}{n}/shown.png" for n in (1, 2)}
    # What crashes leave, images no article shows: an upload whose article was not updated, the original an
    # item's swap replaced but did not delete, the processed image of another type an attempt wrote.
    orphans = {
        n: [f"{prefix}{n}/crashed-upload.png", f"{prefix}{n}/replaced.png", f"{prefix}{n}/q-item{n}.webp"]
        for n in (1, 2)
    }

    async def _scenario() -> dict[str, Any]:
        client = firestore.AsyncClient(project=local_cloud.project_id)
        try:
            store = FirestoreCatalogStore(client)
            queue = ImageQueue(store=store, objects=real.objects, settings=real.settings, engine=ahead)
            now = dt.datetime.now(dt.UTC)
            for n in (1, 2):
                await store.put_article(tenant, n, ArticuloIn(nombre=f"Artículo {n}").model_dump(), now)
                for name in (shown[n], *orphans[n]):
                    await real.objects.put(object_name=name, data=png(seed=n), content_type="image/png")
                await store.set_article_image(
                    tenant, n, object_name=shown[n], content_type="image/png", now=now
                )
            # Article 2 has an item in flight (its dedupe document): it may still read an image it does not
            # show, so its images are left.
            active = client.collection(ACTIVE).document(_active_id(tenant, 2))
            await active.set({"queue_id": f"in-flight-{unique}", "tenant": tenant, "articulo_id": 2})
            owner = Principal(tenant=tenant, role=Role.USER)
            young = await image_queue.clean(queue=real, principal=owner, dias=7, tenant=None)
            old = await image_queue.clean(queue=queue, principal=owner, dias=7, tenant=None)
            again = await image_queue.clean(queue=queue, principal=owner, dias=7, tenant=None)
            await active.delete()
            left = await real.objects.names_older_than(prefix=prefix, before=FAR_FUTURE)
            return {"young": young, "old": old, "again": again, "left": sorted(left)}
        finally:
            client.close()

    outcome = runtime.run(_scenario())

    assert outcome["young"]["data"]["imagenes_huerfanas"] == 0  # written just now: not older than 7 days
    assert outcome["old"]["data"]["imagenes_huerfanas"] == len(orphans[1])
    assert outcome["again"]["data"]["imagenes_huerfanas"] == 0  # safe to run twice
    assert outcome["left"] == sorted([shown[1], shown[2], *orphans[2]])
