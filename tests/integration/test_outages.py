"""Dependencies that go away: a Redis outage must not take sign-in or submissions down, and processes that
start together on an empty PostgreSQL database must not trip over each other's migrations, and a database restart
must cost at most the requests in flight."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.pool import NullPool

from studiolo.app import create_app
from studiolo.db import migrate
from studiolo.db.session import PING_AFTER_IDLE_SECONDS
from studiolo.services import build_services
from tests.helpers import create_user

PG_SERVER = os.environ.get("STUDIOLO_TEST_DATABASE_URL") or "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def test_rate_limits_fail_open_while_redis_is_unreachable(settings_factory: Any) -> None:
    svc = build_services(
        settings_factory(redis_url="redis://127.0.0.1:1/0", rate_limits_enabled=True), upgrade_db=False
    )
    try:
        create_user(svc, "dora@example.com", password="velvet-harbor-1937")
        with TestClient(create_app(services=svc, start_workers=False)) as api:
            login = api.post("/api/v1/auth/login", json={"email": "dora@example.com", "password": "velvet-harbor-1937"})
            assert login.status_code == 200, login.text
            headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
            job = api.post("/api/v1/generations", json={"prompt": "x", "size": "64x64", "steps": 1}, headers=headers)
            assert job.status_code == 202, job.text
            wrong = api.post("/api/v1/auth/login", json={"email": "dora@example.com", "password": "wrong password 1"})
            assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_credentials"
        assert svc.limiter.storage_errors > 0  # it did try Redis, and said so in the log
    finally:
        svc.close()


def test_concurrent_upgrades_of_an_empty_postgresql_database() -> None:
    admin = create_engine(PG_SERVER, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    name = f"studiolo_mig_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    # Separate processes, as in production (alembic's context is per process: threads would share it).
    script = "import sys; from studiolo.db import migrate; migrate.upgrade(sys.argv[1])"
    try:
        procs = [
            subprocess.Popen([sys.executable, "-c", script, url], stderr=subprocess.PIPE, text=True) for _ in range(3)
        ]
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
        assert migrate.current_revision(url) is not None
        engine = create_engine(url, poolclass=NullPool)
        assert {"jobs", "images", "users", "api_keys"} <= set(inspect(engine).get_table_names())
        engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _cut_connections(admin: Any, name: str) -> int:
    """What a database restart does to a client's pool: the server closes every connection to ``name``. Returns when
    they are gone (pg_terminate_backend only signals them)."""
    backends = text("SELECT pid FROM pg_stat_activity WHERE datname = :name")
    with admin.connect() as conn:
        cut = conn.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name"), {"name": name}
        ).all()
        deadline = time.monotonic() + 10
        while conn.execute(backends, {"name": name}).first() is not None:
            assert time.monotonic() < deadline, "the backends did not exit"
            time.sleep(0.01)
    return len(cut)


def test_pooled_connections_cut_by_a_database_restart_are_replaced(settings_factory: Any) -> None:
    """Connections idle for a while are pinged before use and replaced when dead; one cut while in steady use fails
    its request with a 503 (not a 500) and the pool is renewed for the next request."""
    admin = create_engine(PG_SERVER, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    name = f"studiolo_cut_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    svc = build_services(settings_factory(database_url=url, auth_mode="none"), upgrade_db=True)
    body = {"prompt": "a lighthouse", "size": "64x64", "steps": 1}
    try:
        with TestClient(create_app(services=svc, start_workers=False)) as api:
            assert api.post("/api/v1/generations", json=body).status_code == 202

            # In steady use (here: no connection counts as idle, so none is pinged): the request on a dead
            # connection is refused as a retryable 503 ...
            svc.db.ping_after_idle_seconds = 3600.0
            assert _cut_connections(admin, name) >= 1
            cut = api.get("/api/v1/jobs")
            assert cut.status_code == 503, cut.text
            assert cut.json()["error"]["code"] == "database_unavailable"
            assert cut.headers["retry-after"] == "1"
            # ... and the pool holds no connection from before the cut any more.
            assert len(api.get("/api/v1/jobs").json()["items"]) == 1
            assert api.post("/api/v1/generations", json=body).status_code == 202

            # After a pause, dead connections are found by the ping and replaced: no request fails.
            svc.db.ping_after_idle_seconds = PING_AFTER_IDLE_SECONDS
            assert _cut_connections(admin, name) >= 1
            time.sleep(PING_AFTER_IDLE_SECONDS + 0.2)
            listed = api.get("/api/v1/jobs")
            assert listed.status_code == 200, listed.text
            assert len(listed.json()["items"]) == 2
    finally:
        svc.close()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
