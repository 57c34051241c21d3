"""API keys: ``ais_`` + 40 random characters, shown once, stored as a SHA-256 digest; named, scoped, expiring,
revocable. A key acts with the intersection of its scopes and its owner's role.

Revoked for good, all of an account's keys at once, by a suspension and by a password change or reset (unless the
user keeps them): a key is a password that never expires by itself, and whoever took over an account may have made
one (docs/accounts.md, "API keys")."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from studiolo.db.base import utcnow
from studiolo.db.session import Database
from studiolo.domain.accounts import audit
from studiolo.domain.accounts.audit import Origin
from studiolo.domain.accounts.models import ApiKey, User
from studiolo.domain.accounts.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyView
from studiolo.domain.accounts.tokens import API_KEY_PREFIX, digest, new_api_key
from studiolo.domain.ownership import get_owned
from studiolo.errors import Forbidden

MAX_KEYS_PER_USER = 50


def key_view(key: ApiKey) -> ApiKeyView:
    return ApiKeyView(
        id=key.id,
        name=key.name,
        prefix=key.prefix,
        scopes=list(key.scopes),
        created_at=key.created_at,
        expires_at=key.expires_at,
        last_used_at=key.last_used_at,
        revoked_at=key.revoked_at,
    )


def revoke_all_keys(session: Session, owner_id: str) -> list[str]:
    """Revoke every live key of ``owner_id`` in this transaction; returns their digests (for the authenticator's
    cache, once committed)."""
    hashes = session.scalars(
        update(ApiKey)
        .where(ApiKey.owner_id == owner_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .returning(ApiKey.key_hash)
        .execution_options(synchronize_session=False)
    ).all()
    return list(hashes)


class ApiKeyService:
    def __init__(self, db: Database, on_revoked: Callable[[str], None]):
        self.db = db
        self.on_revoked = on_revoked  # drops the authenticator's cached copy of the key (by digest)

    def create(self, owner_id: str, data: ApiKeyCreate, origin: Origin) -> ApiKeyCreated:
        with self.db.session() as session:
            # PostgreSQL: the owner's row is locked, so two creations for one account count one after the other.
            user = session.get_one(User, owner_id, with_for_update=True)
            if "admin" in data.scopes and user.role != "admin":
                raise Forbidden("Only administrators can create keys with the admin scope.", code="insufficient_role")
            secret = new_api_key()
            key = ApiKey(
                owner_id=owner_id,
                name=data.name.strip(),
                prefix=secret[: len(API_KEY_PREFIX) + 8],
                key_hash=digest(secret),
                scopes=sorted(set(data.scopes)),
                expires_at=utcnow() + timedelta(days=data.expires_in_days) if data.expires_in_days else None,
            )
            session.add(key)
            # Inserted, then counted: on SQLite the insert takes the write lock, so the count sees every other
            # creation (counting first let concurrent requests pass the cap together; test_api_keys.py).
            session.flush()
            live = session.scalar(select(func.count()).where(ApiKey.owner_id == owner_id, ApiKey.revoked_at.is_(None)))
            if (live or 0) > MAX_KEYS_PER_USER:
                raise Forbidden(
                    f"At most {MAX_KEYS_PER_USER} live API keys per account; revoke one first.", code="too_many_keys"
                )
            audit.record(
                session, "api_key_created", actor_id=owner_id, origin=origin, target_id=key.id, scopes=key.scopes
            )
            return ApiKeyCreated(**key_view(key).model_dump(), key=secret)

    def list(self, owner_id: str) -> list[ApiKeyView]:
        with self.db.session() as session:
            rows = session.scalars(select(ApiKey).where(ApiKey.owner_id == owner_id).order_by(ApiKey.id.desc()))
            return [key_view(k) for k in rows]

    def revoke(self, owner_id: str, key_id: str, origin: Origin) -> ApiKeyView:
        with self.db.session() as session:
            key = get_owned(session, ApiKey, key_id, owner_id, what="api_key")
            if key.revoked_at is None:
                key.revoked_at = utcnow()
                audit.record(session, "api_key_revoked", actor_id=owner_id, origin=origin, target_id=key.id)
            view = key_view(key)
        self.on_revoked(key.key_hash)
        return view
