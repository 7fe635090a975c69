"""Cloud Storage adapter for objects too large to hold: streamed reads and writes, resumable upload
sessions, signed download URLs."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any, BinaryIO, cast

from google.api_core import exceptions as gexc
from google.auth import credentials as ga_credentials
from google.cloud import storage  # type: ignore[attr-defined]

from shared.errors import BlobUnavailable, NotFound
from shared.ports import ObjectInfo

# Reads and writes move 8 MiB at a time (a multiple of 256 KiB, as resumable uploads require): few requests,
# and a bounded buffer whatever the object's size.
STREAM_CHUNK_BYTES = 8 * 1024 * 1024


def _info(blob: Any) -> ObjectInfo:
    return ObjectInfo(
        name=blob.name,
        size=int(blob.size or 0),
        generation=int(blob.generation or 0),
        md5_hash=blob.md5_hash,
        content_type=blob.content_type,
        updated=blob.updated,
    )


class GcsStreamingBlobs:
    """Implements StreamingBlobs with the official (synchronous) client."""

    def __init__(
        self,
        client: storage.Client,
        *,
        bucket_name: str,
        signing_credentials: ga_credentials.Signing | None,
        api_access_endpoint: str | None,
    ) -> None:
        self._bucket = client.bucket(bucket_name)
        self._signing_credentials = signing_credentials
        self._api_access_endpoint = api_access_endpoint

    def open_read(self, *, object_name: str, generation: int | None = None) -> BinaryIO:
        blob = self._bucket.blob(object_name, generation=generation)
        try:
            return cast(BinaryIO, blob.open("rb", chunk_size=STREAM_CHUNK_BYTES))
        except gexc.NotFound as exc:
            raise NotFound(f"no object {object_name}") from exc
        except gexc.GoogleAPICallError as exc:
            raise BlobUnavailable(f"cannot read gs://{self._bucket.name}/{object_name}: {exc}") from exc

    def open_write(self, *, object_name: str, content_type: str) -> BinaryIO:
        blob = self._bucket.blob(object_name)
        # ignore_flush: zipfile flushes often; only whole chunks go out (resumable upload).
        return cast(
            BinaryIO,
            blob.open("wb", chunk_size=STREAM_CHUNK_BYTES, content_type=content_type, ignore_flush=True),
        )

    def upload_file(self, *, object_name: str, file: BinaryIO, content_type: str) -> ObjectInfo:
        blob = self._bucket.blob(object_name, chunk_size=STREAM_CHUNK_BYTES)
        try:
            blob.upload_from_file(file, content_type=content_type, rewind=True)
            blob.reload()
        except gexc.GoogleAPICallError as exc:
            raise BlobUnavailable(f"cannot write gs://{self._bucket.name}/{object_name}: {exc}") from exc
        return _info(blob)

    async def stat(self, *, object_name: str) -> ObjectInfo | None:
        blob = self._bucket.get_blob
        try:
            found = await asyncio.to_thread(blob, object_name)
        except gexc.GoogleAPICallError as exc:
            raise BlobUnavailable(f"cannot read gs://{self._bucket.name}/{object_name}: {exc}") from exc
        return _info(found) if found is not None else None

    async def upload_session(
        self, *, object_name: str, size: int, content_type: str, origin: str | None
    ) -> str:
        blob = self._bucket.blob(object_name)
        try:
            # `size` is sent as X-Upload-Content-Length: Cloud Storage refuses any byte beyond it.
            url: str = await asyncio.to_thread(
                blob.create_resumable_upload_session, content_type=content_type, size=size, origin=origin
            )
        except gexc.GoogleAPICallError as exc:
            raise BlobUnavailable(f"cannot open an upload session for {object_name}: {exc}") from exc
        return url

    async def copy(self, *, source: str, destination: str) -> ObjectInfo | None:
        """Copy within the bucket on Storage's side (rewrite, resumed until done: no byte passes through
        here, whatever the size); None when the source is gone."""
        target = self._bucket.blob(destination)

        def _rewrite() -> ObjectInfo:
            token: str | None = None
            while True:
                token, _, _ = target.rewrite(self._bucket.blob(source), token=token)
                if token is None:
                    return _info(target)

        try:
            return await asyncio.to_thread(_rewrite)
        except gexc.NotFound:
            return None
        except gexc.GoogleAPICallError as exc:
            raise BlobUnavailable(f"cannot copy gs://{self._bucket.name}/{source}: {exc}") from exc

    async def delete(self, *, object_name: str) -> bool:
        try:
            await asyncio.to_thread(self._bucket.delete_blob, object_name)
        except gexc.NotFound:
            return False
        except gexc.GoogleAPICallError as exc:
            raise BlobUnavailable(f"cannot delete gs://{self._bucket.name}/{object_name}: {exc}") from exc
        return True

    async def signed_url(self, *, object_name: str, ttl: dt.timedelta, file_name: str) -> str:
        blob = self._bucket.blob(object_name)
        url: str = blob.generate_signed_url(
            version="v4",
            expiration=ttl,
            method="GET",
            credentials=self._signing_credentials,
            api_access_endpoint=self._api_access_endpoint,
            response_disposition=f'attachment; filename="{file_name}"',
        )
        return url
