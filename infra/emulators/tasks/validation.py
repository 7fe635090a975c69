"""What the Cloud Tasks API accepts, and the defaults it fills in: names, queue settings, HTTP tasks."""

from __future__ import annotations

import datetime as dt
import re

from google.cloud import tasks_v2

from infra.emulators.common import EmulatorError, seconds
from infra.emulators.tasks.pacing import burst_size

_LOCATION = r"projects/[^/]+/locations/[^/]+"
_QUEUE = _LOCATION + r"/queues/[A-Za-z0-9-]{1,100}"
LOCATION_NAME = re.compile(f"^{_LOCATION}$")
QUEUE_NAME = re.compile(f"^{_QUEUE}$")
TASK_NAME = re.compile(f"^({_QUEUE})/tasks/[A-Za-z0-9_-]{{1,500}}$")

MAX_DISPATCHES_PER_SECOND = 500.0
MAX_CONCURRENT_DISPATCHES = 5000
DEFAULT_MAX_CONCURRENT_DISPATCHES = 1000
DEFAULT_MAX_ATTEMPTS = 100
DEFAULT_MIN_BACKOFF_S = 0.1
DEFAULT_MAX_BACKOFF_S = 3600.0
DEFAULT_MAX_DOUBLINGS = 16

DEFAULT_DISPATCH_DEADLINE_S = 600.0
MIN_DISPATCH_DEADLINE_S = 15.0
MAX_DISPATCH_DEADLINE_S = 1800.0
MAX_SCHEDULE_AHEAD = dt.timedelta(days=30)
# Google's quota pages give 1 MB for HTTP tasks (some say 100 KB): the larger, so the emulator never rejects
# what production accepts.
MAX_TASK_BYTES = 1024 * 1024
MAX_URL_LENGTH = 2083
MAX_HEADERS_BYTES = 80 * 1024
METHODS_WITH_BODY = (tasks_v2.HttpMethod.POST, tasks_v2.HttpMethod.PUT, tasks_v2.HttpMethod.PATCH)


def invalid(message: str) -> EmulatorError:
    return EmulatorError("INVALID_ARGUMENT", message)


def check_location(parent: str) -> None:
    if not LOCATION_NAME.match(parent):
        raise invalid(f"invalid parent, expected projects/PROJECT/locations/LOCATION: {parent!r}")


def check_queue_name(name: str) -> None:
    if not QUEUE_NAME.match(name):
        raise invalid(f"invalid queue name, expected LOCATION/queues/[A-Za-z0-9-]{{1,100}}: {name!r}")


def queue_of_task(task_name: str) -> str:
    match = TASK_NAME.match(task_name)
    if not match:
        raise invalid(f"invalid task name, expected QUEUE/tasks/[A-Za-z0-9_-]{{1,500}}: {task_name!r}")
    return match.group(1)


def fill_queue_defaults(queue: tasks_v2.Queue) -> None:
    """Check a queue's rate limits and retry config and fill what is unset with Google's defaults.

    proto3 scalars have no presence: 0 means "unspecified" here exactly as it does for Google.
    """
    limits = queue.rate_limits
    if limits.max_dispatches_per_second < 0 or limits.max_dispatches_per_second > MAX_DISPATCHES_PER_SECOND:
        raise invalid(f"max_dispatches_per_second must be in (0, {MAX_DISPATCHES_PER_SECOND:g}]")
    if limits.max_concurrent_dispatches < 0 or limits.max_concurrent_dispatches > MAX_CONCURRENT_DISPATCHES:
        raise invalid(f"max_concurrent_dispatches must be in [1, {MAX_CONCURRENT_DISPATCHES}]")
    limits.max_dispatches_per_second = limits.max_dispatches_per_second or MAX_DISPATCHES_PER_SECOND
    limits.max_concurrent_dispatches = limits.max_concurrent_dispatches or DEFAULT_MAX_CONCURRENT_DISPATCHES
    # Output only: whatever a client sends is replaced by the value derived from the rate.
    limits.max_burst_size = burst_size(limits.max_dispatches_per_second)
    fill_retry_defaults(queue.retry_config)


def fill_retry_defaults(retry: tasks_v2.RetryConfig) -> None:
    if retry.max_attempts < -1:
        raise invalid("max_attempts must be >= -1 (-1: unlimited)")
    if retry.max_doublings < 0:
        raise invalid("max_doublings must be >= 0")
    for field in ("min_backoff", "max_backoff", "max_retry_duration"):
        if field in retry and seconds(getattr(retry, field), 0) < 0:
            raise invalid(f"{field} must not be negative")
    retry.max_attempts = retry.max_attempts or DEFAULT_MAX_ATTEMPTS
    retry.max_doublings = retry.max_doublings or DEFAULT_MAX_DOUBLINGS
    if not seconds(retry.min_backoff, 0):
        retry.min_backoff = dt.timedelta(seconds=DEFAULT_MIN_BACKOFF_S)
    if not seconds(retry.max_backoff, 0):
        retry.max_backoff = dt.timedelta(seconds=DEFAULT_MAX_BACKOFF_S)
    if seconds(retry.min_backoff, 0) > seconds(retry.max_backoff, 0):
        raise invalid("min_backoff must not exceed max_backoff")


def prepare_task(
    *, task: tasks_v2.Task, parent: str, now: dt.datetime, min_dispatch_deadline_s: float
) -> None:
    """Check an HTTP task as CreateTask does and fill the fields the API sets (name is handled by the caller).

    `min_dispatch_deadline_s` is Google's 15 s unless the emulator was started with a shorter one for tests.
    """
    if task.name and queue_of_task(task.name) != parent:
        raise invalid(f"task name {task.name!r} is not in queue {parent!r}")
    if "app_engine_http_request" in task:
        raise invalid("App Engine tasks are not emulated; use http_request")
    request = task.http_request
    if not request.url:
        raise invalid("http_request.url is required")
    if not request.url.startswith(("http://", "https://")) or len(request.url) > MAX_URL_LENGTH:
        raise invalid(f"http_request.url must be an http(s) URL of at most {MAX_URL_LENGTH} characters")
    if not request.http_method:
        request.http_method = tasks_v2.HttpMethod(tasks_v2.HttpMethod.POST)
    if request.body and request.http_method not in METHODS_WITH_BODY:
        raise invalid(f"a body is allowed only with POST, PUT or PATCH, not {request.http_method.name}")
    if sum(len(k) + len(v) for k, v in request.headers.items()) > MAX_HEADERS_BYTES:
        raise invalid("http_request.headers must be smaller than 80 KB")
    deadline = seconds(task.dispatch_deadline, DEFAULT_DISPATCH_DEADLINE_S)
    if not min_dispatch_deadline_s <= deadline <= MAX_DISPATCH_DEADLINE_S:
        raise invalid(f"dispatch_deadline must be between {min_dispatch_deadline_s:g} s and 30 min")
    task.dispatch_deadline = dt.timedelta(seconds=deadline)
    if "schedule_time" in task:
        if task.schedule_time > now + MAX_SCHEDULE_AHEAD:
            raise invalid("schedule_time must be at most 30 days in the future")
    else:
        task.schedule_time = now
    if "retry_config" in task:
        fill_retry_defaults(task.retry_config)
    task.create_time = now.replace(microsecond=0)  # Google truncates create_time to the second
    for output_only in ("dispatch_count", "response_count", "first_attempt", "last_attempt", "view"):
        delattr(task, output_only)
    if tasks_v2.Task.pb(task).ByteSize() > MAX_TASK_BYTES:
        raise invalid(f"task size exceeds the {MAX_TASK_BYTES} bytes limit")
