"""Shared fixtures: real SQLite databases (migrated once, copied per test), real files, real services."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from studiolo.app import create_app
from studiolo.db import migrate
from studiolo.services import Services, build_services
from studiolo.settings import Settings


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
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings_factory(tmp_path: Path, migrated_db_template: Path) -> Any:
    def factory(**overrides: Any) -> Settings:
        settings = make_settings(tmp_path / "data", **overrides)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db_file = settings.data_dir / "studiolo.db"
        if not db_file.exists():
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
    app = create_app(services=services, start_workers=False)
    with TestClient(app) as c:
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
