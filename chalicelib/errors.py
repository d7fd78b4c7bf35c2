"""Domain errors, mapped to HTTP in one place (`chalicelib.api.http`)."""

from __future__ import annotations

from typing import Any, ClassVar


class DomainError(Exception):
    """An error a client can act on: it becomes a 4xx with `{"error": {"code", "message"}}`."""

    status: ClassVar[int] = 400
    code: str = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details

    def body(self) -> dict[str, Any]:
        """The JSON body of the error response."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        return {"error": error}


class BadRequest(DomainError):
    status = 400
    code = "bad_request"


class Unauthorized(DomainError):
    status = 401
    code = "unauthorized"


class Forbidden(DomainError):
    status = 403
    code = "forbidden"


class NotFound(DomainError):
    status = 404
    code = "not_found"


class Conflict(DomainError):
    status = 409
    code = "conflict"


class Gone(DomainError):
    """What the client asks for existed but is over for good (e.g. an expired coupon)."""

    status = 410
    code = "gone"


class PayloadTooLarge(DomainError):
    status = 413
    code = "body_too_large"


class TooManyRequests(DomainError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = max(1, retry_after)  # seconds, sent as Retry-After


class Unavailable(DomainError):
    """The deployment is not set up for what was asked (a missing setting); retrying won't help
    until an operator fixes it."""

    status = 503
    code = "unavailable"


class UpstreamError(DomainError):
    """A dependency (WeChat) failed in a way the client may retry later."""

    status = 502
    code = "upstream_error"
