"""Conformance of the Cloud Scheduler emulator, driven only through CloudSchedulerClient and real HTTP
handlers on loopback.

The module starts its own emulator on a free port (so it always tests the code in this tree, even while a
local cloud runs) and needs the local OIDC issuer's certificates, which it starts when nothing serves them.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import google.auth.transport.requests
import pytest
from google.api_core import exceptions as gexc
from google.cloud import scheduler_v1
from google.oauth2 import id_token
from google.protobuf import field_mask_pb2

from infra.emulators.scheduler.client import scheduler_client
from shared.emulator_config import REPO_ROOT
from tests.conftest import wait_for
from tests.integration.http_recorder import Arrival, Recorder, Reply
from tests.integration.processes import free_port

SERVICE_ACCOUNT = "scheduler-invoker@demo-batch-platform.iam.gserviceaccount.com"
UNREACHABLE = "http://127.0.0.1:9/unused"


@dataclass(frozen=True)
class Emulator:
    address: str
    log_path: Path

    def deliveries(self, job_name: str) -> list[dict[str, Any]]:
        """The emulator's JSON log lines about deliveries of `job_name`."""
        records = []
        for line in self.log_path.read_text(encoding="utf-8").splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("message") == "delivery" and record.get("job") == job_name:
                    records.append(record)
        return records


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    port = free_port()
    log_path = tmp_path_factory.mktemp("scheduler") / "emulator.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "infra.emulators.scheduler", "--port", str(port)],
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    try:
        probe = scheduler_client(f"127.0.0.1:{port}")

        def _ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"the scheduler emulator exited: {log_path.read_text(encoding='utf-8')}")
            return _answers(probe)

        wait_for(_ready, timeout=20, what="the scheduler emulator to answer")
        probe.transport.close()
        yield Emulator(address=f"127.0.0.1:{port}", log_path=log_path)
    finally:
        process.terminate()
        process.wait(10)


def _answers(client: scheduler_v1.CloudSchedulerClient) -> bool:
    try:
        client.list_jobs(parent="projects/probe/locations/probe")
    except gexc.ServiceUnavailable:
        return False
    return True


@pytest.fixture(scope="module")
def client(emulator: Emulator) -> Iterator[scheduler_v1.CloudSchedulerClient]:
    scheduler = scheduler_client(emulator.address)
    yield scheduler
    scheduler.transport.close()


@pytest.fixture
def jobs(client: scheduler_v1.CloudSchedulerClient) -> Iterator[list[str]]:
    """Names of jobs to delete after the test (registered before they are created)."""
    created: list[str] = []
    yield created
    for name in created:
        try:
            client.delete_job(name=name)
        except gexc.NotFound:
            pass


def http_job(
    name: str,
    url: str,
    *,
    schedule: str = "0 3 * * *",
    time_zone: str = "Europe/Berlin",
    **fields: Any,
) -> scheduler_v1.Job:
    return scheduler_v1.Job(
        name=name,
        schedule=schedule,
        time_zone=time_zone,
        http_target=scheduler_v1.HttpTarget(
            uri=url,
            http_method=scheduler_v1.HttpMethod.POST,
            body=b'{"kind": "daily"}',
            headers={"Content-Type": "application/json"},
            oidc_token=scheduler_v1.OidcToken(service_account_email=SERVICE_ACCOUNT),
        ),
        **fields,
    )


def failing_retries(*, retry_count: int, backoff_s: float, **fields: Any) -> scheduler_v1.RetryConfig:
    return scheduler_v1.RetryConfig(
        retry_count=retry_count,
        min_backoff_duration=dt.timedelta(seconds=backoff_s),
        max_backoff_duration=dt.timedelta(seconds=fields.pop("max_backoff_s", backoff_s)),
        **fields,
    )


def start_marker(
    client: scheduler_v1.CloudSchedulerClient,
    recorder: Recorder,
    *,
    name: str,
    path: str,
    after_s: float,
) -> None:
    """Run a job whose retry arrives `after_s` after its first attempt, timed by the emulator's own clock.

    When that retry has arrived, any attempt the emulator meant to start less than `after_s` from now has
    arrived too: a bound on "nothing more comes" without sleeping in the test.
    """
    recorder.plan(path, [Reply(status=500)])
    retry = failing_retries(retry_count=1, backoff_s=after_s)
    client.create_job(
        parent=name.rsplit("/jobs/", 1)[0], job=http_job(name, recorder.url + path, retry_config=retry)
    )
    client.run_job(name=name)


def attempted(client: scheduler_v1.CloudSchedulerClient, name: str) -> scheduler_v1.Job | None:
    """The job once an attempt has been recorded on it."""
    job = client.get_job(name=name)
    return job if "status" in job else None


def header(arrival: Arrival, name: str) -> str | None:
    return {key.lower(): value for key, value in arrival.headers.items()}.get(name.lower())


def test_create_get_list_update_delete(
    client: scheduler_v1.CloudSchedulerClient, parent: str, unique: str, jobs: list[str]
) -> None:
    name, other = f"{parent}/jobs/crud-{unique}", f"{parent}/jobs/crud-other-{unique}"
    jobs.extend([name, other])
    before = dt.datetime.now(dt.UTC)
    # Output-only fields sent by a client are ignored.
    sent = http_job(name, UNREACHABLE, state=scheduler_v1.Job.State.PAUSED)
    created = client.create_job(parent=parent, job=sent)
    assert created.state == scheduler_v1.Job.State.ENABLED
    assert created.user_update_time >= before
    assert created.attempt_deadline == dt.timedelta(seconds=180)
    assert created.retry_config.retry_count == 0
    assert created.retry_config.min_backoff_duration == dt.timedelta(seconds=5)
    assert created.retry_config.max_backoff_duration == dt.timedelta(hours=1)
    assert created.retry_config.max_doublings == 5
    assert "last_attempt_time" not in created and "status" not in created
    with pytest.raises(gexc.AlreadyExists):
        client.create_job(parent=parent, job=http_job(name, UNREACHABLE))
    client.create_job(parent=parent, job=http_job(other, UNREACHABLE))

    assert client.get_job(name=name).http_target.uri == UNREACHABLE
    pages = client.list_jobs(request=scheduler_v1.ListJobsRequest(parent=parent, page_size=1))
    assert {name, other} <= {job.name for job in pages}

    changed = client.update_job(
        job=scheduler_v1.Job(
            name=name,
            schedule="*/5 * * * *",
            retry_config=scheduler_v1.RetryConfig(retry_count=3),
        ),
        update_mask=field_mask_pb2.FieldMask(paths=["schedule", "retry_config.retry_count"]),
    )
    assert changed.schedule == "*/5 * * * *"
    assert changed.schedule_time.minute % 5 == 0 and changed.schedule_time > dt.datetime.now(dt.UTC)
    assert changed.retry_config.retry_count == 3
    assert changed.retry_config.min_backoff_duration == dt.timedelta(seconds=5), "outside the mask: kept"
    assert changed.http_target.uri == UNREACHABLE and changed.time_zone == "Europe/Berlin"
    assert changed.user_update_time > created.user_update_time
    with pytest.raises(gexc.InvalidArgument):
        client.update_job(
            job=scheduler_v1.Job(name=name), update_mask=field_mask_pb2.FieldMask(paths=["state"])
        )

    client.delete_job(name=name)
    missing = f"{parent}/jobs/missing-{unique}"
    for call in (
        lambda: client.get_job(name=name),
        lambda: client.delete_job(name=name),
        lambda: client.pause_job(name=missing),
        lambda: client.resume_job(name=missing),
        lambda: client.run_job(name=missing),
        lambda: client.update_job(
            job=http_job(missing, UNREACHABLE), update_mask=field_mask_pb2.FieldMask(paths=["schedule"])
        ),
    ):
        with pytest.raises(gexc.NotFound):
            call()
    assert name not in {job.name for job in client.list_jobs(parent=parent)}


def test_schedule_time_is_the_next_scheduled_time_in_the_jobs_time_zone(
    client: scheduler_v1.CloudSchedulerClient, parent: str, unique: str, jobs: list[str]
) -> None:
    berlin, kolkata, utc = (f"{parent}/jobs/{zone}-{unique}" for zone in ("berlin", "kolkata", "utc"))
    jobs.extend([berlin, kolkata, utc])
    now = dt.datetime.now(dt.UTC)

    at_three = client.create_job(parent=parent, job=http_job(berlin, UNREACHABLE, schedule="0 3 * * *"))
    hourly = client.create_job(
        parent=parent,
        job=http_job(kolkata, UNREACHABLE, schedule="0 * * * *", time_zone="Asia/Kolkata"),
    )
    default_zone = client.create_job(
        parent=parent, job=http_job(utc, UNREACHABLE, schedule="15 * * * *", time_zone="")
    )

    local = at_three.schedule_time.astimezone(zoneinfo.ZoneInfo("Europe/Berlin"))
    assert (local.hour, local.minute) == (3, 0)
    assert now < at_three.schedule_time <= now + dt.timedelta(days=1)
    # Asia/Kolkata is UTC+05:30: its full hours are half past in UTC.
    assert hourly.schedule_time.minute == 30 and hourly.schedule_time <= now + dt.timedelta(hours=1)
    assert default_zone.time_zone == "Etc/UTC" and default_zone.schedule_time.minute == 15


@pytest.mark.parametrize(
    "schedule,time_zone",
    [
        ("not a schedule", "Etc/UTC"),
        ("61 * * * *", "Etc/UTC"),
        ("* * * * * *", "Etc/UTC"),
        ("0 0 L * *", "Etc/UTC"),
        ("@hourly", "Etc/UTC"),
        ("0 3 * * *", "Mars/Olympus"),
        ("0 3 * * *", "localtime"),
    ],
)
def test_invalid_schedule_or_time_zone_is_invalid_argument(
    client: scheduler_v1.CloudSchedulerClient,
    parent: str,
    unique: str,
    jobs: list[str],
    schedule: str,
    time_zone: str,
) -> None:
    name = f"{parent}/jobs/bad-{unique}"
    jobs.append(name)
    with pytest.raises(gexc.InvalidArgument):
        client.create_job(
            parent=parent, job=http_job(name, UNREACHABLE, schedule=schedule, time_zone=time_zone)
        )

    client.create_job(parent=parent, job=http_job(name, UNREACHABLE))
    with pytest.raises(gexc.InvalidArgument):
        client.update_job(
            job=scheduler_v1.Job(name=name, schedule=schedule, time_zone=time_zone),
            update_mask=field_mask_pb2.FieldMask(paths=["schedule", "time_zone"]),
        )
    assert client.get_job(name=name).schedule == "0 3 * * *", "a refused update changes nothing"


def test_other_invalid_jobs_are_invalid_argument(
    client: scheduler_v1.CloudSchedulerClient, parent: str, unique: str, jobs: list[str]
) -> None:
    name = f"{parent}/jobs/invalid-{unique}"
    jobs.append(name)
    get_with_body = http_job(name, UNREACHABLE)
    get_with_body.http_target.http_method = scheduler_v1.HttpMethod(scheduler_v1.HttpMethod.GET)
    for job in (
        http_job(name, UNREACHABLE, retry_config=scheduler_v1.RetryConfig(retry_count=6)),
        http_job(name, UNREACHABLE, attempt_deadline=dt.timedelta(seconds=5)),
        http_job(name, UNREACHABLE, attempt_deadline=dt.timedelta(minutes=31)),
        http_job(name, "ftp://127.0.0.1/x"),
        http_job(f"{parent}/jobs/bad.name-{unique}", UNREACHABLE),
        scheduler_v1.Job(name=name, schedule="0 3 * * *"),
        get_with_body,
    ):
        with pytest.raises(gexc.InvalidArgument):
            client.create_job(parent=parent, job=job)
    with pytest.raises(gexc.NotFound):
        client.get_job(name=name)


def test_run_now_delivers_with_the_headers_and_a_verifiable_oidc_token(
    oidc_certs_url: str,
    client: scheduler_v1.CloudSchedulerClient,
    parent: str,
    unique: str,
    jobs: list[str],
    recorder: Recorder,
) -> None:
    name = f"{parent}/jobs/run-{unique}"
    jobs.append(name)
    url = recorder.url + "/metrics/daily"
    job = http_job(name, url)
    job.http_target.headers.update({"X-Custom": "yes", "User-Agent": "mine", "X-CloudScheduler": "no"})
    client.create_job(parent=parent, job=job)
    before = dt.datetime.now(dt.UTC)

    client.run_job(name=name)

    arrival = wait_for(lambda: recorder.at("/metrics/daily"), timeout=10, what="the forced run")[0]
    assert arrival.method == "POST" and arrival.body == b'{"kind": "daily"}'
    assert header(arrival, "Content-Type") == "application/json"
    assert header(arrival, "X-Custom") == "yes"
    assert header(arrival, "X-CloudScheduler") == "true"
    assert header(arrival, "X-CloudScheduler-JobName") == f"run-{unique}"
    assert header(arrival, "User-Agent") == "Google-Cloud-Scheduler"
    schedule_time = header(arrival, "X-CloudScheduler-ScheduleTime")
    assert schedule_time is not None and schedule_time.endswith("Z")
    assert dt.datetime.fromisoformat(schedule_time) >= before - dt.timedelta(seconds=1)
    authorization = header(arrival, "Authorization")
    assert authorization is not None and authorization.startswith("Bearer ")
    claims = id_token.verify_token(
        authorization.removeprefix("Bearer "),
        google.auth.transport.requests.Request(),
        audience=url,  # no audience on the job: Google uses the target's URI
        certs_url=oidc_certs_url,
    )
    assert claims["email"] == SERVICE_ACCOUNT and claims["email_verified"] is True

    recorded = wait_for(lambda: attempted(client, name), timeout=10, what="the attempt to be recorded")
    assert recorded.status.code == 0
    assert before <= recorded.last_attempt_time <= dt.datetime.fromtimestamp(arrival.started, dt.UTC)


def test_oidc_audience_method_and_default_content_type(
    oidc_certs_url: str,
    client: scheduler_v1.CloudSchedulerClient,
    parent: str,
    unique: str,
    jobs: list[str],
    recorder: Recorder,
) -> None:
    name = f"{parent}/jobs/put-{unique}"
    jobs.append(name)
    job = http_job(name, recorder.url + "/put")
    job.http_target.http_method = scheduler_v1.HttpMethod(scheduler_v1.HttpMethod.PUT)
    job.http_target.headers.clear()
    job.http_target.oidc_token.audience = "https://batch.example.com"
    client.create_job(parent=parent, job=job)

    client.run_job(name=name)

    arrival = wait_for(lambda: recorder.at("/put"), timeout=10, what="the forced run")[0]
    assert arrival.method == "PUT"
    assert header(arrival, "Content-Type") == "application/octet-stream"
    authorization = header(arrival, "Authorization") or ""
    claims = id_token.verify_token(
        authorization.removeprefix("Bearer "),
        google.auth.transport.requests.Request(),
        audience="https://batch.example.com",
        certs_url=oidc_certs_url,
    )
    assert claims["aud"] == "https://batch.example.com"


def test_pause_and_resume(
    client: scheduler_v1.CloudSchedulerClient, parent: str, unique: str, jobs: list[str], recorder: Recorder
) -> None:
    name = f"{parent}/jobs/pause-{unique}"
    jobs.append(name)
    created = client.create_job(
        parent=parent, job=http_job(name, recorder.url + "/paused", schedule="*/5 * * * *")
    )

    paused = client.pause_job(name=name)
    assert paused.state == scheduler_v1.Job.State.PAUSED
    assert paused.user_update_time > created.user_update_time
    with pytest.raises(gexc.FailedPrecondition):
        client.pause_job(name=name)
    # A paused job can still be run by hand, as in Google Cloud.
    client.run_job(name=name)
    wait_for(lambda: recorder.at("/paused"), timeout=10, what="the forced run of a paused job")
    assert client.get_job(name=name).state == scheduler_v1.Job.State.PAUSED

    resumed = client.resume_job(name=name)
    assert resumed.state == scheduler_v1.Job.State.ENABLED
    assert resumed.user_update_time > paused.user_update_time
    now = dt.datetime.now(dt.UTC)
    assert now < resumed.schedule_time <= now + dt.timedelta(minutes=5)
    assert resumed.schedule_time.minute % 5 == 0 and resumed.schedule_time.second == 0
    with pytest.raises(gexc.FailedPrecondition):
        client.resume_job(name=name)


def test_failed_attempts_are_retried_retry_count_times_with_backoff(
    emulator: Emulator,
    client: scheduler_v1.CloudSchedulerClient,
    parent: str,
    unique: str,
    jobs: list[str],
    recorder: Recorder,
) -> None:
    name, marker = f"{parent}/jobs/retry-{unique}", f"{parent}/jobs/retry-marker-{unique}"
    jobs.extend([name, marker])
    recorder.plan("/flaky", [Reply(status=500)] * 10)
    # 0.2 s, doubled to 0.4 s; a fourth attempt, were there one, would come 0.8 s after the third.
    retry = failing_retries(retry_count=2, backoff_s=0.2, max_backoff_s=1.0, max_doublings=2)
    client.create_job(parent=parent, job=http_job(name, recorder.url + "/flaky", retry_config=retry))

    client.run_job(name=name)

    wait_for(lambda: recorder.at("/flaky"), timeout=10, what="the first attempt")
    start_marker(client, recorder, name=marker, path="/marker", after_s=2.0)
    wait_for(lambda: len(recorder.at("/marker")) == 2, timeout=15, what="the marker's retry")
    arrivals = recorder.at("/flaky")
    assert len(arrivals) == 3, "one attempt and retry_count retries"
    assert 0.18 <= arrivals[1].started - arrivals[0].finished < 1.0
    assert 0.38 <= arrivals[2].started - arrivals[1].finished < 1.2
    assert len({header(a, "X-CloudScheduler-ScheduleTime") for a in arrivals}) == 1, "one execution"
    job = client.get_job(name=name)
    assert job.status.code == 13  # INTERNAL, for an HTTP 500
    last_start = dt.datetime.fromtimestamp(arrivals[2].started, dt.UTC)
    assert last_start - dt.timedelta(seconds=1) <= job.last_attempt_time <= last_start
    logged = emulator.deliveries(name)
    assert [(r["attempt"], r["status"], r["target"]) for r in logged] == [
        (n, 500, recorder.url + "/flaky") for n in (1, 2, 3)
    ]
    assert all(r["severity"] == "WARNING" and isinstance(r["latency_ms"], int) for r in logged)


def test_max_retry_duration_keeps_retrying_after_retry_count_until_it_passes(
    client: scheduler_v1.CloudSchedulerClient, parent: str, unique: str, jobs: list[str], recorder: Recorder
) -> None:
    name, marker = f"{parent}/jobs/duration-{unique}", f"{parent}/jobs/duration-marker-{unique}"
    jobs.extend([name, marker])
    recorder.plan("/failing", [Reply(status=503)] * 20)
    retry = failing_retries(retry_count=1, backoff_s=0.25, max_retry_duration=dt.timedelta(seconds=1))
    client.create_job(parent=parent, job=http_job(name, recorder.url + "/failing", retry_config=retry))

    client.run_job(name=name)

    wait_for(lambda: recorder.at("/failing"), timeout=10, what="the first attempt")
    start_marker(client, recorder, name=marker, path="/duration-marker", after_s=2.0)
    wait_for(lambda: len(recorder.at("/duration-marker")) == 2, timeout=15, what="the marker's retry")
    arrivals = recorder.at("/failing")
    # Both limits must be reached: more than 1 + retry_count attempts, none starting after the duration.
    assert 3 <= len(arrivals) <= 5
    assert arrivals[-1].started - arrivals[0].started <= 1.0 + 0.1
    assert client.get_job(name=name).status.code == 14  # UNAVAILABLE, for an HTTP 503


@pytest.mark.slow
def test_attempt_deadline_fails_a_slow_attempt_without_stopping_the_handler(
    client: scheduler_v1.CloudSchedulerClient, parent: str, unique: str, jobs: list[str], recorder: Recorder
) -> None:
    name = f"{parent}/jobs/deadline-{unique}"
    jobs.append(name)
    # 15 s is the smallest deadline Google accepts for HTTP targets.
    recorder.plan("/slow", [Reply(delay_s=17)])
    client.create_job(
        parent=parent, job=http_job(name, recorder.url + "/slow", attempt_deadline=dt.timedelta(seconds=15))
    )

    client.run_job(name=name)

    job = wait_for(lambda: attempted(client, name), timeout=30, interval=0.2, what="the deadline to pass")
    assert job.status.code == 4  # DEADLINE_EXCEEDED
    assert recorder.at("/slow") == [] and recorder.in_flight == 1, "the handler is still running"
    arrival = wait_for(lambda: recorder.at("/slow"), timeout=10, what="the handler, not stopped, to finish")[
        0
    ]
    assert arrival.finished - arrival.started >= 17
    assert dt.datetime.now(dt.UTC) - job.last_attempt_time >= dt.timedelta(seconds=16)


@pytest.mark.slow
def test_a_cron_job_fires_on_schedule_once_per_scheduled_minute_and_a_paused_one_does_not(
    client: scheduler_v1.CloudSchedulerClient, parent: str, unique: str, jobs: list[str], recorder: Recorder
) -> None:
    name, paused = f"{parent}/jobs/cron-{unique}", f"{parent}/jobs/cron-paused-{unique}"
    jobs.extend([name, paused])
    job = client.create_job(
        parent=parent,
        job=http_job(name, recorder.url + "/tick", schedule="* * * * *", time_zone="America/New_York"),
    )
    client.create_job(parent=parent, job=http_job(paused, recorder.url + "/held", schedule="* * * * *"))
    client.pause_job(name=paused)
    first_due = job.schedule_time
    assert first_due.second == 0 and first_due.microsecond == 0

    arrival = wait_for(lambda: recorder.at("/tick"), timeout=75, interval=0.2, what="the next minute")[0]

    assert dt.datetime.fromisoformat(header(arrival, "X-CloudScheduler-ScheduleTime") or "") == first_due
    assert first_due.timestamp() <= arrival.started < first_due.timestamp() + 5, "on schedule"
    assert client.get_job(name=name).schedule_time == first_due + dt.timedelta(minutes=1)
    # A forced run is the marker: once it has arrived, a second firing for the same minute would have too.
    client.run_job(name=name)
    wait_for(lambda: len(recorder.at("/tick")) >= 2, timeout=10, what="the forced run")
    minute = header(arrival, "X-CloudScheduler-ScheduleTime")
    fired = [a for a in recorder.at("/tick") if header(a, "X-CloudScheduler-ScheduleTime") == minute]
    assert len(fired) == 1
    assert recorder.at("/held") == [], "a paused job does not fire"
    recorded = client.get_job(name=name)
    assert recorded.status.code == 0 and recorded.last_attempt_time >= first_due
