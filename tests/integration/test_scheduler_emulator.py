"""Conformance of the Cloud Scheduler emulator, driven only through CloudSchedulerClient and real HTTP
handlers on loopback."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import google.auth.transport.requests
import pytest
from google.api_core import exceptions as gexc
from google.cloud import scheduler_v1
from google.oauth2 import id_token
from google.protobuf import field_mask_pb2

from infra.emulators.scheduler.client import scheduler_client
from shared.emulator_config import EmulatorConfig
from tests.conftest import wait_for
from tests.integration.http_recorder import Recorder, Reply

SERVICE_ACCOUNT = "scheduler-invoker@demo-batch-platform.iam.gserviceaccount.com"


@pytest.fixture(scope="module")
def client(local_cloud: EmulatorConfig) -> scheduler_v1.CloudSchedulerClient:
    return scheduler_client(local_cloud.emulators.scheduler.address)


@pytest.fixture
def jobs(client: scheduler_v1.CloudSchedulerClient) -> Iterator[list[str]]:
    """Names of jobs to delete after the test."""
    created: list[str] = []
    yield created
    for name in created:
        try:
            client.delete_job(name=name)
        except gexc.NotFound:
            pass


def http_job(name: str, url: str, *, schedule: str = "0 3 * * *", **fields: object) -> scheduler_v1.Job:
    return scheduler_v1.Job(
        name=name,
        schedule=schedule,
        time_zone=str(fields.pop("time_zone", "Europe/Berlin")),
        http_target=scheduler_v1.HttpTarget(
            uri=url,
            http_method=scheduler_v1.HttpMethod.POST,
            body=b'{"kind": "daily"}',
            headers={"Content-Type": "application/json"},
            oidc_token=scheduler_v1.OidcToken(service_account_email=SERVICE_ACCOUNT),
        ),
        **fields,
    )


def attempted(client: scheduler_v1.CloudSchedulerClient, name: str) -> scheduler_v1.Job | None:
    """The job once an attempt has been recorded on it."""
    job = client.get_job(name=name)
    return job if "last_attempt_time" in job else None


def test_create_get_list_update_delete(
    client: scheduler_v1.CloudSchedulerClient, parent: str, unique: str, jobs: list[str]
) -> None:
    name = f"{parent}/jobs/crud-{unique}"
    jobs.append(name)
    created = client.create_job(parent=parent, job=http_job(name, "http://127.0.0.1:9/x"))
    assert created.state == scheduler_v1.Job.State.ENABLED
    next_run = created.schedule_time
    assert next_run > dt.datetime.now(dt.UTC)
    assert next_run.astimezone(dt.timezone(dt.timedelta(hours=0))).minute == 0
    with pytest.raises(gexc.AlreadyExists):
        client.create_job(parent=parent, job=http_job(name, "http://127.0.0.1:9/x"))

    assert client.get_job(name=name).http_target.uri == "http://127.0.0.1:9/x"
    assert name in {job.name for job in client.list_jobs(parent=parent)}

    changed = client.update_job(
        job=scheduler_v1.Job(name=name, schedule="*/5 * * * *"),
        update_mask=field_mask_pb2.FieldMask(paths=["schedule"]),
    )
    assert changed.schedule == "*/5 * * * *"
    assert changed.http_target.uri == "http://127.0.0.1:9/x", "fields outside the mask keep their values"
    assert changed.schedule_time.minute % 5 == 0

    client.delete_job(name=name)
    with pytest.raises(gexc.NotFound):
        client.get_job(name=name)


@pytest.mark.parametrize(
    "schedule,time_zone", [("every day", "Etc/UTC"), ("61 * * * *", "Etc/UTC"), ("0 3 * * *", "Mars/Olympus")]
)
def test_invalid_schedule_or_time_zone_is_invalid_argument(
    client: scheduler_v1.CloudSchedulerClient, parent: str, unique: str, schedule: str, time_zone: str
) -> None:
    with pytest.raises(gexc.InvalidArgument):
        client.create_job(
            parent=parent,
            job=http_job(
                f"{parent}/jobs/bad-{unique}", "http://127.0.0.1:9/x", schedule=schedule, time_zone=time_zone
            ),
        )


def test_run_now_delivers_with_headers_and_a_verifiable_oidc_token(
    local_cloud: EmulatorConfig,
    client: scheduler_v1.CloudSchedulerClient,
    parent: str,
    unique: str,
    jobs: list[str],
    recorder: Recorder,
) -> None:
    name = f"{parent}/jobs/run-{unique}"
    jobs.append(name)
    url = recorder.url + "/metrics/daily"
    client.create_job(parent=parent, job=http_job(name, url))

    client.run_job(name=name)

    arrival = wait_for(lambda: recorder.at("/metrics/daily"), timeout=10)[0]
    assert arrival.body == b'{"kind": "daily"}'
    assert arrival.headers["X-CloudScheduler"] == "true"
    assert arrival.headers["X-CloudScheduler-JobName"] == f"run-{unique}"
    assert arrival.headers["User-Agent"].startswith("Google-Cloud-Scheduler")
    dt.datetime.fromisoformat(arrival.headers["X-CloudScheduler-ScheduleTime"])
    claims = id_token.verify_token(
        arrival.headers["Authorization"].removeprefix("Bearer "),
        google.auth.transport.requests.Request(),
        audience=url,
        certs_url=local_cloud.oidc_certs_url,
    )
    assert claims["email"] == SERVICE_ACCOUNT and claims["email_verified"] is True
    job = wait_for(lambda: attempted(client, name), timeout=10, what="the attempt to be recorded")
    assert job.status.code == 0


def test_pause_and_resume(
    client: scheduler_v1.CloudSchedulerClient, parent: str, unique: str, jobs: list[str], recorder: Recorder
) -> None:
    name = f"{parent}/jobs/pause-{unique}"
    jobs.append(name)
    client.create_job(parent=parent, job=http_job(name, recorder.url + "/paused"))

    paused = client.pause_job(name=name)
    assert paused.state == scheduler_v1.Job.State.PAUSED
    # A paused job can still be run by hand, as in Google Cloud.
    client.run_job(name=name)
    wait_for(lambda: recorder.at("/paused"), timeout=10)
    resumed = client.resume_job(name=name)
    assert resumed.state == scheduler_v1.Job.State.ENABLED
    assert resumed.schedule_time > dt.datetime.now(dt.UTC)


def test_failed_attempts_are_retried_retry_count_times_and_recorded(
    client: scheduler_v1.CloudSchedulerClient, parent: str, unique: str, jobs: list[str], recorder: Recorder
) -> None:
    name = f"{parent}/jobs/retry-{unique}"
    jobs.append(name)
    recorder.plan("/flaky", [Reply(status=500)] * 10)
    retry = scheduler_v1.RetryConfig(
        retry_count=2,
        min_backoff_duration=dt.timedelta(seconds=0.2),
        max_backoff_duration=dt.timedelta(seconds=1),
        max_doublings=2,
    )
    client.create_job(parent=parent, job=http_job(name, recorder.url + "/flaky", retry_config=retry))

    client.run_job(name=name)

    def _recorded() -> scheduler_v1.Job | None:
        job = client.get_job(name=name)
        return job if len(recorder.at("/flaky")) == 3 and job.status.code != 0 else None

    job = wait_for(_recorded, timeout=15, what="three attempts")
    arrivals = recorder.at("/flaky")
    assert arrivals[1].started - arrivals[0].finished >= 0.18
    assert arrivals[2].started - arrivals[1].finished >= 0.38
    assert job.status.code == 13  # INTERNAL, for an HTTP 500
    assert job.last_attempt_time >= dt.datetime.fromtimestamp(arrivals[2].started, dt.UTC) - dt.timedelta(
        seconds=1
    )


@pytest.mark.slow
def test_attempt_deadline_fails_a_slow_attempt(
    client: scheduler_v1.CloudSchedulerClient, parent: str, unique: str, jobs: list[str], recorder: Recorder
) -> None:
    name = f"{parent}/jobs/deadline-{unique}"
    jobs.append(name)
    recorder.plan("/slow", [Reply(delay_s=16)])
    client.create_job(
        parent=parent, job=http_job(name, recorder.url + "/slow", attempt_deadline=dt.timedelta(seconds=15))
    )

    client.run_job(name=name)

    job = wait_for(lambda: attempted(client, name), timeout=40, interval=0.2, what="the deadline to pass")
    assert job.status.code == 4  # DEADLINE_EXCEEDED
    wait_for(lambda: recorder.at("/slow"), timeout=20, what="the handler, not stopped, to finish")


@pytest.mark.slow
def test_a_cron_job_fires_on_schedule_once_per_scheduled_minute(
    client: scheduler_v1.CloudSchedulerClient, parent: str, unique: str, jobs: list[str], recorder: Recorder
) -> None:
    name = f"{parent}/jobs/cron-{unique}"
    jobs.append(name)
    job = client.create_job(parent=parent, job=http_job(name, recorder.url + "/tick", schedule="* * * * *"))
    first_due = job.schedule_time

    arrival = wait_for(lambda: recorder.at("/tick"), timeout=75, interval=0.2, what="the next minute")[0]

    scheduled = dt.datetime.fromisoformat(arrival.headers["X-CloudScheduler-ScheduleTime"])
    assert scheduled == first_due
    assert scheduled.second == 0 and arrival.started >= scheduled.timestamp()
    assert len(recorder.at("/tick")) == 1
    assert client.get_job(name=name).schedule_time == first_due + dt.timedelta(minutes=1)
