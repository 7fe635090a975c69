"""Upload sessions for batch inputs (`POST /batch/uploads`): a JSONL file of requests, written straight to
Cloud Storage, then submitted with `inputUri`."""

from __future__ import annotations

import datetime as dt

from pydantic import Field

from shared.models.common import Answer, ClientModel


class InputUploadRequest(ClientModel):
    size_bytes: int = Field(ge=1)


class InputUploadResponse(Answer):
    upload_id: str
    upload_url: str
    method: str = "PUT"
    input_uri: str
    size_bytes: int
    max_bytes: int
    expires_at: dt.datetime
