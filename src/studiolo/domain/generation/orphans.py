"""Stored files that no row refers to, found and removed by a periodic sweep.

Files are written before their rows (gallery.service): a process killed between the two, or files left behind before
every key was registered for cleanup ahead of its write (issue 13, item 11), stay in the store with no row. Nothing
else would ever remove them, not even deleting the account, which finds files through rows. The sweep lists
``images/``, ``thumbs/`` and ``inputs/`` and deletes what no image or job refers to, sparing anything written within
the grace period: its row may be committing right now (tests/contract/test_partial_writes.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta

from sqlalchemy import select

from studiolo.db.base import utcnow
from studiolo.db.session import Database
from studiolo.domain.gallery.models import Image
from studiolo.domain.generation.models import Job
from studiolo.storage.base import ObjectStore

log = logging.getLogger(__name__)

# The prefixes the gallery and the generation service write under (imaging.content_key); other keys are not ours.
SWEPT_PREFIXES = ("images/", "thumbs/", "inputs/")
# Keys per "IN (...)" lookup: well under every database's parameter limit.
_CHUNK = 500


def original_key_of(key: str) -> str | None:
    """The original a gallery file belongs to: itself for ``images/ab/<sha>.png``, and ``images/ab/<sha>.png`` for a
    thumbnail ``thumbs/<size>/ab/<sha>.webp`` (thumbnail keys hash their original, GalleryService.write_files);
    None for anything else."""
    parts = key.split("/")
    if len(parts) == 3 and parts[0] == "images":
        return key
    if len(parts) == 4 and parts[0] == "thumbs" and parts[3].endswith(".webp"):
        return f"images/{parts[2]}/{parts[3].removesuffix('.webp')}.png"
    return None


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


class OrphanSweeper:
    """Deletes stored files older than ``grace`` that no image row (or, for uploads, no job) refers to."""

    def __init__(self, db: Database, store: ObjectStore, *, grace: timedelta):
        self.db = db
        self.store = store
        self.grace = grace

    def sweep(self, now: datetime | None = None) -> int:
        """One pass over the store; returns how many files it deleted."""
        cutoff = (now or utcnow()) - self.grace
        old = [o.key for prefix in SWEPT_PREFIXES for o in self.store.iter_objects(prefix) if o.modified_at < cutoff]
        orphans = self._unreferenced_gallery_files(old) + self._unreferenced_inputs(old)
        for key in orphans:
            self.store.delete(key)
        if orphans:
            log.info("removed %d stored files that no image or job refers to", len(orphans))
        return len(orphans)

    def _unreferenced_gallery_files(self, keys: Iterable[str]) -> list[str]:
        by_original: dict[str, list[str]] = {}
        for key in keys:
            original = original_key_of(key)
            if original is not None:
                by_original.setdefault(original, []).append(key)
        referenced: set[str] = set()
        with self.db.session() as session:
            for chunk in _chunks(list(by_original)):
                referenced.update(session.scalars(select(Image.original_key).where(Image.original_key.in_(chunk))))
        return [key for original, files in by_original.items() if original not in referenced for key in files]

    def _unreferenced_inputs(self, keys: Iterable[str]) -> list[str]:
        inputs = [key for key in keys if key.startswith("inputs/")]
        if not inputs:
            return []
        # Upload keys sit in a JSON column (shared between jobs, content-addressed): read them all, as account
        # deletion does; only img2img and inpaint jobs have any.
        with self.db.session() as session:
            used = {
                key
                for keys_of_job in session.scalars(select(Job.input_keys).where(Job.kind != "txt2img"))
                for key in (keys_of_job or {}).values()
            }
        return [key for key in inputs if key not in used]
