"""Cloud Storage adapter of the catalog's images: the blob store's reads and writes, plus delete."""

from __future__ import annotations

import asyncio
import datetime as dt

from google.api_core import exceptions as gexc

from shared.adapters.blob_store import GcsBlobStore
from shared.errors import BlobUnavailable


class GcsImageObjects(GcsBlobStore):
    """Implements ImageObjects on the platform's bucket (objects under `articulos/`)."""

    async def delete(self, *, object_name: str) -> None:
        blob = self._bucket.blob(object_name)
        try:
            await asyncio.to_thread(blob.delete)
        except gexc.NotFound:
            return  # already gone: deletes are repeated after a crash
        except gexc.GoogleAPICallError as exc:
            raise BlobUnavailable(f"cannot delete gs://{self._bucket.name}/{object_name}: {exc}") from exc

    async def names_older_than(self, *, prefix: str, before: dt.datetime) -> list[str]:
        def _list() -> list[str]:
            blobs = self._bucket.client.list_blobs(
                self._bucket, prefix=prefix, fields="items(name,updated),nextPageToken"
            )
            return [blob.name for blob in blobs if blob.updated is not None and blob.updated < before]

        try:
            return await asyncio.to_thread(_list)
        except gexc.GoogleAPICallError as exc:
            raise BlobUnavailable(f"cannot list gs://{self._bucket.name}/{prefix}: {exc}") from exc
