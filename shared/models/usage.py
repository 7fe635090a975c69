"""Usage events: one per model call, aggregated by the usage analytics."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel


class UsageEvent(BaseModel):
    event_id: str  # deterministic: a duplicate write of the same call is rejected, never counted twice
    tenant: str
    model: str
    endpoint: str  # generateContent, embedContent, ...
    source: str  # which job kind made the call, e.g. batch:generate
    job_id: str
    latency_ms: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    total_tokens: int
    cost_usd: float
    cache_hit: bool
    outcome: str  # ok | error code
    at: dt.datetime
    expire_at: dt.datetime  # Firestore TTL field (ANALYTICS_RETENTION_DAYS)
