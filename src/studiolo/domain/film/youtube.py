"""Publishing a rendered film to YouTube (issue 16): publications and their background uploads.

The Google connection (consent, encrypted tokens) is youtube_google.py; one upload attempt (the resumable protocol,
then the captions) is youtube_upload.py. This module keeps the publication rows and runs the uploads: each in a
thread of the API process. The session URI and the bytes confirmed are kept on the row after every chunk, with a
heartbeat (``updated_at``), so an upload cut by a crash or a restart goes on from there: ``resume`` (a failed one)
or the sweeper (at start and every lease: active rows whose heartbeat is older than the lease).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.orm import Session

from studiolo.db.base import utcnow
from studiolo.db.session import Database
from studiolo.domain.film.models import FilmProject, FilmPublication
from studiolo.domain.film.youtube_google import CONNECT_PATH, GoogleConnection, UploadError, YouTubeNotConnected
from studiolo.domain.film.youtube_schemas import PublicationView, PublishRequest, publication_view
from studiolo.domain.film.youtube_upload import Media, Stopped, Uploader
from studiolo.errors import Conflict, NotFound
from studiolo.settings import Settings
from studiolo.storage.base import ObjectStore

log = logging.getLogger(__name__)

CHUNK_UNIT = 256 * 1024  # the protocol's: every chunk but the last is a multiple of it
DEFAULT_CHUNK_BYTES = 32 * CHUNK_UNIT  # 8 MiB
ACTIVE_STATUSES = ("pending", "uploading", "processing")


class YouTubeService:
    """Publications of films on YouTube (owner-scoped) and the threads that upload them; ``google`` is the
    connection (consent, tokens)."""

    def __init__(
        self,
        *,
        db: Database,
        settings: Settings,
        store: ObjectStore,
        secret_key: str,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        lease_seconds: float = 180.0,
        max_retries: int = 6,
        backoff_seconds: float | None = None,
    ) -> None:
        if chunk_bytes <= 0 or chunk_bytes % CHUNK_UNIT:
            raise ValueError(f"chunk_bytes must be a positive multiple of {CHUNK_UNIT}")
        self.db = db
        self.settings = settings
        self.store = store
        self.chunk_bytes = chunk_bytes
        self.lease_seconds = lease_seconds
        self.max_retries = max_retries
        self.backoff_seconds = settings.retry_backoff_seconds if backoff_seconds is None else backoff_seconds
        self.google = GoogleConnection(db=db, settings=settings, secret_key=secret_key)
        self._lock = threading.Lock()
        self._threads: dict[str, threading.Thread] = {}
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None

    # --- publications -------------------------------------------------------------------------------------
    def _project(self, session: Session, owner_id: str, film_id: str) -> FilmProject:
        project = session.scalar(
            select(FilmProject).where(
                FilmProject.id == film_id, FilmProject.owner_id == owner_id, FilmProject.deleted_at.is_(None)
            )
        )
        if project is None:
            raise NotFound("No such film.", code="film_not_found")
        return project

    def publish(self, owner_id: str, film_id: str, request: PublishRequest) -> PublicationView:
        """Record the publication and start uploading in the background; 409 when not connected or not rendered."""
        connected = self.google.connection(owner_id).connected
        with self.db.session() as session:
            project = self._project(session, owner_id, film_id)
            media_key = (project.outputs or {}).get("mp4")
            if not isinstance(media_key, str) or not media_key:
                raise Conflict("Render the film before publishing it.", code="no_render")
            if not connected:
                raise YouTubeNotConnected("Connect your YouTube account first.", details={"connect_url": CONNECT_PATH})
            active = session.scalar(
                select(FilmPublication.id).where(
                    FilmPublication.project_id == project.id, FilmPublication.status.in_(ACTIVE_STATUSES)
                )
            )
            if active is not None:  # a double click must not put the film on the channel twice
                raise Conflict(
                    "This film is being uploaded already.", code="upload_in_progress", details={"publication": active}
                )
            total = self._size(media_key)
            if total == 0:
                raise Conflict("The film's rendered video is empty; render it again.", code="no_render")
            row = FilmPublication(
                project_id=project.id,
                owner_id=owner_id,
                provider="youtube",
                status="uploading",
                title=request.title or project.title[:100].replace("<", "").replace(">", "") or "Untitled",
                description=request.description or "",
                tags=request.tags or [],
                privacy=request.privacy,
                media_key=media_key,
                total_bytes=total,
                bytes_sent=0,
            )
            session.add(row)
            session.flush()
            view = publication_view(row)
        self._spawn(view.id)
        return view

    def publications(self, owner_id: str, film_id: str) -> list[PublicationView]:
        with self.db.session() as session:
            self._project(session, owner_id, film_id)
            rows = session.scalars(
                select(FilmPublication)
                .where(FilmPublication.project_id == film_id, FilmPublication.owner_id == owner_id)
                .order_by(FilmPublication.created_at.desc(), FilmPublication.id.desc())
            )
            return [publication_view(r) for r in rows]

    def get(self, owner_id: str, film_id: str, publication_id: str) -> PublicationView:
        with self.db.session() as session:
            row = self._publication(session, owner_id, film_id, publication_id)
            return publication_view(row)

    def _publication(self, session: Session, owner_id: str, film_id: str, publication_id: str) -> FilmPublication:
        row = session.scalar(
            select(FilmPublication).where(
                FilmPublication.id == publication_id,
                FilmPublication.project_id == film_id,
                FilmPublication.owner_id == owner_id,
            )
        )
        if row is None:
            raise NotFound("No such publication.", code="publication_not_found")
        return row

    def resume(self, owner_id: str, film_id: str, publication_id: str) -> PublicationView:
        """Go on with a failed or interrupted upload from where YouTube says it got."""
        with self.db.session() as session:
            self._project(session, owner_id, film_id)
            row = self._publication(session, owner_id, film_id, publication_id)
            if row.status == "done":
                raise Conflict("This film is already on YouTube.", code="already_published")
        if self._running(publication_id) or not self._claim(publication_id, explicit=True):
            raise Conflict("This upload is going on already.", code="upload_in_progress")
        if not self.google.connection(owner_id).connected:
            self._fail(publication_id, "youtube_not_connected", "Connect your YouTube account first.")
            raise YouTubeNotConnected("Connect your YouTube account first.", details={"connect_url": CONNECT_PATH})
        self._spawn(publication_id)
        return self.get(owner_id, film_id, publication_id)

    def _claim(self, publication_id: str, *, explicit: bool) -> bool:
        """Take a publication to upload (atomic, for several processes): a failed one when asked to, an active
        one whose heartbeat is older than the lease (its process died)."""
        now = utcnow()
        stale = now - timedelta(seconds=self.lease_seconds)
        conditions: list[ColumnElement[bool]] = [
            and_(FilmPublication.status.in_(ACTIVE_STATUSES), FilmPublication.updated_at < stale)
        ]
        if explicit:
            conditions.append(FilmPublication.status == "failed")
        with self.db.session() as session:
            result = session.execute(
                update(FilmPublication)
                .where(FilmPublication.id == publication_id, or_(*conditions))
                .values(status="uploading", updated_at=now, error_code=None, error_message=None)
                .execution_options(synchronize_session=False)
            )
            return bool(getattr(result, "rowcount", 0))

    def resume_stale(self) -> int:
        """Start again every active upload whose process stopped (a restart); returns how many."""
        stale = utcnow() - timedelta(seconds=self.lease_seconds)
        with self.db.session() as session:
            ids = list(
                session.scalars(
                    select(FilmPublication.id).where(
                        FilmPublication.status.in_(ACTIVE_STATUSES), FilmPublication.updated_at < stale
                    )
                )
            )
        started = 0
        for pub_id in ids:
            if not self._running(pub_id) and self._claim(pub_id, explicit=False):
                self._spawn(pub_id)
                started += 1
        return started

    # --- background threads -------------------------------------------------------------------------------
    def start(self) -> None:
        """The sweeper: at start, then every lease, picks up uploads a stopped process left."""
        with self._lock:
            if self._sweeper is not None and self._sweeper.is_alive():
                return
            self._stop.clear()
            self._sweeper = threading.Thread(target=self._sweep, name="youtube-sweeper", daemon=True)
            self._sweeper.start()

    def _sweep(self) -> None:
        while not self._stop.is_set():
            try:
                self.resume_stale()
            except Exception:  # a database hiccup must not end the sweeper
                log.exception("YouTube upload sweep failed")
            self._stop.wait(max(self.lease_seconds, 1.0))

    def close(self, timeout: float = 10.0) -> None:
        self._stop.set()
        with self._lock:
            threads = [*self._threads.values(), *([self._sweeper] if self._sweeper else [])]
            self._sweeper = None
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def wait(self, publication_id: str, timeout: float = 30.0) -> None:
        """Block until this process's upload thread for the publication ends (tests, the CLI)."""
        with self._lock:
            thread = self._threads.get(publication_id)
        if thread is not None:
            thread.join(timeout)

    def _running(self, publication_id: str) -> bool:
        with self._lock:
            thread = self._threads.get(publication_id)
            return thread is not None and thread.is_alive()

    def _spawn(self, publication_id: str) -> None:
        with self._lock:
            thread = threading.Thread(
                target=self._run, args=(publication_id,), name=f"youtube-{publication_id[:8]}", daemon=True
            )
            self._threads[publication_id] = thread
        thread.start()

    def _run(self, publication_id: str) -> None:
        try:
            self._upload(publication_id)
        except Stopped:
            # Left as it is, but with its heartbeat put back past the lease: the next process's start-up sweep
            # takes it at once instead of waiting for the lease to run out.
            log.info("YouTube upload %s paused by shutdown; it goes on after the restart", publication_id)
            self._release(publication_id)
        except UploadError as exc:
            self._fail(publication_id, exc.code, exc.message)
        except Exception as exc:
            log.exception("YouTube upload %s failed", publication_id)
            self._fail(publication_id, "youtube_upload_failed", f"The upload failed: {exc!r}"[:500])
        finally:
            with self._lock:
                if self._threads.get(publication_id) is threading.current_thread():
                    del self._threads[publication_id]

    # --- row updates --------------------------------------------------------------------------------------
    def _save(self, publication_id: str, **values: Any) -> None:
        with self.db.session() as session:
            session.execute(
                update(FilmPublication)
                .where(FilmPublication.id == publication_id)
                .values(updated_at=utcnow(), **values)
                .execution_options(synchronize_session=False)
            )

    def _release(self, publication_id: str) -> None:
        with self.db.session() as session:
            session.execute(
                update(FilmPublication)
                .where(FilmPublication.id == publication_id, FilmPublication.status.in_(ACTIVE_STATUSES))
                .values(updated_at=utcnow() - timedelta(seconds=self.lease_seconds + 1))
                .execution_options(synchronize_session=False)
            )

    def _fail(self, publication_id: str, code: str, message: str) -> None:
        log.warning("YouTube upload %s failed: %s %s", publication_id, code, message)
        self._save(publication_id, status="failed", error_code=code, error_message=message[:2000])

    # --- the upload ---------------------------------------------------------------------------------------
    def _size(self, key: str) -> int:
        path = self.store.local_path(key)
        if path is not None and path.exists():
            return path.stat().st_size
        if not self.store.exists(key):
            raise Conflict("The film's rendered video is missing; render it again.", code="no_render")
        return len(self.store.get(key))

    def _upload(self, publication_id: str) -> None:
        with self.db.session() as session:
            row = session.get_one(FilmPublication, publication_id)
            owner_id, film_id = row.owner_id, row.project_id
            metadata = {
                "snippet": {
                    "title": row.title,
                    "description": row.description,
                    "tags": list(row.tags or []),
                    "categoryId": "22",
                },
                "status": {"privacyStatus": row.privacy, "selfDeclaredMadeForKids": False},
            }
            media_key, session_url, video_id = row.media_key, row.session_url, row.video_id
            captions_done = row.captions_uploaded
            project = session.get(FilmProject, film_id)
            srt_key = (project.outputs or {}).get("srt") if project is not None else None
        uploader = Uploader(self, publication_id, owner_id)
        if video_id is None:
            with Media(self.store, media_key) as media:
                video_id = uploader.upload_video(media, metadata, session_url)
            self._save(publication_id, video_id=video_id, status="processing", session_url=None)
        if not captions_done and isinstance(srt_key, str) and srt_key and self.store.exists(srt_key):
            try:
                uploader.upload_captions(video_id, self.store.get(srt_key))
            except UploadError as exc:
                # The video is on YouTube: the publication is done, with the captions' failure on it.
                self._save(publication_id, status="done", error_code="captions_failed", error_message=exc.message)
                return
            self._save(publication_id, captions_uploaded=True)
        self._save(publication_id, status="done", error_code=None, error_message=None)
