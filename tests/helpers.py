"""Small helpers shared by tests (not fixtures)."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import func, select

from studiolo.app import create_app
from studiolo.db.base import utcnow
from studiolo.domain.accounts.audit import Origin
from studiolo.domain.accounts.models import LOCAL_USER_ID, User
from studiolo.domain.generation.models import Job
from studiolo.domain.generation.schemas import GenerationParams, JobView
from studiolo.domain.generation.worker import Worker
from studiolo.services import Services, build_services

TERMINAL = ("succeeded", "failed", "canceled")

# Routes anyone may call without credentials: sign-up, sign-in, codes, reset and first-run setup.
PUBLIC_AUTH_ROUTES = (
    "/api/v1/auth/register",
    "/api/v1/auth/resend-code",
    "/api/v1/auth/verify",
    "/api/v1/auth/login",
    "/api/v1/auth/refresh",
    "/api/v1/auth/password-reset",
    "/api/v1/auth/password-reset/confirm",
    "/api/v1/setup",
)


@contextmanager
def app_with(settings_factory: Callable[..., Any], **overrides: Any) -> Iterator[tuple[Services, TestClient]]:
    """Services and an anonymous client built with ``overrides`` (e.g. real rate limits)."""
    svc = build_services(settings_factory(**overrides), upgrade_db=False)
    try:
        with TestClient(create_app(services=svc, start_workers=False)) as c:
            yield svc, c
    finally:
        svc.close()


def drain(services: Services, worker_id: str = "test-worker") -> int:
    """Run queued jobs in this thread until none is ready; returns how many ran."""
    worker = Worker(worker_id, services.queue, services.runner, services.dispatch, services.settings)
    stop = threading.Event()
    count = 0
    while worker.run_once(stop):
        count += 1
    return count


def wait_terminal(services: Services, job_id: str, timeout: float = 30.0, owner: str = LOCAL_USER_ID) -> JobView:
    deadline = time.monotonic() + timeout
    while True:
        view = services.generation.get(owner, job_id)
        if view.status in TERMINAL:
            return view
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {view.status} after {timeout} s")
        time.sleep(0.02)


def submit(services: Services, owner: str = LOCAL_USER_ID, **params: Any) -> str:
    params.setdefault("prompt", "a lighthouse at dusk")
    params.setdefault("size", "64x64")
    params.setdefault("steps", 2)
    # As the install itself (like the CLI): these tests are not about who may set system_priority.
    accepted, _ = services.generation.submit(owner, GenerationParams(**params), as_admin=True)
    return accepted.id


def png_bytes(
    size: tuple[int, int] = (64, 64), color: tuple[int, int, int] = (200, 30, 30), mode: str = "RGB"
) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color if mode == "RGB" else 255).save(buf, format="PNG")
    return buf.getvalue()


def auth_headers(services: Services, user_id: str = LOCAL_USER_ID) -> dict[str, str]:
    """A real signed-in session (refresh-token row + access token) for ``user_id``, as a Bearer header."""
    with services.db.session() as session:
        user = session.get_one(User, user_id)
        pair = services.accounts.start_session(session, user, Origin("127.0.0.1", "tests"))
    return {"Authorization": f"Bearer {pair.access_token}"}


def create_user(
    services: Services, email: str, *, password: str | None = None, role: str = "user", status: str = "active"
) -> str:
    """An account straight in the database (verified, active unless told), for tests that are not about sign-up."""
    with services.db.session() as session:
        user = User(email=email, role=role, status=status, display_name=email.split("@")[0])
        if status != "pending":
            user.email_verified_at = utcnow()
        if password is not None:
            user.password_hash = services.accounts.hashing.hash(password)
        session.add(user)
        session.flush()
        return user.id


def job_count(services: Services) -> int:
    """How many jobs exist, of every user and status."""
    with services.db.session() as session:
        return int(session.scalar(select(func.count()).select_from(Job)) or 0)
