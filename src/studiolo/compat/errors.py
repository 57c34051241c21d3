"""Errors in the shapes other APIs' clients expect (issue 18): the same domain errors, another envelope.

Registered per path prefix in app.py (errors.install_error_handlers ``faces``). Stable Studiolo codes stay in the
body (OpenAI's ``code``, A1111's ``error``) so a client that knows Studiolo can still branch on them.
"""

from __future__ import annotations

from typing import Any

# OpenAI's error types by the status it answers with (the openai SDK maps the status to its exception class).
_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
}


def _param(details: dict[str, Any]) -> str | None:
    """The request field an error is about, as OpenAI's ``param`` names it."""
    for key in ("field", "param"):
        if isinstance(details.get(key), str):
            return str(details[key])
    errors = details.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        loc = [str(p) for p in errors[0].get("loc", ())]
        loc = loc[1:] if loc[:1] == ["body"] else loc
        return ".".join(loc) or None
    return None


def openai_error(
    status: int, code: str, message: str, details: dict[str, Any], request_id: str | None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """``{"error": {"message", "type", "param", "code"}}`` with OpenAI's statuses: validation is 400 (not 422), and
    an exhausted quota or credit balance is 429 ``insufficient_quota`` with ``x-should-retry: false`` (the SDK
    retries other 429s; retrying a quota only burns time)."""
    headers: dict[str, str] = {}
    if status == 422:
        status = 400
    if status == 402:
        status, kind = 429, "insufficient_quota"
        headers["x-should-retry"] = "false"
    elif status >= 500:
        kind = "server_error"
    else:
        kind = _OPENAI_TYPES.get(status, "invalid_request_error")
    if "job_id" in details:
        # The job was queued (and may go on): a retry would queue another one, so the SDK must not retry a 5xx/409.
        headers["x-should-retry"] = "false"
    if code == "not_authenticated" or code == "invalid_token":
        code = "invalid_api_key"
    body = {"error": {"message": message, "type": kind, "param": _param(details), "code": code}}
    if request_id:
        headers["x-request-id"] = request_id
    return status, body, headers


def a1111_error(
    status: int, code: str, message: str, details: dict[str, Any], request_id: str | None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """AUTOMATIC1111's ``{error, detail, body, errors}`` (its api.py wraps every exception so), with ``error`` the
    Studiolo code; a 401 asks for HTTP Basic, as ``--api-auth`` does."""
    headers = {"WWW-Authenticate": 'Basic realm="studiolo"'} if status == 401 else {}
    errors = details.get("errors", "")
    return status, {"error": code, "detail": message, "body": "", "errors": errors if errors else ""}, headers
