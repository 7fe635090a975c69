"""Export of a window's model calls as CSV or JSON files in Cloud Storage, in numbered parts of at most
ANALYTICS_EXPORT_MAX_BYTES each (never truncated: every part is listed), with signed URLs."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import uuid
from enum import StrEnum
from typing import Any

from pydantic import Field

from shared.models.common import ClientModel
from shared.models.usage import UsageEvent
from shared.ports import BlobStore, UsageStore

COLUMNS = [
    "at", "tenant", "jobId", "eventId", "model", "endpoint", "method", "latencyMs", "inputTokens",
    "outputTokens", "cachedTokens", "totalTokens", "costUsd", "cacheHit", "outcome",
]  # fmt: skip


class ExportFormat(StrEnum):
    JSON = "json"
    CSV = "csv"


class ExportRequest(ClientModel):
    """The body of POST /analytics/export."""

    format: ExportFormat = ExportFormat.JSON
    from_: str | None = Field(default=None, alias="from")
    to: str | None = None
    tenant: str | None = None  # admin only


def row(event: UsageEvent) -> list[Any]:
    return [
        event.at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"), event.tenant, event.job_id,
        event.event_id, event.model, event.endpoint, event.method, event.latency_ms, event.input_tokens,
        event.output_tokens, event.cached_tokens, event.total_tokens, event.cost_usd, event.cache_hit,
        event.outcome,
    ]  # fmt: skip


class _Part:
    """One file being built: CSV with its header, or a JSON array."""

    def __init__(self, fmt: ExportFormat) -> None:
        self.fmt = fmt
        self.rows = 0
        self.chunks: list[bytes] = []
        self.size = 0
        self._add(self._csv_line(COLUMNS) if fmt is ExportFormat.CSV else b"[")

    def _add(self, data: bytes) -> None:
        self.chunks.append(data)
        self.size += len(data)

    @staticmethod
    def _csv_line(values: list[Any]) -> bytes:
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerow(values)
        return out.getvalue().encode()

    def encode(self, event: UsageEvent) -> bytes:
        if self.fmt is ExportFormat.CSV:
            return self._csv_line(row(event))
        separator = b"," if self.rows else b""
        return separator + json.dumps(dict(zip(COLUMNS, row(event), strict=True))).encode()

    def closing(self) -> bytes:
        return b"]" if self.fmt is ExportFormat.JSON else b""

    def fits(self, data: bytes, limit: int) -> bool:
        return self.size + len(data) + len(self.closing()) <= limit

    def append(self, data: bytes) -> None:
        self._add(data)
        self.rows += 1

    def body(self) -> bytes:
        return b"".join(self.chunks) + self.closing()


async def export(
    *,
    usage: UsageStore,
    blobs: BlobStore,
    tenant: str | None,
    start: dt.datetime,
    end: dt.datetime,
    fmt: ExportFormat,
    max_part_bytes: int,
    prefix: str,
    url_ttl: dt.timedelta,
    now: dt.datetime,
) -> dict[str, Any]:
    export_id = uuid.uuid4().hex
    folder = f"{prefix.strip('/')}/{tenant or 'all-tenants'}/{export_id}"
    parts: list[dict[str, Any]] = []

    async def flush(part: _Part) -> None:
        number = len(parts) + 1
        name = f"{folder}/part-{number:04d}.{fmt.value}"
        body = part.body()
        content_type = "text/csv" if fmt is ExportFormat.CSV else "application/json"
        await blobs.put(object_name=name, data=body, content_type=content_type)
        url = await blobs.signed_url(object_name=name, ttl=url_ttl)
        parts.append({"part": number, "url": url, "object": name, "rows": part.rows, "bytes": len(body)})

    part = _Part(fmt)
    async for record in usage.usage_records(tenant=tenant, start=start, end=end):
        for event in record.events:
            data = part.encode(event)
            if not part.fits(data, max_part_bytes) and part.rows:
                await flush(part)
                part = _Part(fmt)
                data = part.encode(event)
            part.append(data)
    if part.rows or not parts:
        await flush(part)
    expires_at = (now + url_ttl).isoformat().replace("+00:00", "Z")
    return {
        "exportId": export_id,
        "format": fmt.value,
        "url": parts[0]["url"],
        "expiresAt": expires_at,
        "rows": sum(p["rows"] for p in parts),
        "bytes": sum(p["bytes"] for p in parts),
        "parts": parts,
    }
