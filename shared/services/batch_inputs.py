"""Upload sessions for batch inputs: the way a tenant puts a JSONL file of requests where `inputUri` may name
it (its own prefix of the inputs bucket; see shared/kinds/jsonl_input.py)."""

from __future__ import annotations

import datetime as dt
import uuid

from shared.errors import PayloadTooLarge
from shared.kinds.jsonl_input import INPUT_PORT, input_object, input_uri
from shared.models.auth import Principal
from shared.models.batch_inputs import InputUploadResponse
from shared.services.batches import CallerInfo
from shared.services.engine import Engine

# Cloud Storage keeps a resumable upload session for a week.
SESSION_LIFETIME = dt.timedelta(days=7)


async def open_input_upload(
    *, engine: Engine, principal: Principal, size_bytes: int, origin: str | None, caller: CallerInfo
) -> InputUploadResponse:
    """A resumable upload session for exactly `size_bytes` of JSONL, under the caller's prefix."""
    settings = engine.settings
    if size_bytes > settings.batch_input_max_bytes:
        raise PayloadTooLarge(
            f"sizeBytes is {size_bytes}; the limit is {settings.batch_input_max_bytes} bytes",
            details=[{"field": "sizeBytes", "problem": f"at most {settings.batch_input_max_bytes}"}],
        )
    upload_id = uuid.uuid4().hex
    object_name = input_object(principal.tenant, upload_id)
    url = await engine.ports.extra(INPUT_PORT).upload_session(
        object_name=object_name, size=size_bytes, content_type="application/x-ndjson", origin=origin
    )
    now = engine.clock()
    await engine.store.write_audit(
        caller.audit("batch.upload", tenant=principal.tenant, target=upload_id, at=now)
    )
    return InputUploadResponse(
        upload_id=upload_id,
        upload_url=url,
        input_uri=input_uri(settings.results_bucket, object_name),
        size_bytes=size_bytes,
        max_bytes=settings.batch_input_max_bytes,
        expires_at=now + SESSION_LIFETIME,
    )
