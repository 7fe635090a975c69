"""The resource declarations land on the emulators through the same code that applies them to Google Cloud."""

from __future__ import annotations

import grpc
from google.auth.credentials import AnonymousCredentials
from google.cloud import scheduler_v1, storage, tasks_v2
from google.cloud.scheduler_v1.services.cloud_scheduler.transports import CloudSchedulerGrpcTransport
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport

from infra import resources
from shared.emulator_config import EmulatorConfig
from shared.settings import get_settings


def test_declared_queues_schedules_and_buckets_exist_and_apply_is_idempotent(
    local_cloud: EmulatorConfig,
) -> None:
    settings = get_settings()
    resources.apply_local(local_cloud)  # a second apply: updates in place, no error

    tasks = tasks_v2.CloudTasksClient(
        transport=CloudTasksGrpcTransport(channel=grpc.insecure_channel(local_cloud.emulators.tasks.address))
    )
    parent = f"projects/{settings.project_id}/locations/{settings.region}"
    for spec in resources.queues(settings):
        queue = tasks.get_queue(name=f"{parent}/queues/{spec.name}")
        assert queue.retry_config.max_attempts == spec.max_attempts
        assert queue.rate_limits.max_concurrent_dispatches == spec.max_concurrent_dispatches

    scheduler = scheduler_v1.CloudSchedulerClient(
        transport=CloudSchedulerGrpcTransport(
            channel=grpc.insecure_channel(local_cloud.emulators.scheduler.address)
        )
    )
    for spec in resources.schedules(settings):
        job = scheduler.get_job(name=f"{parent}/jobs/{spec.name}")
        assert job.schedule == spec.schedule
        assert job.http_target.uri == settings.function_url(spec.function_name) + spec.path
        assert job.http_target.oidc_token.audience == settings.function_url(spec.function_name)
        assert job.time_zone == spec.time_zone
        assert job.http_target.oidc_token.service_account_email == settings.scheduler_service_account

    client = storage.Client(
        project=settings.project_id,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": local_cloud.emulators.storage.url},
    )
    for name in resources.buckets(settings):
        assert client.lookup_bucket(name) is not None
