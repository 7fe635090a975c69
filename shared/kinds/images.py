"""Catalog images re-made by the image model (the image queue of `functions/articulos.py`).

Each queue item runs as a one-item batch of this kind, started by the queue's dispatcher when a slot frees
(`shared/services/image_queue.py`); clients do not submit it through `POST /batch/images`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, TypeAdapter

from shared.errors import InvalidRequest
from shared.kinds.base import ItemContext, Kind, KindRequest, Plan, Ports
from shared.models.articulos import ImageWork
from shared.services import image_dispatch, image_processing


class ImagesRequest(KindRequest):
    queue_ids: list[str] = Field(min_length=1, max_length=1)


class Images(Kind[ImagesRequest, ImageWork]):
    name: ClassVar[str] = image_dispatch.KIND
    request_model: ClassVar[type[KindRequest]] = ImagesRequest
    item_adapter: ClassVar[TypeAdapter[Any]] = TypeAdapter(list[ImageWork])
    public: ClassVar[bool] = False  # items enter only through the image queue (`batches.start_planned`)

    async def plan(
        self, request: ImagesRequest, *, tenant: str, batch_id: str, ports: Ports
    ) -> Plan[ImageWork]:
        raise InvalidRequest(
            "images are processed through the image queue: POST /articulos/batch-process-images",
            details=[{"field": "body", "problem": "use POST /articulos/batch-process-images"}],
        )

    async def run(self, item: ImageWork, ctx: ItemContext) -> dict[str, Any]:
        queue: image_dispatch.ImageQueue = ctx.ports.extra("image_queue")
        return await image_processing.process(queue=queue, work=item, ctx=ctx)
