"""Conformance of the Cloud Tasks emulator, driven only through tasks_v2.CloudTasksClient and real HTTP
handlers on loopback. Backoffs are shrunk through each queue's retry_config, not the emulator's defaults."""

from __future__ import annotations

import datetime as dt
import socket
import subprocess
import sys
from collections.abc import Iterator

import google.auth.transport.requests
import pytest
from google.api_core import exceptions as gexc
from google.cloud import tasks_v2
from google.oauth2 import id_token
from google.protobuf import duration_pb2, field_mask_pb2

from infra.emulators.tasks.client import tasks_client
from shared.emulator_config import REPO_ROOT, EmulatorConfig
from tests.conftest import wait_for
from tests.integration.http_recorder import Recorder, Reply

SERVICE_ACCOUNT = "tasks-invoker@demo-batch-platform.iam.gserviceaccount.com"


@pytest.fixture(scope="module")
def client(local_cloud: EmulatorConfig) -> tasks_v2.CloudTasksClient:
    return tasks_client(local_cloud.emulators.tasks.address)


def make_queue(
    client: tasks_v2.CloudTasksClient,
    parent: str,
    name: str,
    *,
    max_attempts: int = 5,
    min_backoff_s: float = 0.1,
    max_backoff_s: float = 1.0,
    max_doublings: int = 16,
    concurrent: int = 1000,
    rate: float = 500.0,
) -> str:
    queue = client.create_queue(
        parent=parent,
        queue=tasks_v2.Queue(
            name=f"{parent}/queues/{name}",
            rate_limits=tasks_v2.RateLimits(
                max_dispatches_per_second=rate, max_concurrent_dispatches=concurrent
            ),
            retry_config=tasks_v2.RetryConfig(
                max_attempts=max_attempts,
                min_backoff=dt.timedelta(seconds=min_backoff_s),
                max_backoff=dt.timedelta(seconds=max_backoff_s),
                max_doublings=max_doublings,
            ),
        ),
    )
    return str(queue.name)


@pytest.fixture
def queue(client: tasks_v2.CloudTasksClient, parent: str, unique: str) -> Iterator[str]:
    name = make_queue(client, parent, f"q-{unique}")
    yield name
    try:
        client.delete_queue(name=name)
    except gexc.NotFound:
        pass


def http_task(url: str, *, name: str | None = None, body: bytes = b"", **fields: object) -> tasks_v2.Task:
    return tasks_v2.Task(
        name=name or "",
        http_request=tasks_v2.HttpRequest(url=url, http_method=tasks_v2.HttpMethod.POST, body=body),
        **fields,
    )


def gone(client: tasks_v2.CloudTasksClient, name: str) -> bool:
    try:
        client.get_task(name=name)
    except gexc.NotFound:
        return True
    return False


def test_named_task_is_rejected_while_it_exists_after_it_ran_and_after_deletion(
    client: tasks_v2.CloudTasksClient, queue: str, recorder: Recorder
) -> None:
    ran = client.create_task(parent=queue, task=http_task(recorder.url + "/ran", name=f"{queue}/tasks/ran"))
    with pytest.raises(gexc.AlreadyExists):
        client.create_task(parent=queue, task=http_task(recorder.url + "/ran", name=ran.name))
    wait_for(lambda: recorder.at("/ran") and gone(client, ran.name), timeout=10, what="the task to run")
    with pytest.raises(gexc.AlreadyExists):
        client.create_task(parent=queue, task=http_task(recorder.url + "/ran", name=ran.name))

    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    deleted = client.create_task(
        parent=queue, task=http_task(recorder.url + "/x", name=f"{queue}/tasks/deleted", schedule_time=later)
    )
    client.delete_task(name=deleted.name)
    with pytest.raises(gexc.AlreadyExists):
        client.create_task(parent=queue, task=http_task(recorder.url + "/x", name=deleted.name))
    assert len(recorder.at("/ran")) == 1


def test_a_task_name_is_free_again_after_the_dedupe_window(local_cloud: EmulatorConfig, parent: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    emulator = subprocess.Popen(
        [sys.executable, "-m", "infra.emulators.tasks", "--port", str(port), "--dedupe-window-seconds", "1"],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        short = tasks_client(f"127.0.0.1:{port}")
        wait_for(lambda: _answers(short, parent), timeout=20, what="the second emulator")
        queue = make_queue(short, parent, "window")
        later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
        task = http_task("http://127.0.0.1:9/unused", name=f"{queue}/tasks/reused", schedule_time=later)
        client_task = short.create_task(parent=queue, task=task)
        short.delete_task(name=client_task.name)
        with pytest.raises(gexc.AlreadyExists):
            short.create_task(parent=queue, task=task)

        def _created_again() -> bool:
            try:
                short.create_task(parent=queue, task=task)
            except gexc.AlreadyExists:
                return False
            return True

        assert wait_for(_created_again, timeout=10, interval=0.1, what="the name to be released")
    finally:
        emulator.terminate()
        emulator.wait(10)


def _answers(client: tasks_v2.CloudTasksClient, parent: str) -> bool:
    try:
        client.list_queues(parent=parent)
    except gexc.ServiceUnavailable:
        return False
    return True


def test_dispatches_in_parallel_up_to_max_concurrent_dispatches(
    client: tasks_v2.CloudTasksClient, parent: str, unique: str, recorder: Recorder
) -> None:
    queue = make_queue(client, parent, f"par-{unique}", concurrent=10)
    recorder.plan("/slow", [Reply(delay_s=0.5)] * 20)
    for _ in range(20):
        client.create_task(parent=queue, task=http_task(recorder.url + "/slow"))

    arrivals = wait_for(lambda: len(recorder.at("/slow")) == 20 and recorder.at("/slow"), timeout=30)

    assert recorder.max_in_flight == 10
    # Two waves of ten: the second starts only when the first has finished.
    starts = sorted(a.started for a in arrivals)
    first_wave_end = min(a.finished for a in arrivals)
    assert all(start < first_wave_end for start in starts[:10])
    assert all(start >= first_wave_end - 0.05 for start in starts[10:])
    client.delete_queue(name=queue)


def test_dispatch_is_paced_by_max_dispatches_per_second(
    client: tasks_v2.CloudTasksClient, parent: str, unique: str, recorder: Recorder
) -> None:
    queue = make_queue(client, parent, f"rate-{unique}", rate=5)
    for _ in range(10):
        client.create_task(parent=queue, task=http_task(recorder.url + "/paced"))

    arrivals = wait_for(lambda: len(recorder.at("/paced")) == 10 and recorder.at("/paced"), timeout=30)

    burst = client.get_queue(name=queue).rate_limits.max_burst_size
    starts = [a.started for a in arrivals]
    # After the burst, tokens refill at 5 per second: no two dispatches closer than 1/5 s (minus jitter).
    gaps = [b - a for a, b in zip(starts[burst:], starts[burst + 1 :], strict=False)]
    assert gaps and min(gaps) >= 0.15
    assert starts[-1] - starts[0] >= (10 - burst) / 5 - 0.1
    client.delete_queue(name=queue)


def test_failed_attempts_back_off_exponentially_and_stop_at_max_attempts(
    client: tasks_v2.CloudTasksClient, parent: str, unique: str, recorder: Recorder
) -> None:
    queue = make_queue(
        client,
        parent,
        f"retry-{unique}",
        max_attempts=4,
        min_backoff_s=0.2,
        max_backoff_s=0.5,
        max_doublings=1,
    )
    recorder.plan("/fail", [Reply(status=500)] * 10)
    task = client.create_task(parent=queue, task=http_task(recorder.url + "/fail"))

    wait_for(lambda: gone(client, task.name), timeout=20, what="the task to be dropped after 4 attempts")

    arrivals = recorder.at("/fail")
    assert len(arrivals) == 4
    assert [a.headers["X-CloudTasks-TaskRetryCount"] for a in arrivals] == ["0", "1", "2", "3"]
    gaps = [b.started - a.finished for a, b in zip(arrivals, arrivals[1:], strict=False)]
    # 0.2 s, then doubled once (0.4 s), then linear steps of 0.4 s capped at max_backoff 0.5 s.
    assert gaps[0] >= 0.18 and gaps[1] >= 0.38 and gaps[2] >= 0.45
    assert gaps[2] < 2.0, "max_backoff caps the interval"
    with pytest.raises(gexc.AlreadyExists):
        client.create_task(parent=queue, task=http_task(recorder.url + "/fail", name=task.name))
    client.delete_queue(name=queue)


def test_retry_after_on_503_is_honoured(
    client: tasks_v2.CloudTasksClient, queue: str, recorder: Recorder
) -> None:
    recorder.plan("/busy", [Reply(status=503, headers={"Retry-After": "2"})])
    client.create_task(parent=queue, task=http_task(recorder.url + "/busy"))

    arrivals = wait_for(lambda: len(recorder.at("/busy")) == 2 and recorder.at("/busy"), timeout=15)

    assert arrivals[1].started - arrivals[0].finished >= 1.9


@pytest.mark.slow
def test_a_handler_slower_than_the_dispatch_deadline_counts_as_a_failed_attempt(
    client: tasks_v2.CloudTasksClient, queue: str, recorder: Recorder
) -> None:
    recorder.plan("/late", [Reply(delay_s=16.5)])
    client.create_task(
        parent=queue,
        task=http_task(recorder.url + "/late", dispatch_deadline=duration_pb2.Duration(seconds=15)),
    )

    arrivals = wait_for(lambda: len(recorder.at("/late")) == 2 and recorder.at("/late"), timeout=60)

    first, retry = arrivals
    # The attempt failed at the deadline and was retried while the first handler still ran: not stopped.
    assert retry.started - first.started >= 15
    assert retry.started < first.finished
    assert retry.headers["X-CloudTasks-TaskRetryCount"] == "1"


def test_schedule_time_is_respected(
    client: tasks_v2.CloudTasksClient, queue: str, recorder: Recorder
) -> None:
    eta = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1.5)
    client.create_task(parent=queue, task=http_task(recorder.url + "/later", schedule_time=eta))

    arrival = wait_for(lambda: recorder.at("/later"), timeout=15)[0]

    assert arrival.started >= eta.timestamp() - 0.01
    assert float(arrival.headers["X-CloudTasks-TaskETA"]) == pytest.approx(eta.timestamp(), abs=0.001)


def test_delivery_headers_and_a_verifiable_oidc_token(
    local_cloud: EmulatorConfig, client: tasks_v2.CloudTasksClient, queue: str, recorder: Recorder
) -> None:
    url = recorder.url + "/secure"
    task = tasks_v2.Task(
        name=f"{queue}/tasks/with-token",
        http_request=tasks_v2.HttpRequest(
            url=url,
            http_method=tasks_v2.HttpMethod.PUT,
            headers={"Content-Type": "application/json", "X-Custom": "yes"},
            body=b'{"a": 1}',
            oidc_token=tasks_v2.OidcToken(service_account_email=SERVICE_ACCOUNT),
        ),
    )
    client.create_task(parent=queue, task=task)

    arrival = wait_for(lambda: recorder.at("/secure"), timeout=10)[0]

    headers = arrival.headers
    assert arrival.method == "PUT" and arrival.body == b'{"a": 1}'
    assert headers["X-Custom"] == "yes" and headers["Content-Type"] == "application/json"
    assert headers["X-CloudTasks-QueueName"] == queue.rsplit("/", 1)[-1]
    assert headers["X-CloudTasks-TaskName"] == "with-token"
    assert headers["X-CloudTasks-TaskRetryCount"] == "0"
    assert headers["X-CloudTasks-TaskExecutionCount"] == "0"
    assert headers["User-Agent"].startswith("Google-Cloud-Tasks")
    token = headers["Authorization"].removeprefix("Bearer ")
    claims = id_token.verify_token(
        token, google.auth.transport.requests.Request(), audience=url, certs_url=local_cloud.oidc_certs_url
    )
    assert claims["email"] == SERVICE_ACCOUNT and claims["email_verified"] is True


def test_a_recreated_queue_delivers(
    client: tasks_v2.CloudTasksClient, parent: str, unique: str, recorder: Recorder
) -> None:
    name = make_queue(client, parent, f"again-{unique}")
    client.delete_queue(name=name)
    with pytest.raises(gexc.NotFound):
        client.get_queue(name=name)
    make_queue(client, parent, f"again-{unique}")
    client.create_task(parent=name, task=http_task(recorder.url + "/again"))

    wait_for(lambda: recorder.at("/again"), timeout=10, what="delivery on the re-created queue")
    client.delete_queue(name=name)


def test_pause_resume_and_purge(
    client: tasks_v2.CloudTasksClient, queue: str, parent: str, unique: str, recorder: Recorder
) -> None:
    other = make_queue(client, parent, f"marker-{unique}")
    paused = client.pause_queue(name=queue)
    assert paused.state == tasks_v2.Queue.State.PAUSED
    client.create_task(parent=queue, task=http_task(recorder.url + "/held"))
    # A task on another queue, created after, is delivered: the emulator dispatched while ours stayed held.
    client.create_task(parent=other, task=http_task(recorder.url + "/marker"))
    wait_for(lambda: recorder.at("/marker"), timeout=10)
    assert recorder.at("/held") == []

    assert client.resume_queue(name=queue).state == tasks_v2.Queue.State.RUNNING
    wait_for(lambda: recorder.at("/held"), timeout=10, what="delivery after resume")

    client.pause_queue(name=queue)
    for _ in range(3):
        client.create_task(parent=queue, task=http_task(recorder.url + "/purged"))
    client.purge_queue(name=queue)
    assert list(client.list_tasks(parent=queue)) == []
    client.resume_queue(name=queue)
    client.create_task(parent=queue, task=http_task(recorder.url + "/after-purge"))
    wait_for(lambda: recorder.at("/after-purge"), timeout=10)
    assert recorder.at("/purged") == []
    client.delete_queue(name=other)


def test_get_list_run_and_delete_tasks(
    client: tasks_v2.CloudTasksClient, queue: str, recorder: Recorder
) -> None:
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    task = client.create_task(
        parent=queue,
        task=http_task(recorder.url + "/run", name=f"{queue}/tasks/run-me", body=b"x", schedule_time=later),
    )
    other = client.create_task(parent=queue, task=http_task(recorder.url + "/never", schedule_time=later))

    assert client.get_task(name=task.name).http_request.body == b""  # BASIC view
    full = client.get_task(request={"name": task.name, "response_view": tasks_v2.Task.View.FULL})
    assert full.http_request.body == b"x"
    assert {t.name for t in client.list_tasks(parent=queue)} == {task.name, other.name}

    client.run_task(name=task.name)
    wait_for(lambda: recorder.at("/run"), timeout=10, what="the forced run")
    client.delete_task(name=other.name)
    with pytest.raises(gexc.NotFound):
        client.get_task(name=other.name)
    wait_for(lambda: gone(client, task.name), timeout=10)


def test_update_queue_changes_retry_config(client: tasks_v2.CloudTasksClient, queue: str) -> None:
    update = tasks_v2.Queue(name=queue, retry_config=tasks_v2.RetryConfig(max_attempts=7))
    client.update_queue(
        queue=update, update_mask=field_mask_pb2.FieldMask(paths=["retry_config.max_attempts"])
    )
    current = client.get_queue(name=queue)
    assert current.retry_config.max_attempts == 7
    assert current.retry_config.min_backoff == dt.timedelta(seconds=0.1), "other fields keep their values"
    assert queue in {q.name for q in client.list_queues(parent=queue.rsplit("/queues/", 1)[0])}


def test_invalid_requests_are_rejected(client: tasks_v2.CloudTasksClient, parent: str, queue: str) -> None:
    with pytest.raises(gexc.InvalidArgument):
        client.create_queue(parent=parent, queue=tasks_v2.Queue(name=f"{parent}/queues/bad_name!"))
    with pytest.raises(gexc.AlreadyExists):
        client.create_queue(parent=parent, queue=tasks_v2.Queue(name=queue))
    with pytest.raises(gexc.NotFound):
        client.get_queue(name=f"{parent}/queues/missing-queue")
    with pytest.raises(gexc.InvalidArgument):
        client.create_task(
            parent=queue,
            task=http_task("http://127.0.0.1:9/x", dispatch_deadline=duration_pb2.Duration(seconds=5)),
        )
