"""Scheduler jobs, their schedules and their executions: in memory, on one asyncio loop.

Everything runs on the loop of the gRPC server, so handlers and the firing loop never interleave within a
method and need no locks. An execution is one scheduled time (or one RunJob) with its attempts and retries.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import httpx
from google.cloud import scheduler_v1
from google.rpc import status_pb2

from infra.emulators.common import EmulatorError, now_utc
from infra.emulators.oidc import TokenMinter
from infra.emulators.scheduler import delivery
from infra.emulators.scheduler.cron import next_run
from infra.emulators.scheduler.jobs import apply_update, check_job, check_name, check_parent, new_job

log = logging.getLogger("scheduler-emulator")

ENABLED = scheduler_v1.Job.State.ENABLED
PAUSED = scheduler_v1.Job.State.PAUSED
IDLE_WAKE_S = 30.0


@dataclass
class JobEntry:
    job: scheduler_v1.Job
    next_fire: dt.datetime | None = None  # None while paused
    executing: bool = False  # a scheduled execution (attempts and retries) is under way


class SchedulerState:
    def __init__(self, *, http: httpx.AsyncClient, minter: TokenMinter) -> None:
        self.jobs: dict[str, JobEntry] = {}
        self.http = http
        self.minter = minter
        self._wake = asyncio.Event()
        # Executions are fire-and-forget; the loop keeps only weak references to tasks, so hold them here.
        self._running: set[asyncio.Task[None]] = set()

    # --- the API ------------------------------------------------------------------------------------

    def entry(self, name: str) -> JobEntry:
        found = self.jobs.get(name)
        if found is None:
            raise EmulatorError("NOT_FOUND", f"Job not found: {name}")
        return found

    def jobs_under(self, parent: str) -> list[scheduler_v1.Job]:
        check_parent(parent)
        prefix = parent + "/jobs/"
        return [entry.job for name, entry in sorted(self.jobs.items()) if name.startswith(prefix)]

    def create(self, *, parent: str, job: scheduler_v1.Job) -> scheduler_v1.Job:
        check_parent(parent)
        if not job.name:
            # The name is optional on CreateJob; the service then picks one.
            job = scheduler_v1.Job(job)
            job.name = f"{parent}/jobs/{uuid.uuid4().hex}"
        check_name(parent=parent, name=job.name)
        if job.name in self.jobs:
            raise EmulatorError("ALREADY_EXISTS", f"Job {job.name} already exists")
        check_job(job)
        stored = new_job(job)
        stored.state = scheduler_v1.Job.State(ENABLED)
        stored.user_update_time = now_utc()
        entry = JobEntry(job=stored)
        self._reschedule(entry)
        self.jobs[stored.name] = entry
        return stored

    def update(self, *, job: scheduler_v1.Job, paths: list[str]) -> scheduler_v1.Job:
        entry = self.entry(job.name)
        updated = apply_update(stored=entry.job, update=job, paths=paths)
        updated.user_update_time = now_utc()
        entry.job = updated
        self._reschedule(entry)
        return updated

    def delete(self, name: str) -> None:
        self.entry(name)
        # An execution under way notices that its entry is gone and makes no further attempt.
        del self.jobs[name]

    def pause(self, name: str) -> scheduler_v1.Job:
        entry = self.entry(name)
        if entry.job.state != ENABLED:
            raise EmulatorError("FAILED_PRECONDITION", f"Job {name} must be ENABLED to be paused")
        return self._set_state(entry, PAUSED)

    def resume(self, name: str) -> scheduler_v1.Job:
        entry = self.entry(name)
        if entry.job.state != PAUSED:
            raise EmulatorError("FAILED_PRECONDITION", f"Job {name} must be PAUSED to be resumed")
        return self._set_state(entry, ENABLED)

    def run_now(self, name: str) -> scheduler_v1.Job:
        """Start an execution now, whatever the schedule; as in Google Cloud, a paused job can be run."""
        entry = self.entry(name)
        self._spawn(self._execute(entry, scheduled_for=now_utc(), scheduled=False))
        return entry.job

    # --- scheduling ---------------------------------------------------------------------------------

    def _set_state(self, entry: JobEntry, state: int) -> scheduler_v1.Job:
        entry.job.state = scheduler_v1.Job.State(state)
        entry.job.user_update_time = now_utc()
        self._reschedule(entry)
        return entry.job

    def _reschedule(self, entry: JobEntry) -> None:
        """Next scheduled time from now (a resumed job does not catch up on the times it missed)."""
        if entry.job.state != ENABLED:
            entry.next_fire = None
            return
        entry.next_fire = next_run(
            schedule=entry.job.schedule, time_zone_name=entry.job.time_zone, after=now_utc()
        )
        entry.job.schedule_time = entry.next_fire
        self._wake.set()

    async def run(self) -> None:
        """Fire due jobs until cancelled: each scheduled time fires at most once."""
        while True:
            self._wake.clear()
            now = now_utc()
            wait_s = IDLE_WAKE_S
            for entry in list(self.jobs.values()):
                if entry.next_fire is not None and entry.next_fire <= now:
                    self._fire(entry, due=entry.next_fire, now=now)
                if entry.next_fire is not None:
                    wait_s = min(wait_s, (entry.next_fire - now).total_seconds())
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=max(wait_s, 0.001))
            except TimeoutError:
                pass

    def _fire(self, entry: JobEntry, *, due: dt.datetime, now: dt.datetime) -> None:
        # The due time is consumed before anything else happens, so it can never fire twice. The next time
        # is counted from now, not from `due`: times missed while the emulator was stopped are not replayed.
        entry.next_fire = next_run(
            schedule=entry.job.schedule, time_zone_name=entry.job.time_zone, after=max(due, now)
        )
        entry.job.schedule_time = entry.next_fire
        if entry.executing:
            # Retries run on through later scheduled times, which are then skipped (Google's documented rule).
            skipped = {
                "severity": "WARNING",
                "message": "skipped: the previous execution is still running",
                "job": entry.job.name,
                "schedule_time": delivery.rfc3339(due),
            }
            log.info(json.dumps(skipped))
            return
        entry.executing = True
        self._spawn(self._execute(entry, scheduled_for=due, scheduled=True))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _execute(self, entry: JobEntry, *, scheduled_for: dt.datetime, scheduled: bool) -> None:
        """Attempts of one execution; each records `last_attempt_time` and `status` on the current job."""
        first_attempt = time.monotonic()
        failures = 0
        try:
            while self.jobs.get(entry.job.name) is entry:
                # The job as it is now: an update between retries applies to the next attempt.
                entry.job.last_attempt_time = now_utc()
                outcome = await delivery.attempt(
                    http=self.http,
                    minter=self.minter,
                    job=entry.job,
                    scheduled_for=scheduled_for,
                    number=failures + 1,
                )
                entry.job.status = status_pb2.Status(code=outcome.code, message=outcome.message)
                if outcome.code == 0:
                    return
                failures += 1
                delay = delivery.next_retry_delay(
                    retry=entry.job.retry_config,
                    failures=failures,
                    elapsed_s=time.monotonic() - first_attempt,
                )
                if delay is None:
                    return
                await asyncio.sleep(delay)
        finally:
            if scheduled:
                entry.executing = False
