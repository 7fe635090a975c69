"""Scheduler jobs, their schedules and their HTTP deliveries, in memory, on one asyncio loop."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
import zoneinfo
from dataclasses import dataclass

import httpx
from croniter import croniter
from google.cloud import scheduler_v1

from infra.emulators.common import EmulatorError, now_utc, rpc_code, seconds
from infra.emulators.oidc import TokenMinter
from infra.emulators.tasks.backoff import retry_delay

log = logging.getLogger("scheduler-emulator")

DEFAULT_ATTEMPT_DEADLINE_S = 180.0
UPDATABLE = ("description", "schedule", "time_zone", "http_target", "retry_config", "attempt_deadline")


@dataclass
class JobEntry:
    job: scheduler_v1.Job
    next_fire: dt.datetime | None = None
    last_fired_for: dt.datetime | None = None


def _zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name or "Etc/UTC")
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise EmulatorError("INVALID_ARGUMENT", f"invalid time zone: {name}") from exc


def validate(job: scheduler_v1.Job) -> None:
    if not job.schedule or not croniter.is_valid(job.schedule):
        raise EmulatorError("INVALID_ARGUMENT", f"invalid schedule: {job.schedule!r}")
    _zone(job.time_zone)
    if not job.http_target.uri:
        raise EmulatorError(
            "INVALID_ARGUMENT", "only HTTP targets are supported: http_target.uri is required"
        )
    retry_count = job.retry_config.retry_count
    if not 0 <= retry_count <= 5:
        raise EmulatorError("INVALID_ARGUMENT", "retry_config.retry_count must be 0 to 5")
    deadline = seconds(job.attempt_deadline, DEFAULT_ATTEMPT_DEADLINE_S)
    if not 15 <= deadline <= 1800:
        raise EmulatorError("INVALID_ARGUMENT", "attempt_deadline must be between 15 s and 30 min")


def next_fire_time(job: scheduler_v1.Job, after: dt.datetime) -> dt.datetime:
    """The next scheduled time after `after`, evaluated in the job's time zone (minute granularity)."""
    zone = _zone(job.time_zone)
    local = after.astimezone(zone).replace(second=0, microsecond=0)
    following: dt.datetime = croniter(job.schedule, local).get_next(dt.datetime)
    return following.astimezone(dt.UTC)


class SchedulerState:
    def __init__(self, *, http: httpx.AsyncClient, minter: TokenMinter) -> None:
        self.jobs: dict[str, JobEntry] = {}
        self.http = http
        self.minter = minter
        self.wake = asyncio.Event()

    def job(self, name: str) -> JobEntry:
        entry = self.jobs.get(name)
        if entry is None:
            raise EmulatorError("NOT_FOUND", f"Job not found: {name}")
        return entry

    def create(self, parent: str, job: scheduler_v1.Job) -> scheduler_v1.Job:
        if not job.name.startswith(parent + "/jobs/"):
            raise EmulatorError("INVALID_ARGUMENT", "job name must be under parent")
        if job.name in self.jobs:
            raise EmulatorError("ALREADY_EXISTS", f"Job {job.name} already exists")
        validate(job)
        stored = scheduler_v1.Job(job)
        self._defaults(stored)
        stored.state = scheduler_v1.Job.State(scheduler_v1.Job.State.ENABLED)
        stored.user_update_time = now_utc()
        entry = JobEntry(job=stored)
        self._reschedule(entry)
        self.jobs[stored.name] = entry
        self.wake.set()
        return stored

    def update(self, job: scheduler_v1.Job, paths: list[str]) -> scheduler_v1.Job:
        entry = self.job(job.name)
        updated = scheduler_v1.Job(entry.job)
        for path in paths or UPDATABLE:
            head = path.split(".")[0]
            if head not in UPDATABLE:
                raise EmulatorError("INVALID_ARGUMENT", f"cannot update field {path}")
            setattr(updated, head, getattr(job, head))
        validate(updated)
        self._defaults(updated)
        updated.user_update_time = now_utc()
        entry.job = updated
        self._reschedule(entry)
        self.wake.set()
        return updated

    def delete(self, name: str) -> None:
        self.job(name)
        del self.jobs[name]

    def set_state(self, name: str, state: int) -> scheduler_v1.Job:
        entry = self.job(name)
        entry.job.state = scheduler_v1.Job.State(state)
        entry.job.user_update_time = now_utc()
        self._reschedule(entry)
        self.wake.set()
        return entry.job

    def run_now(self, name: str) -> scheduler_v1.Job:
        entry = self.job(name)
        asyncio.get_running_loop().create_task(self._deliver(entry, scheduled_for=now_utc()))
        return entry.job

    @staticmethod
    def _defaults(job: scheduler_v1.Job) -> None:
        if not job.time_zone:
            job.time_zone = "Etc/UTC"
        if not seconds(job.attempt_deadline, 0):
            job.attempt_deadline = dt.timedelta(seconds=DEFAULT_ATTEMPT_DEADLINE_S)
        retry = job.retry_config
        if not seconds(retry.min_backoff_duration, 0):
            retry.min_backoff_duration = dt.timedelta(seconds=5)
        if not seconds(retry.max_backoff_duration, 0):
            retry.max_backoff_duration = dt.timedelta(seconds=3600)
        if not retry.max_doublings:
            retry.max_doublings = 5

    def _reschedule(self, entry: JobEntry) -> None:
        if entry.job.state != scheduler_v1.Job.State.ENABLED:
            entry.next_fire = None
            return
        entry.next_fire = next_fire_time(entry.job, now_utc())
        entry.job.schedule_time = entry.next_fire

    async def run(self) -> None:
        """Fire due jobs; each scheduled time fires at most once."""
        while True:
            self.wake.clear()
            now = now_utc()
            wait_s = 30.0
            for entry in list(self.jobs.values()):
                due = entry.next_fire
                if due is None:
                    continue
                if due <= now and entry.last_fired_for != due:
                    entry.last_fired_for = due
                    asyncio.get_running_loop().create_task(self._deliver(entry, scheduled_for=due))
                    entry.next_fire = next_fire_time(entry.job, due)
                    entry.job.schedule_time = entry.next_fire
                    due = entry.next_fire
                wait_s = min(wait_s, max((due - now).total_seconds(), 0.01))
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=wait_s)
            except TimeoutError:
                pass

    async def _deliver(self, entry: JobEntry, *, scheduled_for: dt.datetime) -> None:
        job = entry.job
        retry = job.retry_config
        attempts = 1 + retry.retry_count
        started_at = time.monotonic()
        for attempt in range(1, attempts + 1):
            code, outcome = await self._attempt(job, scheduled_for=scheduled_for, attempt=attempt)
            job.last_attempt_time = now_utc()
            job.status = {"code": code, "message": outcome}
            if code == 0 or attempt == attempts:
                return
            max_duration = seconds(retry.max_retry_duration, 0)
            if max_duration and time.monotonic() - started_at > max_duration:
                return
            await asyncio.sleep(
                retry_delay(
                    failures=attempt,
                    min_backoff=seconds(retry.min_backoff_duration, 5),
                    max_backoff=seconds(retry.max_backoff_duration, 3600),
                    max_doublings=retry.max_doublings,
                )
            )

    async def _attempt(
        self, job: scheduler_v1.Job, *, scheduled_for: dt.datetime, attempt: int
    ) -> tuple[int, str]:
        target = job.http_target
        short_name = job.name.rsplit("/", 1)[-1]
        headers = dict(target.headers)
        headers.update(
            {
                "User-Agent": "Google-Cloud-Scheduler",
                "X-CloudScheduler": "true",
                "X-CloudScheduler-JobName": short_name,
                "X-CloudScheduler-ScheduleTime": scheduled_for.isoformat().replace("+00:00", "Z"),
            }
        )
        if target.oidc_token.service_account_email:
            token = self.minter.mint(
                service_account_email=target.oidc_token.service_account_email,
                audience=target.oidc_token.audience or target.uri,
            )
            headers["Authorization"] = f"Bearer {token}"
        method = scheduler_v1.HttpMethod(target.http_method or scheduler_v1.HttpMethod.POST).name
        started = time.monotonic()
        status: int | str
        try:
            response = await asyncio.wait_for(
                self.http.request(method, target.uri, headers=headers, content=bytes(target.body) or None),
                timeout=seconds(job.attempt_deadline, DEFAULT_ATTEMPT_DEADLINE_S),
            )
            status = response.status_code
            code = 0 if 200 <= status < 300 else rpc_code(status)
            outcome = f"HTTP {status}"
        except TimeoutError:
            status, code, outcome = "DEADLINE_EXCEEDED", 4, "attempt deadline exceeded"
        except httpx.HTTPError as exc:
            status, code, outcome = "UNAVAILABLE", 14, f"{type(exc).__name__}"
        log.info(
            json.dumps(
                {
                    "severity": "INFO" if code == 0 else "WARNING",
                    "message": "delivery",
                    "job": short_name,
                    "target": target.uri,
                    "status": status,
                    "attempt": attempt,
                    "latency_ms": int((time.monotonic() - started) * 1000),
                }
            )
        )
        return code, outcome
