"""Usage events: one per model call, aggregated by the usage analytics."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel


class UsageEvent(BaseModel):
    """One model call."""

    event_id: str  # {job}-{item}-{attempt}
    tenant: str
    model: str
    endpoint: str  # the platform's endpoint (job kind) that made the call: generate, embeddings, analyze
    method: str = "generateContent"  # the Gemini API method: generateContent, batchEmbedContents
    source: str  # where the call ran, e.g. batch:generate
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


class UsageRecord(BaseModel):
    """The usage events of one results commit, stored as one document.

    Written in the same commit as the results they belong to, so a call is recorded exactly when its result
    is: a result never recorded (a worker died first) has no usage either, and none is recorded twice. One
    document per commit rather than per call keeps the write load of a batch proportional to its commits.
    """

    job_id: str
    tenant: str
    source: str
    calls: int
    events: list[UsageEvent]
    at: dt.datetime
    expire_at: dt.datetime  # Firestore TTL field (ANALYTICS_RETENTION_DAYS)
