"""Queues and tasks in memory, the dedupe window of task names, and each queue's dispatch loop.

Everything runs on the gRPC server's asyncio loop, so no lock is needed: a method that does not await is
atomic with respect to dispatches.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import heapq
import itertools
import json
import logging
import time
import traceback
import uuid
from dataclasses import dataclass, field

from google.cloud import tasks_v2

from infra.emulators.common import EmulatorError, now_utc, retry_delay, seconds
from infra.emulators.tasks import validation
from infra.emulators.tasks.backoff import retries_exhausted
from infra.emulators.tasks.delivery import Deliverer, Delivery, Outcome
from infra.emulators.tasks.pacing import TokenBucket

log = logging.getLogger("tasks-emulator")

UPDATABLE_QUEUE_FIELDS = ("rate_limits", "retry_config", "stackdriver_logging_config")


@dataclass(eq=False)
class TaskEntry:
    task: tasks_v2.Task  # as the API returns it (FULL view)
    due: float  # seconds since the epoch when the task may be dispatched next
    version: int = 0  # bumped on every reschedule, so older entries in the queue's heap are skipped
    first_dispatched: float | None = None
    in_flight: int = 0  # attempts running (RunTask may start one while another runs)
    execution_count: int = 0  # responses other than 5xx: X-CloudTasks-TaskExecutionCount
    previous_response: int | None = None
    gone: bool = False  # succeeded, given up, deleted or purged: a running attempt's result is ignored


@dataclass(eq=False)
class QueueEntry:
    queue: tasks_v2.Queue
    bucket: TokenBucket
    tasks: dict[str, TaskEntry] = field(default_factory=dict)
    # (due, sequence, version, task): tasks waiting for their time; stale entries are dropped when reached.
    heap: list[tuple[float, int, int, TaskEntry]] = field(default_factory=list)
    in_flight: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    loop_task: asyncio.Task[None] | None = None

    @property
    def short_name(self) -> str:
        return str(self.queue.name).rsplit("/", 1)[-1]


class Tombstones:
    """Names of tasks that ran, failed for good or were deleted, reserved for the dedupe window."""

    def __init__(self, *, window_s: float) -> None:
        self.window_s = window_s
        self._until: dict[str, float] = {}

    def reserve(self, name: str, *, now: float) -> None:
        # Re-inserted at the end: with one window for every name, insertion order is expiry order.
        self._until.pop(name, None)
        self._until[name] = now + self.window_s

    def reserved(self, name: str, *, now: float) -> bool:
        while self._until:
            oldest, until = next(iter(self._until.items()))
            if until > now:
                break
            del self._until[oldest]
        return name in self._until

    def release_queue(self, queue_name: str) -> None:
        prefix = queue_name + "/tasks/"
        for name in [n for n in self._until if n.startswith(prefix)]:
            del self._until[name]


class TasksState:
    def __init__(
        self,
        *,
        deliverer: Deliverer,
        dedupe_window_s: float,
        min_dispatch_deadline_s: float,
        duplicate_deliveries: bool = False,
    ) -> None:
        self.deliverer = deliverer
        # A fault for tests of at-least-once handlers: every attempt is also sent a second time, at once,
        # and the second one's response is ignored (Cloud Tasks may deliver a task more than once).
        self.duplicate_deliveries = duplicate_deliveries
        self.min_dispatch_deadline_s = min_dispatch_deadline_s
        self.queues: dict[str, QueueEntry] = {}
        self.tombstones = Tombstones(window_s=dedupe_window_s)
        self._sequence = itertools.count()
        # Running attempts, referenced so the event loop does not collect them mid-flight.
        self._attempts: set[asyncio.Task[None]] = set()

    # --- queues -------------------------------------------------------------------------------------

    def queue(self, name: str) -> QueueEntry:
        entry = self.queues.get(name)
        if entry is None:
            raise EmulatorError("NOT_FOUND", f"Queue does not exist: {name}")
        return entry

    def list_queues(self, parent: str) -> list[tasks_v2.Queue]:
        validation.check_location(parent)
        prefix = parent + "/queues/"
        return [entry.queue for name, entry in sorted(self.queues.items()) if name.startswith(prefix)]

    def create_queue(self, *, parent: str, queue: tasks_v2.Queue) -> tasks_v2.Queue:
        validation.check_location(parent)
        validation.check_queue_name(queue.name)
        if not queue.name.startswith(parent + "/queues/"):
            raise validation.invalid(f"queue {queue.name!r} is not under {parent!r}")
        if queue.name in self.queues:
            raise EmulatorError("ALREADY_EXISTS", f"Queue already exists: {queue.name}")
        stored = tasks_v2.Queue(
            name=queue.name,
            rate_limits=queue.rate_limits,
            retry_config=queue.retry_config,
            stackdriver_logging_config=queue.stackdriver_logging_config,
            state=tasks_v2.Queue.State.RUNNING,
        )
        validation.fill_queue_defaults(stored)
        limits = stored.rate_limits
        bucket = TokenBucket(
            rate=limits.max_dispatches_per_second, burst=limits.max_burst_size, now=time.monotonic()
        )
        entry = QueueEntry(queue=stored, bucket=bucket)
        entry.loop_task = asyncio.get_running_loop().create_task(self._dispatch_loop(entry))
        self.queues[stored.name] = entry
        return stored

    def update_queue(self, *, queue: tasks_v2.Queue, paths: list[str]) -> tasks_v2.Queue:
        """UpdateQueue: the fields the mask names (no mask: all updatable ones); creates a missing queue."""
        validation.check_queue_name(queue.name)
        entry = self.queues.get(queue.name)
        if entry is None:
            return self.create_queue(parent=queue.name.rsplit("/queues/", 1)[0], queue=queue)
        updated = tasks_v2.Queue(entry.queue)
        for path in paths or list(UPDATABLE_QUEUE_FIELDS):
            head, _, tail = path.partition(".")
            if head not in UPDATABLE_QUEUE_FIELDS or "." in tail:
                updatable = ", ".join(UPDATABLE_QUEUE_FIELDS)
                raise validation.invalid(f"cannot update {path!r}; updatable: {updatable}")
            if tail:
                setattr(getattr(updated, head), tail, getattr(getattr(queue, head), tail))
            else:
                setattr(updated, head, getattr(queue, head))
        validation.fill_queue_defaults(updated)  # checks before anything changes
        entry.queue = updated
        limits = updated.rate_limits
        entry.bucket.configure(
            rate=limits.max_dispatches_per_second, burst=limits.max_burst_size, now=time.monotonic()
        )
        entry.wake.set()
        return updated

    def delete_queue(self, name: str) -> None:
        """The queue and its tasks go at once; attempts in flight finish unobserved.

        Google refuses a deleted queue's name for about 7 days; here it can be created again at once, and
        the names of its tasks are released with it.
        """
        entry = self.queue(name)
        del self.queues[name]
        if entry.loop_task:
            entry.loop_task.cancel()
        for task in entry.tasks.values():
            task.gone = True
        entry.tasks.clear()
        entry.heap.clear()
        self.tombstones.release_queue(name)

    def set_state(self, name: str, state: tasks_v2.Queue.State) -> tasks_v2.Queue:
        entry = self.queue(name)
        entry.queue.state = state
        entry.wake.set()
        return entry.queue

    def purge(self, name: str) -> tasks_v2.Queue:
        entry = self.queue(name)
        now = time.time()
        for task_name, task in entry.tasks.items():
            task.gone = True
            self.tombstones.reserve(task_name, now=now)
        entry.tasks.clear()
        entry.heap.clear()
        entry.queue.purge_time = now_utc()
        return entry.queue

    # --- tasks --------------------------------------------------------------------------------------

    def create_task(self, *, parent: str, task: tasks_v2.Task) -> tasks_v2.Task:
        validation.check_queue_name(parent)
        entry = self.queue(parent)
        validation.prepare_task(
            task=task, parent=parent, now=now_utc(), min_dispatch_deadline_s=self.min_dispatch_deadline_s
        )
        if task.name:
            if task.name in entry.tasks or self.tombstones.reserved(task.name, now=time.time()):
                raise EmulatorError("ALREADY_EXISTS", f"Requested entity already exists: {task.name}")
        else:
            # Google's generated ids are long decimal numbers.
            task.name = f"{parent}/tasks/{uuid.uuid4().int % 10**19:019d}"
        stored = TaskEntry(task=task, due=task.schedule_time.timestamp())
        entry.tasks[task.name] = stored
        self._schedule(entry, stored)
        return task

    def task(self, name: str) -> tuple[QueueEntry, TaskEntry]:
        entry = self.queue(validation.queue_of_task(name))
        task = entry.tasks.get(name)
        if task is None:
            raise EmulatorError("NOT_FOUND", f"Task does not exist: {name}")
        return entry, task

    def list_tasks(self, parent: str) -> list[tasks_v2.Task]:
        validation.check_queue_name(parent)
        return [task.task for _, task in sorted(self.queue(parent).tasks.items())]

    def delete_task(self, name: str) -> None:
        entry, task = self.task(name)
        self._finish(entry, task)

    def run_task(self, name: str) -> tasks_v2.Task:
        """RunTask: dispatch now, even when the queue is paused, out of tokens, or the task is running."""
        entry, task = self.task(name)
        self._start_attempt(entry, task)
        return task.task

    def _schedule(self, entry: QueueEntry, task: TaskEntry) -> None:
        task.version += 1
        heapq.heappush(entry.heap, (task.due, next(self._sequence), task.version, task))
        entry.wake.set()

    def _finish(self, entry: QueueEntry, task: TaskEntry) -> None:
        """The task leaves its queue; its name stays reserved for the dedupe window."""
        task.gone = True
        entry.tasks.pop(task.task.name, None)
        self.tombstones.reserve(task.task.name, now=time.time())

    # --- dispatch -----------------------------------------------------------------------------------

    async def _dispatch_loop(self, entry: QueueEntry) -> None:
        while True:
            entry.wake.clear()
            try:
                timeout = self._dispatch_ready(entry)
            except Exception:
                # A bug must not silently stop the queue: log it and try again shortly.
                log.error(
                    json.dumps(
                        {
                            "severity": "ERROR",
                            "message": "dispatch loop failed",
                            "queue": entry.queue.name,
                            "traceback": traceback.format_exc(),
                        }
                    )
                )
                timeout = 1.0
            try:
                await asyncio.wait_for(entry.wake.wait(), timeout=timeout)
            except TimeoutError:
                pass

    def _dispatch_ready(self, entry: QueueEntry) -> float | None:
        """Start every attempt due and allowed now; return seconds until the next may be (None: on wake)."""
        if entry.queue.state == tasks_v2.Queue.State.PAUSED:
            return None
        limits = entry.queue.rate_limits
        while entry.heap:
            due, _, version, task = entry.heap[0]
            if task.gone or version != task.version or task.in_flight:
                # Stale, or RunTask started it: the attempt that ends reschedules it if it failed.
                heapq.heappop(entry.heap)
                continue
            wait = due - time.time()
            if wait > 0:
                return wait
            if entry.in_flight >= limits.max_concurrent_dispatches:
                return None  # an attempt that ends wakes the loop
            now = time.monotonic()
            if not entry.bucket.take(now):
                return entry.bucket.seconds_until_token(now)
            heapq.heappop(entry.heap)
            self._start_attempt(entry, task)
        return None

    def _start_attempt(self, entry: QueueEntry, task: TaskEntry) -> None:
        record = task.task
        dispatched = now_utc()
        record.dispatch_count += 1
        if task.first_dispatched is None:
            task.first_dispatched = dispatched.timestamp()
            record.first_attempt = tasks_v2.Attempt(dispatch_time=dispatched)  # Google keeps only this
        record.last_attempt = tasks_v2.Attempt(schedule_time=record.schedule_time, dispatch_time=dispatched)
        delivery = Delivery(
            queue_id=entry.short_name,
            task_id=str(record.name).rsplit("/", 1)[-1],
            http_request=record.http_request,
            attempt=record.dispatch_count,
            execution_count=task.execution_count,
            eta=record.schedule_time.timestamp(),
            previous_response=task.previous_response,
            deadline_s=seconds(record.dispatch_deadline, validation.DEFAULT_DISPATCH_DEADLINE_S),
        )
        task.in_flight += 1
        entry.in_flight += 1
        attempt = asyncio.get_running_loop().create_task(self._attempt(entry, task, delivery))
        self._attempts.add(attempt)
        attempt.add_done_callback(self._attempts.discard)
        if self.duplicate_deliveries:
            duplicate = asyncio.get_running_loop().create_task(
                self._duplicate(dataclasses.replace(delivery, duplicate=True))
            )
            self._attempts.add(duplicate)
            duplicate.add_done_callback(self._attempts.discard)

    async def _duplicate(self, delivery: Delivery) -> None:
        """A second delivery of the same attempt: logged, its outcome otherwise ignored."""
        await self.deliverer.deliver(delivery=delivery)

    async def _attempt(self, entry: QueueEntry, task: TaskEntry, delivery: Delivery) -> None:
        try:
            outcome = await self.deliverer.deliver(delivery=delivery)
            self._record(entry, task, outcome)
        finally:
            task.in_flight -= 1
            entry.in_flight -= 1
            entry.wake.set()

    def _record(self, entry: QueueEntry, task: TaskEntry, outcome: Outcome) -> None:
        record = task.task
        record.last_attempt.response_time = now_utc()
        record.last_attempt.response_status = outcome.rpc_status()
        if outcome.status_code is not None:
            record.response_count += 1
            task.previous_response = outcome.status_code
            # Google's execution count leaves out 5xx: the handler is taken not to have run.
            if outcome.status_code < 500:
                task.execution_count += 1
        if task.gone:
            return
        if outcome.succeeded:
            self._finish(entry, task)
            return
        retry = record.retry_config if "retry_config" in record else entry.queue.retry_config
        now = time.time()
        if retries_exhausted(
            attempts=record.dispatch_count,
            max_attempts=retry.max_attempts,
            since_first_attempt_s=now - (task.first_dispatched or now),
            max_retry_duration_s=seconds(retry.max_retry_duration, 0),
        ):
            self._finish(entry, task)  # no dead-letter queue: the task is gone
            return
        delay = retry_delay(
            failures=record.dispatch_count,
            min_backoff=seconds(retry.min_backoff, validation.DEFAULT_MIN_BACKOFF_S),
            max_backoff=seconds(retry.max_backoff, validation.DEFAULT_MAX_BACKOFF_S),
            max_doublings=retry.max_doublings,
        )
        if outcome.retry_after_s is not None:
            delay = max(delay, outcome.retry_after_s)
        task.due = now + delay
        record.schedule_time = dt.datetime.fromtimestamp(task.due, dt.UTC)
        self._schedule(entry, task)
