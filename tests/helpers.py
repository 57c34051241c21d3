"""Small helpers shared by tests (not fixtures)."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import event, func, select

from studiolo.app import create_app
from studiolo.db.base import utcnow
from studiolo.db.session import Database
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
# Routes authenticated by a signature instead of a credential (Stripe's webhook: its Stripe-Signature header; a signed
# image link, issue 18: its signature query parameter).
SIGNED_ROUTES = ("/api/v1/billing/stripe/webhook", "/api/v1/links/images/{image_id}")
# A public film's share link: the token is the credential, and only while its owner keeps the film public.
SHARE_ROUTES = ("/api/v1/films/shared/{token}", "/api/v1/films/shared/{token}/files/{name}")


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


@contextmanager
def writes_meet(db: Database, statement: str, parties: int, timeout: float = 2.0) -> Iterator[threading.Barrier]:
    """Hold every statement starting with ``statement`` (e.g. "UPDATE users") until ``parties`` of them are about to
    run, or ``timeout`` seconds pass: the interleaving that exposes a lost update or a check-then-act race, made
    certain instead of left to chance. Code that serialises those writes correctly keeps the others away, the
    barrier breaks after ``timeout``, and the writes go on one after the other. A bound on waiting, not a timing
    assertion."""
    barrier = threading.Barrier(parties, timeout=timeout)
    prefix = statement.upper() + " "

    def meet(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        if sql.lstrip().upper().startswith(prefix):
            with suppress(threading.BrokenBarrierError):
                barrier.wait()

    event.listen(db.engine, "before_cursor_execute", meet)
    try:
        yield barrier
    finally:
        event.remove(db.engine, "before_cursor_execute", meet)


def in_threads(count: int, fn: Callable[[], Any]) -> list[BaseException | None]:
    """Run ``fn`` in ``count`` real threads started together; what each raised (None if it returned)."""
    start = threading.Barrier(count)
    outcomes: list[BaseException | None] = [None] * count

    def run(i: int) -> None:
        start.wait()
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test, which checks every outcome
            outcomes[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a thread did not finish"
    return outcomes


@contextmanager
def statements(db: Database) -> Iterator[list[str]]:
    """The SQL text of every statement run on ``db`` while the block runs, in order (without parameters)."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
