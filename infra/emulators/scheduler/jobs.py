"""Job resources as the Cloud Scheduler v1 API checks, completes and updates them (no I/O here)."""

from __future__ import annotations

import datetime as dt
import re
from urllib.parse import urlsplit

from google.cloud import scheduler_v1
from google.protobuf import field_mask_pb2

from infra.emulators.common import EmulatorError, seconds
from infra.emulators.scheduler.cron import InvalidSchedule, check_schedule, time_zone

PARENT = re.compile(r"^projects/[^/]+/locations/[^/]+$")
JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,500}$")

DEFAULT_ATTEMPT_DEADLINE_S = 180.0
MIN_ATTEMPT_DEADLINE_S = 15.0
MAX_ATTEMPT_DEADLINE_S = 1800.0
# Google's documented RetryConfig defaults, returned filled in on the job.
DEFAULT_MIN_BACKOFF_S = 5.0
DEFAULT_MAX_BACKOFF_S = 3600.0
DEFAULT_MAX_DOUBLINGS = 5
MAX_RETRY_COUNT = 5

# Fields a client may set; a top-level name in an update mask must be one of them.
UPDATABLE = ("description", "schedule", "time_zone", "http_target", "retry_config", "attempt_deadline")
UNEMULATED_TARGETS = ("pubsub_target", "app_engine_http_target")
OUTPUT_ONLY = ("state", "status", "schedule_time", "last_attempt_time", "user_update_time")
BODY_METHODS = (scheduler_v1.HttpMethod.POST, scheduler_v1.HttpMethod.PUT, scheduler_v1.HttpMethod.PATCH)


def check_parent(parent: str) -> None:
    if not PARENT.match(parent):
        raise EmulatorError(
            "INVALID_ARGUMENT", f"parent must be projects/PROJECT/locations/LOCATION: {parent}"
        )


def check_name(*, parent: str, name: str) -> None:
    prefix = parent + "/jobs/"
    if not name.startswith(prefix) or not JOB_ID.match(name[len(prefix) :]):
        raise EmulatorError(
            "INVALID_ARGUMENT",
            f"job name must be {prefix}JOB_ID, JOB_ID of letters, digits, '-' or '_' (at most 500): {name}",
        )


def check_job(job: scheduler_v1.Job) -> None:
    """Raise INVALID_ARGUMENT (or UNIMPLEMENTED for what the emulator lacks) as CreateJob/UpdateJob would."""
    pb = scheduler_v1.Job.pb(job)
    target = pb.WhichOneof("target")
    if target in UNEMULATED_TARGETS:
        raise EmulatorError("UNIMPLEMENTED", f"{target} is not emulated: only HTTP targets are")
    if target is None:
        raise EmulatorError("INVALID_ARGUMENT", "a job needs a target: http_target is required")
    try:
        check_schedule(job.schedule)
        time_zone(job.time_zone)
    except InvalidSchedule as exc:
        raise EmulatorError("INVALID_ARGUMENT", str(exc)) from exc
    _check_http_target(job.http_target)
    retry = job.retry_config
    if not 0 <= retry.retry_count <= MAX_RETRY_COUNT:
        raise EmulatorError("INVALID_ARGUMENT", "retry_config.retry_count must be between 0 and 5")
    if retry.max_doublings < 0:
        raise EmulatorError("INVALID_ARGUMENT", "retry_config.max_doublings must not be negative")
    for field in ("max_retry_duration", "min_backoff_duration", "max_backoff_duration"):
        if seconds(getattr(retry, field), 0) < 0:
            raise EmulatorError("INVALID_ARGUMENT", f"retry_config.{field} must not be negative")
    deadline = seconds(job.attempt_deadline, DEFAULT_ATTEMPT_DEADLINE_S)
    if not MIN_ATTEMPT_DEADLINE_S <= deadline <= MAX_ATTEMPT_DEADLINE_S:
        raise EmulatorError(
            "INVALID_ARGUMENT", "attempt_deadline must be between 15 s and 30 min for HTTP targets"
        )


def _check_http_target(target: scheduler_v1.HttpTarget) -> None:
    parts = urlsplit(target.uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EmulatorError(
            "INVALID_ARGUMENT", f"http_target.uri must be an http:// or https:// URL: {target.uri!r}"
        )
    if target.body and target.http_method not in (
        scheduler_v1.HttpMethod.HTTP_METHOD_UNSPECIFIED,
        *BODY_METHODS,
    ):
        raise EmulatorError("INVALID_ARGUMENT", "a body is allowed only with POST, PUT or PATCH")
    if target.oauth_token.service_account_email:
        raise EmulatorError("UNIMPLEMENTED", "oauth_token is not emulated: use oidc_token")


def fill_defaults(job: scheduler_v1.Job) -> None:
    """Complete the fields Google fills in and returns: time zone, method, deadline, retry settings."""
    if not job.time_zone:
        job.time_zone = "Etc/UTC"
    if not job.http_target.http_method:
        job.http_target.http_method = scheduler_v1.HttpMethod(scheduler_v1.HttpMethod.POST)
    if not seconds(job.attempt_deadline, 0):
        job.attempt_deadline = dt.timedelta(seconds=DEFAULT_ATTEMPT_DEADLINE_S)
    retry = job.retry_config
    if not seconds(retry.min_backoff_duration, 0):
        retry.min_backoff_duration = dt.timedelta(seconds=DEFAULT_MIN_BACKOFF_S)
    if not seconds(retry.max_backoff_duration, 0):
        retry.max_backoff_duration = dt.timedelta(seconds=DEFAULT_MAX_BACKOFF_S)
    # proto3 cannot tell an explicit 0 from unset: like Google, read 0 as "use the default".
    if not retry.max_doublings:
        retry.max_doublings = DEFAULT_MAX_DOUBLINGS
    if not seconds(retry.max_retry_duration, 0):
        retry.max_retry_duration = dt.timedelta(0)


def new_job(job: scheduler_v1.Job) -> scheduler_v1.Job:
    """The stored copy of a job a client sent: output-only fields cleared, defaults filled."""
    stored = scheduler_v1.Job(job)
    for field in OUTPUT_ONLY:
        delattr(stored, field)  # proto-plus clears a field on delete
    fill_defaults(stored)
    return stored


def apply_update(*, stored: scheduler_v1.Job, update: scheduler_v1.Job, paths: list[str]) -> scheduler_v1.Job:
    """`stored` with the fields named by `paths` taken from `update` (every updatable field when empty).

    A path naming a message or a map replaces it whole; a nested path ("retry_config.retry_count") replaces
    only that field, so the rest of the message keeps its values.
    """
    for path in paths:
        head = path.split(".", 1)[0]
        if head in UNEMULATED_TARGETS:
            raise EmulatorError("UNIMPLEMENTED", f"{head} is not emulated: only HTTP targets are")
        if head not in UPDATABLE:
            raise EmulatorError("INVALID_ARGUMENT", f"field {path!r} cannot be updated")
    mask = field_mask_pb2.FieldMask(paths=paths or list(UPDATABLE))
    target = scheduler_v1.Job.pb(scheduler_v1.Job(stored))
    if not mask.IsValidForDescriptor(target.DESCRIPTOR):
        raise EmulatorError("INVALID_ARGUMENT", f"invalid update_mask paths: {list(mask.paths)}")
    mask.MergeMessage(
        scheduler_v1.Job.pb(update), target, replace_message_field=True, replace_repeated_field=True
    )
    updated: scheduler_v1.Job = scheduler_v1.Job.wrap(target)
    check_job(updated)
    fill_defaults(updated)
    return updated
