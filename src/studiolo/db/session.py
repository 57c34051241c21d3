"""Database engine and sessions: one ``Database`` per process, built from settings."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, exc, text
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cur = dbapi_connection.cursor()
        # WAL lets the API read while a worker writes; busy_timeout turns lock contention into a
        # short wait instead of "database is locked" errors under concurrent submits.
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        # Deleted rows are overwritten with zeros, not just unlinked: a deleted account's email and prompts must
        # not stay readable in the file (Database.scrub; tests/integration/test_secure_delete.py).
        cur.execute("PRAGMA secure_delete=ON")
        cur.close()


_WRITE_PREFIXES = ("INSERT", "UPDATE", "DELETE", "REPLACE")


def _serialize_sqlite_writes(engine: Engine, wait_seconds: float) -> None:
    """Queue this process's SQLite writers on a Python lock instead of SQLite's busy handler.

    SQLite allows one writer at a time; a blocked writer otherwise sleeps in the busy handler with a
    growing back-off (1, 2, 5, 10 ... ms), so 40 request threads inserting at once spend most of their
    time asleep. A lock hands the write slot over at once. pysqlite begins a transaction only at the first
    DML statement, which is exactly where the lock is taken; it is released on commit or rollback, and a
    connection checked back into the pool never keeps it. Writers in other processes still meet SQLite's
    own locking, and a lock not obtained within ``wait_seconds`` falls back to it rather than deadlock.
    (bench/api.py: enqueue rate with 50 concurrent clients.)
    """
    lock = threading.Lock()

    @event.listens_for(engine, "before_cursor_execute")
    def _take(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "_write_lock" not in conn.info and statement.lstrip()[:7].upper().startswith(_WRITE_PREFIXES):
            if lock.acquire(timeout=wait_seconds):
                conn.info["_write_lock"] = True
            else:
                log.warning("SQLite write lock not obtained in %.0f s; relying on SQLite locking", wait_seconds)
                conn.info["_write_lock"] = False

    def _release_conn(conn: Any, *_args: Any) -> None:
        if conn.info.pop("_write_lock", False):
            lock.release()

    def _release_record(_dbapi_conn: Any, record: Any, *_args: Any) -> None:
        if record is not None and record.info.pop("_write_lock", False):
            lock.release()

    event.listen(engine, "commit", _release_conn)
    event.listen(engine, "rollback", _release_conn)
    event.listen(engine.pool, "checkin", _release_record)


# How long a checkpoint after a deletion waits for readers of older snapshots (Database.checkpoint).
CHECKPOINT_WAIT_MS = 5000

# A pooled connection used this recently is taken as alive without a ping (see _ping_when_idle).
PING_AFTER_IDLE_SECONDS = 1.0


def _ping_when_idle(engine: Engine, idle_seconds: Callable[[], float]) -> None:
    """Ping a pooled connection before use only when it sat idle for ``idle_seconds()`` or more.

    ``pool_pre_ping`` pings on every checkout: one more round trip for every unit of work, a tenth of a job
    submission's time on PostgreSQL (bench/queue.py). A connection that answered a moment ago almost surely
    still works; one idle for longer may have been cut by a database restart, a failover or an idle timeout,
    and is pinged and replaced, as with ``pool_pre_ping``. A connection that dies while in steady use fails
    its statement instead: SQLAlchemy then discards every connection of the pool made before that moment,
    and errors.py answers that request with 503 ``database_unavailable`` (tests/integration/test_outages.py).
    """

    @event.listens_for(engine.pool, "checkin")
    def _idle_from(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine.pool, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop("idle_since", None)
        if since is None or time.monotonic() - since < idle_seconds():
            return  # a new connection, or one in use a moment ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            # The pool discards this connection and checks out another (a new one), up to three times.
            raise exc.DisconnectionError(f"pooled connection is gone: {error}") from error


class Database:
    """Owns the SQLAlchemy engine and the session factory."""

    def __init__(self, url: str, *, echo: bool = False, ping_after_idle_seconds: float = PING_AFTER_IDLE_SECONDS):
        self.url = url
        self.ping_after_idle_seconds = ping_after_idle_seconds  # PostgreSQL; read at every checkout
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {"echo": echo, "future": True}
        if self.is_sqlite:
            path = url.removeprefix("sqlite:///")
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            kwargs["pool_size"] = 20
            kwargs["max_overflow"] = 20
        else:
            kwargs["pool_size"] = 10
            kwargs["max_overflow"] = 20
        self.engine = create_engine(url, **kwargs)
        if self.is_sqlite:
            _configure_sqlite(self.engine)
            _serialize_sqlite_writes(self.engine, wait_seconds=30.0)
        else:
            _ping_when_idle(self.engine, lambda: self.ping_after_idle_seconds)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self, *, relaxed: bool = False) -> Iterator[Session]:
        """A unit of work: commits on success, rolls back on any exception.

        ``relaxed`` (PostgreSQL): the commit does not wait for the WAL flush (``synchronous_commit=off``). Only for
        writes that are safe to lose in a database crash, such as a claim or a progress step (a lost claim means
        the job is claimed again; the lease check at store time keeps outputs exactly-once); never for results.
        """
        with self.sessionmaker() as session:
            if relaxed and not self.is_sqlite:
                session.execute(text("SET LOCAL synchronous_commit TO OFF"))
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def checkpoint(self) -> bool:
        """SQLite: copy the write-ahead log into the database file and truncate it to zero bytes; True when done.

        Called after deletions (GalleryService.forget_deleted): with secure_delete the database's own pages are
        zeroed, but the log still holds the older copies of those pages, with the deleted text, until a checkpoint
        (tests/integration/test_secure_delete.py). It waits for readers of older snapshots for a few seconds at
        most; if they outlast that, the next deletion's checkpoint empties the log (SQLite's own checkpoints copy
        the log into the database but leave the file's old frames until they are overwritten).
        PostgreSQL: nothing to do here (VACUUM reclaims dead rows; see docs/backup.md on what keeps copies).
        """
        if not self.is_sqlite:
            return True
        with self.engine.connect() as conn:
            conn.exec_driver_sql(f"PRAGMA busy_timeout={CHECKPOINT_WAIT_MS}")
            try:
                busy, _log, _moved = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
            finally:
                conn.exec_driver_sql("PRAGMA busy_timeout=30000")
        if busy:
            log.info("SQLite checkpoint left for later: a long reader holds an older snapshot")
        return not busy

    def dispose(self) -> None:
        self.engine.dispose()
