"""Domain exceptions and the one place that maps them to HTTP.

Services raise these; they never raise ``HTTPException``. Every error body has the same shape:
``{"error": {"code", "message", "details"}, "request_id"}`` and ``code`` is stable (clients branch on it).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class StudioloError(Exception):
    """Base of every error a user may see. ``code`` is part of the API contract."""

    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details or {}

    def add_details(self, **details: Any) -> None:
        """Add what only an outer layer knows (e.g. which item of a batch failed); code and status stay."""
        self.details = {**self.details, **details}


class InvalidInput(StudioloError):
    status_code = 422
    code = "invalid_input"


class ContentRejected(InvalidInput):
    """A prompt or an upload that moderation refused (issue 17). ``details.category`` names why; the matched words
    are never echoed (they would teach the list to whoever probes it)."""

    code = "content_rejected"


class UnderReview(StudioloError):
    """An image held back by the output check until an administrator approves it (issue 17)."""

    status_code = 403
    code = "under_review"


class NotFound(StudioloError):
    status_code = 404
    code = "not_found"


class Conflict(StudioloError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(StudioloError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaType(StudioloError):
    status_code = 415
    code = "unsupported_media_type"


class ModelUnavailable(StudioloError):
    """The requested model is not installed or cannot be loaded."""

    status_code = 409
    code = "model_unavailable"


class ServiceUnavailable(StudioloError):
    status_code = 503
    code = "service_unavailable"


class Unauthorized(StudioloError):
    """No valid credentials: missing, expired, tampered or revoked."""

    status_code = 401
    code = "not_authenticated"


class Forbidden(StudioloError):
    """Valid credentials that may not do this (scope, role, suspended account, CSRF)."""

    status_code = 403
    code = "forbidden"


class PaymentRequired(StudioloError):
    """The plan's quota or the credit balance does not cover the request (402 quota_exceeded / insufficient_credits);
    ``details`` say the limit, what is used, when it resets and where to upgrade."""

    status_code = 402
    code = "insufficient_credits"


class PaymentProviderError(StudioloError):
    """The payment provider (Stripe) refused or could not be reached: 502, never a 500; nothing was charged by us."""

    status_code = 502
    code = "payment_provider_error"


class RateLimited(StudioloError):
    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int, code: str | None = None):
        super().__init__(message, code=code, details={"retry_after": retry_after})
        self.retry_after = retry_after


def describe_errors(errors: Sequence[Mapping[str, Any]]) -> str:
    """Every broken rule of a request on one line, "n: At most 8 images per job (got 100); size: ...", each named by
    its place without the leading "body": the HTTP API's message and the CLI's lines read the same."""
    parts = []
    for e in errors:
        loc = [str(p) for p in e.get("loc", ())]
        field = ".".join(loc[1:] if loc[:1] == ["body"] else loc)
        parts.append(f"{field}: {e.get('msg', '')}" if field else str(e.get("msg", "")))
    return "; ".join(parts)


def _n(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


# pydantic's messages ("Input should be less than or equal to 4294967295") in the words a person uses; the error
# ``type`` in details.errors stays pydantic's (clients branch on it and on ``code``, never on the text).
_PLAIN: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "missing": lambda c: "Required",
    "int_parsing": lambda c: "Must be a whole number",
    "int_type": lambda c: "Must be a whole number",
    "int_from_float": lambda c: "Must be a whole number",
    "float_parsing": lambda c: "Must be a number",
    "float_type": lambda c: "Must be a number",
    "bool_parsing": lambda c: "Must be true or false",
    "bool_type": lambda c: "Must be true or false",
    "string_type": lambda c: "Must be text",
    "string_too_short": lambda c: (
        "Must not be empty" if c["min_length"] == 1 else f"At least {_n(c['min_length'])} characters"
    ),
    "string_too_long": lambda c: f"At most {_n(c['max_length'])} characters",
    "greater_than_equal": lambda c: f"At least {_n(c['ge'])}",
    "less_than_equal": lambda c: f"At most {_n(c['le'])}",
    "greater_than": lambda c: f"Must be more than {_n(c['gt'])}",
    "less_than": lambda c: f"Must be less than {_n(c['lt'])}",
    "too_short": lambda c: f"Give at least {_n(c['min_length'])}",
    "too_long": lambda c: f"Give at most {_n(c['max_length'])}",
    "literal_error": lambda c: f"Must be {c['expected']}",
    "enum": lambda c: f"Must be {c['expected']}",
    "extra_forbidden": lambda c: "Not a field this request takes",
    "uuid_parsing": lambda c: "Must be an id (a UUID)",
    "list_type": lambda c: "Must be a list",
    "dict_type": lambda c: "Must be an object",
}


def plain_message(error: Mapping[str, Any]) -> str:
    """One broken rule's message in plain words (pydantic's own text where there is no better one)."""
    say = _PLAIN.get(str(error.get("type", "")))
    try:
        return say(error.get("ctx") or {}) if say is not None else str(error.get("msg", ""))
    except KeyError:  # a rule without the context its words need: pydantic's text is still right
        return str(error.get("msg", ""))


def error_body(code: str, message: str, details: dict[str, Any] | None, request_id: str | None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}, "request_id": request_id}


def _request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


HtmlPage = Callable[[Request, int, str, str], Awaitable[Response]]
# Another API's face (issue 18, compat/): its clients expect errors in that API's shape. Given (status, code, message,
# details, request id), returns (status, body, extra headers); registered per path prefix with install_error_handlers.
FaceErrors = Callable[[int, str, str, dict[str, Any], str | None], tuple[int, dict[str, Any], dict[str, str]]]
_NOT_PAGES = ("/api/", "/static/", "/health", "/ready", "/metrics", "/docs", "/redoc", "/openapi.json", "/sw.js")


def _wants_page(request: Request) -> bool:
    """A browser navigating to a web studio page gets errors as a page; API clients always get the envelope."""
    path = request.url.path
    return (
        request.method in ("GET", "HEAD")
        and not path.startswith(_NOT_PAGES)
        and "text/html" in request.headers.get("accept", "")
    )


def _invalid_json(request: Request) -> Response:
    """What FastAPI answers for a declared JSON body that is not JSON (invalid_input, its error typed json_invalid),
    for the bodies its parser fails on in other ways too."""
    errors = [{"loc": ["body"], "msg": "JSON decode error", "type": "json_invalid"}]
    body = error_body("invalid_input", "The body is not valid JSON.", {"errors": errors}, _request_id(request))
    return JSONResponse(body, status_code=422)


def install_error_handlers(
    app: FastAPI, html_page: HtmlPage | None = None, faces: Mapping[str, FaceErrors] | None = None
) -> None:
    """Map every exception to the standard envelope (or, under a face's path prefix, to that API's own error shape);
    nothing reaches the client as a bare 500 trace."""
    face_list = list((faces or {}).items())

    def face_of(request: Request) -> FaceErrors | None:
        path = request.url.path
        return next((render for prefix, render in face_list if path.startswith(prefix)), None)

    async def page_or(request: Request, status: int, code: str, message: str, response: Response) -> Response:
        face = face_of(request)
        if face is not None:
            details: dict[str, Any] = {}
            with contextlib.suppress(ValueError, AttributeError):
                details = json.loads(bytes(response.body)).get("error", {}).get("details") or {}
            kept = ("retry-after", "www-authenticate")
            headers = {k.lower(): v for k, v in response.headers.items() if k.lower() in kept}
            status, body, extra = face(status, code, message, details, _request_id(request))
            # The face's own headers win (A1111's clients are offered Basic, not the native API's Bearer).
            return JSONResponse(
                body, status_code=status, headers={**headers, **{k.lower(): v for k, v in extra.items()}}
            )
        if html_page is not None and _wants_page(request):
            return await html_page(request, status, code, message)
        return response

    @app.exception_handler(StudioloError)
    async def _domain(request: Request, exc: StudioloError) -> Response:
        headers: dict[str, str] = {}
        if isinstance(exc, RateLimited):
            headers["Retry-After"] = str(exc.retry_after)
        elif isinstance(exc, Unauthorized):
            headers["WWW-Authenticate"] = 'Bearer realm="studiolo"'
        response = JSONResponse(
            error_body(exc.code, exc.message, exc.details, _request_id(request)),
            status_code=exc.status_code,
            headers=headers or None,
        )
        if isinstance(exc, RateLimited) and face_of(request) is None:
            return response  # a script's 429 stays JSON even when it asked for pages
        return await page_or(request, exc.status_code, exc.code, exc.message, response)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        errors = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": plain_message(e), "type": e.get("type")}
            for e in exc.errors()
        ]
        json_invalid = bool(errors) and all(e["type"] == "json_invalid" for e in errors)
        message = "The body is not valid JSON." if json_invalid else describe_errors(errors)
        body = error_body("invalid_input", message, {"errors": errors}, _request_id(request))
        return await page_or(request, 422, "invalid_input", message, JSONResponse(body, status_code=422))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400 and isinstance(exc.__cause__, ValueError | RecursionError):
            # FastAPI reads a declared JSON body with json.loads and answers anything but a JSONDecodeError as a bare
            # 400: nesting past the recursion limit, an integer of over 4300 digits, bytes that are not UTF-8
            # (tests/integration/test_malformed_json.py).
            return await page_or(request, 422, "invalid_input", "The body is not valid JSON.", _invalid_json(request))
        codes = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 422: "invalid_input"}
        code = codes.get(exc.status_code, "http_error")
        response = JSONResponse(
            error_body(code, str(exc.detail), None, _request_id(request)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )
        message = "There is no page at this address." if exc.status_code == 404 else str(exc.detail)
        return await page_or(request, exc.status_code, code, message, response)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error", extra={"request_id": _request_id(request)})
        message = "Something went wrong on our side."
        response = JSONResponse(error_body("internal_error", message, None, _request_id(request)), status_code=500)
        return await page_or(request, 500, "internal_error", message, response)

    async def _database(request: Request, exc: Exception) -> Response:
        # A connection cut by a database restart or failover (the pool is renewed for the next request, see
        # db/session.py), a database refusing connections, a full pool, a deadlock or serialization failure: all
        # pass, so the client is told to retry, not that the server is broken. Any other database error is a bug.
        transient = isinstance(exc, OperationalError | PoolTimeout) or (
            isinstance(exc, DBAPIError) and exc.connection_invalidated
        )
        if not transient:
            return await _unexpected(request, exc)
        log.warning("database unavailable: %s", exc, extra={"request_id": _request_id(request)})
        message = "The database is not reachable right now; try again in a moment."
        body = error_body("database_unavailable", message, None, _request_id(request))
        response = JSONResponse(body, status_code=503, headers={"Retry-After": "1"})
        return await page_or(request, 503, "database_unavailable", message, response)

    app.add_exception_handler(DBAPIError, _database)
    app.add_exception_handler(PoolTimeout, _database)
