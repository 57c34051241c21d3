"""The data directory is private: 0700, with the SQLite database and its companions 0600, on new installs and on
old ones (whose modes are fixed at start, with a log line). SQLite only: the files exist only there."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from studiolo.services import build_services
from tests.conftest import make_settings
from tests.helpers import submit


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask, under which files are created world-readable unless the code says otherwise."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.usefixtures("umask_022")
def test_a_new_install_is_private(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "new" / "data")
    services = build_services(settings)
    try:
        submit(services, prompt="something private")  # a write: SQLite makes the -wal and -shm files
        db = settings.data_dir / "studiolo.db"
        assert (settings.data_dir / "studiolo.db-wal").exists()
        assert mode(settings.data_dir) == 0o700
        for path in (db, settings.data_dir / "studiolo.db-wal", settings.data_dir / "studiolo.db-shm"):
            assert mode(path) == 0o600, (path, oct(mode(path)))
        assert mode(settings.data_dir / "secret.key") == 0o600
    finally:
        services.close()


@pytest.mark.usefixtures("umask_022")
def test_an_old_install_is_made_private_at_start(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(tmp_path / "data")
    build_services(settings).close()
    db = settings.data_dir / "studiolo.db"
    # As an older version left it, with a process still holding the database open (so -wal and -shm exist).
    holder = sqlite3.connect(db)
    try:
        holder.execute("PRAGMA journal_mode=WAL")
        holder.execute("CREATE TABLE IF NOT EXISTS scratch (x)")
        holder.execute("INSERT INTO scratch VALUES (1)")
        holder.commit()
        old = [settings.data_dir, db, *(db.with_name(db.name + s) for s in ("-wal", "-shm"))]
        settings.data_dir.chmod(0o755)
        for path in old[1:]:
            path.chmod(0o644)
        (settings.data_dir / "secret.key").chmod(0o644)

        with caplog.at_level(logging.WARNING, logger="studiolo"):
            build_services(settings).close()
    finally:
        holder.close()

    assert mode(settings.data_dir) == 0o700
    assert mode(db) == 0o600
    assert mode(settings.data_dir / "secret.key") == 0o600
    lines = [r.getMessage() for r in caplog.records if "could be read by other users" in r.getMessage()]
    assert f"{settings.data_dir} could be read by other users of this machine: mode 0755 changed to 0700" in lines
    assert f"{db} could be read by other users of this machine: mode 0644 changed to 0600" in lines
    for suffix in ("-wal", "-shm"):
        assert any(line.startswith(f"{db}{suffix} could be read") for line in lines), lines
    assert any("secret.key could be read" in line for line in lines), lines

    # Already private: nothing to say at the next start.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="studiolo"):
        build_services(settings).close()
    assert not [r for r in caplog.records if "could be read by other users" in r.getMessage()]
