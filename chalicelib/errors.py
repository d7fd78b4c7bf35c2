"""Domain errors, named for what went wrong; each class carries the HTTP status and default code
that `chalicelib.api.http` (the one place that turns them into responses) sends.
"""

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


class InvalidInput(DomainError):
    """What was asked is malformed or breaks a rule (an amount below the minimum, bad rules)."""

    status = 400
    code = "bad_request"


class NotAuthenticated(DomainError):
    """The caller is not who it claims: no, a forged or an expired token; wrong credentials."""

    status = 401
    code = "unauthorized"


class NotAllowed(DomainError):
    """The caller is known but its role (or tenant) may not do this."""

    status = 403
    code = "forbidden"


class Missing(DomainError):
    """The thing asked for does not exist (codes `unknown_*`)."""

    status = 404
    code = "not_found"


class StateConflict(DomainError):
    """The thing is in a state (or was changed meanwhile) that does not allow this."""

    status = 409
    code = "conflict"


class Ended(DomainError):
    """What the client asks for existed but is over for good (e.g. an expired coupon)."""

    status = 410
    code = "gone"


class TooLarge(DomainError):
    """The request is larger than we accept."""

    status = 413
    code = "body_too_large"


class Throttled(DomainError):
    """Too many attempts (or WeChat's rate limit): try again after `retry_after` seconds."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = max(1, retry_after)  # seconds, sent as Retry-After


class NotConfigured(DomainError):
    """The deployment is not set up for what was asked (a missing setting); retrying won't help
    until an operator fixes it."""

    status = 503
    code = "unavailable"


class UpstreamError(DomainError):
    """A dependency (WeChat) failed in a way the client may retry later."""

    status = 502
    code = "upstream_error"
