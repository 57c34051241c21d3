"""What a describer said of a user's photo, kept with the photo so the images rendered from it can show both."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from studiolo.db.base import Base, UTCDateTime, new_id, utcnow
from studiolo.db.session import Database
from studiolo.domain.ownership import get_owned


class Description(Base):
    __tablename__ = "descriptions"
    __table_args__ = (Index("ix_descriptions_owner_id_id", "owner_id", "id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(String(36), ForeignKey("users.id", ondelete="CASCADE"))
    photo_key: Mapped[str] = mapped_column(String(200))  # the uploaded photo, re-encoded as PNG, in the object store
    template: Mapped[str] = mapped_column(String(16))  # character | fursona | portrait | scene | custom
    instruction: Mapped[str] = mapped_column(Text, default="")  # the free instruction of a "custom" template
    describer: Mapped[str] = mapped_column(String(32))  # the adapter that answered: offline | openai | gemini
    model: Mapped[str] = mapped_column(String(200), default="")  # its model ("" for offline)
    result: Mapped[dict[str, Any]] = mapped_column(JSON)  # the structured description (schemas.PhotoDescription)
    prompt: Mapped[str] = mapped_column(Text)
    style: Mapped[str | None] = mapped_column(String(64), nullable=True)
    cost: Mapped[float] = mapped_column(Float, default=0.0)  # the provider's cost in USD where known, else 0
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


def owned_description(db: Database, owner_id: str, description_id: str) -> str:
    """``description_id`` when it is ``owner_id``'s description; NotFound (404 description_not_found) otherwise."""
    with db.session() as session:
        return get_owned(session, Description, description_id, owner_id, what="description").id
