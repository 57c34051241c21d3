"""The composition root: ``create_app(settings)`` wires settings, services and routers, nothing else."""

from __future__ import annotations

import itertools
import json
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from studiolo import __version__
from studiolo.compat.a1111 import router as a1111_router
from studiolo.compat.errors import a1111_error, openai_error
from studiolo.compat.openai_images import router as openai_images_router
from studiolo.domain.accounts.oauth_router import router as oauth_router
from studiolo.domain.accounts.router import admin_router
from studiolo.domain.accounts.router import router as accounts_router
from studiolo.domain.adapters.preview import router as control_preview_router
from studiolo.domain.adapters.router import router as adapters_router
from studiolo.domain.billing.router import admin_router as billing_admin_router
from studiolo.domain.billing.router import router as billing_router
from studiolo.domain.billing.stripe_router import router as stripe_router
from studiolo.domain.film.router import public_router as film_public_router
from studiolo.domain.film.router import router as film_router
from studiolo.domain.film.youtube_router import connect_router as youtube_connect_router
from studiolo.domain.film.youtube_router import router as youtube_router
from studiolo.domain.gallery.links import links_router
from studiolo.domain.gallery.router import router as gallery_router
from studiolo.domain.generation.router import admin_router as generation_admin_router
from studiolo.domain.generation.router import router as generation_router
from studiolo.domain.safety.provenance_router import router as provenance_router
from studiolo.domain.safety.review_router import router as review_router
from studiolo.domain.understanding.router import router as describe_router
from studiolo.domain.webhooks.router import router as webhooks_router
from studiolo.errors import error_body, install_error_handlers
from studiolo.lifecycle import ShutdownNotice
from studiolo.logs import request_id_var
from studiolo.metrics import HttpMetrics, ProcessMetrics
from studiolo.ops import router as ops_router
from studiolo.services import Services, build_services
from studiolo.settings import Settings
from studiolo.text_guard import TextGuard
from studiolo.web.pages import error_page
from studiolo.web.pages import install as install_pages

log = logging.getLogger("studiolo")


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, declared or streamed, before they fill memory."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", ())).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await _send_413(send, self.limit, scope.get("state", {}).get("request_id", ""))
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    # An HTTPException, not our PayloadTooLarge: FastAPI's body parsing turns any other exception
                    # raised while reading into a 400; this one it re-raises, and errors.py maps it to 413.
                    raise StarletteHTTPException(413, f"The request body is larger than {self.limit} bytes.")
            return message

        await self.app(scope, limited, send)


class RequestId:
    """Give every request an id (the client's X-Request-ID or a new one), echoed in the response and errors."""

    def __init__(self, app: ASGIApp):
        self.app = app
        # A random per-process prefix and a counter: unique, and cheaper than a uuid4 per request.
        self._prefix = os.urandom(6).hex()
        self._counter = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers", ())).get(b"x-request-id", b"").decode("latin-1")[:64]
        rid = given if given.isprintable() and given else f"{self._prefix}-{next(self._counter):x}"
        scope.setdefault("state", {})["request_id"] = rid
        log_token = request_id_var.set(rid)  # log lines written while handling the request carry its id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", rid.encode("latin-1"))]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(log_token)


async def _send_413(send: Send, limit: int, request_id: str) -> None:
    message = f"The request body is larger than {limit} bytes."
    body = json.dumps(error_body("payload_too_large", message, {"limit": limit}, request_id)).encode()
    headers = [(b"content-type", b"application/json")]  # X-Request-ID: added by the RequestId middleware
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _announce_setup(services: Services) -> None:
    """First run: say how to create the administrator (the setup page needs the token printed here)."""
    settings = services.settings
    if settings.auth_mode == "none":
        log.warning("STUDIOLO_AUTH_MODE=none: no sign-in, every request acts as the local owner")
        return
    if services.admin.needs_setup():
        base = settings.public_url or f"http://{settings.host}:{settings.port}"
        log.warning(
            "No administrator yet. Create one at %s/setup?token=%s or run `studiolo users create-admin`.",
            base.rstrip("/"),
            services.admin.setup_token(),
        )


def create_app(
    settings: Settings | None = None, *, services: Services | None = None, start_workers: bool = True
) -> FastAPI:
    settings = settings or (services.settings if services else Settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc = services or build_services(settings)
        app.state.services = svc
        metrics.bind(svc)
        if start_workers and settings.inline_workers > 0:
            svc.start_workers(settings.inline_workers)
        if svc.event_relay is not None:
            svc.event_relay.start()  # events from workers in other processes reach this process's streams
        svc.youtube.start()  # goes on with YouTube uploads a stopped process left
        _announce_setup(svc)
        try:
            yield
        finally:
            svc.youtube.close()
            if services is None:
                svc.close()
            else:
                for pool in svc.pools:
                    pool.stop()
                svc.pools.clear()

    app = FastAPI(
        title="Studiolo",
        version=__version__,
        description="Self-hosted AI creative studio: prompt in, images out, kept in a private gallery.",
        lifespan=lifespan,
        # /docs is ours (web/api_docs.py): Swagger UI from the package, under the pages' CSP; no CDN-loaded /redoc.
        docs_url=None,
        redoc_url=None,
    )
    metrics = ProcessMetrics()  # this app's own registry (GET /metrics), see metrics.py
    app.state.metrics = metrics
    app.state.shutdown_notice = ShutdownNotice()  # begun by `studiolo serve` as it shuts down (server.py)
    if services is not None:
        app.state.services = services
        metrics.bind(services)
    # The compatible faces answer errors in their clients' shapes (issue 18, compat/errors.py).
    install_error_handlers(app, html_page=error_page, faces={"/v1/": openai_error, "/sdapi/": a1111_error})

    # Inside BodyLimit: the body it reads has passed the size limit.
    app.add_middleware(TextGuard)
    # Multipart submissions carry up to two images plus form fields.
    app.add_middleware(BodyLimit, limit=2 * settings.max_upload_bytes + 1024 * 1024)
    app.add_middleware(HttpMetrics, metrics=metrics)  # outside BodyLimit: its 413s are counted too
    app.add_middleware(RequestId)  # added last = outermost, so even a 413 from BodyLimit carries the id
    app.include_router(generation_router, prefix="/api/v1")
    app.include_router(adapters_router, prefix="/api/v1")
    app.include_router(gallery_router, prefix="/api/v1")
    app.include_router(accounts_router, prefix="/api/v1")
    app.include_router(oauth_router, prefix="/api/v1")
    app.include_router(admin_router, prefix="/api/v1")
    app.include_router(generation_admin_router, prefix="/api/v1")
    app.include_router(billing_router, prefix="/api/v1")
    app.include_router(billing_admin_router, prefix="/api/v1")
    app.include_router(stripe_router, prefix="/api/v1")
    app.include_router(youtube_connect_router, prefix="/api/v1")
    app.include_router(youtube_router, prefix="/api/v1")  # before the films router: /films/youtube/... first
    app.include_router(film_router, prefix="/api/v1")
    app.include_router(film_public_router, prefix="/api/v1")
    app.include_router(provenance_router, prefix="/api/v1")
    app.include_router(review_router, prefix="/api/v1")
    app.include_router(describe_router, prefix="/api/v1")
    app.include_router(links_router, prefix="/api/v1")
    app.include_router(webhooks_router, prefix="/api/v1")
    app.include_router(control_preview_router, prefix="/api/v1")  # issue 19: POST /controls/preview
    # Issue 18: the APIs existing tools speak, mapped onto the same services (docs/compatibility.md).
    app.include_router(openai_images_router, prefix="/v1")
    app.include_router(a1111_router, prefix="/sdapi/v1")
    app.include_router(ops_router)
    install_pages(app)

    return app
