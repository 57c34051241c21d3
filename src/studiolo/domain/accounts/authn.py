"""Who is calling: a Bearer access token (JWT) or API key becomes a ``Principal``, or the call is refused.

A valid signature is not enough: the user must still exist, be active, and the token's epoch must equal the
user's (a password change, suspension or "sign out everywhere" bumps it), and the session must not be signed
out. That state is read from the database and kept for ``STATE_TTL`` seconds per user, session and API key,
because the check runs on every request (bench/auth.py: it may add at most 2 ms); changes made by this process
drop the cached entry at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Generic, TypeVar

from sqlalchemy import select, update

from studiolo.db.base import utcnow
from studiolo.db.session import Database
from studiolo.domain.accounts import suspension
from studiolo.domain.accounts.models import LOCAL_USER_ID, ROLE_SCOPES, ApiKey, RefreshToken, User
from studiolo.domain.accounts.tokens import API_KEY_PREFIX, TokenCodec, digest
from studiolo.errors import Forbidden, Unauthorized

STATE_TTL = 2.0  # seconds another process's suspension or password change may take to reach this one
LAST_USED_GRANULARITY = timedelta(minutes=1)  # API key "last used" is written at most this often


@dataclass(frozen=True)
class Principal:
    user_id: str
    role: str
    scopes: frozenset[str]
    via: str  # "session" | "api_key" | "local"
    session_id: str = ""
    api_key_id: str = ""

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise Forbidden(f"This credential lacks the '{scope}' scope.", code="insufficient_scope")

    @property
    def is_admin(self) -> bool:
        return self.role == "admin" and "admin" in self.scopes


LOCAL_PRINCIPAL = Principal(LOCAL_USER_ID, "admin", ROLE_SCOPES["admin"], "local")


T = TypeVar("T")


class _TtlCache(Generic[T]):
    """Values loaded from the database, kept ``STATE_TTL`` seconds. A loader returning None (no such row) is
    not cached. Bounded: past 100,000 entries it starts over rather than grow without end."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[T, float]] = {}
        self._lock = threading.Lock()

    def get(self, key: str, load: Callable[[], T | None], *, fresh: bool = False) -> T | None:
        now = time.monotonic()
        cached = self._entries.get(key)
        if cached is not None and not fresh and now - cached[1] < STATE_TTL:
            return cached[0]
        value = load()
        with self._lock:
            if value is None:
                self._entries.pop(key, None)
                return None
            if len(self._entries) > 100_000:
                self._entries.clear()
            self._entries[key] = (value, now)
        return value

    def forget(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)


@dataclass(frozen=True)
class _UserState:
    status: str
    role: str
    epoch: int


@dataclass(frozen=True)
class _KeyState:
    id: str
    owner_id: str
    scopes: frozenset[str]
    expires_at: datetime | None
    revoked: bool
    last_used_at: datetime | None


class Authenticator:
    def __init__(self, db: Database, codec: TokenCodec):
        self.db = db
        self.codec = codec
        self._users: _TtlCache[_UserState] = _TtlCache()
        self._sessions: _TtlCache[bool] = _TtlCache()  # session (refresh-token family) id -> still signed in
        self._keys: _TtlCache[_KeyState] = _TtlCache()  # API key digest -> its row

    def forget(self, user_id: str) -> None:
        self._users.forget(user_id)

    def forget_session(self, session_id: str) -> None:
        self._sessions.forget(session_id)

    def forget_key(self, key_hash: str) -> None:
        self._keys.forget(key_hash)

    def _session_live(self, session_id: str) -> bool:
        """Whether the sign-in (refresh-token family) behind an access token is still live: signing out ends
        its access tokens too, not only its refresh token."""

        def load() -> bool:
            with self.db.session() as session:
                live = session.scalar(
                    select(RefreshToken.id)
                    .where(RefreshToken.family_id == session_id, RefreshToken.revoked_at.is_(None))
                    .limit(1)
                )
            return live is not None

        return bool(self._sessions.get(session_id, load))

    def _state(self, user_id: str, *, fresh: bool = False) -> _UserState | None:
        def load() -> _UserState | None:
            with self.db.session() as session:
                row = session.execute(
                    select(User.status, User.role, User.token_epoch).where(User.id == user_id)
                ).first()
            return None if row is None else _UserState(row.status, row.role, row.token_epoch)

        return self._users.get(user_id, load, fresh=fresh)

    def _key(self, key_hash: str) -> _KeyState | None:
        """The key's row, cached like the user state (a script calling in a loop costs no query per call)."""

        def load() -> _KeyState | None:
            with self.db.session() as session:
                row = session.execute(
                    select(
                        ApiKey.id,
                        ApiKey.owner_id,
                        ApiKey.scopes,
                        ApiKey.expires_at,
                        ApiKey.revoked_at,
                        ApiKey.last_used_at,
                    ).where(ApiKey.key_hash == key_hash)
                ).first()
            if row is None:
                return None
            revoked = row.revoked_at is not None
            return _KeyState(row.id, row.owner_id, frozenset(row.scopes), row.expires_at, revoked, row.last_used_at)

        return self._keys.get(key_hash, load)

    def authenticate(self, credential: str) -> Principal:
        if credential.startswith(API_KEY_PREFIX):
            return self._api_key(credential)
        claims = self.codec.decode_access(credential)
        state = self._state(claims.user_id)
        if state is not None and state.epoch != claims.epoch:
            # The cached copy may be older than the token (a password changed in another process just issued
            # it) or than a suspension: ask the database before refusing.
            state = self._state(claims.user_id, fresh=True)
        if state is None:
            raise Unauthorized("The session has ended; sign in again.", code="token_revoked")
        if state.status != "active":  # before the epoch (suspension bumps it): say why, not just "revoked"
            raise suspension.suspended_user(self.db, claims.user_id)
        if state.epoch != claims.epoch:
            raise Unauthorized("The session has ended; sign in again.", code="token_revoked")
        if claims.session_id and not self._session_live(claims.session_id):
            raise Unauthorized("The session has ended; sign in again.", code="token_revoked")
        return Principal(claims.user_id, state.role, claims.scopes, "session", session_id=claims.session_id)

    def _api_key(self, secret: str) -> Principal:
        invalid = Unauthorized("The API key is not valid.", code="invalid_api_key")
        if len(secret) > 100:
            raise invalid
        key_hash = digest(secret)
        key = self._key(key_hash)
        if key is None or key.revoked:
            raise invalid
        now = utcnow()
        if key.expires_at is not None and key.expires_at <= now:
            raise Unauthorized("The API key has expired.", code="api_key_expired")
        if key.last_used_at is None or now - key.last_used_at > LAST_USED_GRANULARITY:
            with self.db.session() as session:
                session.execute(update(ApiKey).where(ApiKey.id == key.id).values(last_used_at=now))
            self.forget_key(key_hash)
        state = self._state(key.owner_id)
        if state is None:
            raise invalid
        if state.status != "active":
            raise suspension.suspended_user(self.db, key.owner_id)
        # The key's scopes, never more than the owner's role allows now (a demoted admin's key loses admin).
        allowed = ROLE_SCOPES[state.role]
        return Principal(key.owner_id, state.role, key.scopes & allowed, "api_key", api_key_id=key.id)
