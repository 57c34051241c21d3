"""The client's exceptions. Every error the server sends ({"error": {"code", "message", "details"}, "request_id"})
becomes a StudioloAPIError, of the subclass its status names; clients branch on ``code``."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx


class StudioloError(Exception):
    """Base of everything the client raises."""


class StudioloConnectionError(StudioloError):
    """The server could not be reached (or the connection broke) after every retry."""


class WaitTimeout(StudioloError):
    """A job was not finished when ``wait`` gave up; it goes on running on the server."""

    def __init__(self, job_id: str, timeout: float):
        super().__init__(f"job {job_id} was not finished after {timeout:g} s")
        self.job_id = job_id


class StudioloAPIError(StudioloError):
    """The server answered with an error."""

    def __init__(
        self, status: int, code: str, message: str, details: dict[str, Any] | None = None, request_id: str | None = None
    ):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        self.request_id = request_id


class AuthenticationError(StudioloAPIError):
    """401: no valid credentials (a wrong, revoked or expired API key)."""


class PaymentRequiredError(StudioloAPIError):
    """402: the plan's quota or the credit balance does not cover the request."""


class PermissionDeniedError(StudioloAPIError):
    """403: the credentials may not do this (scope, role, suspended account)."""


class NotFoundError(StudioloAPIError):
    """404: no such thing of yours."""


class ConflictError(StudioloAPIError):
    """409: e.g. an Idempotency-Key reused for a different request, or a model that is not installed."""


class InvalidRequestError(StudioloAPIError):
    """422: bad parameters; ``details["errors"]`` lists every broken rule."""


class RateLimitError(StudioloAPIError):
    """429 after the retries ran out; ``retry_after`` is the server's advice in seconds."""

    @property
    def retry_after(self) -> float | None:
        value = self.details.get("retry_after")
        return float(value) if isinstance(value, int | float) else None


class ServerError(StudioloAPIError):
    """5xx."""


_BY_STATUS: dict[int, type[StudioloAPIError]] = {
    401: AuthenticationError,
    402: PaymentRequiredError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: InvalidRequestError,
    429: RateLimitError,
}


def api_error(response: httpx.Response) -> StudioloAPIError:
    """The exception for an error response (its body already read). A body not in Studiolo's shape (a proxy's HTML
    page) still gives the status, with code ``http_<status>``."""
    status = response.status_code
    code, message, request_id = f"http_{status}", response.reason_phrase or "error", None
    details: dict[str, Any] = {}
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        code = str(err.get("code") or code)
        message = str(err.get("message") or message)
        details = err.get("details") if isinstance(err.get("details"), dict) else {}
        request_id = body.get("request_id") if isinstance(body.get("request_id"), str) else None
    request_id = request_id or response.headers.get("x-request-id")
    if status == 429 and "retry_after" not in details and (after := retry_after_seconds(response)) is not None:
        details = {**details, "retry_after": after}
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else StudioloAPIError)
    return cls(status, code, message, details, request_id)


def retry_after_seconds(response: httpx.Response) -> float | None:
    """The Retry-After header in seconds (a number of seconds, or an HTTP date); None when absent or unreadable."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
