"""The Cloud Tasks v2 gRPC service over TasksState.

No generated servicer ships with the client library, so the methods are registered generically with the
client's own proto-plus (de)serializers (`infra.emulators.common.generic_handler`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import grpc
from google.cloud import tasks_v2
from google.protobuf import empty_pb2

from infra.emulators.common import EmulatorError, generic_handler
from infra.emulators.tasks.state import TasksState

SERVICE = "google.cloud.tasks.v2.CloudTasks"
MAX_PAGE_SIZE = 1000  # Google's largest page for ListQueues and ListTasks

Item = TypeVar("Item")


def _view(task: tasks_v2.Task, view: tasks_v2.Task.View) -> tasks_v2.Task:
    """A copy of the stored task in the requested view: BASIC (the default) leaves the body out."""
    copy = tasks_v2.Task(task)
    full = view == tasks_v2.Task.View.FULL
    copy.view = tasks_v2.Task.View(tasks_v2.Task.View.FULL if full else tasks_v2.Task.View.BASIC)
    if copy.view == tasks_v2.Task.View.BASIC:
        copy.http_request.body = b""
    return copy


def _page(
    items: Sequence[Item], *, key: Callable[[Item], str], page_size: int, page_token: str
) -> tuple[list[Item], str]:
    """One page of `items` (sorted by `key`); the token is the last key returned, so pages stay consistent
    while items come and go between calls."""
    if page_size < 0:
        raise EmulatorError("INVALID_ARGUMENT", "page_size must not be negative")
    size = min(page_size or MAX_PAGE_SIZE, MAX_PAGE_SIZE)
    after = [item for item in items if key(item) > page_token] if page_token else list(items)
    page = after[:size]
    return page, (key(page[-1]) if len(after) > size else "")


class CloudTasksService:
    def __init__(self, state: TasksState) -> None:
        self.state = state

    async def ListQueues(self, request: tasks_v2.ListQueuesRequest) -> tasks_v2.ListQueuesResponse:  # noqa: N802
        queues, token = _page(
            self.state.list_queues(request.parent),
            key=lambda queue: str(queue.name),
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return tasks_v2.ListQueuesResponse(queues=queues, next_page_token=token)

    async def GetQueue(self, request: tasks_v2.GetQueueRequest) -> tasks_v2.Queue:  # noqa: N802
        return self.state.queue(request.name).queue

    async def CreateQueue(self, request: tasks_v2.CreateQueueRequest) -> tasks_v2.Queue:  # noqa: N802
        return self.state.create_queue(parent=request.parent, queue=request.queue)

    async def UpdateQueue(self, request: tasks_v2.UpdateQueueRequest) -> tasks_v2.Queue:  # noqa: N802
        return self.state.update_queue(queue=request.queue, paths=list(request.update_mask.paths))

    async def DeleteQueue(self, request: tasks_v2.DeleteQueueRequest) -> empty_pb2.Empty:  # noqa: N802
        self.state.delete_queue(request.name)
        return empty_pb2.Empty()

    async def PurgeQueue(self, request: tasks_v2.PurgeQueueRequest) -> tasks_v2.Queue:  # noqa: N802
        return self.state.purge(request.name)

    async def PauseQueue(self, request: tasks_v2.PauseQueueRequest) -> tasks_v2.Queue:  # noqa: N802
        return self.state.set_state(request.name, tasks_v2.Queue.State(tasks_v2.Queue.State.PAUSED))

    async def ResumeQueue(self, request: tasks_v2.ResumeQueueRequest) -> tasks_v2.Queue:  # noqa: N802
        return self.state.set_state(request.name, tasks_v2.Queue.State(tasks_v2.Queue.State.RUNNING))

    async def ListTasks(self, request: tasks_v2.ListTasksRequest) -> tasks_v2.ListTasksResponse:  # noqa: N802
        tasks, token = _page(
            self.state.list_tasks(request.parent),
            key=lambda task: str(task.name),
            page_size=request.page_size,
            page_token=request.page_token,
        )
        views = [_view(task, request.response_view) for task in tasks]
        return tasks_v2.ListTasksResponse(tasks=views, next_page_token=token)

    async def GetTask(self, request: tasks_v2.GetTaskRequest) -> tasks_v2.Task:  # noqa: N802
        _, task = self.state.task(request.name)
        return _view(task.task, request.response_view)

    async def CreateTask(self, request: tasks_v2.CreateTaskRequest) -> tasks_v2.Task:  # noqa: N802
        # The request was just deserialized for this call: its task can be stored as it is.
        created = self.state.create_task(parent=request.parent, task=request.task)
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
