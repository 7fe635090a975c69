"""Cloud Scheduler adapter: reads the state of the platform's scheduled jobs (SchedulerJobs)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import scheduler_v1

from shared.errors import StoreUnavailable
from shared.ports import ScheduledJob

TRANSIENT = (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.InternalServerError)


def _time(value: Any) -> dt.datetime | None:
    # proto-plus gives DatetimeWithNanoseconds; an unset Timestamp is the epoch.
    if value is None or value.timestamp() <= 0:
        return None
    return dt.datetime.fromtimestamp(value.timestamp(), dt.UTC)


class CloudSchedulerJobs:
    def __init__(self, client: scheduler_v1.CloudSchedulerAsyncClient, *, parent: str) -> None:
        self._client = client
        self._parent = parent

    async def get_job(self, name: str) -> ScheduledJob | None:
        try:
            job = await self._client.get_job(name=f"{self._parent}/jobs/{name}", timeout=10)
        except gexc.NotFound:
            return None
        except TRANSIENT as exc:
            raise StoreUnavailable(f"Cloud Scheduler does not answer: {exc.message}") from exc
        return ScheduledJob(
            name=name,
            schedule=job.schedule,
            time_zone=job.time_zone,
            state=scheduler_v1.Job.State(job.state).name,
            next_run=_time(job.schedule_time),
            last_attempt=_time(job.last_attempt_time),
        )
