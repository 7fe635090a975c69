"""Cloud Storage adapter: result files and oversized payloads, V4 signed URLs for downloads."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

from google.api_core import exceptions as gexc
from google.auth import credentials as ga_credentials
from google.cloud import storage  # type: ignore[attr-defined]

from shared.errors import BlobUnavailable, NotFound

# A results file past this many bytes is written as a resumable upload, a chunk of this size at a time (a
# multiple of 256 KiB, as resumable uploads require).
STREAM_CHUNK_BYTES = 8 * 1024 * 1024


class GcsBlobStore:
    """Implements BlobStore with the official (synchronous) client, run off the event loop."""

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

    async def put(self, *, object_name: str, data: bytes, content_type: str) -> None:
        blob = self._bucket.blob(object_name)
        try:
            await asyncio.to_thread(blob.upload_from_string, data, content_type=content_type)
        except gexc.GoogleAPICallError as exc:
            raise BlobUnavailable(f"cannot write gs://{self._bucket.name}/{object_name}: {exc}") from exc

    async def put_parts(
        self, *, object_name: str, parts: AsyncIterator[bytes], content_type: str, if_absent: bool = False
    ) -> bool:
        """Write an object from its parts as they come. Up to STREAM_CHUNK_BYTES it is one upload, as `put`;
        past that a resumable upload sends it a chunk at a time, so memory holds one chunk, whatever the
        object's size. `if_absent`: only if no object of that name exists (`ifGenerationMatch=0`, checked by
        Storage whoever races); returns False when one did."""
        condition: dict[str, Any] = {"if_generation_match": 0} if if_absent else {}
        buffer = bytearray()
        writer: Any = None
        try:
            async for part in parts:
                buffer += part
                if len(buffer) < STREAM_CHUNK_BYTES:
                    continue
                if writer is None:
                    blob = self._bucket.blob(object_name)
                    writer = await asyncio.to_thread(
                        blob.open, "wb", chunk_size=STREAM_CHUNK_BYTES, content_type=content_type, **condition
                    )
                data, buffer = bytes(buffer), bytearray()
                await asyncio.to_thread(writer.write, data)
            if writer is None:
                await asyncio.to_thread(
                    self._bucket.blob(object_name).upload_from_string,
                    bytes(buffer),
                    content_type=content_type,
                    **condition,
                )
                return True
            await asyncio.to_thread(writer.write, bytes(buffer))
            await asyncio.to_thread(writer.close)
        except gexc.PreconditionFailed:
            return False
        except gexc.GoogleAPICallError as exc:
            raise BlobUnavailable(f"cannot write gs://{self._bucket.name}/{object_name}: {exc}") from exc
        return True

    async def get(self, *, object_name: str) -> bytes:
        blob = self._bucket.blob(object_name)
        try:
            data: bytes = await asyncio.to_thread(blob.download_as_bytes)
        except gexc.NotFound as exc:
            raise NotFound(f"no object {object_name}") from exc
        except gexc.GoogleAPICallError as exc:
            raise BlobUnavailable(f"cannot read gs://{self._bucket.name}/{object_name}: {exc}") from exc
        return data

    async def signed_url(self, *, object_name: str, ttl: dt.timedelta) -> str:
        blob = self._bucket.blob(object_name)
        url: str = blob.generate_signed_url(
            version="v4",
            expiration=ttl,
            method="GET",
            credentials=self._signing_credentials,
            api_access_endpoint=self._api_access_endpoint,
        )
        return url
