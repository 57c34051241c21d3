"""Refuse text that a database cannot store, once for every request, before any of it reaches a query.

PostgreSQL text cannot hold NUL (psycopg refuses the parameter, which surfaced as a 500) while SQLite stores it,
and an unpaired surrogate cannot be encoded as UTF-8 at all. ``TextGuard`` answers such a request with 422
``invalid_input`` instead, the same on both databases (tests/integration/test_unstorable_text.py; found by
signed-in fuzzing, tests/integration/test_fuzz.py):

- the path, the query string and header values are checked before routing;
- JSON and form-encoded bodies are checked as the application reads them (a body no route reads is never
  looked at), and the refusal goes through FastAPI's body parsing to the one mapping in errors.py;
- multipart forms carry binary files, so the code that reads their text fields checks those itself with
  ``refuse_unstorable`` (the only such route: POST /api/v1/generations).
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from studiolo.errors import InvalidInput, error_body

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_MESSAGE = "Text in the {} cannot contain NUL characters (\\u0000, %00) or unpaired surrogates."


def unstorable(value: Any) -> bool:
    """Whether ``value`` (text, or JSON-like dicts and lists of it, keys included) holds a character that database
    text cannot store. Iterative: a deeply nested document cannot exhaust the stack here."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if _UNSTORABLE.search(item):
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def refuse_unstorable(value: Any, where: str) -> None:
    """Raise ``InvalidInput`` (422 invalid_input) if ``value`` holds text no database can store."""
    if unstorable(value):
        raise InvalidInput(_MESSAGE.format(where))


def _body_kind(scope: Scope) -> str | None:
    """'json' or 'form' for the bodies this guard reads, None for the others (multipart, binary, none)."""
    content_type = b""
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            content_type = value.split(b";", 1)[0].strip().lower()
    # No content type at all is parsed as JSON, by FastAPI and by the generation route alike.
    if content_type in (b"", b"application/json") or content_type.endswith(b"+json"):
        return "json"
    if content_type == b"application/x-www-form-urlencoded":
        return "form"
    return None


def _unstorable_body(kind: str, body: bytearray) -> bool:
    if kind == "form":
        return b"%00" in body or b"\x00" in body
    # JSON can only carry NUL or a surrogate as a \u escape: a raw NUL byte is invalid JSON, which the
    # application's own parser reports. The NUL test is for UTF-16 and UTF-32 bodies, where "\u" has NULs inside.
    if b"\\u" not in body and b"\x00" not in body:
        return False
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return False  # not JSON: the application's parser answers 422 (or 400) as usual
    return unstorable(document)


def _unstorable_head(scope: Scope) -> str | None:
    """Where in the path, query string or headers a NUL (or, in the path, a surrogate) is; None if nowhere."""
    if _UNSTORABLE.search(scope.get("path", "")):
        return "request path"
    query: bytes = scope.get("query_string", b"")
    if b"%00" in query or b"\x00" in query:
        return "query string"
    for name, value in scope.get("headers", ()):
        if b"\x00" in value or b"\x00" in name:
            return "request headers"
    return None


class TextGuard:
    """ASGI middleware: 422 for a request whose path, query, headers or JSON/form body hold unstorable text."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        where = _unstorable_head(scope)
        if where is not None:
            await _send_422(send, where, scope.get("state", {}).get("request_id"))
            return
        kind = _body_kind(scope)
        if kind is None:
            await self.app(scope, receive, send)
            return
        body = bytearray()

        async def checked() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                body.extend(message.get("body", b""))
                if not message.get("more_body", False) and _unstorable_body(kind, body):
                    # An HTTPException, like BodyLimit's 413: FastAPI's body parsing re-raises it (any other
                    # exception raised while reading becomes a 400), and errors.py maps it to invalid_input.
                    raise StarletteHTTPException(422, _MESSAGE.format("request body"))
            return message

        await self.app(scope, checked, send)


async def _send_422(send: Send, where: str, request_id: str | None) -> None:
    body = json.dumps(error_body("invalid_input", _MESSAGE.format(where), None, request_id))
    headers = [(b"content-type", b"application/json")]  # X-Request-ID: added by the RequestId middleware
    await send({"type": "http.response.start", "status": 422, "headers": headers})
    await send({"type": "http.response.body", "body": body.encode()})
