"""Cloud Tasks adapter: named HTTP tasks to the platform's internal functions, with OIDC tokens."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from google.api_core import exceptions as gexc
from google.cloud import tasks_v2
from google.protobuf import duration_pb2, timestamp_pb2

from shared.errors import QueueUnavailable


class CloudTasksQueue:
    """Implements TaskQueue. Task ids are chosen by the caller, so an enqueue repeated is harmless."""

    def __init__(
        self,
        client: tasks_v2.CloudTasksAsyncClient,
        *,
        queue_path: str,
        functions_base_url: str,
        dispatch_deadline: dt.timedelta,
        queue_dispatch_deadlines: Mapping[str, dt.timedelta] | None = None,
    ) -> None:
        self._client = client
        self._queue_path = queue_path
        self._functions_base_url = functions_base_url.rstrip("/")
        self._dispatch_deadline = dispatch_deadline
        # Queues whose tasks may run longer than the engine's (a report reads its whole input in one task).
        self._queue_dispatch_deadlines = dict(queue_dispatch_deadlines or {})

    async def enqueue(
        self,
        *,
        task_id: str,
        function_name: str,
        body: bytes,
        service_account: str,
        schedule_time: dt.datetime | None = None,
        queue_name: str | None = None,
    ) -> bool:
        # Another queue of the same project and region (a kind's own): the last segment of the path differs.
        queue_path = (
            self._queue_path if queue_name is None else f"{self._queue_path.rsplit('/', 1)[0]}/{queue_name}"
        )
        deadline = self._queue_dispatch_deadlines.get(queue_name or "", self._dispatch_deadline)
        url = f"{self._functions_base_url}/{function_name}"
        task = tasks_v2.Task(
            name=f"{queue_path}/tasks/{task_id}",
            http_request=tasks_v2.HttpRequest(
                url=url,
                http_method=tasks_v2.HttpMethod.POST,
                headers={"Content-Type": "application/json"},
                body=body,
                oidc_token=tasks_v2.OidcToken(service_account_email=service_account, audience=url),
            ),
            dispatch_deadline=duration_pb2.Duration(seconds=int(deadline.total_seconds())),
        )
        if schedule_time is not None:
            stamp = timestamp_pb2.Timestamp()
            stamp.FromDatetime(schedule_time)
            task.schedule_time = stamp
        return await self._create(queue_path=queue_path, task=task, task_id=task_id)

    async def enqueue_webhook(
        self, *, task_id: str, url: str, body: bytes, headers: dict[str, str], queue_name: str
    ) -> bool:
        """Implements WebhookQueue: an HTTP task to a tenant's URL, retried by the queue's retry config."""
        queue_path = f"{self._queue_path.rsplit('/', 1)[0]}/{queue_name}"
        task = tasks_v2.Task(
            name=f"{queue_path}/tasks/{task_id}",
            http_request=tasks_v2.HttpRequest(
                url=url,
                http_method=tasks_v2.HttpMethod.POST,
                headers={"Content-Type": "application/json", **headers},
                body=body,
            ),
            dispatch_deadline=duration_pb2.Duration(seconds=30),
        )
        return await self._create(queue_path=queue_path, task=task, task_id=task_id)

    async def _create(self, *, queue_path: str, task: tasks_v2.Task, task_id: str) -> bool:
        """Create the named task; False when that name is taken (or was, recently)."""
        try:
            await self._client.create_task(parent=queue_path, task=task)
        except gexc.AlreadyExists:
            return False
        except (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.InternalServerError) as exc:
            raise QueueUnavailable(f"cannot enqueue {task_id}: {exc.message}") from exc
        return True
