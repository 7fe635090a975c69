"""The Cloud Tasks v2 gRPC service over TasksState (no generated servicer ships with the client, so the
methods are registered generically with the client's own proto-plus (de)serializers)."""

from __future__ import annotations

import re
from typing import Any

import grpc
from google.cloud import tasks_v2
from google.protobuf import empty_pb2

from infra.emulators.common import EmulatorError, generic_handler
from infra.emulators.tasks.state import TasksState

SERVICE = "google.cloud.tasks.v2.CloudTasks"
QUEUE_NAME = re.compile(r"^projects/[^/]+/locations/[^/]+/queues/[A-Za-z0-9-]{1,100}$")
TASK_ID = re.compile(r"^[A-Za-z0-9_-]{1,500}$")
PAGE_SIZE = 1000


def _check_queue_name(name: str) -> None:
    if not QUEUE_NAME.match(name):
        raise EmulatorError("INVALID_ARGUMENT", f"invalid queue name: {name}")


def _view(task: tasks_v2.Task, view: tasks_v2.Task.View) -> tasks_v2.Task:
    copy = tasks_v2.Task(task)
    copy.view = tasks_v2.Task.View(view or tasks_v2.Task.View.BASIC)
    if copy.view == tasks_v2.Task.View.BASIC:
        copy.http_request.body = b""
    return copy


def _page(items: list[Any], page_size: int, page_token: str) -> tuple[list[Any], str]:
    start = int(page_token or 0)
    size = page_size or PAGE_SIZE
    end = start + size
    return items[start:end], (str(end) if end < len(items) else "")


class CloudTasksService:
    def __init__(self, state: TasksState) -> None:
        self.state = state

    async def ListQueues(self, request: tasks_v2.ListQueuesRequest) -> tasks_v2.ListQueuesResponse:  # noqa: N802
        queues = [
            e.queue for name, e in sorted(self.state.queues.items()) if name.startswith(request.parent + "/")
        ]
        page, token = _page(queues, request.page_size, request.page_token)
        return tasks_v2.ListQueuesResponse(queues=page, next_page_token=token)

    async def GetQueue(self, request: tasks_v2.GetQueueRequest) -> tasks_v2.Queue:  # noqa: N802
        return self.state.queue(request.name).queue

    async def CreateQueue(self, request: tasks_v2.CreateQueueRequest) -> tasks_v2.Queue:  # noqa: N802
        _check_queue_name(request.queue.name)
        if not request.queue.name.startswith(request.parent + "/queues/"):
            raise EmulatorError("INVALID_ARGUMENT", "queue name must be under parent")
        return self.state.create_queue(request.queue)

    async def UpdateQueue(self, request: tasks_v2.UpdateQueueRequest) -> tasks_v2.Queue:  # noqa: N802
        _check_queue_name(request.queue.name)
        return self.state.update_queue(request.queue, list(request.update_mask.paths))

    async def DeleteQueue(self, request: tasks_v2.DeleteQueueRequest) -> empty_pb2.Empty:  # noqa: N802
        self.state.delete_queue(request.name)
        return empty_pb2.Empty()

    async def PurgeQueue(self, request: tasks_v2.PurgeQueueRequest) -> tasks_v2.Queue:  # noqa: N802
        return self.state.purge(request.name)

    async def PauseQueue(self, request: tasks_v2.PauseQueueRequest) -> tasks_v2.Queue:  # noqa: N802
        return self.state.set_state(request.name, tasks_v2.Queue.State.PAUSED)

    async def ResumeQueue(self, request: tasks_v2.ResumeQueueRequest) -> tasks_v2.Queue:  # noqa: N802
        return self.state.set_state(request.name, tasks_v2.Queue.State.RUNNING)

    async def ListTasks(self, request: tasks_v2.ListTasksRequest) -> tasks_v2.ListTasksResponse:  # noqa: N802
        entry = self.state.queue(request.parent)
        tasks = [_view(t.task, request.response_view) for _, t in sorted(entry.tasks.items())]
        page, token = _page(tasks, request.page_size, request.page_token)
        return tasks_v2.ListTasksResponse(tasks=page, next_page_token=token)

    async def GetTask(self, request: tasks_v2.GetTaskRequest) -> tasks_v2.Task:  # noqa: N802
        _, task = self.state.task(request.name)
        return _view(task.task, request.response_view)

    async def CreateTask(self, request: tasks_v2.CreateTaskRequest) -> tasks_v2.Task:  # noqa: N802
        task = tasks_v2.Task(request.task)
        if task.name and not TASK_ID.match(task.name.rsplit("/", 1)[-1]):
            raise EmulatorError("INVALID_ARGUMENT", f"invalid task id in {task.name}")
        created = self.state.create_task(request.parent, task)
        return _view(created, request.response_view)

    async def DeleteTask(self, request: tasks_v2.DeleteTaskRequest) -> empty_pb2.Empty:  # noqa: N802
        self.state.delete_task(request.name)
        return empty_pb2.Empty()

    async def RunTask(self, request: tasks_v2.RunTaskRequest) -> tasks_v2.Task:  # noqa: N802
        return _view(self.state.run_task(request.name), request.response_view)


METHODS: dict[str, tuple[Any, Any]] = {
    "ListQueues": (tasks_v2.ListQueuesRequest, tasks_v2.ListQueuesResponse),
    "GetQueue": (tasks_v2.GetQueueRequest, tasks_v2.Queue),
    "CreateQueue": (tasks_v2.CreateQueueRequest, tasks_v2.Queue),
    "UpdateQueue": (tasks_v2.UpdateQueueRequest, tasks_v2.Queue),
    "DeleteQueue": (tasks_v2.DeleteQueueRequest, empty_pb2.Empty),
    "PurgeQueue": (tasks_v2.PurgeQueueRequest, tasks_v2.Queue),
    "PauseQueue": (tasks_v2.PauseQueueRequest, tasks_v2.Queue),
    "ResumeQueue": (tasks_v2.ResumeQueueRequest, tasks_v2.Queue),
    "ListTasks": (tasks_v2.ListTasksRequest, tasks_v2.ListTasksResponse),
    "GetTask": (tasks_v2.GetTaskRequest, tasks_v2.Task),
    "CreateTask": (tasks_v2.CreateTaskRequest, tasks_v2.Task),
    "DeleteTask": (tasks_v2.DeleteTaskRequest, empty_pb2.Empty),
    "RunTask": (tasks_v2.RunTaskRequest, tasks_v2.Task),
}


def handler(state: TasksState) -> grpc.GenericRpcHandler:
    return generic_handler(SERVICE, CloudTasksService(state), METHODS)
