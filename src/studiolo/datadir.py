"""The data directory on disk: private to the account that runs Studiolo.

It holds every user's email address, prompt and password hash (the SQLite database), their pictures and the key
that signs sessions. Pictures and the key were written 0600 from the start, but the directory (0755) and the
database (0644) followed the umask, so any account on the machine could read them. ``secure_data_dir`` runs at
every start (``build_services``, ``studiolo db upgrade``): new installs start private, old ones are made so, with
a log line (tests/integration/test_data_dir.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path

from sqlalchemy import make_url

from studiolo.settings import Settings

log = logging.getLogger(__name__)

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
# SQLite's companions of a database file: the write-ahead log, its shared-memory index, a rollback journal.
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def sqlite_path(database_url: str) -> Path | None:
    """The file of a SQLite database URL; None for another database or an in-memory one."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


def sqlite_files(path: Path) -> list[Path]:
    """A SQLite database file and its companions (which may or may not exist)."""
    return [path, *(path.with_name(path.name + suffix) for suffix in SQLITE_COMPANIONS)]


def secure_data_dir(settings: Settings) -> None:
    """Create the data directory (0700) and the SQLite database file (0600) if missing, and take group and other
    permissions away from existing ones, the database's companions and ``secret.key``.

    The database file is created here, empty, rather than by SQLite: SQLite gives a new database the umask's mode
    (0644), and gives its -wal and -shm files the mode of the database file, so creating it 0600 keeps all three
    private."""
    data_dir = settings.data_dir
    data_dir.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    make_private(data_dir)
    make_private(data_dir / "secret.key")
    database = sqlite_path(settings.resolved_database_url)
    if database is None:
        return
    database.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
    for path in sqlite_files(database):
        make_private(path)


def make_private(path: Path) -> None:
    """Remove group and other permissions from ``path`` if it exists, saying so in the log when it changes."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    private = mode & ~0o077
    if mode == private:
        return
    try:
        path.chmod(private)
    except OSError as exc:  # owned by another account, a read-only mount: say so, and carry on
        log.warning("%s can be read by other users of this machine (mode %04o), and not changed: %s", path, mode, exc)
        return
    log.warning("%s could be read by other users of this machine: mode %04o changed to %04o", path, mode, private)
