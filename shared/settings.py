"""One typed settings object for every function, validated at start-up.

Values come from the environment (names are the field names upper-cased, e.g. `BATCH_MAX_CONCURRENCY`). In
local mode (`PLATFORM_ENV=local`, the default) every Google endpoint is derived from emulator.json; in
production the emulator endpoints must be absent and the secrets real.
"""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from typing import Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.emulator_config import STATE_DIR, load_emulator_config


class Environment(StrEnum):
    LOCAL = "local"
    PRODUCTION = "production"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    platform_env: Environment = Environment.LOCAL
    project_id: str = ""
    region: str = ""
    # Public base URL of the deployed functions; a function's URL is `<base>/<function_name>`.
    functions_base_url: str = ""

    # Emulator endpoints (local mode only; derived from emulator.json when empty).
    firestore_emulator_host: str = ""
    storage_emulator_host: str = ""
    tasks_emulator_host: str = ""
    gemini_base_url: str = ""
    oidc_certs_url: str = ""  # empty in production: Google's certificates

    gemini_api_key: SecretStr = SecretStr("")
    results_bucket: str = ""
    tasks_queue: str = "batch-work"
    tasks_service_account: str = ""
    scheduler_service_account: str = ""
    storage_signer_key_dir: str = str(STATE_DIR / "oidc")

    # Batch engine.
    batch_default_model: str = "gemini-2.5-flash"
    batch_max_concurrency: int = Field(default=5, ge=1, le=100)
    batch_default_timeout: int = Field(default=30_000, ge=100, le=300_000)  # ms per request
    batch_max_retries: int = Field(default=3, ge=0, le=10)
    batch_max_requests: int = Field(default=50_000, ge=1)
    # Batch inputs past one body: a JSONL object named by inputUri (POST /batch/uploads opens one).
    batch_input_max_requests: int = Field(default=100_000, ge=1)
    batch_input_max_bytes: int = Field(default=2 * 1024**3, ge=1024)
    batch_concurrency_limit: int = Field(default=100, ge=1)
    batch_timeout_limit: int = Field(default=300_000, ge=100)  # ms
    batch_wait_threshold: int = Field(default=100, ge=0)  # batches this small wait by default
    batch_max_wait_seconds: float = Field(default=60.0, gt=0)
    batch_max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    batch_chunk_size: int = Field(default=500, ge=1, le=5000)
    # A batch runs in ceil(concurrency / this) lanes of chunks at once, so its work spreads over instances.
    batch_lane_concurrency: int = Field(default=25, ge=1, le=100)
    # Status polls on one instance within this long of each other share one read of the chunks' progress.
    batch_progress_cache_seconds: float = Field(default=0.5, ge=0, le=10)
    batch_inline_limit_bytes: int = Field(default=64 * 1024, ge=1024)
    batch_lease_seconds: float = Field(default=60.0, gt=0)
    # A delivery stops starting requests after this long and hands the rest of its chunk to a new task,
    # so no request outlives the queue's dispatch deadline (10 min by default).
    batch_task_budget_seconds: float = Field(default=480.0, gt=0)
    batch_dispatch_deadline_seconds: int = Field(default=600, ge=15, le=1800)
    batch_task_max_attempts: int = Field(default=10, ge=1)
    # A batch with no chunk running and nothing finished for this long has lost the task of its next step
    # (Cloud Tasks deletes a task after its last attempt): the sweeper enqueues that step again.
    batch_stall_seconds: float = Field(default=600.0, gt=0)
    results_url_ttl_seconds: int = Field(default=900, ge=60, le=7 * 24 * 3600)

    # Batch embeddings and analysis.
    embeddings_default_model: str = "gemini-embedding-001"
    # Firestore's vector fields hold at most 2,048 dimensions; the declared vector index is for 768.
    embeddings_default_dimension: int = Field(default=768, ge=1, le=2048)
    embeddings_max_documents: int = Field(default=100_000, ge=1)  # documents per batch, over all operations
    analyze_default_model: str = "gemini-2.5-flash"

    # Proxies of the platform's own in front of the functions that append the caller to X-Forwarded-For:
    # 1 for Google's front end (and the local gateway), 2 behind an external HTTPS load balancer; 0 reads
    # only the connection's peer. The client's own entries are left of these and never trusted.
    forwarded_hops: int = Field(default=1, ge=0, le=10)

    # Asynchronous reports (functions/reports.py, shared/reports).
    reports_bucket: str = ""  # inputs and zipped reports; default `<project>-reports`
    reports_tasks_queue: str = "reports-work"
    reports_max_concurrent: int = Field(default=2, ge=1, le=100)  # the queue's max_concurrent_dispatches
    reports_max_request_bytes: int = Field(default=32 * 1024 * 1024, ge=1024, le=32 * 1024 * 1024)
    reports_max_upload_bytes: int = Field(default=500 * 1024 * 1024, ge=1024, le=5 * 1024**4)
    reports_token_hours: float = Field(default=24.0, gt=0, le=7 * 24)
    reports_retention_hours: float = Field(default=72.0, gt=0)
    reports_download_url_seconds: int = Field(default=300, ge=10, le=3600)
    reports_token_misses_per_minute: int = Field(default=20, ge=1)  # unknown tokens per client address
    reports_job_deadline_hours: float = Field(default=24.0, gt=0, le=24)  # queued and running, at most
    # Report tasks may run long (one task reads the whole input): Cloud Tasks allows up to 30 minutes.
    reports_dispatch_deadline_seconds: int = Field(default=1800, ge=15, le=1800)
    reports_work_dir: str = ""  # where XLSX sheets spill while written; default: the system's temp dir

    # Catalog articles and their image queue (functions/articulos.py).
    image_model: str = "gemini-2.5-flash-image"
    image_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, le=30 * 1024 * 1024)
    image_queue_concurrency: int = Field(default=4, ge=1, le=100)  # items at once, across instances
    image_model_rpm: int = Field(default=60, ge=1, le=100_000)  # model calls a minute, across instances
    image_max_attempts: int = Field(default=3, ge=1, le=10)
    image_timeout_seconds: float = Field(default=120.0, ge=1, le=600)  # one model call
    image_retry_base_delay_ms: int = Field(default=1000, ge=10, le=60_000)  # backoff between attempts

    # Gemini Batch Mode jobs paid with credits (shared/kinds/batchmode.py, `POST /batch/create`).
    batchmode_max_requests: int = Field(default=20, ge=1, le=1000)  # rows of one job
    batchmode_image_model: str = "gemini-2.5-flash-image"
    batchmode_max_image_bytes: int = Field(default=7 * 1024 * 1024, ge=1024, le=20 * 1024 * 1024)
    batchmode_max_inline_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)  # Gemini's inline batch cap
    batchmode_poll_seconds: float = Field(default=30.0, gt=0, le=300)  # first poll interval, growing 1.5x
    batchmode_max_poll_seconds: float = Field(default=300.0, gt=0, le=3600)
    batchmode_max_hours: float = Field(default=24.0, gt=0, le=47)  # then JOB_STATE_EXPIRED
    batchmode_min_rows: int = Field(default=3, ge=1)  # "mode": "auto" runs fewer rows interactively
    batchmode_turnaround_seconds: int = Field(default=86_400, ge=1)  # Batch Mode's target turnaround
    batchmode_webhook_queue: str = "batchmode-webhooks"
    batchmode_webhook_key: SecretStr = SecretStr("")  # derives each tenant's webhook secret

    analytics_retention_days: int = Field(default=30, ge=1)
    # Usage analytics (functions/analytics.py, functions/analytics_rollup.py).
    analytics_realtime_interval: int = Field(default=5000, ge=100, le=600_000)  # ms between SSE events
    analytics_max_sse_connections: int = Field(default=1000, ge=1, le=1000)  # per instance
    analytics_sse_max_seconds: float = Field(default=3300.0, gt=0, le=3600)  # then the client reconnects
    analytics_sse_heartbeat_seconds: float = Field(default=15.0, gt=0, le=300)
    analytics_export_max_bytes: int = Field(default=10_000_000, ge=1024, le=10_000_000)  # per file
    analytics_export_path: str = "exports"  # object prefix of exports in RESULTS_BUCKET
    # The roller rolls minutes closed this long ago: results committed later than this after their last
    # model call would be missed by the rollups.
    analytics_rollup_lag_seconds: int = Field(default=120, ge=60, le=3600)
    rate_limit_per_minute: int = Field(default=600, ge=1)
    # How often an instance adds its counted requests to the shared per-tenant counter in Firestore.
    rate_limit_sync_seconds: float = Field(default=1.0, gt=0, le=60)
    api_key_cache_seconds: float = Field(default=30.0, ge=0)

    # Scheduled metric batches (shared/metrics, functions/dashboards.py).
    scheduler_emulator_host: str = ""
    metrics_time_zone: str = "America/Bogota"
    metrics_daily_ttl_days: int = Field(default=90, ge=1)
    metrics_weekly_ttl_days: int = Field(default=365, ge=1)
    metrics_run_retention_days: int = Field(default=90, ge=1)
    metrics_catchup_days: int = Field(default=3, ge=0, le=30)
    metrics_backfill_max_periods: int = Field(default=31, ge=1, le=366)
    metrics_partition_hours: int = Field(default=6, ge=1, le=24)  # a run reads its range in slices this long
    metrics_run_deadline_minutes: int = Field(default=30, ge=5, le=120)

    # Fault runs (tests/chaos): this instance's clock runs this many seconds ahead (negative: behind) of
    # the true time, to test leases between instances whose clocks disagree. Local mode only.
    clock_offset_seconds: float = Field(default=0.0, ge=-3600, le=3600)
    # The web dashboard (functions/dashboard.py).
    dashboard_poll_ms: int = Field(default=1000, ge=1000, le=60_000)  # live views poll at most once a second
    # Where the page sends API calls; empty: the functions' root on the page's own origin (the gateway).
    dashboard_api_base_url: str = ""

    @field_validator("metrics_time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"METRICS_TIME_ZONE {value!r} is not an IANA time zone") from exc
        return value

    @model_validator(mode="after")
    def _fill_and_check(self) -> Self:
        if self.platform_env is Environment.LOCAL:
            self._fill_local()
        else:
            self._check_production()
        self.reports_bucket = self.reports_bucket or f"{self.project_id}-reports"
        return self

    def _fill_local(self) -> None:
        config = load_emulator_config()
        emulators = config.emulators
        defaults = {
            "project_id": config.project_id,
            "region": config.region,
            "functions_base_url": emulators.functions.url,
            "firestore_emulator_host": emulators.firestore.address,
            "storage_emulator_host": emulators.storage.url,
            "tasks_emulator_host": emulators.tasks.address,
            "scheduler_emulator_host": emulators.scheduler.address,
            "gemini_base_url": emulators.gemini.url,
            "oidc_certs_url": config.oidc_certs_url,
        }
        for name, value in defaults.items():
            if not getattr(self, name):
                setattr(self, name, value)
        project = self.project_id
        if not self.gemini_api_key.get_secret_value():
            self.gemini_api_key = SecretStr("local-emulator")
        if not self.batchmode_webhook_key.get_secret_value():
            self.batchmode_webhook_key = SecretStr("local-webhook-key")
        self.results_bucket = self.results_bucket or f"{project}-batch-results"
        self.tasks_service_account = (
            self.tasks_service_account or f"tasks-invoker@{project}.iam.gserviceaccount.com"
        )
        self.scheduler_service_account = (
            self.scheduler_service_account or f"scheduler-invoker@{project}.iam.gserviceaccount.com"
        )

    def _check_production(self) -> None:
        required = [
            "project_id", "region", "functions_base_url", "results_bucket",
            "tasks_service_account", "scheduler_service_account",
        ]  # fmt: skip
        missing = [name.upper() for name in required if not getattr(self, name)]
        if not self.gemini_api_key.get_secret_value():
            missing.append("GEMINI_API_KEY")
        if missing:
            raise ValueError(f"production settings missing: {', '.join(missing)}")
        emulated = [
            name.upper()
            for name in ("firestore_emulator_host", "storage_emulator_host", "tasks_emulator_host",
                         "scheduler_emulator_host", "gemini_base_url", "oidc_certs_url")
            if getattr(self, name)
        ]  # fmt: skip
        if emulated:
            raise ValueError(f"emulator endpoints are not allowed in production: {', '.join(emulated)}")
        if self.clock_offset_seconds:
            raise ValueError("CLOCK_OFFSET_SECONDS is for fault tests on the local cloud only")
        if self.gemini_api_key.get_secret_value() in {"local-emulator", "changethis"}:
            raise ValueError("GEMINI_API_KEY must be a real key in production")
        if len(self.batchmode_webhook_key.get_secret_value()) < 32:
            raise ValueError("BATCHMODE_WEBHOOK_KEY must be a secret of at least 32 characters in production")

    @property
    def is_local(self) -> bool:
        return self.platform_env is Environment.LOCAL

    def function_url(self, function_name: str) -> str:
        return f"{self.functions_base_url.rstrip('/')}/{function_name}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
