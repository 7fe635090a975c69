"""Queues, tasks and their dispatch: the semantics of Cloud Tasks, in memory, on one asyncio loop."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import math
import time
import uuid
from dataclasses import dataclass, field

import httpx
from google.cloud import tasks_v2
from google.protobuf import timestamp_pb2

from infra.emulators.common import EmulatorError, now_utc, rpc_code, seconds
from infra.emulators.oidc import TokenMinter
from infra.emulators.tasks.backoff import retry_delay

log = logging.getLogger("tasks-emulator")

DEFAULT_DISPATCH_DEADLINE_S = 600.0
MIN_DISPATCH_DEADLINE_S = 15.0
MAX_DISPATCH_DEADLINE_S = 1800.0


def timestamp(moment: dt.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def default_queue_settings(queue: tasks_v2.Queue) -> None:
    """Fill unset rate limits and retry config with Google's defaults."""
    limits = queue.rate_limits
    if not limits.max_dispatches_per_second:
        limits.max_dispatches_per_second = 500.0
    if not limits.max_concurrent_dispatches:
        limits.max_concurrent_dispatches = 1000
    # Output only in the API: derived from the rate (a token bucket of one second's worth, at most 100).
    limits.max_burst_size = max(1, min(100, math.ceil(limits.max_dispatches_per_second)))
    retry = queue.retry_config
    if not retry.max_attempts:
        retry.max_attempts = 100
    if not seconds(retry.min_backoff, 0):
        retry.min_backoff = dt.timedelta(seconds=0.1)
    if not seconds(retry.max_backoff, 0):
        retry.max_backoff = dt.timedelta(seconds=3600)
    if "max_doublings" not in retry:
        retry.max_doublings = 16


@dataclass
class TaskEntry:
    task: tasks_v2.Task
    due: float  # wall-clock seconds when the task may be dispatched next
    created: float
    running: bool = False
    failures: int = 0
    deleted: bool = False


@dataclass
class QueueEntry:
    queue: tasks_v2.Queue
    tasks: dict[str, TaskEntry] = field(default_factory=dict)
    running: int = 0
    tokens: float = 0.0
    refilled_at: float = field(default_factory=time.monotonic)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    loop_task: asyncio.Task[None] | None = None
    generation: int = 0

    @property
    def paused(self) -> bool:
        return bool(self.queue.state == tasks_v2.Queue.State.PAUSED)


class TasksState:
    def __init__(self, *, dedupe_window_s: float, http: httpx.AsyncClient, minter: TokenMinter) -> None:
        self.dedupe_window_s = dedupe_window_s
        self.queues: dict[str, QueueEntry] = {}
        # Names of tasks that ran, failed for good or were deleted: reserved until the window passes.
        self.tombstones: dict[str, float] = {}
        self.http = http
        self.minter = minter

    # --- queues -------------------------------------------------------------------------------------

    def queue(self, name: str) -> QueueEntry:
        entry = self.queues.get(name)
        if entry is None:
            raise EmulatorError("NOT_FOUND", f"Queue does not exist: {name}")
        return entry

    def create_queue(self, queue: tasks_v2.Queue) -> tasks_v2.Queue:
        if queue.name in self.queues:
            raise EmulatorError("ALREADY_EXISTS", f"Queue already exists: {queue.name}")
        stored = tasks_v2.Queue(queue)
        default_queue_settings(stored)
        stored.state = tasks_v2.Queue.State(tasks_v2.Queue.State.RUNNING)
        entry = QueueEntry(queue=stored, tokens=float(stored.rate_limits.max_burst_size))
        self.queues[stored.name] = entry
        entry.loop_task = asyncio.get_running_loop().create_task(self._dispatch_loop(entry))
        return stored

    def update_queue(self, queue: tasks_v2.Queue, paths: list[str]) -> tasks_v2.Queue:
        entry = self.queues.get(queue.name)
        if entry is None:
            return self.create_queue(queue)
        for path in paths or ["rate_limits", "retry_config"]:
            head, _, tail = path.partition(".")
            if head not in ("rate_limits", "retry_config"):
                raise EmulatorError("INVALID_ARGUMENT", f"cannot update field {path}")
            if tail:
                setattr(getattr(entry.queue, head), tail, getattr(getattr(queue, head), tail))
            else:
                setattr(entry.queue, head, getattr(queue, head))
        default_queue_settings(entry.queue)
        entry.wake.set()
        return entry.queue

    def delete_queue(self, name: str) -> None:
        entry = self.queue(name)
        del self.queues[name]
        if entry.loop_task:
            entry.loop_task.cancel()
        for task in entry.tasks.values():
            task.deleted = True
        prefix = name + "/tasks/"
        for task_name in [n for n in self.tombstones if n.startswith(prefix)]:
            del self.tombstones[task_name]

    def set_state(self, name: str, state: int) -> tasks_v2.Queue:
        entry = self.queue(name)
        entry.queue.state = tasks_v2.Queue.State(state)
        entry.wake.set()
        return entry.queue

    def purge(self, name: str) -> tasks_v2.Queue:
        entry = self.queue(name)
        for task_name, task in list(entry.tasks.items()):
            task.deleted = True
            self._forget(entry, task_name)
        return entry.queue

    # --- tasks --------------------------------------------------------------------------------------

    def create_task(self, parent: str, task: tasks_v2.Task) -> tasks_v2.Task:
        entry = self.queue(parent)
        now = time.time()
        self._expire_tombstones(now)
        if task.name:
            if not task.name.startswith(parent + "/tasks/"):
                raise EmulatorError("INVALID_ARGUMENT", f"task name must start with {parent}/tasks/")
            if task.name in entry.tasks or task.name in self.tombstones:
                raise EmulatorError("ALREADY_EXISTS", "Requested entity already exists")
        else:
            task.name = f"{parent}/tasks/{uuid.uuid4().int % 10**19}"
        if not task.http_request.url:
            raise EmulatorError("INVALID_ARGUMENT", "only HTTP tasks with http_request.url are supported")
        if not task.http_request.http_method:
            task.http_request.http_method = tasks_v2.HttpMethod(tasks_v2.HttpMethod.POST)
        deadline = seconds(task.dispatch_deadline, DEFAULT_DISPATCH_DEADLINE_S)
        if not MIN_DISPATCH_DEADLINE_S <= deadline <= MAX_DISPATCH_DEADLINE_S:
            raise EmulatorError("INVALID_ARGUMENT", "dispatch_deadline must be between 15 s and 30 min")
        task.dispatch_deadline = dt.timedelta(seconds=deadline)
        created = now_utc()
        task.create_time = created
        if "schedule_time" not in task:
            task.schedule_time = created
        due = task.schedule_time.timestamp()
        entry.tasks[task.name] = TaskEntry(task=task, due=due, created=now)
        entry.wake.set()
        return task

    def task(self, name: str) -> tuple[QueueEntry, TaskEntry]:
        queue_name = name.split("/tasks/")[0]
        entry = self.queue(queue_name)
        task = entry.tasks.get(name)
        if task is None:
            raise EmulatorError("NOT_FOUND", f"Task does not exist: {name}")
        return entry, task

    def delete_task(self, name: str) -> None:
        entry, task = self.task(name)
        task.deleted = True
        self._forget(entry, name)

    def run_task(self, name: str) -> tasks_v2.Task:
        entry, task = self.task(name)
        if not task.running:
            asyncio.get_running_loop().create_task(self._dispatch(entry, task, forced=True))
        return task.task

    def _forget(self, entry: QueueEntry, name: str) -> None:
        entry.tasks.pop(name, None)
        self.tombstones[name] = time.time() + self.dedupe_window_s

    def _expire_tombstones(self, now: float) -> None:
        for name in [n for n, until in self.tombstones.items() if until <= now]:
            del self.tombstones[name]

    # --- dispatch -----------------------------------------------------------------------------------

    def _take_token(self, entry: QueueEntry) -> bool:
        limits = entry.queue.rate_limits
        now = time.monotonic()
        entry.tokens = min(
            float(limits.max_burst_size),
            entry.tokens + (now - entry.refilled_at) * limits.max_dispatches_per_second,
        )
        entry.refilled_at = now
        if entry.tokens >= 1:
            entry.tokens -= 1
            return True
        return False

    async def _dispatch_loop(self, entry: QueueEntry) -> None:
        while True:
            entry.wake.clear()
            wait_s = 1.0
            if not entry.paused:
                now = time.time()
                ready = sorted(
                    (t for t in entry.tasks.values() if not t.running and t.due <= now), key=lambda t: t.due
                )
                for task in ready:
                    if entry.running >= entry.queue.rate_limits.max_concurrent_dispatches:
                        break
                    if not self._take_token(entry):
                        wait_s = min(wait_s, 1 / entry.queue.rate_limits.max_dispatches_per_second)
                        break
                    task.running = True
                    entry.running += 1
                    asyncio.get_running_loop().create_task(self._dispatch(entry, task))
                future = [t.due - now for t in entry.tasks.values() if not t.running and t.due > now]
                if future:
                    wait_s = min(wait_s, max(min(future), 0.001))
            try:
                await asyncio.wait_for(entry.wake.wait(), timeout=wait_s)
            except TimeoutError:
                pass

    async def _dispatch(self, entry: QueueEntry, task: TaskEntry, *, forced: bool = False) -> None:
        if forced:
            task.running = True
            entry.running += 1
        try:
            await self._attempt(entry, task)
        finally:
            task.running = False
            entry.running -= 1
            entry.wake.set()

    async def _attempt(self, entry: QueueEntry, task_entry: TaskEntry) -> None:
        task = task_entry.task
        request = task.http_request
        queue_short = entry.queue.name.rsplit("/", 1)[-1]
        task_short = task.name.rsplit("/", 1)[-1]
        headers = dict(request.headers)
        headers.update(
            {
                "User-Agent": "Google-Cloud-Tasks",
                "X-CloudTasks-QueueName": queue_short,
                "X-CloudTasks-TaskName": task_short,
                "X-CloudTasks-TaskRetryCount": str(task.dispatch_count),
                "X-CloudTasks-TaskExecutionCount": str(task.response_count),
                "X-CloudTasks-TaskETA": f"{task.schedule_time.timestamp():.6f}",
            }
        )
        if request.oidc_token.service_account_email:
            audience = request.oidc_token.audience or request.url
            token = self.minter.mint(
                service_account_email=request.oidc_token.service_account_email, audience=audience
            )
            headers["Authorization"] = f"Bearer {token}"
        deadline = seconds(task.dispatch_deadline, DEFAULT_DISPATCH_DEADLINE_S)
        dispatched = now_utc()
        attempt = tasks_v2.Attempt(schedule_time=task.schedule_time, dispatch_time=dispatched)
        task.dispatch_count += 1
        if "first_attempt" not in task:
            task.first_attempt = attempt
        started = time.monotonic()
        status_code: int | None = None
        retry_after: float | None = None
        outcome = "ok"
        try:
            response = await asyncio.wait_for(
                self.http.request(
                    tasks_v2.HttpMethod(request.http_method).name,
                    request.url,
                    headers=headers,
                    content=bytes(request.body) or None,
                ),
                timeout=deadline,
            )
            status_code = response.status_code
            retry_after = _retry_after(response) if status_code in (429, 503) else None
        except TimeoutError:
            outcome = "DEADLINE_EXCEEDED"
        except httpx.HTTPError as exc:
            outcome = f"UNAVAILABLE: {type(exc).__name__}"
        latency_ms = int((time.monotonic() - started) * 1000)
        attempt.response_time = now_utc()
        if status_code is not None:
            attempt.response_status = {"code": 0 if 200 <= status_code < 300 else rpc_code(status_code),
                                       "message": str(status_code)}  # fmt: skip
            if status_code < 500:
                task.response_count += 1
        else:
            attempt.response_status = {
                "code": 4 if outcome == "DEADLINE_EXCEEDED" else 14,
                "message": outcome,
            }
        task.last_attempt = attempt
        succeeded = status_code is not None and 200 <= status_code < 300
        log.info(
            json.dumps(
                {
                    "severity": "INFO" if succeeded else "WARNING",
                    "message": "delivery",
                    "queue": queue_short,
                    "task": task_short,
                    "url": request.url,
                    "status": status_code if status_code is not None else outcome,
                    "attempt": task.dispatch_count,
                    "latency_ms": latency_ms,
                }
            )
        )
        if task_entry.deleted:
            return
        if succeeded:
            self._forget(entry, task.name)
            return
        task_entry.failures += 1
        retry = entry.queue.retry_config
        out_of_attempts = retry.max_attempts != -1 and task.dispatch_count >= retry.max_attempts
        max_duration = seconds(retry.max_retry_duration, 0)
        out_of_time = bool(max_duration) and time.time() - task_entry.created > max_duration
        if out_of_attempts or out_of_time:
            self._forget(entry, task.name)  # no dead-letter queue: the task is gone
            return
        delay = retry_delay(
            failures=task_entry.failures,
            min_backoff=seconds(retry.min_backoff, 0.1),
            max_backoff=seconds(retry.max_backoff, 3600),
            max_doublings=retry.max_doublings,
        )
        if retry_after is not None:
            delay = max(delay, retry_after)
        task_entry.due = time.time() + delay
        task.schedule_time = dt.datetime.fromtimestamp(task_entry.due, dt.UTC)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
