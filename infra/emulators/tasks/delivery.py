"""One attempt of an HTTP task: the request Cloud Tasks sends, its dispatch deadline, one JSON log line."""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import time
import traceback
from dataclasses import dataclass
from functools import partial

import httpx
from google.cloud import tasks_v2

from infra.emulators.common import rpc_code
from infra.emulators.oidc import TokenMinter

log = logging.getLogger("tasks-emulator")

# Headers Cloud Tasks computes or reserves: a task's own value for them is dropped.
RESERVED_HEADERS = ("host", "content-length", "user-agent")
RESERVED_PREFIXES = ("x-cloudtasks-", "x-google-", "x-appengine-")
# A response that has not come this long after its dispatch deadline is abandoned: Cloud Functions run for
# at most 60 min, so no handler legitimately answers later, and the connection is freed.
ABANDON_AFTER_S = 3600.0
DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"


@dataclass(frozen=True)
class Delivery:
    """What one attempt needs to know about its task."""

    queue_id: str
    task_id: str
    http_request: tasks_v2.HttpRequest
    attempt: int  # 1 for the first dispatch
    execution_count: int
    eta: float  # the task's schedule_time, seconds since the epoch
    previous_response: int | None
    deadline_s: float
    duplicate: bool = False  # a second delivery of the attempt (the --duplicate-deliveries fault)


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended: an HTTP status, or an error when no response came in time."""

    status_code: int | None = None
    error: str | None = None
    retry_after_s: float | None = None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    def rpc_status(self) -> dict[str, object]:
        """`Attempt.response_status` (a google.rpc.Status), as Cloud Tasks records it."""
        if self.status_code is not None:
            code = 0 if self.succeeded else rpc_code(self.status_code)
            return {"code": code, "message": f"HTTP status code {self.status_code}"}
        if self.error == DEADLINE_EXCEEDED:
            return {"code": 4, "message": "The handler did not respond before the dispatch deadline"}
        return {"code": 14, "message": f"The handler could not be reached: {self.error}"}


class Deliverer:
    """Sends attempts over one shared httpx client; the handler of a late attempt is never interrupted."""

    def __init__(self, *, http: httpx.AsyncClient, minter: TokenMinter) -> None:
        self._http = http
        self._minter = minter
        # Requests past their deadline still running: referenced so the loop does not collect them.
        self._late: set[asyncio.Task[Outcome]] = set()

    def headers(self, *, delivery: Delivery) -> httpx.Headers:
        request = delivery.http_request
        headers = httpx.Headers(
            {
                name: value
                for name, value in request.headers.items()
                if name.lower() not in RESERVED_HEADERS and not name.lower().startswith(RESERVED_PREFIXES)
            }
        )
        headers["User-Agent"] = "Google-Cloud-Tasks"
        headers["X-CloudTasks-QueueName"] = delivery.queue_id
        headers["X-CloudTasks-TaskName"] = delivery.task_id
        headers["X-CloudTasks-TaskRetryCount"] = str(delivery.attempt - 1)
        headers["X-CloudTasks-TaskExecutionCount"] = str(delivery.execution_count)
        headers["X-CloudTasks-TaskETA"] = f"{delivery.eta:.6f}"
        if delivery.previous_response is not None:
            headers["X-CloudTasks-TaskPreviousResponse"] = str(delivery.previous_response)
        if request.oidc_token.service_account_email:
            # Google's default audience is the target URL.
            token = self._minter.mint(
                service_account_email=request.oidc_token.service_account_email,
                audience=request.oidc_token.audience or request.url,
            )
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def deliver(self, *, delivery: Delivery) -> Outcome:
        """Send one attempt; past the dispatch deadline, stop waiting and report DEADLINE_EXCEEDED.

        As with Google, the request is not cancelled at the deadline: the handler runs on, and its late
        response is logged and otherwise ignored.
        """
        started = time.monotonic()
        sending = asyncio.ensure_future(self._send(delivery=delivery))
        done, _ = await asyncio.wait({sending}, timeout=delivery.deadline_s)
        if sending in done:
            outcome = sending.result()
        else:
            outcome = Outcome(error=DEADLINE_EXCEEDED)
            self._late.add(sending)
            sending.add_done_callback(partial(self._late_response, delivery, started))
        _log_delivery(delivery=delivery, outcome=outcome, started=started)
        return outcome

    async def _send(self, *, delivery: Delivery) -> Outcome:
        request = delivery.http_request
        try:
            async with asyncio.timeout(delivery.deadline_s + ABANDON_AFTER_S):
                response = await self._http.request(
                    tasks_v2.HttpMethod(request.http_method).name,
                    request.url,
                    headers=self.headers(delivery=delivery),
                    content=request.body or None,
                    follow_redirects=True,  # Google follows redirects within the same attempt
                )
        except TimeoutError:
            return Outcome(error=DEADLINE_EXCEEDED)
        except httpx.HTTPError as exc:
            return Outcome(error=f"{type(exc).__name__}: {exc}".rstrip(": "))
        except Exception as exc:  # any other failure fails this attempt, not the emulator
            log.error(
                json.dumps(
                    {
                        "severity": "ERROR",
                        "message": "delivery failed inside the emulator",
                        "url": request.url,
                        "traceback": traceback.format_exc(),
                    }
                )
            )
            return Outcome(error=f"INTERNAL: {type(exc).__name__}")
        retry_after = retry_after_s(response.headers.get("Retry-After"))
        return Outcome(
            status_code=response.status_code,
            retry_after_s=retry_after if response.status_code in (429, 503) else None,
        )

    def _late_response(self, delivery: Delivery, started: float, sending: asyncio.Task[Outcome]) -> None:
        self._late.discard(sending)
        if sending.cancelled():
            return
        _log_delivery(delivery=delivery, outcome=sending.result(), started=started, late=True)


def retry_after_s(value: str | None) -> float | None:
    """A Retry-After header in seconds: delay-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def _log_delivery(*, delivery: Delivery, outcome: Outcome, started: float, late: bool = False) -> None:
    """One JSON line per attempt; `late`: the response of an attempt that already failed at its deadline."""
    if late:
        severity = "INFO"
        message = "late response ignored: the attempt already failed at its dispatch deadline"
    else:
        severity, message = ("INFO" if outcome.succeeded else "WARNING"), "delivery"
    log.info(
        json.dumps(
            {
                "severity": severity,
                "message": message,
                "queue": delivery.queue_id,
                "task": delivery.task_id,
                "url": delivery.http_request.url,
                "status": outcome.status_code if outcome.status_code is not None else outcome.error,
                "attempt": delivery.attempt,
                "duplicate": delivery.duplicate,
                "latency_ms": int((time.monotonic() - started) * 1000),
                # The wall clock when the attempt ended (answered, or failed at its deadline): with
                # `latency_ms`, when it was in flight, e.g. to count a queue's dispatches at once.
                "ended_at": round(time.time(), 3),
            }
        )
    )
