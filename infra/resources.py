"""The platform's Google Cloud resources, declared once and applied the same way to the local emulators
and to a real project: Cloud Tasks queues, Cloud Scheduler jobs, Cloud Storage buckets.

    python -m infra.resources apply     # PLATFORM_ENV=local (emulators) or production (real project)

Applying is idempotent: what exists is updated to the declaration, what is missing is created. Firestore
indexes and TTL policies are declared in infra/firestore.indexes.json (deployed with the Firebase or gcloud
CLI; the emulator needs none).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass

import grpc
from google.api_core import exceptions as gexc
from google.auth.credentials import AnonymousCredentials
from google.cloud import scheduler_v1, storage, tasks_v2  # type: ignore[attr-defined]
from google.cloud.scheduler_v1.services.cloud_scheduler.transports import CloudSchedulerGrpcTransport
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport
from google.protobuf import duration_pb2, field_mask_pb2

from shared.emulator_config import EmulatorConfig, load_emulator_config
from shared.metrics.jobs import JOBS as METRIC_JOBS
from shared.settings import Settings, get_settings

log = logging.getLogger("resources")


@dataclass(frozen=True)
class QueueSpec:
    """A Cloud Tasks queue. Chunk tasks are few and long; retries back off from 1 s to 1 min."""

    name: str
    max_dispatches_per_second: float
    max_concurrent_dispatches: int
    max_attempts: int
    min_backoff_s: float
    max_backoff_s: float
    max_doublings: int


@dataclass(frozen=True)
class ScheduleSpec:
    """A Cloud Scheduler job calling one of the platform's functions with an OIDC token."""

    name: str
    schedule: str
    time_zone: str
    function_name: str
    attempt_deadline_s: int
    description: str
    # Appended to the function's URL; the OIDC audience stays the function's URL.
    path: str = ""


def queues(settings: Settings) -> list[QueueSpec]:
    return [
        QueueSpec(
            name=settings.tasks_queue,
            max_dispatches_per_second=500,
            max_concurrent_dispatches=1000,
            max_attempts=settings.batch_task_max_attempts,
            min_backoff_s=0.5,
            max_backoff_s=60,
            max_doublings=5,
        ),
        # Report jobs: one chunk task per job, and this queue never dispatches more than
        # REPORTS_MAX_CONCURRENT of them at once, across every instance; the rest wait in the queue.
        QueueSpec(
            name=settings.reports_tasks_queue,
            max_dispatches_per_second=10,
            max_concurrent_dispatches=settings.reports_max_concurrent,
            max_attempts=settings.batch_task_max_attempts,
            min_backoff_s=1,
            max_backoff_s=60,
            max_doublings=5,
        ),
        # Batch Mode webhooks: one task per finished job to the tenant's URL, retried for about a day.
        QueueSpec(
            name=settings.batchmode_webhook_queue,
            max_dispatches_per_second=50,
            max_concurrent_dispatches=100,
            max_attempts=20,
            min_backoff_s=1,
            max_backoff_s=3600,
            max_doublings=8,
        ),
    ]


def schedules(settings: Settings) -> list[ScheduleSpec]:
    return [
        ScheduleSpec(
            name="batch-sweeper",
            schedule="* * * * *",
            time_zone="Etc/UTC",
            function_name="batch_sweeper",
            attempt_deadline_s=180,
            description="Re-enqueue stalled batch chunks; stop batches past their deadline.",
        ),
        ScheduleSpec(
            name="reports-cleanup",
            schedule="17 * * * *",
            time_zone="Etc/UTC",
            function_name="reports_cleanup",
            attempt_deadline_s=300,
            description="Delete report jobs, inputs, reports and tokens older than REPORTS_RETENTION_HOURS.",
        ),
        ScheduleSpec(
            name="articulos-dispatch",
            schedule="* * * * *",
            time_zone="Etc/UTC",
            function_name="articulos_dispatch",
            attempt_deadline_s=180,
            description="Repair the image queue after a crash and fill its free slots.",
        ),
        ScheduleSpec(
            name="analytics-rollup",
            schedule="* * * * *",
            time_zone="Etc/UTC",
            function_name="analytics_rollup",
            attempt_deadline_s=180,
            description="Roll closed minutes, hours and days of usage into rollups; delete expired usage.",
        ),
        *(
            ScheduleSpec(
                name=spec.job_id,
                schedule=spec.schedule,
                time_zone=settings.metrics_time_zone,
                function_name="dashboards",
                attempt_deadline_s=180,
                description=spec.description,
                path=f"/batch-jobs/scheduled/{spec.job_id}",
            )
            for spec in METRIC_JOBS.values()
        ),
    ]


def buckets(settings: Settings) -> list[str]:
    return [settings.results_bucket, settings.reports_bucket]


def _duration(seconds: float) -> duration_pb2.Duration:
    whole = int(seconds)
    return duration_pb2.Duration(seconds=whole, nanos=int((seconds - whole) * 1e9))


def apply_queues(client: tasks_v2.CloudTasksClient, settings: Settings) -> None:
    parent = f"projects/{settings.project_id}/locations/{settings.region}"
    for spec in queues(settings):
        queue = tasks_v2.Queue(
            name=f"{parent}/queues/{spec.name}",
            rate_limits=tasks_v2.RateLimits(
                max_dispatches_per_second=spec.max_dispatches_per_second,
                max_concurrent_dispatches=spec.max_concurrent_dispatches,
            ),
            retry_config=tasks_v2.RetryConfig(
                max_attempts=spec.max_attempts,
                min_backoff=_duration(spec.min_backoff_s),
                max_backoff=_duration(spec.max_backoff_s),
                max_doublings=spec.max_doublings,
            ),
        )
        try:
            client.create_queue(parent=parent, queue=queue)
        except gexc.AlreadyExists:
            mask = field_mask_pb2.FieldMask(paths=["rate_limits", "retry_config"])
            client.update_queue(queue=queue, update_mask=mask)


def apply_schedules(client: scheduler_v1.CloudSchedulerClient, settings: Settings) -> None:
    parent = f"projects/{settings.project_id}/locations/{settings.region}"
    for spec in schedules(settings):
        url = settings.function_url(spec.function_name)
        job = scheduler_v1.Job(
            name=f"{parent}/jobs/{spec.name}",
            description=spec.description,
            schedule=spec.schedule,
            time_zone=spec.time_zone,
            attempt_deadline=_duration(spec.attempt_deadline_s),
            http_target=scheduler_v1.HttpTarget(
                uri=url + spec.path,
                http_method=scheduler_v1.HttpMethod.POST,
                oidc_token=scheduler_v1.OidcToken(
                    service_account_email=settings.scheduler_service_account, audience=url
                ),
            ),
        )
        try:
            client.create_job(parent=parent, job=job)
        except gexc.AlreadyExists:
            client.update_job(job=job)


def apply_buckets(client: storage.Client, settings: Settings) -> None:
    for name in buckets(settings):
        try:
            client.create_bucket(name, location=settings.region)
        except gexc.Conflict:
            continue


def apply_local(config: EmulatorConfig | None = None) -> None:
    """Apply the declarations to the running emulators."""
    config = config or load_emulator_config()
    settings = get_settings()
    emulators = config.emulators
    apply_queues(
        tasks_v2.CloudTasksClient(
            transport=CloudTasksGrpcTransport(channel=grpc.insecure_channel(emulators.tasks.address))
        ),
        settings,
    )
    apply_schedules(
        scheduler_v1.CloudSchedulerClient(
            transport=CloudSchedulerGrpcTransport(channel=grpc.insecure_channel(emulators.scheduler.address))
        ),
        settings,
    )
    apply_buckets(
        storage.Client(
            project=config.project_id,
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": emulators.storage.url},
        ),
        settings,
    )


def apply_production() -> None:
    settings = get_settings()
    apply_queues(tasks_v2.CloudTasksClient(), settings)
    apply_schedules(scheduler_v1.CloudSchedulerClient(), settings)
    apply_buckets(storage.Client(project=settings.project_id), settings)


def main() -> int:
    parser = argparse.ArgumentParser(description="Apply the platform's resource declarations.")
    parser.add_argument("command", choices=["apply", "show"])
    args = parser.parse_args()
    settings = get_settings()
    if args.command == "show":
        declared = {
            "queues": [spec.__dict__ for spec in queues(settings)],
            "schedules": [spec.__dict__ for spec in schedules(settings)],
            "buckets": buckets(settings),
        }
        sys.stdout.write(json.dumps(declared, indent=2) + "\n")
        return 0
    if settings.is_local:
        apply_local()
    else:
        apply_production()
    sys.stdout.write("resources applied\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
