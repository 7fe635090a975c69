"""The Cloud Scheduler v1 gRPC service over SchedulerState (no generated servicer ships with the client, so
the methods are registered generically with the client's own proto-plus (de)serializers)."""

from __future__ import annotations

from typing import Any

import grpc
from google.cloud import scheduler_v1
from google.protobuf import empty_pb2

from infra.emulators.common import EmulatorError, generic_handler
from infra.emulators.scheduler.state import SchedulerState

SERVICE = "google.cloud.scheduler.v1.CloudScheduler"
DEFAULT_PAGE_SIZE = 500
MAX_PAGE_SIZE = 500


class CloudSchedulerService:
    def __init__(self, state: SchedulerState) -> None:
        self.state = state

    async def ListJobs(self, request: scheduler_v1.ListJobsRequest) -> scheduler_v1.ListJobsResponse:  # noqa: N802
        if request.page_size < 0:
            raise EmulatorError("INVALID_ARGUMENT", "page_size must not be negative")
        jobs = self.state.jobs_under(request.parent)
        try:
            start = int(request.page_token or 0)
        except ValueError as exc:
            raise EmulatorError("INVALID_ARGUMENT", f"invalid page_token {request.page_token!r}") from exc
        end = start + min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        return scheduler_v1.ListJobsResponse(
            jobs=jobs[start:end], next_page_token=str(end) if end < len(jobs) else ""
        )

    async def GetJob(self, request: scheduler_v1.GetJobRequest) -> scheduler_v1.Job:  # noqa: N802
        return self.state.entry(request.name).job

    async def CreateJob(self, request: scheduler_v1.CreateJobRequest) -> scheduler_v1.Job:  # noqa: N802
        return self.state.create(parent=request.parent, job=request.job)

    async def UpdateJob(self, request: scheduler_v1.UpdateJobRequest) -> scheduler_v1.Job:  # noqa: N802
        return self.state.update(job=request.job, paths=list(request.update_mask.paths))

    async def DeleteJob(self, request: scheduler_v1.DeleteJobRequest) -> empty_pb2.Empty:  # noqa: N802
        self.state.delete(request.name)
        return empty_pb2.Empty()

    async def PauseJob(self, request: scheduler_v1.PauseJobRequest) -> scheduler_v1.Job:  # noqa: N802
        return self.state.pause(request.name)

    async def ResumeJob(self, request: scheduler_v1.ResumeJobRequest) -> scheduler_v1.Job:  # noqa: N802
        return self.state.resume(request.name)

    async def RunJob(self, request: scheduler_v1.RunJobRequest) -> scheduler_v1.Job:  # noqa: N802
        return self.state.run_now(request.name)


METHODS: dict[str, tuple[Any, Any]] = {
    "ListJobs": (scheduler_v1.ListJobsRequest, scheduler_v1.ListJobsResponse),
    "GetJob": (scheduler_v1.GetJobRequest, scheduler_v1.Job),
    "CreateJob": (scheduler_v1.CreateJobRequest, scheduler_v1.Job),
    "UpdateJob": (scheduler_v1.UpdateJobRequest, scheduler_v1.Job),
    "DeleteJob": (scheduler_v1.DeleteJobRequest, empty_pb2.Empty),
    "PauseJob": (scheduler_v1.PauseJobRequest, scheduler_v1.Job),
    "ResumeJob": (scheduler_v1.ResumeJobRequest, scheduler_v1.Job),
    "RunJob": (scheduler_v1.RunJobRequest, scheduler_v1.Job),
}


def handler(state: SchedulerState) -> grpc.GenericRpcHandler:
    return generic_handler(SERVICE, CloudSchedulerService(state), METHODS)
