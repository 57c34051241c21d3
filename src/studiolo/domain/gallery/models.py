"""Gallery ORM: images, collections and membership."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from studiolo.db.base import Base, UTCDateTime, new_id, utcnow


class Image(Base):
    __tablename__ = "images"
    __table_args__ = (
        # Keyset pages walk (owner_id, id DESC); filters narrow within an owner.
        Index("ix_images_owner_id_id", "owner_id", "id"),
        Index("ix_images_owner_style", "owner_id", "style", "id"),
        Index("ix_images_owner_model", "owner_id", "model_id", "id"),
        Index("ix_images_owner_starred", "owner_id", "starred", "id"),
        Index("ix_images_original_key", "original_key"),
        Index("ix_images_job_id", "job_id"),
        # The Trash (migration 0006): an owner's gallery is (owner_id, trashed_at IS NULL) newest first, their Trash
        # the same with IS NOT NULL; housekeeping finds what is due for purging across owners by trashed_at alone.
        Index("ix_images_owner_trashed", "owner_id", "trashed_at", "id"),
        Index("ix_images_trashed_at", "trashed_at"),
        Index("ix_images_parent_id", "parent_id"),
        Index("ix_images_review_state", "review_state", "id"),  # the admin review queue (issue 17)
        Index("ix_images_description_id", "description_id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(String(36), ForeignKey("users.id", ondelete="CASCADE"))
    job_id: Mapped[str | None] = mapped_column(String(36), ForeignKey("jobs.id", ondelete="SET NULL"))
    batch_index: Mapped[int] = mapped_column(Integer, default=0)
    # The image this one was made from (an upscale's source); NULL once that image is purged (migration 0008).
    parent_id: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("images.id", ondelete="SET NULL"), nullable=True, default=None
    )
    kind: Mapped[str] = mapped_column(String(16), default="txt2img")
    prompt: Mapped[str] = mapped_column(Text)
    negative_prompt: Mapped[str] = mapped_column(Text, default="")
    style: Mapped[str | None] = mapped_column(String(64), nullable=True)
    model_id: Mapped[str] = mapped_column(String(200))
    # Seeds run to 2**32 - 1: more than PostgreSQL's 32-bit INTEGER holds.
    seed: Mapped[int] = mapped_column(BigInteger)
    steps: Mapped[int] = mapped_column(Integer)
    guidance: Mapped[float] = mapped_column(Float)
    sampler: Mapped[str | None] = mapped_column(String(32), nullable=True)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    original_key: Mapped[str] = mapped_column(String(200))
    thumbnail_keys: Mapped[dict[str, str]] = mapped_column(JSON)
    size_bytes: Mapped[int] = mapped_column(Integer, default=0)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    # prompt + tags, kept in step by the service; indexed by FTS5 (SQLite), or on PostgreSQL copied by the database
    # into the generated tsvector column search_vector (migration 0003; unmapped) with a GIN index. See search.py.
    search_text: Mapped[str] = mapped_column(Text, default="")
    starred: Mapped[bool] = mapped_column(Boolean, default=False)
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Set when the image was moved to the Trash (DELETE /images/{id}); None for a gallery image. The row and its files
    # stay until it is purged: by the owner, or by housekeeping STUDIOLO_TRASH_DAYS later (gallery/trash.py).
    trashed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    # The output check (issue 17, safety/outputs.py): the NSFW classifier's score (None: not checked), and for an
    # image held back, its review: "pending" (blurred thumbnails, original private), "approved" or "rejected".
    nsfw_score: Mapped[float | None] = mapped_column(Float, nullable=True, default=None)
    review_state: Mapped[str | None] = mapped_column(String(16), nullable=True, default=None)
    # The photo description it was rendered from (understanding/), if any.
    description_id: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("descriptions.id", ondelete="SET NULL"), nullable=True, default=None
    )


class Collection(Base):
    __tablename__ = "collections"
    __table_args__ = (Index("ix_collections_owner_id_id", "owner_id", "id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(String(36), ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(120))
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CollectionItem(Base):
    __tablename__ = "collection_items"
    __table_args__ = (Index("ix_collection_items_image_id", "image_id"),)

    collection_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("collections.id", ondelete="CASCADE"), primary_key=True
    )
    image_id: Mapped[str] = mapped_column(String(36), ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
