"""Shared fixtures: real databases (SQLite file copies, or fresh PostgreSQL databases), files and services."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.pool import NullPool

from studiolo.app import create_app
from studiolo.db import migrate
from studiolo.services import Services, build_services
from studiolo.settings import Settings
from tests.helpers import auth_headers

# The whole suite runs on SQLite by default and on PostgreSQL when this names a server (a database URL whose
# user may create databases), e.g. postgresql+psycopg://postgres@127.0.0.1:5432/postgres (.ci/run does both).
PG_URL = os.environ.get("STUDIOLO_TEST_DATABASE_URL", "")


# The PostgreSQL pass (.ci/run's second run) keeps only tests that can reach PostgreSQL: through the database fixtures,
# or by reading the variable themselves. Any other test (most unit tests, and tests that build their own SQLite
# install) would run exactly as it did on the SQLite pass: it is deselected there rather than run twice (~2 min).
_PG_FIXTURES = frozenset({"database_url", "pg_databases"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not PG_URL:
        return
    reads_variable: dict[str, bool] = {}

    def reaches_postgres(item: pytest.Item) -> bool:
        if _PG_FIXTURES & set(getattr(item, "fixturenames", ())):
            return True
        path = str(item.path)
        if path not in reads_variable:
            reads_variable[path] = "STUDIOLO_TEST_DATABASE_URL" in item.path.read_text(encoding="utf-8")
        return reads_variable[path]

    kept = [item for item in items if reaches_postgres(item)]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if not reaches_postgres(item)])
        items[:] = kept


class PgDatabases:
    """One migrated template database per session; every test gets a fresh copy (CREATE DATABASE ... TEMPLATE:
    milliseconds, and each test sees exactly the migrated schema, like the SQLite file copies)."""

    def __init__(self, server_url: str):
        self.server = make_url(server_url)
        self.prefix = f"studiolo_t{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.template = f"{self.prefix}_tpl"
        self.created: list[str] = []
        self._admin = create_engine(self.server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        self._execute(f'CREATE DATABASE "{self.template}"')
        migrate.upgrade(self.url(self.template))

    def _execute(self, sql: str) -> None:
        with self._admin.connect() as conn:
            conn.execute(text(sql))

    def url(self, name: str) -> str:
        return self.server.set(database=name).render_as_string(hide_password=False)

    def fresh(self) -> str:
        name = f"{self.prefix}_{len(self.created)}"
        self._execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        self.created.append(name)
        return self.url(name)

    def drop(self, url: str) -> None:
        name = make_url(url).database
        self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        for name in [*self.created, self.template]:
            self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._admin.dispose()


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[PgDatabases | None]:
    if not PG_URL:
        yield None
        return
    dbs = PgDatabases(PG_URL)
    try:
        yield dbs
    finally:
        dbs.close()


@pytest.fixture
def database_url(pg_databases: PgDatabases | None) -> Iterator[str]:
    """ "" (SQLite in the data directory) or a fresh migrated PostgreSQL database for this test."""
    if pg_databases is None:
        yield ""
        return
    url = pg_databases.fresh()
    yield url
    pg_databases.drop(url)


@pytest.fixture(scope="session")
def migrated_db_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Alembic runs once per session; each test gets a copy of the migrated file (fast and isolated)."""
    path = tmp_path_factory.mktemp("template") / "studiolo.db"
    migrate.upgrade(f"sqlite:///{path}")
    return path


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "env": "test",
        "data_dir": data_dir,
        "enable_echo_engine": True,
        "default_model": "echo",
        "inline_workers": 0,
        "lease_seconds": 2.0,
        "heartbeat_seconds": 0.2,
        "retry_backoff_seconds": 0.05,
        "worker_poll_seconds": 0.2,
        # Cheap hashing (the production cost is measured in bench/auth.py) and no limits except where tested.
        "argon2_time_cost": 1,
        "argon2_memory_kib": 1024,
        "rate_limits_enabled": False,
        # The NSFW output check costs ~70 ms an image (bench/safety_nsfw.py): tests of other features leave it off,
        # the safety tests turn it on (tests/unit/test_nsfw.py, tests/integration/test_review_queue.py) and the
        # end-to-end tests run the real `studiolo` with its defaults, the check included.
        "nsfw_check": False,
        # Converting a model for the accelerated CPU path costs seconds per model (tiny ones included): tests of
        # other features run fp32 as loaded; tests/unit/test_cpu_accel*.py, the engine contract suite and the
        # end-to-end tests (the real `studiolo` with its defaults) run the accelerated paths.
        "cpu_accel": "off",
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings_factory(tmp_path: Path, migrated_db_template: Path, database_url: str) -> Any:
    def factory(**overrides: Any) -> Settings:
        if database_url:
            overrides.setdefault("database_url", database_url)
        settings = make_settings(tmp_path / "data", **overrides)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db_file = settings.data_dir / "studiolo.db"
        if not settings.database_url and not db_file.exists():
            shutil.copy(migrated_db_template, db_file)
        return settings

    return factory


@pytest.fixture
def settings(settings_factory: Any) -> Settings:
    s: Settings = settings_factory()
    return s


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    svc = build_services(settings, upgrade_db=False)
    yield svc
    svc.close(timeout=10)


@pytest.fixture
def client(services: Services) -> Iterator[TestClient]:
    """A client signed in as the install's local owner (a real session and Bearer token)."""
    app = create_app(services=services, start_workers=False)
    with TestClient(app) as c:
        c.headers.update(auth_headers(services))
        yield c


@pytest.fixture
def api(services: Services) -> Iterator[TestClient]:
    """An anonymous client (no credentials) on the same services as ``client``."""
    with TestClient(create_app(services=services, start_workers=False)) as c:
        yield c


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """torch with one thread for a test module (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``):
    tiny models spend their time in thread synchronisation, and on a small shared CI box one thread is several
    times faster and far steadier."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
