"""Accounts ORM. Until sign-up lands, every request acts as the built-in local owner."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from studiolo.db.base import Base, UTCDateTime, new_id, utcnow

# Fixed id so the migration, the API and the CLI agree on who owns rows on a single-user install.
LOCAL_USER_ID = "00000000-0000-7000-8000-000000000001"
LOCAL_USER_EMAIL = "local@studiolo.invalid"


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    display_name: Mapped[str] = mapped_column(String(120), default="")
    role: Mapped[str] = mapped_column(String(16), default="user")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
