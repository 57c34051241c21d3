"""Dependencies that go away: a Redis outage must not take sign-in or submissions down, and processes that
start together on an empty PostgreSQL database must not trip over each other's migrations."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.pool import NullPool

from studiolo.app import create_app
from studiolo.db import migrate
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
