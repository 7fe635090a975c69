"""The usage analytics' answers (`GET /analytics/metrics`, `/realtime`, `/insights`, `POST /export`,
`/reset`): the seed's keys, and the platform's additions next to them. The services compose them as dicts on
the hot path (shared/services/analytics.py, insights.py, usage_export.py); these models are their contract,
checked against every real answer by the contract tests."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from shared.models.batch import BatchStatus
from shared.models.common import Answer


class WindowView(Answer):
    """The window of time an answer covers (RFC 3339 instants, UTC)."""

    from_: str = Field(alias="from")
    to: str


class RequestCounts(Answer):
    total: int
    successful: int
    failed: int
    success_rate: float = Field(description="percent")
    by_model: dict[str, int] = Field(description="calls by model")
    by_endpoint: dict[str, int] = Field(description="calls by endpoint")


class Performance(Answer):
    """Latencies in milliseconds."""

    average_response_time: float
    p50_response_time: int
    p95_response_time: int
    p99_response_time: int


class TokenTotals(Answer):
    total_tokens: int
    input_tokens: int
    output_tokens: int
    estimated_cost: float = Field(description="USD")


class CacheCounts(Answer):
    hits: int
    misses: int
    hit_rate: float = Field(description="percent")


class MetricsView(Answer):
    """The seed's `metrics`."""

    requests: RequestCounts
    performance: Performance
    usage: TokenTotals
    cache: CacheCounts


class Metrics(Answer):
    """`GET /analytics/metrics`."""

    metrics: MetricsView
    window: WindowView


class Rates(Answer):
    requests: int
    calls_per_second: float
    error_rate: float = Field(description="percent")
    p95_response_time: int = Field(description="milliseconds")
    tokens_per_second: float


class InFlightBatch(Answer):
    batch_id: str
    kind: str
    status: BatchStatus
    total: int
    finished: int
    percent: float


class InFlight(Answer):
    batches: int = Field(description="how many are listed")
    listed: list[InFlightBatch] = Field(alias="list")


class RealtimeView(Answer):
    last_minute: Rates
    last5_minutes: Rates
    in_flight: InFlight


class Realtime(Answer):
    """`GET /analytics/realtime`, and each event of `/analytics/stream`."""

    realtime: RealtimeView
    at: str


class PerformanceInsight(Answer):
    status: Literal["no_data", "good", "degraded", "critical"]
    message: str
    recommendations: list[str]


class Savings(Answer):
    """What the cache saved and what Batch Mode would save, in USD."""

    cache_usd: float
    batch_mode_usd: float
    total_usd: float


class UsageInsight(Answer):
    trend: Literal["increasing", "decreasing", "stable"]
    peak_hours: list[str] = Field(description="HH:00-HH:00 ranges, UTC")
    cost_optimization: list[str]
    calls: int
    previous_calls: int = Field(description="in the window of the same length before")
    savings: Savings


class RetryCounts(Answer):
    failed_calls: int
    absorbed_by_retries: int
    absorbed_share: float = Field(description="percent")


class ErrorsInsight(Answer):
    most_common: str | None
    frequency: str = Field(description="the share of failed calls, e.g. 4%")
    suggestions: list[str]
    retries: RetryCounts


class InsightsView(Answer):
    """The seed's `insights`."""

    performance: PerformanceInsight
    usage: UsageInsight
    errors: ErrorsInsight


class Insights(Answer):
    """`GET /analytics/insights`."""

    insights: InsightsView
    window: WindowView


class ExportPart(Answer):
    part: int
    url: str = Field(description="a signed URL")
    object_name: str = Field(alias="object")
    rows: int
    size_bytes: int = Field(alias="bytes")


class Export(Answer):
    """`POST /analytics/export`: the parts in Cloud Storage, each at most ANALYTICS_EXPORT_MAX_BYTES."""

    export_id: str
    format: Literal["json", "csv"]
    url: str = Field(description="the first part's signed URL")
    expires_at: str
    rows: int
    size_bytes: int = Field(alias="bytes")
    parts: list[ExportPart]


class Removed(Answer):
    records: int
    calls: int
    rollups: int


class Reset(Answer):
    """`POST /analytics/reset`."""

    message: str
    tenant: str
    removed: Removed
