"""The Trash: what deleting an image means.

``DELETE /images/{id}`` (the API, the web page's bulk bar, the CLI) only sets ``images.trashed_at``: the row and its
files stay, so Undo is a restore that works from any page, any time later, even after the tab was closed (issue 14:
the page used to hold a delete back for an Undo window and lost it when left). Everything that shows or counts a
user's images (listings, search, collections, stats) asks for ``in_gallery()``; the Trash view for ``in_trash()``.

A trashed image is *purged* (its row deleted, then its files, through the same path as before: gallery.service's
``_purged`` and ``discard_files``, then ``forget_deleted``) when its owner empties the Trash or purges it, or by
housekeeping once it has been there ``STUDIOLO_TRASH_DAYS`` (``GalleryService.purge_due``, run by every worker
process's pool, so the embedded server and Celery workers alike). Purges go in batches of ``TRASH_PURGE_BATCH``
rows per transaction, so a large Trash never holds SQLite's single writer for long.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Delete, delete, select
from sqlalchemy.orm import Session

from studiolo.domain.gallery.models import Image

TRASH_PURGE_BATCH = 500
"""Rows purged per transaction (and per ``discard_files`` call)."""
HOUSEKEEPING_MAX_BATCHES = 20
"""Batches one housekeeping run purges at most; what is left waits for the next run."""


def in_gallery() -> ColumnElement[bool]:
    return Image.trashed_at.is_(None)


def in_trash() -> ColumnElement[bool]:
    return Image.trashed_at.is_not(None)


def purge_at(trashed_at: datetime | None, trash_days: int) -> datetime | None:
    """When housekeeping purges an image trashed at ``trashed_at`` (None: not in the Trash)."""
    return None if trashed_at is None else trashed_at + timedelta(days=trash_days)


def due_cutoff(now: datetime, trash_days: int) -> datetime:
    """Images trashed at or before this are due for purging."""
    return now - timedelta(days=trash_days)


def move_to_trash(rows: Sequence[Image], now: datetime) -> None:
    """Trash each image not trashed yet; one already in the Trash keeps its time (a repeated DELETE is a no-op)."""
    for img in rows:
        if img.trashed_at is None:
            img.trashed_at = now


def restore(rows: Sequence[Image]) -> None:
    for img in rows:
        img.trashed_at = None


def next_batch(session: Session, *where: ColumnElement[bool]) -> list[Image]:
    """Up to ``TRASH_PURGE_BATCH`` images matching ``where``, oldest trashed first."""
    stmt = select(Image).where(*where).order_by(Image.trashed_at, Image.id).limit(TRASH_PURGE_BATCH)
    return list(session.scalars(stmt))


def delete_statement(rows: Sequence[Image], *where: ColumnElement[bool]) -> Delete:
    """Delete ``rows``, re-checking ``where`` as the database deletes: an image restored since it was read (another
    request, or housekeeping in another process) is not deleted, and its files are kept (discard_files asks whether a
    row still holds them)."""
    return delete(Image).where(Image.id.in_([img.id for img in rows]), *where)
