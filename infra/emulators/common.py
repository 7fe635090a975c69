"""What the project's gRPC emulators share: errors as gRPC statuses, generic registration, durations."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import duration_pb2, empty_pb2


class EmulatorError(Exception):
    """Becomes a gRPC status: `code` is a grpc.StatusCode name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def seconds(duration: duration_pb2.Duration | dt.timedelta | None, default: float) -> float:
    """A proto Duration (as proto-plus returns it) in seconds; `default` when unset or zero."""
    if duration is None:
        return default
    if isinstance(duration, dt.timedelta):
        return duration.total_seconds() or default
    return (duration.seconds + duration.nanos / 1e9) or default


def rpc_code(http_status: int) -> int:
    """google.rpc.Code for an HTTP status, as Cloud Tasks and Cloud Scheduler report a failed attempt."""
    codes = {400: 3, 401: 16, 403: 7, 404: 5, 409: 10, 429: 8, 499: 1, 501: 12, 503: 14, 504: 4}
    return codes.get(http_status, 13 if http_status >= 500 else 9)


def generic_handler(
    service_name: str, service: object, methods: dict[str, tuple[Any, Any]]
) -> grpc.GenericRpcHandler:
    """Register `service.<Method>` coroutines for a gRPC service from the client's proto-plus types.

    The official clients ship no generated servicers, so methods are registered generically with the
    request/response types' own (de)serializers.
    """

    def serializer(response_type: Any) -> Callable[[Any], bytes]:
        if response_type is empty_pb2.Empty:
            return lambda message: message.SerializeToString()
        return response_type.serialize  # type: ignore[no-any-return]

    def unary(method: Callable[[Any], Awaitable[Any]]) -> Callable[[Any, Any], Awaitable[Any]]:
        async def handle(request: Any, context: Any) -> Any:
            try:
                return await method(request)
            except EmulatorError as exc:
                await context.abort(getattr(grpc.StatusCode, exc.code), exc.message)

        return handle

    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            unary(getattr(service, name)),
            request_deserializer=request_type.deserialize,
            response_serializer=serializer(response_type),
        )
        for name, (request_type, response_type) in methods.items()
    }
    return grpc.method_handlers_generic_handler(service_name, handlers)


async def serve_grpc(*, handler: grpc.GenericRpcHandler, host: str, port: int) -> grpc.aio.Server:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    return server


def retry_delay(*, failures: int, min_backoff: float, max_backoff: float, max_doublings: int) -> float:
    """Seconds before the next attempt after `failures` failed attempts (1 for the first failure).

    Cloud Tasks (`RetryConfig`) and Cloud Scheduler (`RetryConfig`) document the same progression.

    The interval starts at min_backoff and doubles max_doublings times, then grows linearly by
    min_backoff x 2^max_doublings per retry, never above max_backoff. Google's example (10 s, 300 s,
    3 doublings) retries after 10, 20, 40, 80, 160, 240, 300, 300, ... seconds.
    """
    step = max(failures, 1) - 1
    if step < max_doublings:
        delay = min_backoff * 2**step
    else:
        delay = min_backoff * 2**max_doublings * (step - max_doublings + 1)
    return float(min(delay, max_backoff))
