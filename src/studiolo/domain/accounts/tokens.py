"""Access tokens (JWT, HS256), opaque refresh tokens, API keys and one-time codes: minting and checking.

Only HS256 is accepted when decoding (``algorithms=["HS256"]``), so ``alg: none`` and algorithm-confusion
tokens are refused by construction; ``exp``, ``iat``, ``sub`` and ``typ`` are required.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import jwt

from studiolo.db.base import utcnow
from studiolo.errors import Unauthorized
from studiolo.settings import Settings

API_KEY_PREFIX = "ais_"
ISSUER = "studiolo"
# Access tokens remembered as verified per process (TokenCodec.decode_access).
_VERIFIED_MAX = 10_000


def digest(secret: str) -> str:
    """SHA-256 of a high-entropy secret (refresh token, API key, code+salt): enough, and indexable."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(30)


def new_code() -> str:
    return f"{secrets.randbelow(10**6):06d}"


def code_digest(code_id: str, code: str) -> str:
    # Salted with the row id: 6 digits are a tiny space, an unsalted table of all million hashes is trivial.
    return digest(f"{code_id}:{code}")


def load_secret_key(settings: Settings) -> str:
    """The configured key, or one generated once and kept (0600) in the data directory."""
    if settings.secret_key:
        return settings.secret_key
    path: Path = settings.data_dir / "secret.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{secrets.token_hex(4)}")
        # Created 0600, not chmod-ed after writing: the key must never sit readable by others, even for a moment.
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
            file.write(secrets.token_urlsafe(48))
        try:
            # link, not rename: when two processes start at once, the first key wins and both read it
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    return path.read_text().strip()


@dataclass(frozen=True)
class AccessClaims:
    user_id: str
    role: str
    scopes: frozenset[str]
    epoch: int
    session_id: str  # the refresh-token family this access token belongs to ("" for none)
    expires_at: datetime


@dataclass
class TokenCodec:
    key: str
    access_minutes: int
    _verified: dict[str, AccessClaims] = field(default_factory=dict, repr=False, compare=False)

    def mint_access(self, user_id: str, role: str, scopes: list[str], epoch: int, session_id: str) -> str:
        now = utcnow()
        claims = {
            "iss": ISSUER,
            "sub": user_id,
            "typ": "access",
            "role": role,
            "scp": " ".join(scopes),
            "ep": epoch,
            "sid": session_id,
            "iat": now,
            "exp": now + timedelta(minutes=self.access_minutes),
        }
        return jwt.encode(claims, self.key, algorithm="HS256")

    def decode_access(self, token: str) -> AccessClaims:
        # A token whose signature and claims were checked once is remembered (by its exact bytes) until it expires:
        # clients send the same token with every request, and decoding it was a tenth of a submit's CPU
        # (bench/queue.py). Only expiry can change for the same bytes; revocation is checked by the caller.
        cached = self._verified.get(token)
        if cached is not None:
            if cached.expires_at <= utcnow():
                self._verified.pop(token, None)
                raise Unauthorized("The access token has expired; refresh it.", code="token_expired")
            return cached
        claims = self._decode_access(token)
        if len(self._verified) >= _VERIFIED_MAX:
            self._verified.clear()  # crude but bounded: a full cache is simply started again
        self._verified[token] = claims
        return claims

    def _decode_access(self, token: str) -> AccessClaims:
        try:
            data = jwt.decode(
                token,
                self.key,
                algorithms=["HS256"],
                issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "typ", "iss"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("The access token has expired; refresh it.", code="token_expired") from exc
        except jwt.InvalidTokenError as exc:
            raise Unauthorized("The access token is not valid.", code="invalid_token") from exc
        if data.get("typ") != "access" or not isinstance(data.get("ep"), int):
            raise Unauthorized("The access token is not valid.", code="invalid_token")
        return AccessClaims(
            user_id=str(data["sub"]),
            role=str(data.get("role", "user")),
            scopes=frozenset(str(data.get("scp", "")).split()),
            epoch=int(data["ep"]),
            session_id=str(data.get("sid", "")),
            expires_at=datetime.fromtimestamp(int(data["exp"]), tz=utcnow().tzinfo),
        )

    def sign(self, purpose: str, value: str) -> str:
        """An HMAC of ``value`` for ``purpose`` (CSRF tokens, the setup link): stateless and per-purpose."""
        return hmac.new(self.key.encode(), f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()
