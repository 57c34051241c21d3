"""The gallery: images (rows + files), search, collections.

Files and rows are separate stores; this service composes them so a failure leaves neither half
behind: files are written first (content-addressed, so rewriting is harmless), rows are inserted in
the caller's transaction, and ``discard_files`` removes files no row references when that fails.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from studiolo.db.base import utcnow
from studiolo.db.session import Database
from studiolo.domain.gallery import imaging, search, trash
from studiolo.domain.gallery.models import Collection, CollectionItem, Image
from studiolo.domain.gallery.schemas import (
    MAX_TAGS,
    TAG_ACTIONS,
    BulkImageRequest,
    BulkImageResult,
    CollectionCreate,
    CollectionPage,
    CollectionPatch,
    CollectionView,
    ImagePage,
    ImagePatch,
    ImageUrls,
    ImageView,
)
from studiolo.domain.ownership import get_owned
from studiolo.domain.safety.outputs import REVIEW_PENDING, REVIEW_REJECTED
from studiolo.errors import InvalidInput, NotFound, UnderReview
from studiolo.storage.base import ObjectNotFound, ObjectStore

API = "/api/v1"
FILE_SIZES = ("original", *(str(s) for s in imaging.THUMBNAIL_SIZES))


@dataclass(frozen=True)
class StoredFiles:
    """Keys of one generated image's files, written before its row exists."""

    original_key: str
    thumbnail_keys: dict[str, str]
    size_bytes: int

    @property
    def all_keys(self) -> list[str]:
        return [self.original_key, *self.thumbnail_keys.values()]


def image_urls(image_id: str, review_state: str | None = None) -> ImageUrls:
    base = f"{API}/images/{image_id}/file"
    # A held image's thumbnails are redrawn when a review approves it (issue 17), under the same keys and ETags:
    # the review state in their URLs makes browsers and the service worker (which keeps thumbnails for good) fetch
    # the unblurred ones instead of showing the blurred copies they kept.
    state = f"&review={review_state}" if review_state else ""
    return ImageUrls(file=base, thumbnails={str(s): f"{base}?size={s}{state}" for s in imaging.THUMBNAIL_SIZES})


def to_view(img: Image, trash_days: int) -> ImageView:
    """The API shape of an image; ``trash_days`` (STUDIOLO_TRASH_DAYS) dates the purge of a trashed one."""
    return ImageView(
        id=img.id,
        job_id=img.job_id,
        kind=img.kind,
        parent_id=img.parent_id,
        prompt=img.prompt,
        negative_prompt=img.negative_prompt,
        style=img.style,
        model=img.model_id,
        seed=img.seed,
        steps=img.steps,
        guidance=img.guidance,
        sampler=img.sampler,
        width=img.width,
        height=img.height,
        size_bytes=img.size_bytes,
        tags=list(img.tags or []),
        starred=img.starred,
        public=img.public,
        metadata=dict(img.meta or {}),
        created_at=img.created_at,
        trashed_at=img.trashed_at,
        purge_at=trash.purge_at(img.trashed_at, trash_days),
        nsfw_score=img.nsfw_score,
        review_state=img.review_state,
        description_id=img.description_id,
        urls=image_urls(img.id, img.review_state),
    )


def refuse_if_held(img: Image) -> None:
    """UnderReview for an image the output check held back (issue 17): its thumbnails are blurred and its original
    private until an administrator approves it (safety/review.py serves it to them); nothing is made from it."""
    if img.review_state in (REVIEW_PENDING, REVIEW_REJECTED):
        raise UnderReview(
            "This image is held for review." if img.review_state == REVIEW_PENDING else "This image was rejected.",
            details={"review_state": img.review_state},
        )


def search_text(prompt: str, tags: Iterable[str]) -> str:
    return " ".join([prompt, *tags])


def _purged(session: Session, rows: Sequence[Image], *where: ColumnElement[bool]) -> list[StoredFiles]:
    """Delete those of ``rows`` that still match ``where`` in the caller's transaction; returns the deleted rows'
    files, for ``discard_files`` after it commits."""
    deleted = set(session.scalars(trash.delete_statement(rows, *where).returning(Image.id)))
    return [
        StoredFiles(img.original_key, dict(img.thumbnail_keys), img.size_bytes) for img in rows if img.id in deleted
    ]


def _retag(rows: Sequence[Image], tags: Sequence[str], *, add: bool) -> None:
    """Add or remove (already cleaned) tags on each image; all or nothing when one would pass the limit."""
    new_tags = {
        img.id: [*(img.tags or []), *(t for t in tags if t not in (img.tags or []))]
        if add
        else [t for t in img.tags or [] if t not in tags]
        for img in rows
    }
    over = [image_id for image_id, t in new_tags.items() if len(t) > MAX_TAGS]
    if over:
        raise InvalidInput(
            f"An image holds at most {MAX_TAGS} tags.",
            code="too_many_tags",
            details={"image_ids": over, "max": MAX_TAGS},
        )
    for img in rows:
        img.tags = new_tags[img.id]
        img.search_text = search_text(img.prompt, img.tags)


class GalleryService:
    def __init__(
        self,
        db: Database,
        store: ObjectStore,
        *,
        search_window: int = search.FIRST_WINDOW,
        search_walk_max: int = search.WALK_MAX,
        trash_days: int = 30,
    ):
        self.db = db
        self.store = store
        self.trash_days = trash_days  # STUDIOLO_TRASH_DAYS
        # How many rows a PostgreSQL search walks before it asks the GIN index (search.newest_matches).
        self.search_window = search_window
        self.search_walk_max = search_walk_max

    # -- files -------------------------------------------------------------------------------
    def write_files(self, png: bytes, thumbnails: dict[int, bytes], written: list[StoredFiles]) -> StoredFiles:
        """Store one image's PNG and WebP thumbnails under keys addressed by the PNG's content.

        The files are appended to ``written`` before the first of them is stored, so a write that fails part-way
        (a full disk at the 1920 thumbnail) leaves the caller every key to give to ``discard_files``, not just
        those of the images finished before it (tests/contract/test_partial_writes.py).

        Thumbnail keys hash the *original*, not themselves, so a thumbnail belongs to exactly one
        original and ``discard_files`` only needs to ask whether a row still holds that original.
        """
        original_key = imaging.content_key(png, "png", prefix="images")
        thumb_keys: dict[str, str] = {}
        distinct: dict[bytes, str] = {}
        for size, data in thumbnails.items():
            # Thumbnails are never upscaled: for a small image several sizes are the same bytes, stored once.
            if data not in distinct:
                distinct[data] = imaging.content_key(png, "webp", prefix=f"thumbs/{size}")
            thumb_keys[str(size)] = distinct[data]
        files = StoredFiles(original_key, thumb_keys, len(png))
        written.append(files)
        self.store.put(original_key, png, "image/png")
        for data, key in distinct.items():
            self.store.put(key, data, "image/webp", durable=False)  # recreatable from the original
        return files

    def discard_files(self, files: Iterable[StoredFiles]) -> None:
        """Delete the files of images whose original no row references any more.

        Identical images (same bytes) share keys, so a file is only removed once its last row is gone.
        """
        files = list(files)
        if not files:
            return
        with self.db.session() as session:
            referenced = set(
                session.scalars(
                    select(Image.original_key).where(Image.original_key.in_([f.original_key for f in files]))
                )
            )
        for f in files:
            if f.original_key not in referenced:
                for key in f.all_keys:
                    self.store.delete(key)

    # -- images ------------------------------------------------------------------------------
    def get(self, owner_id: str, image_id: str) -> ImageView:
        with self.db.session() as session:
            return to_view(get_owned(session, Image, image_id, owner_id, what="image"), self.trash_days)

    def get_row(self, session: Session, owner_id: str, image_id: str) -> Image:
        return get_owned(session, Image, image_id, owner_id, what="image")

    def list(
        self,
        owner_id: str,
        *,
        limit: int = 50,
        cursor: str | None = None,
        style: str | None = None,
        model: str | None = None,
        starred: bool | None = None,
        collection_id: str | None = None,
        q: str | None = None,
        job_id: str | None = None,
        trashed: bool = False,
    ) -> ImagePage:
        """A page of the owner's gallery, newest first; ``trashed``: of their Trash instead."""
        searching = q is not None and bool(q.strip())
        with self.db.session() as session:
            if searching and not self.db.is_sqlite:
                # A search takes up to five statements; one snapshot keeps their ranges of ids adjacent.
                session.connection(
                    execution_options={"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
                )
            stmt = select(Image).where(Image.owner_id == owner_id, trash.in_trash() if trashed else trash.in_gallery())
            if cursor:
                stmt = stmt.where(Image.id < cursor)
            if style is not None:
                stmt = stmt.where(Image.style == style)
            if model is not None:
                stmt = stmt.where(Image.model_id == model)
            if starred is not None:
                stmt = stmt.where(Image.starred.is_(starred))
            if job_id is not None:
                stmt = stmt.where(Image.job_id == job_id)
            if collection_id is not None:
                get_owned(session, Collection, collection_id, owner_id, what="collection")
                stmt = stmt.where(
                    Image.id.in_(select(CollectionItem.image_id).where(CollectionItem.collection_id == collection_id))
                )
            if not searching:
                rows = session.scalars(stmt.order_by(Image.id.desc()).limit(limit + 1)).all()
            elif self.db.is_sqlite:
                stmt = stmt.where(search.fts5_clause(search.search_words(q or "")))
                rows = session.scalars(stmt.order_by(Image.id.desc()).limit(limit + 1)).all()
            else:
                rows = search.newest_matches(
                    session,
                    stmt,
                    search.search_words(q or ""),
                    limit + 1,
                    first_window=self.search_window,
                    walk_max=self.search_walk_max,
                )
        items = [to_view(r, self.trash_days) for r in rows[:limit]]
        return ImagePage(items=items, next_cursor=items[-1].id if len(rows) > limit else None)

    def update(self, owner_id: str, image_id: str, patch: ImagePatch) -> ImageView:
        with self.db.session() as session:
            img = get_owned(session, Image, image_id, owner_id, what="image")
            if patch.tags is not None:
                img.tags = patch.tags
                img.search_text = search_text(img.prompt, patch.tags)
            if patch.starred is not None:
                img.starred = patch.starred
            if patch.public is not None:
                img.public = patch.public
            session.flush()
            return to_view(img, self.trash_days)

    def delete(self, owner_id: str, image_id: str, *, permanent: bool = False) -> None:
        """Move an image to the Trash (again: nothing changes); ``permanent``: purge it now, trashed or not."""
        with self.db.session() as session:
            img = get_owned(session, Image, image_id, owner_id, what="image")
            if not permanent:
                trash.move_to_trash([img], utcnow())
                return
        self._purge(Image.owner_id == owner_id, Image.id == image_id)

    def restore(self, owner_id: str, image_id: str) -> ImageView:
        """Bring an image back from the Trash (one in the gallery stays as it is)."""
        with self.db.session() as session:
            img = get_owned(session, Image, image_id, owner_id, what="image")
            trash.restore([img])
            session.flush()
            return to_view(img, self.trash_days)

    def empty_trash(self, owner_id: str) -> int:
        """Purge every image in the owner's Trash; returns how many."""
        return self._purge(Image.owner_id == owner_id, trash.in_trash())

    def purge_due(self, now: datetime | None = None, *, max_batches: int = trash.HOUSEKEEPING_MAX_BATCHES) -> int:
        """Housekeeping: purge every user's images trashed at least ``trash_days`` before ``now``, at most
        ``max_batches`` batches (the rest at the next run); returns how many."""
        cutoff = trash.due_cutoff(now or utcnow(), self.trash_days)
        return self._purge(trash.in_trash(), Image.trashed_at <= cutoff, max_batches=max_batches)

    def _purge(self, *where: ColumnElement[bool], max_batches: int | None = None) -> int:
        """Delete the images matching ``where`` for good, a batch per transaction, each batch's files after its
        commit; then leave no readable copy of them in the database files. Returns how many rows went."""
        purged = batches = 0
        while max_batches is None or batches < max_batches:
            with self.db.session() as session:
                rows = trash.next_batch(session, *where)
                files = _purged(session, rows, *where) if rows else []
            # After the commit: a file goes only once no row references it (another image may share its bytes).
            self.discard_files(files)
            purged += len(files)
            batches += 1
            if len(rows) < trash.TRASH_PURGE_BATCH:
                break
        if purged:
            # The merge drops the purged prompts' words from the full-text index's older segments (search.py).
            self.forget_deleted(search_index=True)
        return purged

    def forget_deleted(self, *, search_index: bool = False) -> None:
        """After a deletion has committed: leave no readable copy of the deleted rows in the database's files.

        SQLite overwrites deleted rows (secure_delete); the checkpoint then empties the write-ahead log, which still
        holds the pages as they were. ``search_index`` (account deletion, every purge) also merges the full-text index,
        whose older segments keep the words of deleted prompts and tags (search.merge_index: costly on a large
        gallery, so once per purge, not per image; moving an image to the Trash deletes nothing and needs none).
        """
        if search_index:
            with self.db.session() as session:
                search.merge_index(session)
        self.db.checkpoint()

    def bulk(self, owner_id: str, req: BulkImageRequest) -> BulkImageResult:
        """One action on many of the owner's images, in one transaction. Ids that are not the owner's images
        are reported in ``not_found`` (another user's exactly like a missing one) and left alone."""
        tags = req.tags or []
        if req.action in TAG_ACTIONS and not tags:
            raise InvalidInput(f"{req.action} needs at least one tag.", code="tags_required")
        if req.action not in TAG_ACTIONS and tags:
            raise InvalidInput(f"{req.action} takes no tags.", code="tags_not_allowed")
        wanted = list(dict.fromkeys(req.image_ids))
        with self.db.session() as session:
            rows = session.scalars(select(Image).where(Image.owner_id == owner_id, Image.id.in_(wanted))).all()
            if req.action == "delete":
                trash.move_to_trash(rows, utcnow())
            elif req.action == "restore":
                trash.restore(rows)
            elif req.action == "purge":
                pass  # below, in batches of its own, as emptying the Trash does
            elif req.action in ("star", "unstar"):
                for img in rows:
                    img.starred = req.action == "star"
            else:
                _retag(rows, tags, add=req.action == "add_tags")
            found = {img.id for img in rows}
        if req.action == "purge" and found:
            self._purge(Image.owner_id == owner_id, Image.id.in_(found))
        return BulkImageResult(
            action=req.action,
            done=[i for i in wanted if i in found],
            not_found=[i for i in wanted if i not in found],
        )

    def file(self, owner_id: str, image_id: str, size: str) -> tuple[str, str]:
        """(storage key, media type) of an image's original or one thumbnail."""
        if size not in FILE_SIZES:
            raise InvalidInput(
                f"size must be one of {', '.join(FILE_SIZES)}.", code="invalid_size", details={"size": size}
            )
        with self.db.session() as session:
            img = get_owned(session, Image, image_id, owner_id, what="image")
            if size == "original":
                refuse_if_held(img)
                return img.original_key, "image/png"
            return img.thumbnail_keys[size], "image/webp"

    def read(self, key: str) -> bytes:
        try:
            return self.store.get(key)
        except ObjectNotFound as exc:
            raise NotFound("The file of this image is missing from storage.", code="file_missing") from exc

    # -- collections -------------------------------------------------------------------------
    def _collection_view(self, session: Session, c: Collection) -> CollectionView:
        # Trashed images stay members (a restore brings them back in place) but are neither counted nor the cover.
        members = (
            select(CollectionItem.image_id)
            .join(Image, Image.id == CollectionItem.image_id)
            .where(CollectionItem.collection_id == c.id, trash.in_gallery())
        )
        count = session.scalar(select(func.count()).select_from(members.subquery())) or 0
        cover = session.scalar(members.order_by(CollectionItem.added_at.desc()).limit(1))
        return CollectionView(
            id=c.id,
            name=c.name,
            description=c.description,
            image_count=int(count),
            cover_thumbnail_url=image_urls(cover).thumbnails["300"] if cover else None,
            created_at=c.created_at,
        )

    def create_collection(self, owner_id: str, data: CollectionCreate) -> CollectionView:
        with self.db.session() as session:
            c = Collection(owner_id=owner_id, name=data.name.strip(), description=data.description)
            session.add(c)
            session.flush()
            return self._collection_view(session, c)

    def list_collections(self, owner_id: str, *, limit: int = 50, cursor: str | None = None) -> CollectionPage:
        with self.db.session() as session:
            stmt = select(Collection).where(Collection.owner_id == owner_id)
            if cursor:
                stmt = stmt.where(Collection.id < cursor)
            rows = session.scalars(stmt.order_by(Collection.id.desc()).limit(limit + 1)).all()
            items = [self._collection_view(session, c) for c in rows[:limit]]
        return CollectionPage(items=items, next_cursor=items[-1].id if len(rows) > limit else None)

    def get_collection(self, owner_id: str, collection_id: str) -> CollectionView:
        with self.db.session() as session:
            return self._collection_view(
                session, get_owned(session, Collection, collection_id, owner_id, what="collection")
            )

    def update_collection(self, owner_id: str, collection_id: str, patch: CollectionPatch) -> CollectionView:
        with self.db.session() as session:
            c = get_owned(session, Collection, collection_id, owner_id, what="collection")
            if patch.name is not None:
                c.name = patch.name.strip()
            if patch.description is not None:
                c.description = patch.description
            session.flush()
            return self._collection_view(session, c)

    def delete_collection(self, owner_id: str, collection_id: str) -> None:
        with self.db.session() as session:
            session.delete(get_owned(session, Collection, collection_id, owner_id, what="collection"))
        self.forget_deleted()

    def add_to_collection(self, owner_id: str, collection_id: str, image_ids: Sequence[str]) -> CollectionView:
        """Add images (idempotent); every id must be one of the caller's images."""
        with self.db.session() as session:
            c = get_owned(session, Collection, collection_id, owner_id, what="collection")
            wanted = list(dict.fromkeys(image_ids))
            # A trashed image is not offered for adding: it would sit in the collection unseen.
            owned = set(
                session.scalars(
                    select(Image.id).where(Image.id.in_(wanted), Image.owner_id == owner_id, trash.in_gallery())
                )
            )
            missing = [i for i in wanted if i not in owned]
            if missing:
                raise NotFound("Some images do not exist.", code="image_not_found", details={"image_ids": missing})
            present = set(
                session.scalars(
                    select(CollectionItem.image_id).where(
                        CollectionItem.collection_id == c.id, CollectionItem.image_id.in_(wanted)
                    )
                )
            )
            for image_id in wanted:
                if image_id not in present:
                    session.add(CollectionItem(collection_id=c.id, image_id=image_id))
            session.flush()
            return self._collection_view(session, c)

    def remove_from_collection(self, owner_id: str, collection_id: str, image_id: str) -> None:
        with self.db.session() as session:
            c = get_owned(session, Collection, collection_id, owner_id, what="collection")
            item = session.get(CollectionItem, (c.id, image_id))
            if item is None:
                raise NotFound("That image is not in this collection.", code="image_not_found")
            session.delete(item)

    def stats_counts(self, session: Session, owner_id: str) -> dict[str, Any]:
        mine = (Image.owner_id == owner_id, trash.in_gallery())  # the Trash is not counted
        images = session.scalar(select(func.count()).where(*mine)) or 0
        starred = session.scalar(select(func.count()).where(*mine, Image.starred.is_(True))) or 0
        collections = session.scalar(select(func.count()).where(Collection.owner_id == owner_id)) or 0
        return {"images": int(images), "starred": int(starred), "collections": int(collections)}
