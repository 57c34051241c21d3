"""Accounts ORM: users, one-time codes, refresh tokens, API keys, OAuth links and the audit log.

Secrets are never stored: passwords as argon2id hashes, codes, refresh tokens and API keys as SHA-256
digests (they are long random values, so a fast hash is enough and lookups stay indexed).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from studiolo.db.base import Base, UTCDateTime, new_id, utcnow

# Fixed id so the migration, the API and the CLI agree on who owns rows on a single-user install. It is the
# "install owner": `studiolo users create-admin` (or the setup page) turns this row into the first admin, so
# pictures made from the CLI before anyone signed in belong to that admin.
LOCAL_USER_ID = "00000000-0000-7000-8000-000000000001"
LOCAL_USER_EMAIL = "local@studiolo.invalid"

# What each role may do; access tokens carry these, and an API key never gets more than its owner's role.
ROLE_SCOPES: dict[str, frozenset[str]] = {
    "user": frozenset({"read", "generate"}),
    "admin": frozenset({"read", "generate", "admin"}),
}


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    display_name: Mapped[str] = mapped_column(String(120), default="")
    role: Mapped[str] = mapped_column(String(16), default="user")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    password_hash: Mapped[str | None] = mapped_column(String(255), nullable=True, default=None)
    # "pending" (email not verified yet), "active" or "suspended"
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    email_verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    # Bumped by a password change, suspension or "sign out everywhere": tokens carry the epoch they were
    # issued under, so every older access token stops working at once.
    token_epoch: Mapped[int] = mapped_column(Integer, default=0)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    # The model this user chose as theirs (A1111's sd_model_checkpoint, issue 18); None: the install's default.
    default_model: Mapped[str | None] = mapped_column(String(200), nullable=True, default=None)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class OneTimeCode(Base):
    """A 6-digit code sent by email, for one purpose: verify the address or reset the password."""

    __tablename__ = "one_time_codes"
    __table_args__ = (Index("ix_one_time_codes_user_purpose", "user_id", "purpose"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    purpose: Mapped[str] = mapped_column(String(16))  # "verify" | "reset"
    code_hash: Mapped[str] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)


class RefreshToken(Base):
    """One link of a rotating refresh-token chain. ``family_id`` groups a sign-in's chain: presenting a
    token that was already rotated means it was stolen, and the whole family is revoked."""

    __tablename__ = "refresh_tokens"
    __table_args__ = (Index("ix_refresh_tokens_family", "family_id"), Index("ix_refresh_tokens_user", "user_id"))

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    family_id: Mapped[str] = mapped_column(String(36))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    user_agent: Mapped[str] = mapped_column(String(255), default="")
    ip: Mapped[str] = mapped_column(String(64), default="")


class ApiKey(Base):
    __tablename__ = "api_keys"
    __table_args__ = (Index("ix_api_keys_owner", "owner_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(120))
    prefix: Mapped[str] = mapped_column(String(16))  # "ais_" + 8 characters, shown in lists
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)


class OAuthAccount(Base):
    __tablename__ = "oauth_accounts"
    __table_args__ = (UniqueConstraint("provider", "subject"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    provider: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(255))
    email: Mapped[str] = mapped_column(String(320), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AuditEvent(Base):
    """Who did what, when, from where. ``actor_id`` is not a foreign key: the trail outlives the account."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_actor", "actor_id", "id"), Index("ix_audit_events_action", "action", "id"))

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    action: Mapped[str] = mapped_column(String(48))
    target_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    ip: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(255), default="")
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # kept for failed logins of unknown emails (no actor): the address that was tried
    subject: Mapped[str] = mapped_column(Text, default="")
