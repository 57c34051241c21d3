"""What the local Stability, Replicate and fal servers share: recording, failure modes, auth, served files.

Every server records each request (method, path, host, headers, query, and what its handler adds: ``json``,
``form``, ``files``) in ``requests`` and answers by ``mode``:

- ``good``; ``rate_limited``: 429 with ``Retry-After: 0`` for the first ``fail_times`` API calls, then good;
- ``error``: every API call 500; ``slow``: API calls answer after ``slow_seconds``; ``malformed``: replies that
  break the protocol (each server says how); ``refusal``: the provider's content refusal (each server's own).

A wrong key gets the provider's 401. Images the server links to are served at ``/files/NAME`` (no auth, like a
CDN) and every download is recorded too, so tests can check that the key never went there.
"""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.domain.generation.models import Job
from studiolo.domain.generation.schemas import JobView
from studiolo.engines.remote.base import RemoteEngine
from studiolo.services import Services, build_services
from studiolo.settings import Settings
from tests.threaded_server import ThreadedServer


def picture(seed: int, size: tuple[int, int]) -> bytes:
    """A PNG whose colour depends on ``seed`` (so images of different seeds differ)."""
    color = (seed * 37 % 256, seed * 91 % 256, seed * 53 % 256)
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


class FakeProvider:
    """A provider's protocol over real HTTP (subclasses add their routes with ``api_routes``)."""

    what = "provider"

    def __init__(self, key: str) -> None:
        self.key = key
        self.mode = "good"
        self.fail_times = 2
        self.slow_seconds = 2.0
        self.requests: list[dict[str, Any]] = []
        self.files: dict[str, bytes] = {}
        self.canceled: list[str] = []  # ids of the requests a client canceled (queue-style providers)
        self._lock = threading.Lock()
        self._failed = 0
        routes = [Route("/files/{name}", self._file, methods=["GET"]), *self.api_routes()]
        self._server = ThreadedServer(Starlette(routes=routes), f"{self.what} server")
        self.url = ""

    def api_routes(self) -> list[Route]:
        raise NotImplementedError

    def auth_ok(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {self.key}"

    def unauthorized(self) -> Response:
        raise NotImplementedError

    def __enter__(self) -> FakeProvider:
        self.url = self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()

    def reset(self, mode: str = "good") -> None:
        with self._lock:
            self.mode = mode
            self._failed = 0
            self.requests.clear()
            self.canceled.clear()

    def api_calls(self) -> list[dict[str, Any]]:
        """The recorded requests that were not file downloads."""
        return [r for r in self.requests if not r["path"].startswith("/files/")]

    def record(self, request: Request) -> dict[str, Any]:
        entry = {
            "method": request.method,
            "path": request.url.path,
            "host": request.headers.get("host", ""),
            "headers": dict(request.headers),
            "query": dict(request.query_params),
        }
        with self._lock:
            self.requests.append(entry)
        return entry

    async def common(self, request: Request) -> tuple[dict[str, Any], Response | None]:
        """Record the call; the answer of a failure mode or a wrong key, if any (None: go on)."""
        entry = self.record(request)
        with self._lock:
            mode = self.mode
            if mode == "rate_limited" and self._failed < self.fail_times:
                self._failed += 1
                return entry, JSONResponse({"detail": "Request was throttled."}, 429, headers={"Retry-After": "0"})
        if mode == "error":
            return entry, JSONResponse({"detail": "Internal server error"}, status_code=500)
        if mode == "slow":
            await asyncio.sleep(self.slow_seconds)
        if not self.auth_ok(request):
            return entry, self.unauthorized()
        return entry, None

    def link(self, name: str, data: bytes, base: str | None = None) -> str:
        """Serve ``data`` at /files/``name``; its URL (on ``base``, the server's own URL by default)."""
        self.files[name] = data
        return f"{base or self.url}/files/{name}"

    async def _file(self, request: Request) -> Response:
        self.record(request)
        data = self.files.get(request.path_params["name"])
        if data is None:
            return Response("Not Found", status_code=404)
        return Response(data, media_type="image/png")


# -- end-to-end helpers: the real services with one provider configured ---------------------------------------------
def fresh_breakers() -> None:
    """Forget the per-process circuit breakers, so one test's failures never pause the next test's provider."""
    RemoteEngine._breakers.clear()


@contextmanager
def remote_services(settings_factory: Callable[..., Settings], **overrides: Any) -> Iterator[Services]:
    """Services whose settings offer a provider (``overrides``: its key and base URL), few and instant retries."""
    overrides.setdefault("provider_max_retries", 1)
    svc = build_services(settings_factory(provider_breaker_failures=1000, **overrides), upgrade_db=False)
    try:
        yield svc
    finally:
        svc.close(timeout=10)


def job_row(svc: Services, job_id: str) -> dict[str, Any]:
    """The job's row as the database has it: status, error_code, provider_cost."""
    with svc.db.session() as session:
        job = session.get_one(Job, job_id)
        return {"status": job.status, "error_code": job.error_code, "provider_cost": job.provider_cost}


def stored_png(svc: Services, view: JobView, k: int = 0) -> bytes:
    """The original PNG the gallery stored for the job's image ``k``."""
    key, _media = svc.gallery.file(LOCAL_USER_ID, view.outputs[k].image_id, "original")
    return svc.gallery.read(key)
