"""The metric batches' answers (`/dashboards/...`): runs, jobs, calculated metrics and health. The seed's
health keeps its snake_case (`batch_jobs`); the calculated metrics are the stored documents (Spanish keys).
shared/services/metric_runs.py builds its answers through them, but for the health (`reasons` is absent when
healthy) and the calculated metrics (the stored documents as they are); the contract tests check every real
answer against them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, JsonValue

from shared.models.common import Answer, SeedAnswer

RunStatus = Literal["running", "completed", "partial", "failed"]
MetricOutcomeStatus = Literal["completed", "failed", "missing"]


class MetricOutcome(Answer):
    status: MetricOutcomeStatus
    records: int
    duration_ms: int | None
    error: str | None


class RunView(Answer):
    """One run of a metric job for one period."""

    run_id: str
    job_id: str
    period: str = Field(description="the period's last day, YYYY-MM-DD")
    period_start: str
    period_end: str
    attempt: int
    origin: Literal["scheduler", "catchup", "manual", "backfill"]
    status: RunStatus
    started_at: str
    finished_at: str | None
    duration_s: float | None
    records_read: int | None
    metrics: dict[str, MetricOutcome] = Field(description="by metric name")
    deleted: dict[str, int] | None = Field(description="the cleanup job's deletions, by collection")
    batch_id: str | None


class StartedRun(Answer):
    """A run started, joined (one in progress) or left alone (already completed)."""

    action: Literal["started", "joined", "already_completed"]
    run: RunView


class Backfill(Answer):
    job_id: str
    periods: int
    runs: list[StartedRun]


class Firing(Answer):
    """A Cloud Scheduler firing: its period's run and the catch-up runs of the days before it."""

    job_id: str
    runs: list[StartedRun]


class JobView(Answer):
    id: str
    description: str
    schedule: str = Field(description="cron")
    time_zone: str
    metrics: list[str]
    scheduler_state: str = Field(description="Cloud Scheduler's state, or NOT_FOUND")
    next_run: str | None
    last_attempt: str | None
    last_run: RunView | None


class JobsStatus(Answer):
    jobs: list[JobView]


class Components(SeedAnswer):
    scheduler: Literal["running", "degraded", "unreachable"]
    batch_jobs: int
    firestore: Literal["ok", "unreachable"]


class Health(SeedAnswer):
    status: Literal["healthy", "degraded"]
    components: Components
    reasons: list[str] = Field(default_factory=list, description="why it is degraded; absent when healthy")


class CalculatedMetric(SeedAnswer):
    """A calculated metric as stored (shared/kinds/metrics.py), its instants in ISO 8601."""

    id: str
    nombre: str
    tipo: Literal["diario", "semanal"]
    valor: float
    descripcion: str
    unidad: str
    dimensiones: dict[str, JsonValue] = Field(description="the metric's dimensions and details, by its own")
    periodo_inicio: str
    periodo_fin: str
    calculado_en: str
    expira_en: str


class Calculated(SeedAnswer):
    metricas: list[CalculatedMetric]
    count: int
    next_cursor: str | None = Field(alias="nextCursor")
