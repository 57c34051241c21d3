"""A local webhook receiver (Starlette app served by ThreadedServer) that verifies every delivery twice: with the
``standardwebhooks`` package and with an independent HMAC verifier written here from the spec's text. It records
what arrived and answers as told: 200, an error status, slowly, or not at all (``down``)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from tests.threaded_server import ThreadedServer


def spec_verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Standard Webhooks 1.0.0, by hand: the secret is base64 after ``whsec_``; the signed content is
    ``{webhook-id}.{webhook-timestamp}.{body}``; ``webhook-signature`` lists space-separated ``v1,<base64>``
    entries, any of which may match (constant-time)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    content = headers["webhook-id"].encode() + b"." + headers["webhook-timestamp"].encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    for entry in headers["webhook-signature"].split(" "):
        version, _, signature = entry.partition(",")
        if version == "v1" and hmac.compare_digest(signature, expected):
            return True
    return False


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    payload: dict[str, Any] | None  # what standardwebhooks verified (None: it refused)
    by_hand: bool  # what the spec verifier said


@dataclass
class Receiver:
    secrets: list[str] = field(default_factory=list)  # every secret a delivery may be verified with
    deliveries: list[Delivery] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)  # status codes to give, one per delivery; then 200
    delay: float = 0.0
    arrived: threading.Event = field(default_factory=threading.Event)
    arrival_times: list[float] = field(default_factory=list)
    server: ThreadedServer | None = None
    url: str = ""

    def _verify(self, headers: dict[str, str], body: bytes) -> tuple[dict[str, Any] | None, bool]:
        payload = None
        for secret in self.secrets:
            try:
                payload = Webhook(secret).verify(body, headers)
                break
            except Exception:  # noqa: BLE001 - standardwebhooks raises its own error types; any is a refusal
                continue
        return payload, any(spec_verify(s, headers, body) for s in self.secrets)

    async def _receive(self, request: Request) -> Response:
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        payload, by_hand = self._verify(headers, body)
        self.arrival_times.append(time.monotonic())
        self.deliveries.append(Delivery(request.url.path, headers, body, payload, by_hand))
        self.arrived.set()
        if self.delay:
            time.sleep(self.delay)  # noqa: ASYNC251 - a slow receiver is the point
        status = self.answers.pop(0) if self.answers else 200
        return PlainTextResponse("ok" if status < 300 else "nope " * 400, status_code=status)

    def start(self) -> str:
        app = Starlette(routes=[Route("/{path:path}", self._receive, methods=["POST"])])
        self.server = ThreadedServer(app, "webhook receiver")
        self.url = self.server.start()
        return self.url

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def wait(self, count: int, timeout: float = 10.0) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        while len(self.deliveries) < count and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.deliveries

    def reset(self) -> None:
        self.deliveries.clear()
        self.answers.clear()
        self.arrival_times.clear()
        self.delay = 0.0


def signed_now(headers: dict[str, str]) -> datetime:
    return datetime.fromtimestamp(int(headers["webhook-timestamp"]))
