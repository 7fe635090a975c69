"""The platform's errors: one root, a stable machine `code`, an HTTP status, a human message.

Adapters translate vendor exceptions into these at their boundary (`raise StoreUnavailable(...) from exc`), so
services and entry points never see a `google.*` exception.
"""

from __future__ import annotations

from typing import Any, ClassVar


class PlatformError(Exception):
    """Root of every error the platform raises on purpose."""

    code: ClassVar[str] = "internal"
    http_status: ClassVar[int] = 500
    transient: ClassVar[bool] = False

    def __init__(self, message: str | None = None, *, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message or (self.__doc__ or self.code).strip().splitlines()[0])
        self.message = str(self.args[0])
        self.details = details or []
        self.headers: dict[str, str] = {}

    def to_body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            error["details"] = self.details
        return {"error": error}


class InvalidRequest(PlatformError):
    """The request is not valid."""

    code = "invalid_request"
    http_status = 400


class PayloadTooLarge(PlatformError):
    """The request body is larger than allowed."""

    code = "payload_too_large"
    http_status = 413


class Unauthenticated(PlatformError):
    """A valid credential is required."""

    code = "unauthenticated"
    http_status = 401


class Forbidden(PlatformError):
    """The caller may not do this."""

    code = "forbidden"
    http_status = 403


class NotFound(PlatformError):
    """No such object."""

    code = "not_found"
    http_status = 404


class Conflict(PlatformError):
    """The request conflicts with the current state."""

    code = "conflict"
    http_status = 409


class RateLimited(PlatformError):
    """Too many requests; retry later."""

    code = "rate_limited"
    http_status = 429

    def __init__(self, message: str | None = None, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.headers["Retry-After"] = str(retry_after_s)


class LeaseHeld(PlatformError):
    """Another worker holds the lease on this chunk; Cloud Tasks retries later."""

    code = "lease_held"
    http_status = 409
    transient = True

    def __init__(self, message: str | None = None, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.headers["Retry-After"] = str(retry_after_s)


class StoreUnavailable(PlatformError):
    """The document store is unavailable."""

    code = "store_unavailable"
    http_status = 503
    transient = True


class QueueUnavailable(PlatformError):
    """The task queue is unavailable."""

    code = "queue_unavailable"
    http_status = 503
    transient = True


class BlobUnavailable(PlatformError):
    """Cloud Storage is unavailable."""

    code = "blob_unavailable"
    http_status = 503
    transient = True


class ModelError(PlatformError):
    """The model call failed."""

    code = "model_error"
    http_status = 502

    def __init__(
        self,
        message: str | None = None,
        *,
        status: int | None = None,
        transient: bool,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.is_transient = transient
        self.retry_after_s = retry_after_s
