"""One HTTP attempt of a job, as Cloud Scheduler makes it, and when to make the next one."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from dataclasses import dataclass

import httpx
from google.cloud import scheduler_v1

from infra.emulators.common import retry_delay, rpc_code, seconds
from infra.emulators.oidc import TokenMinter
from infra.emulators.scheduler.jobs import (
    DEFAULT_ATTEMPT_DEADLINE_S,
    DEFAULT_MAX_BACKOFF_S,
    DEFAULT_MIN_BACKOFF_S,
)

log = logging.getLogger("scheduler-emulator")

USER_AGENT = "Google-Cloud-Scheduler"
DEADLINE_EXCEEDED = 4
UNAVAILABLE = 14
# Headers Cloud Scheduler computes itself or reserves: a job's own values for them are dropped.
_REPLACED = ("host", "content-length", "user-agent")
_RESERVED_PREFIXES = ("x-google-", "x-appengine-", "x-cloudscheduler")


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to: `code` is a google.rpc.Code (0 on a 2xx answer)."""

    code: int
    message: str


def rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def request_headers(
    *, job: scheduler_v1.Job, scheduled_for: dt.datetime, minter: TokenMinter
) -> dict[str, str]:
    target = job.http_target
    headers = {
        name: value
        for name, value in target.headers.items()
        if name.lower() not in _REPLACED and not name.lower().startswith(_RESERVED_PREFIXES)
    }
    if target.body and not any(name.lower() == "content-type" for name in headers):
        headers["Content-Type"] = "application/octet-stream"
    headers.update(
        {
            "User-Agent": USER_AGENT,
            "X-CloudScheduler": "true",
            "X-CloudScheduler-JobName": job.name.rsplit("/", 1)[-1],
            "X-CloudScheduler-ScheduleTime": rfc3339(scheduled_for),
        }
    )
    oidc = target.oidc_token
    if oidc.service_account_email:
        headers = {name: value for name, value in headers.items() if name.lower() != "authorization"}
        # As in Google Cloud, the audience defaults to the target's URI.
        token = minter.mint(
            service_account_email=oidc.service_account_email, audience=oidc.audience or target.uri
        )
        headers["Authorization"] = f"Bearer {token}"
    return headers


async def attempt(
    *,
    http: httpx.AsyncClient,
    minter: TokenMinter,
    job: scheduler_v1.Job,
    scheduled_for: dt.datetime,
    number: int,
) -> Outcome:
    """Send the job's request once; a non-2xx answer, a transport error or the attempt deadline is a failure.

    At the deadline the request is abandoned (its connection closed), but the handler is not stopped: like
    Google, the emulator only stops waiting for it.
    """
    target = job.http_target
    method = scheduler_v1.HttpMethod(target.http_method or scheduler_v1.HttpMethod.POST).name
    deadline_s = seconds(job.attempt_deadline, DEFAULT_ATTEMPT_DEADLINE_S)
    headers = request_headers(job=job, scheduled_for=scheduled_for, minter=minter)
    started = time.monotonic()
    status: int | str
    try:
        response = await asyncio.wait_for(
            http.request(method, target.uri, headers=headers, content=bytes(target.body) or None),
            timeout=deadline_s,
        )
        status = response.status_code
        ok = 200 <= status < 300
        outcome = (
            Outcome(code=0, message="") if ok else Outcome(code=rpc_code(status), message=f"HTTP {status}")
        )
    except TimeoutError:
        status = "DEADLINE_EXCEEDED"
        outcome = Outcome(code=DEADLINE_EXCEEDED, message=f"attempt deadline of {deadline_s:g} s exceeded")
    except httpx.HTTPError as exc:
        status = "UNAVAILABLE"
        outcome = Outcome(code=UNAVAILABLE, message=f"{type(exc).__name__}: {exc}")
    record = {
        "severity": "INFO" if outcome.code == 0 else "WARNING",
        "message": "delivery",
        "job": job.name,
        "target": target.uri,
        "status": status,
        "attempt": number,
        "latency_ms": round((time.monotonic() - started) * 1000),
        "schedule_time": rfc3339(scheduled_for),
    }
    log.info(json.dumps(record))
    return outcome


def next_retry_delay(*, retry: scheduler_v1.RetryConfig, failures: int, elapsed_s: float) -> float | None:
    """Seconds before the next attempt after `failures` failed attempts, or None when the execution is over.

    Google's documented rules: retries continue until both `retry_count` retries were made and
    `max_retry_duration` (measured from the first attempt; 0 = no duration limit) has passed. The interval
    starts at `min_backoff_duration`, doubles `max_doublings` times, then grows linearly, capped at
    `max_backoff_duration` (the same procedure as Cloud Tasks).
    """
    delay = retry_delay(
        failures=failures,
        min_backoff=seconds(retry.min_backoff_duration, DEFAULT_MIN_BACKOFF_S),
        max_backoff=seconds(retry.max_backoff_duration, DEFAULT_MAX_BACKOFF_S),
        max_doublings=retry.max_doublings,
    )
    max_duration_s = seconds(retry.max_retry_duration, 0)
    count_reached = failures - 1 >= retry.retry_count
    duration_reached = max_duration_s == 0 or elapsed_s + delay > max_duration_s
    return None if count_reached and duration_reached else delay
