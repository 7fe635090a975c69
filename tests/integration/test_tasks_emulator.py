"""Conformance of the Cloud Tasks emulator, driven only through tasks_v2.CloudTasksClient and real HTTP
handlers on loopback.

The module starts its own emulators on free ports, so it always tests the code in this tree even while a
local cloud runs: one with Google's settings, and a "fast" one with a 1 s dedupe window and a 0.5 s minimum
dispatch deadline (Google's is 15 s) for the tests of those two clocks. Backoffs are shrunk through each
queue's retry_config, never through the emulator. OIDC tokens are checked against the local issuer, started
here when no local cloud serves it.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import google.auth.transport.requests
import pytest
from google.api_core import exceptions as gexc
from google.cloud import tasks_v2
from google.oauth2 import id_token
from google.protobuf import duration_pb2, field_mask_pb2

from infra.emulators.tasks.client import tasks_client
from shared.emulator_config import REPO_ROOT
from tests.conftest import wait_for
from tests.integration.http_recorder import Arrival, Recorder, Reply
from tests.integration.processes import free_port

SERVICE_ACCOUNT = "tasks-invoker@demo-batch-platform.iam.gserviceaccount.com"
UNREACHABLE = "http://127.0.0.1:9/unused"
FAST_DEDUPE_WINDOW_S = 1.0
FAST_MIN_DEADLINE_S = 0.5


@dataclass(frozen=True)
class Emulator:
    client: tasks_v2.CloudTasksClient
    log_path: Path

    def deliveries(self, task_id: str, *, message: str = "delivery") -> list[dict[str, Any]]:
        """The emulator's JSON log lines about deliveries of `task_id` (those whose message starts so)."""
        records = []
        for line in self.log_path.read_text(encoding="utf-8").splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("task") == task_id and str(record.get("message")).startswith(message):
                    records.append(record)
        return records


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _start_emulator(log_path: Path, *flags: str) -> tuple[subprocess.Popen[bytes], Emulator]:
    port = free_port()
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "infra.emulators.tasks", "--port", str(port), *flags],
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    try:
        wait_for(lambda: _accepts(port), timeout=20, what="the tasks emulator to listen")
    except AssertionError:
        process.terminate()
        process.wait(10)
        raise
    return process, Emulator(client=tasks_client(f"127.0.0.1:{port}"), log_path=log_path)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    process, running = _start_emulator(tmp_path_factory.mktemp("tasks") / "emulator.log")
    try:
        yield running
    finally:
        running.client.transport.close()
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="module")
def fast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    process, running = _start_emulator(
        tmp_path_factory.mktemp("tasks-fast") / "emulator.log",
        "--dedupe-window-seconds",
        str(FAST_DEDUPE_WINDOW_S),
        "--min-dispatch-deadline-seconds",
        str(FAST_MIN_DEADLINE_S),
    )
    try:
        yield running
    finally:
        running.client.transport.close()
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="module")
def client(emulator: Emulator) -> tasks_v2.CloudTasksClient:
    return emulator.client


def make_queue(
    client: tasks_v2.CloudTasksClient,
    parent: str,
    name: str,
    *,
    max_attempts: int = 5,
    min_backoff_s: float = 0.1,
    max_backoff_s: float = 1.0,
    max_doublings: int = 16,
    max_retry_duration_s: float = 0.0,
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
                max_retry_duration=dt.timedelta(seconds=max_retry_duration_s),
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


def in_an_hour() -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)


def gone(client: tasks_v2.CloudTasksClient, name: str) -> bool:
    try:
        client.get_task(name=name)
    except gexc.NotFound:
        return True
    return False


def arrived(recorder: Recorder, path: str, count: int) -> list[Arrival] | None:
    """The arrivals at `path` once there are `count` of them (for wait_for)."""
    arrivals = recorder.at(path)
    return arrivals if len(arrivals) >= count else None


# --- names and the dedupe window ------------------------------------------------------------------------


def test_named_task_is_rejected_while_it_exists_after_it_ran_and_after_deletion(
    client: tasks_v2.CloudTasksClient, queue: str, recorder: Recorder
) -> None:
    ran = client.create_task(parent=queue, task=http_task(recorder.url + "/ran", name=f"{queue}/tasks/ran"))
    with pytest.raises(gexc.AlreadyExists):
        client.create_task(parent=queue, task=http_task(recorder.url + "/ran", name=ran.name))
    wait_for(lambda: recorder.at("/ran") and gone(client, ran.name), timeout=10, what="the task to run")
    with pytest.raises(gexc.AlreadyExists):
        client.create_task(parent=queue, task=http_task(recorder.url + "/ran", name=ran.name))

    deleted = client.create_task(
        parent=queue, task=http_task(UNREACHABLE, name=f"{queue}/tasks/deleted", schedule_time=in_an_hour())
    )
    client.delete_task(name=deleted.name)
    with pytest.raises(gexc.AlreadyExists):
        client.create_task(parent=queue, task=http_task(UNREACHABLE, name=deleted.name))
    assert len(recorder.at("/ran")) == 1


def test_a_task_name_is_free_again_after_the_dedupe_window(fast: Emulator, parent: str, unique: str) -> None:
    queue = make_queue(fast.client, parent, f"window-{unique}")
    task = http_task(UNREACHABLE, name=f"{queue}/tasks/reused", schedule_time=in_an_hour())
    fast.client.delete_task(name=fast.client.create_task(parent=queue, task=task).name)
    released_at = time.monotonic() + FAST_DEDUPE_WINDOW_S
    with pytest.raises(gexc.AlreadyExists):
        fast.client.create_task(parent=queue, task=task)

    def created_again() -> bool:
        try:
            fast.client.create_task(parent=queue, task=task)
        except gexc.AlreadyExists:
            return False
        return True

    wait_for(created_again, timeout=10, interval=0.1, what="the name to be released")
    assert time.monotonic() >= released_at - 0.05
    fast.client.delete_queue(name=queue)


def test_unnamed_tasks_get_generated_ids(client: tasks_v2.CloudTasksClient, queue: str) -> None:
    first = client.create_task(parent=queue, task=http_task(UNREACHABLE, schedule_time=in_an_hour()))
    second = client.create_task(parent=queue, task=http_task(UNREACHABLE, schedule_time=in_an_hour()))

    ids = [str(task.name).removeprefix(f"{queue}/tasks/") for task in (first, second)]
    assert ids[0] != ids[1] and all(task_id.isdigit() for task_id in ids)


# --- dispatch: parallelism, pacing, schedule ------------------------------------------------------------


def test_dispatches_in_parallel_up_to_max_concurrent_dispatches(
    client: tasks_v2.CloudTasksClient, parent: str, unique: str, recorder: Recorder
) -> None:
    queue = make_queue(client, parent, f"par-{unique}", concurrent=10)
    recorder.plan("/slow", [Reply(delay_s=0.5)] * 20)
    client.pause_queue(name=queue)  # all twenty are waiting when dispatch starts
    for _ in range(20):
        client.create_task(parent=queue, task=http_task(recorder.url + "/slow"))
    client.resume_queue(name=queue)

    arrivals = wait_for(lambda: arrived(recorder, "/slow", 20), timeout=30)

    assert recorder.max_in_flight == 10
    # Two waves of ten: ten at once, and the second starts only as the first finishes.
    starts = sorted(a.started for a in arrivals)
    first_wave_end = min(a.finished for a in arrivals)
    assert all(start < first_wave_end for start in starts[:10])
    assert all(start >= first_wave_end - 0.05 for start in starts[10:])
    client.delete_queue(name=queue)


def test_dispatch_is_paced_by_max_dispatches_per_second(
    client: tasks_v2.CloudTasksClient, parent: str, unique: str, recorder: Recorder
) -> None:
    queue = make_queue(client, parent, f"rate-{unique}", rate=5)
    client.pause_queue(name=queue)  # all ten are waiting when dispatch starts
    for _ in range(10):
        client.create_task(parent=queue, task=http_task(recorder.url + "/paced"))
    client.resume_queue(name=queue)

    arrivals = wait_for(lambda: arrived(recorder, "/paced", 10), timeout=30)

    burst = client.get_queue(name=queue).rate_limits.max_burst_size
    assert burst == 5
    starts = [a.started for a in arrivals]
    assert starts[burst - 1] - starts[0] < 0.15, "the burst goes out at once"
    # Then tokens refill at 5 per second: no two dispatches closer than 1/5 s (minus jitter).
    gaps = [b - a for a, b in zip(starts[burst - 1 :], starts[burst:], strict=False)]
    assert min(gaps) >= 0.15
    assert starts[-1] - starts[0] >= (10 - burst) / 5 - 0.1
    client.delete_queue(name=queue)


def test_schedule_time_is_respected(
    client: tasks_v2.CloudTasksClient, queue: str, recorder: Recorder
) -> None:
    eta = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    client.create_task(parent=queue, task=http_task(recorder.url + "/later", schedule_time=eta))

    arrival = wait_for(lambda: recorder.at("/later"), timeout=15)[0]

    assert arrival.started >= eta.timestamp() - 0.01
    assert float(arrival.headers["X-CloudTasks-TaskETA"]) == pytest.approx(eta.timestamp(), abs=0.001)


# --- retries -------------------------------------------------------------------------------------------


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
    assert gaps[0] < 0.35 and gaps[2] < 1.0, "backoff follows the config, not more"
    with pytest.raises(gexc.AlreadyExists):
        client.create_task(parent=queue, task=http_task(recorder.url + "/fail", name=task.name))
    client.delete_queue(name=queue)


def test_max_retry_duration_keeps_retrying_past_max_attempts_until_it_passes(
    client: tasks_v2.CloudTasksClient, parent: str, unique: str, recorder: Recorder
) -> None:
    queue = make_queue(
        client,
        parent,
        f"dur-{unique}",
        max_attempts=2,
        min_backoff_s=0.15,
        max_backoff_s=0.15,
        max_retry_duration_s=1.0,
    )
    recorder.plan("/flaky", [Reply(status=500)] * 50)
    task = client.create_task(parent=queue, task=http_task(recorder.url + "/flaky"))

    wait_for(lambda: gone(client, task.name), timeout=20, what="the task to be given up")

    arrivals = recorder.at("/flaky")
    # Both limits must be reached: 2 attempts made and 1 s passed since the first attempt.
    assert len(arrivals) > 2
    assert arrivals[-2].finished - arrivals[0].started < 1.0
    assert arrivals[-1].finished - arrivals[0].started >= 0.95
    client.delete_queue(name=queue)


def test_retry_after_on_503_is_honoured(
    client: tasks_v2.CloudTasksClient, queue: str, recorder: Recorder
) -> None:
    recorder.plan("/busy", [Reply(status=503, headers={"Retry-After": "1"})])
    client.create_task(parent=queue, task=http_task(recorder.url + "/busy"))

    arrivals = wait_for(lambda: arrived(recorder, "/busy", 2), timeout=15)

    # min_backoff is 0.1 s: only Retry-After explains a 1 s wait.
    assert arrivals[1].started - arrivals[0].finished >= 0.95


def test_retry_and_execution_counts_and_previous_response(
    client: tasks_v2.CloudTasksClient, queue: str, recorder: Recorder
) -> None:
    recorder.plan("/counted", [Reply(status=404), Reply(status=500), Reply(status=200)])
    task = client.create_task(parent=queue, task=http_task(recorder.url + "/counted"))

    arrivals = wait_for(lambda: arrived(recorder, "/counted", 3), timeout=15)
    wait_for(lambda: gone(client, task.name), timeout=10)

    headers = [a.headers for a in arrivals]
    assert [h["X-CloudTasks-TaskRetryCount"] for h in headers] == ["0", "1", "2"]
    # Google's execution count is the handler's responses other than 5xx.
    assert [h["X-CloudTasks-TaskExecutionCount"] for h in headers] == ["0", "1", "1"]
    assert [h.get("X-CloudTasks-TaskPreviousResponse") for h in headers] == [None, "404", "500"]


def test_every_attempt_comes_on_its_own_connection(
    client: tasks_v2.CloudTasksClient, queue: str, recorder: Recorder
) -> None:
    # Google's front end picks an instance for every request: a kept-alive connection must not tie the
    # deliveries to one process of the local functions gateway. One task after another, so one could.
    for count in range(1, 4):
        client.create_task(parent=queue, task=http_task(recorder.url + "/fresh"))
        wait_for(lambda: arrived(recorder, "/fresh", count), timeout=10)  # noqa: B023 - called at once

    assert len({arrival.client_port for arrival in recorder.at("/fresh")}) == 3


def test_task_fields_after_a_failed_attempt(
    client: tasks_v2.CloudTasksClient, parent: str, unique: str, recorder: Recorder
) -> None:
    queue = make_queue(client, parent, f"fields-{unique}", min_backoff_s=30, max_backoff_s=60)
    recorder.plan("/broken", [Reply(status=500)])
    created = client.create_task(parent=queue, task=http_task(recorder.url + "/broken"))

    def attempted() -> tasks_v2.Task | None:
        task = client.get_task(name=created.name)
        return task if task.response_count == 1 else None

    task = wait_for(attempted, timeout=10, what="the first attempt to be recorded")

    failed_at = recorder.at("/broken")[0].finished
    assert task.dispatch_count == 1
    assert task.create_time.timestamp() == int(task.create_time.timestamp())  # truncated to the second
    assert task.first_attempt.dispatch_time.timestamp() <= failed_at
    assert "response_time" not in task.first_attempt, "Google keeps only dispatch_time of the first"
    assert task.last_attempt.response_status.code == 13  # INTERNAL, for HTTP 500
    assert task.last_attempt.response_time.timestamp() >= task.last_attempt.dispatch_time.timestamp()
    # Rescheduled min_backoff after the failure.
    assert task.schedule_time.timestamp() == pytest.approx(failed_at + 30, abs=1)
    client.delete_queue(name=queue)


# --- dispatch deadline (fast emulator) ------------------------------------------------------------------


def test_a_handler_slower_than_the_dispatch_deadline_counts_as_a_failed_attempt(
    fast: Emulator, parent: str, unique: str, recorder: Recorder
) -> None:
    queue = make_queue(fast.client, parent, f"late-{unique}", min_backoff_s=0.1)
    recorder.plan("/late", [Reply(delay_s=1.6)])
    fast.client.create_task(
        parent=queue,
        task=http_task(recorder.url + "/late", dispatch_deadline=duration_pb2.Duration(seconds=1)),
    )

    first, retry = wait_for(lambda: arrived(recorder, "/late", 2), timeout=15)

    # The attempt failed at the deadline and was retried while the first handler still ran: not stopped.
    # Measured between the handler's starts, each of which lags its dispatch by up to ~0.2 s on a loaded
    # machine: a retry 1 s deadline + 0.1 s backoff after the first dispatch starts at least 0.8 s after it.
    assert retry.started - first.started >= 0.8
    assert retry.started < first.finished
    assert retry.headers["X-CloudTasks-TaskRetryCount"] == "1"
    assert retry.headers["X-CloudTasks-TaskExecutionCount"] == "0"
    fast.client.delete_queue(name=queue)


def test_a_late_response_is_ignored_and_the_attempt_recorded_as_deadline_exceeded(
    fast: Emulator, parent: str, unique: str, recorder: Recorder
) -> None:
    queue = make_queue(fast.client, parent, f"ignored-{unique}", min_backoff_s=30, max_backoff_s=60)
    recorder.plan("/ignored", [Reply(delay_s=1.0)])
    created = fast.client.create_task(
        parent=queue,
        task=http_task(recorder.url + "/ignored", dispatch_deadline=duration_pb2.Duration(nanos=500_000_000)),
    )

    task_id = created.name.rsplit("/", 1)[-1]
    # The emulator kept the request open and saw the handler's answer come after the deadline.
    (late,) = wait_for(lambda: fast.deliveries(task_id, message="late response"), timeout=10)
    task = fast.client.get_task(name=created.name)

    assert late["status"] == 200 and late["latency_ms"] >= 900
    assert task.dispatch_count == 1 and task.response_count == 0, "the late response is ignored"
    assert task.last_attempt.response_status.code == 4  # DEADLINE_EXCEEDED
    (delivery,) = fast.deliveries(task_id)
    assert delivery["status"] == "DEADLINE_EXCEEDED" and delivery["severity"] == "WARNING"
    fast.client.delete_queue(name=queue)


def test_each_delivery_is_logged_as_a_json_line(
    fast: Emulator, parent: str, unique: str, recorder: Recorder
) -> None:
    queue = make_queue(fast.client, parent, f"log-{unique}")
    recorder.plan("/logged", [Reply(status=500)])
    task = fast.client.create_task(
        parent=queue, task=http_task(recorder.url + "/logged", name=f"{queue}/tasks/logged-{unique}")
    )

    wait_for(lambda: gone(fast.client, task.name), timeout=10)
    records = wait_for(
        lambda: len(fast.deliveries(f"logged-{unique}")) == 2 and fast.deliveries(f"logged-{unique}"),
        timeout=5,
    )

    assert [(r["status"], r["attempt"], r["severity"]) for r in records] == [
        (500, 1, "WARNING"),
        (200, 2, "INFO"),
    ]
    for record in records:
        assert record["queue"] == f"log-{unique}" and record["url"] == recorder.url + "/logged"
        assert isinstance(record["latency_ms"], int) and record["latency_ms"] >= 0
        assert abs(record["ended_at"] - time.time()) < 60
    assert records[0]["ended_at"] <= records[1]["ended_at"] - records[1]["latency_ms"] / 1000
    fast.client.delete_queue(name=queue)


# --- headers and OIDC ------------------------------------------------------------------------------------


def test_delivery_headers_and_a_verifiable_oidc_token(
    oidc_certs_url: str, client: tasks_v2.CloudTasksClient, queue: str, recorder: Recorder
) -> None:
    url = recorder.url + "/secure"
    task = tasks_v2.Task(
        name=f"{queue}/tasks/with-token",
        http_request=tasks_v2.HttpRequest(
            url=url,
            http_method=tasks_v2.HttpMethod.PUT,
            headers={"Content-Type": "application/json", "X-Custom": "yes", "User-Agent": "mine"},
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
    assert float(headers["X-CloudTasks-TaskETA"]) <= arrival.started
    assert headers["User-Agent"] == "Google-Cloud-Tasks"
    token = headers["Authorization"].removeprefix("Bearer ")
    claims = id_token.verify_token(
        token, google.auth.transport.requests.Request(), audience=url, certs_url=oidc_certs_url
    )
    assert claims["email"] == SERVICE_ACCOUNT and claims["email_verified"] is True


def test_oidc_token_with_an_explicit_audience(
    oidc_certs_url: str, client: tasks_v2.CloudTasksClient, queue: str, recorder: Recorder
) -> None:
    audience = "https://worker.example.com"
    request = tasks_v2.HttpRequest(
        url=recorder.url + "/audience",
        oidc_token=tasks_v2.OidcToken(service_account_email=SERVICE_ACCOUNT, audience=audience),
    )
    client.create_task(parent=queue, task=tasks_v2.Task(http_request=request))

    arrival = wait_for(lambda: recorder.at("/audience"), timeout=10)[0]

    assert arrival.method == "POST", "POST is the default method"
    token = arrival.headers["Authorization"].removeprefix("Bearer ")
    claims = id_token.verify_token(
        token, google.auth.transport.requests.Request(), audience=audience, certs_url=oidc_certs_url
    )
    assert claims["aud"] == audience


# --- queues ---------------------------------------------------------------------------------------------


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


def test_a_deleted_queue_delivers_nothing_more(
    client: tasks_v2.CloudTasksClient, parent: str, unique: str, recorder: Recorder
) -> None:
    doomed = make_queue(client, parent, f"doomed-{unique}")
    marker = make_queue(client, parent, f"marker-{unique}")
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=0.3)
    client.create_task(parent=doomed, task=http_task(recorder.url + "/doomed", schedule_time=soon))
    client.delete_queue(name=doomed)
    # A task due after the deleted one, on another queue: once it arrives, the deleted one would have too.
    later = soon + dt.timedelta(seconds=0.3)
    client.create_task(parent=marker, task=http_task(recorder.url + "/marker", schedule_time=later))

    wait_for(lambda: recorder.at("/marker"), timeout=10)

    assert recorder.at("/doomed") == []
    with pytest.raises(gexc.NotFound):
        client.list_tasks(parent=doomed)
    make_queue(client, parent, f"doomed-{unique}")
    assert list(client.list_tasks(parent=doomed)) == [], "a re-created queue starts empty"
    client.delete_queue(name=doomed)
    client.delete_queue(name=marker)


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
    assert client.get_queue(name=queue).state == tasks_v2.Queue.State.PAUSED

    assert client.resume_queue(name=queue).state == tasks_v2.Queue.State.RUNNING
    wait_for(lambda: recorder.at("/held"), timeout=10, what="delivery after resume")

    client.pause_queue(name=queue)
    for _ in range(3):
        client.create_task(parent=queue, task=http_task(recorder.url + "/purged"))
    purged = client.purge_queue(name=queue)
    assert purged.purge_time.timestamp() == pytest.approx(time.time(), abs=5)
    assert list(client.list_tasks(parent=queue)) == []
    client.resume_queue(name=queue)
    client.create_task(parent=queue, task=http_task(recorder.url + "/after-purge"))
    wait_for(lambda: recorder.at("/after-purge"), timeout=10)
    assert recorder.at("/purged") == []
    client.delete_queue(name=other)


def test_queue_defaults_are_googles(client: tasks_v2.CloudTasksClient, parent: str, unique: str) -> None:
    queue = client.create_queue(
        parent=parent, queue=tasks_v2.Queue(name=f"{parent}/queues/defaults-{unique}")
    )

    assert queue.state == tasks_v2.Queue.State.RUNNING
    limits, retry = queue.rate_limits, queue.retry_config
    assert (limits.max_dispatches_per_second, limits.max_concurrent_dispatches) == (500, 1000)
    assert limits.max_burst_size == 100
    assert (retry.max_attempts, retry.max_doublings) == (100, 16)
    assert retry.min_backoff == dt.timedelta(seconds=0.1) and retry.max_backoff == dt.timedelta(hours=1)
    client.delete_queue(name=queue.name)


def test_update_queue_with_masks(
    client: tasks_v2.CloudTasksClient, queue: str, parent: str, unique: str
) -> None:
    client.update_queue(
        queue=tasks_v2.Queue(name=queue, retry_config=tasks_v2.RetryConfig(max_attempts=7)),
        update_mask=field_mask_pb2.FieldMask(paths=["retry_config.max_attempts"]),
    )
    current = client.get_queue(name=queue)
    assert current.retry_config.max_attempts == 7
    assert current.retry_config.min_backoff == dt.timedelta(seconds=0.1), "other fields keep their values"

    updated = client.update_queue(
        queue=tasks_v2.Queue(name=queue, rate_limits=tasks_v2.RateLimits(max_dispatches_per_second=2)),
        update_mask=field_mask_pb2.FieldMask(paths=["rate_limits"]),
    )
    assert updated.rate_limits.max_dispatches_per_second == 2
    assert updated.rate_limits.max_burst_size == 2
    assert updated.rate_limits.max_concurrent_dispatches == 1000, (
        "an unset field of a replaced message: default"
    )
    assert updated.retry_config.max_attempts == 7

    with pytest.raises(gexc.InvalidArgument):
        client.update_queue(
            queue=tasks_v2.Queue(name=queue), update_mask=field_mask_pb2.FieldMask(paths=["state"])
        )
    created = client.update_queue(queue=tasks_v2.Queue(name=f"{parent}/queues/upserted-{unique}"))
    assert created.state == tasks_v2.Queue.State.RUNNING, "UpdateQueue creates a missing queue"
    names = {q.name for q in client.list_queues(parent=parent)}
    assert {queue, created.name} <= names
    client.delete_queue(name=created.name)


# --- tasks ----------------------------------------------------------------------------------------------


def test_get_list_run_and_delete_tasks(
    client: tasks_v2.CloudTasksClient, queue: str, recorder: Recorder
) -> None:
    task = client.create_task(
        parent=queue,
        task=http_task(
            recorder.url + "/run", name=f"{queue}/tasks/run-me", body=b"x", schedule_time=in_an_hour()
        ),
    )
    other = client.create_task(
        parent=queue, task=http_task(recorder.url + "/never", schedule_time=in_an_hour())
    )

    assert task.view == tasks_v2.Task.View.BASIC and task.http_request.body == b""
    assert client.get_task(name=task.name).http_request.body == b""  # BASIC view
    full = client.get_task(request={"name": task.name, "response_view": tasks_v2.Task.View.FULL})
    assert full.http_request.body == b"x" and full.view == tasks_v2.Task.View.FULL
    assert {t.name for t in client.list_tasks(parent=queue)} == {task.name, other.name}
    listed = client.list_tasks(request={"parent": queue, "response_view": tasks_v2.Task.View.FULL})
    assert {t.http_request.body for t in listed} == {b"x", b""}

    client.pause_queue(name=queue)
    client.run_task(name=task.name)  # runs now, even on a paused queue
    wait_for(lambda: recorder.at("/run"), timeout=10, what="the forced run")
    wait_for(lambda: gone(client, task.name), timeout=10)
    with pytest.raises(gexc.NotFound):
        client.run_task(name=task.name)
    client.delete_task(name=other.name)
    with pytest.raises(gexc.NotFound):
        client.get_task(name=other.name)
    with pytest.raises(gexc.NotFound):
        client.delete_task(name=other.name)
    assert recorder.at("/never") == []


def test_list_tasks_pages_through_every_task(client: tasks_v2.CloudTasksClient, queue: str) -> None:
    names = {
        client.create_task(parent=queue, task=http_task(UNREACHABLE, schedule_time=in_an_hour())).name
        for _ in range(5)
    }

    pager = client.list_tasks(request={"parent": queue, "page_size": 2})

    assert {t.name for t in pager} == names
    first_page = client.list_tasks(request={"parent": queue, "page_size": 2}).pages
    assert len(next(iter(first_page)).tasks) == 2


def test_invalid_requests_are_rejected(client: tasks_v2.CloudTasksClient, parent: str, queue: str) -> None:
    with pytest.raises(gexc.InvalidArgument):
        client.create_queue(parent=parent, queue=tasks_v2.Queue(name=f"{parent}/queues/bad_name!"))
    with pytest.raises(gexc.InvalidArgument):
        client.create_queue(
            parent=parent,
            queue=tasks_v2.Queue(
                name=f"{parent}/queues/too-fast",
                rate_limits=tasks_v2.RateLimits(max_dispatches_per_second=501),
            ),
        )
    with pytest.raises(gexc.AlreadyExists):
        client.create_queue(parent=parent, queue=tasks_v2.Queue(name=queue))
    with pytest.raises(gexc.NotFound):
        client.get_queue(name=f"{parent}/queues/missing-queue")
    with pytest.raises(gexc.NotFound):
        client.create_task(parent=f"{parent}/queues/missing-queue", task=http_task(UNREACHABLE))

    invalid_tasks = [
        http_task(UNREACHABLE, dispatch_deadline=duration_pb2.Duration(seconds=5)),  # below 15 s
        http_task(UNREACHABLE, dispatch_deadline=duration_pb2.Duration(seconds=1801)),  # above 30 min
        http_task("ftp://127.0.0.1/x"),
        http_task(UNREACHABLE, name=f"{queue}/tasks/bad.id"),
        http_task(UNREACHABLE, name=f"{parent}/queues/elsewhere/tasks/x"),
        http_task(UNREACHABLE, schedule_time=dt.datetime.now(dt.UTC) + dt.timedelta(days=31)),
        http_task(UNREACHABLE, body=b"x" * (1024 * 1024 + 1)),
        tasks_v2.Task(
            http_request=tasks_v2.HttpRequest(url=UNREACHABLE, http_method=tasks_v2.HttpMethod.GET, body=b"x")
        ),
        tasks_v2.Task(app_engine_http_request=tasks_v2.AppEngineHttpRequest(relative_uri="/x")),
    ]
    for task in invalid_tasks:
        with pytest.raises(gexc.InvalidArgument):
            client.create_task(parent=queue, task=task)
    assert list(client.list_tasks(parent=queue)) == []


# --- the duplicate-delivery fault ------------------------------------------------------------------------


def test_the_duplicate_deliveries_fault_sends_every_attempt_twice(
    tmp_path: Path, parent: str, unique: str, recorder: Recorder
) -> None:
    process, duplicating = _start_emulator(tmp_path / "emulator.log", "--duplicate-deliveries")
    try:
        queue = make_queue(duplicating.client, parent, f"dup-{unique}")
        name = f"{queue}/tasks/twice-{unique}"
        duplicating.client.create_task(parent=queue, task=http_task(recorder.url + "/twice", name=name))

        wait_for(lambda: gone(duplicating.client, name), timeout=10)
        deliveries = wait_for(
            lambda: (
                len(duplicating.deliveries(f"twice-{unique}")) == 2
                and duplicating.deliveries(f"twice-{unique}")
            ),
            timeout=5,
        )

        assert sorted((r["attempt"], r["duplicate"]) for r in deliveries) == [(1, False), (1, True)]
        arrivals = wait_for(lambda: arrived(recorder, "/twice", 2), timeout=5)
        assert [a.headers["X-CloudTasks-TaskName"] for a in arrivals] == [f"twice-{unique}"] * 2
        assert [a.headers["X-CloudTasks-TaskRetryCount"] for a in arrivals] == ["0", "0"]
    finally:
        duplicating.client.transport.close()
        process.terminate()
        process.wait(10)
