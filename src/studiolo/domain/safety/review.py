"""The review queue: images the output check held back, and the administrators' decisions on them (issue 17).

An image whose NSFW score reaches the threshold under the "blur" policy is stored with ``review_state`` "pending":
blurred thumbnails, and an original its owner cannot fetch (gallery.file raises UnderReview). An administrator
then decides: approve (the original becomes visible, the thumbnails are made again, unblurred, from it), reject (it
stays private and its owner sees the reason in ``metadata.review``), or ban (reject, and suspend the owner through
the accounts' suspend path). Each decision is audited ("image_reviewed") in the transaction that makes it.
"""

from __future__ import annotations

import io
from datetime import datetime
from typing import Literal

from PIL import Image as PILImage
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from studiolo.db.base import utcnow
from studiolo.db.session import Database
from studiolo.domain.accounts import audit
from studiolo.domain.accounts.admin import AdminService
from studiolo.domain.accounts.audit import Origin
from studiolo.domain.accounts.models import User
from studiolo.domain.gallery import imaging
from studiolo.domain.gallery.models import Image
from studiolo.domain.gallery.schemas import ImageView
from studiolo.domain.gallery.service import FILE_SIZES, GalleryService, to_view
from studiolo.domain.safety.outputs import REVIEW_APPROVED, REVIEW_REJECTED, blurred
from studiolo.errors import Conflict, InvalidInput, NotFound

ReviewState = Literal["pending", "approved", "rejected"]
Decision = Literal["approve", "reject", "ban"]
MAX_PAGE = 100
_STATE_OF: dict[str, str] = {"approve": REVIEW_APPROVED, "reject": REVIEW_REJECTED, "ban": REVIEW_REJECTED}


class ReviewRequest(BaseModel):
    """An administrator's decision on a held image."""

    model_config = ConfigDict(extra="forbid")

    decision: Decision
    # Shown to the owner when the image is rejected (or banned); kept in the audit event either way.
    reason: str = Field(default="", max_length=500)


class ReviewUrls(BaseModel):
    """Where an administrator fetches the held image's files (the owner's gallery URLs refuse the original)."""

    original: str
    thumbnail: str  # blurred while pending or rejected


class ReviewItem(BaseModel):
    image: ImageView
    owner_id: str
    owner_email: str
    owner_status: str
    nsfw_score: float | None
    review_state: str | None
    urls: ReviewUrls


class ReviewPage(BaseModel):
    items: list[ReviewItem]
    next_cursor: str | None


def review_urls(image_id: str) -> ReviewUrls:
    base = f"/api/v1/admin/reviews/{image_id}/file"
    return ReviewUrls(original=base, thumbnail=f"{base}?size=300")


def owner_note(state: str, reason: str, decided_at: datetime) -> dict[str, str]:
    """What the owner sees of a decision in ``metadata.review``: never who decided, the reason only on a refusal."""
    note = {"state": state, "decided_at": decided_at.isoformat()}
    if state == REVIEW_REJECTED:
        note["reason"] = reason or "It breaks this site's content rules."
    return note


class ReviewService:
    def __init__(self, db: Database, gallery: GalleryService, admin: AdminService) -> None:
        self.db = db
        self.gallery = gallery
        self.admin = admin

    def list(self, *, state: ReviewState = "pending", limit: int = 50, cursor: str | None = None) -> ReviewPage:
        """Held images in ``state``, oldest first (the queue's order), keyset-paginated on the time-ordered id."""
        limit = max(1, min(limit, MAX_PAGE))
        with self.db.session() as session:
            query = (
                select(Image, User.email, User.status)
                .join(User, User.id == Image.owner_id)
                .where(Image.review_state == state, Image.trashed_at.is_(None))
                .order_by(Image.id)
                .limit(limit + 1)
            )
            if cursor:
                query = query.where(Image.id > cursor)
            rows = session.execute(query).all()
            more = len(rows) > limit
            rows = rows[:limit]
            items = [self._item(img, email, status) for img, email, status in rows]
        return ReviewPage(items=items, next_cursor=items[-1].image.id if more and items else None)

    def decide(self, actor_id: str, image_id: str, request: ReviewRequest, origin: Origin) -> ReviewItem:
        """Approve, reject or ban; audited in the same transaction. An image never held cannot be decided on."""
        reason = request.reason.strip()
        state = _STATE_OF[request.decision]
        with self.db.session() as session:
            img = session.get(Image, image_id, with_for_update=True)
            if img is None:
                raise NotFound(f"No image with id '{image_id}'.", code="image_not_found")
            if img.review_state is None:
                raise Conflict("This image was not held for review.", code="not_under_review")
            if request.decision == "ban" and img.owner_id == actor_id:
                # Checked before anything changes: the suspension would refuse it after the rejection was made.
                raise Conflict("You cannot suspend your own account.", code="cannot_suspend_self")
            previous = img.review_state
            now = utcnow()
            img.review_state = state
            # A new dict: the JSON column only notices a replaced value.
            img.meta = {**(img.meta or {}), "review": owner_note(state, reason, now)}
            audit.record(
                session,
                "image_reviewed",
                actor_id=actor_id,
                origin=origin,
                target_id=img.owner_id,
                image_id=img.id,
                decision=request.decision,
                previous=previous,
                nsfw_score=img.nsfw_score,
                **({"reason": reason} if reason else {}),
            )
            session.flush()
            owner_id = img.owner_id
            original_key, thumbnail_keys = img.original_key, dict(img.thumbnail_keys)
        # After the commit: a failure here leaves the thumbnails as they were (blurred for a held image), the safe
        # side; the decision itself stands and approving again redraws them.
        if (state == REVIEW_APPROVED) != (previous == REVIEW_APPROVED):
            self._redraw_thumbnails(original_key, thumbnail_keys, blur=state != REVIEW_APPROVED)
        if request.decision == "ban":
            self.admin.set_status(actor_id, owner_id, "suspended", origin, reason or "Images that break the rules.")
        return self.item(image_id)

    def item(self, image_id: str) -> ReviewItem:
        """One image as the review queue shows it (any owner: administrators only)."""
        with self.db.session() as session:
            row = session.execute(
                select(Image, User.email, User.status).join(User, User.id == Image.owner_id).where(Image.id == image_id)
            ).first()
            if row is None:
                raise NotFound(f"No image with id '{image_id}'.", code="image_not_found")
            img, email, status = row
            return self._item(img, email, status)

    def _item(self, img: Image, email: str, status: str) -> ReviewItem:
        return ReviewItem(
            image=to_view(img, self.gallery.trash_days),
            owner_id=img.owner_id,
            owner_email=email,
            owner_status=status,
            nsfw_score=img.nsfw_score,
            review_state=img.review_state,
            urls=review_urls(img.id),
        )

    def file(self, image_id: str, size: str) -> tuple[bytes, str]:
        """An image's original or thumbnail for an administrator: only images that are or were held for review, so
        this is no way round the owners' privacy for the rest of the gallery."""
        if size not in FILE_SIZES:
            raise InvalidInput(
                f"size must be one of {', '.join(FILE_SIZES)}.", code="invalid_size", details={"size": size}
            )
        with self.db.session() as session:
            img = session.get(Image, image_id)
            if img is None or img.review_state is None:
                raise NotFound(f"No held image with id '{image_id}'.", code="image_not_found")
            key, media_type = (
                (img.original_key, "image/png") if size == "original" else (img.thumbnail_keys[size], "image/webp")
            )
        return self.gallery.read(key), media_type

    def _redraw_thumbnails(self, original_key: str, keys: dict[str, str], *, blur: bool) -> None:
        """Make the image's thumbnails again from its original, blurred or not, under the same keys (they name the
        original, which has not changed; the orphan sweep and backups find them by it)."""
        with PILImage.open(io.BytesIO(self.gallery.read(original_key))) as opened:
            source = opened.convert("RGBA" if opened.mode in ("RGBA", "LA", "P") else "RGB")
        thumbnails = imaging.make_thumbnails(blurred(source) if blur else source)
        written: set[str] = set()
        for size, data in thumbnails.items():
            key = keys.get(str(size))
            if key is not None and key not in written:  # sizes that came out the same share one file
                self.gallery.store.put(key, data, "image/webp", durable=False)
                written.add(key)
