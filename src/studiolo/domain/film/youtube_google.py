"""The Google side of YouTube publishing: the consent round trip for the YouTube scopes and the tokens it yields.

A signed-in user grants the YouTube scopes through Google's usual consent page (incremental consent:
``include_granted_scopes=true``, ``access_type=offline`` and ``prompt=consent`` so a refresh token comes back). The
flow keeps no server-side state, like the sign-in (accounts/oauth.py): the state, the PKCE verifier, the user and
where to go back to travel in a short-lived signed cookie. The tokens are stored encrypted (AES-GCM, a key derived
with HKDF from the server's secret key, the row's user and column as associated data) in ``provider_tokens``:
unlike passwords they must be usable again, so they cannot be hashed.

Two scopes are asked for: ``youtube.upload`` (videos.insert) and ``youtube.force-ssl``, which Google requires for
captions.insert; without the second, the subtitles could not be attached.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from studiolo.db.base import utcnow
from studiolo.db.session import Database
from studiolo.domain.accounts.redirects import safe_next
from studiolo.domain.film.models import ProviderToken
from studiolo.domain.film.youtube_schemas import ConnectionView
from studiolo.errors import Conflict, NotFound, StudioloError
from studiolo.settings import Settings

log = logging.getLogger(__name__)

PROVIDER = "google"
UPLOAD_SCOPE = "https://www.googleapis.com/auth/youtube.upload"
CAPTIONS_SCOPE = "https://www.googleapis.com/auth/youtube.force-ssl"
SCOPES = (UPLOAD_SCOPE, CAPTIONS_SCOPE)
CONNECT_PATH = "/api/v1/auth/google/youtube"
# Under /auth/oauth like the sign-in callbacks: a browser-only, cookie-checked round trip.
CALLBACK_PATH = "/api/v1/auth/oauth/google/youtube/callback"
STATE_COOKIE = "studiolo_youtube"
STATE_MINUTES = 10
_STATE_AUDIENCE = "studiolo:youtube-connect"

_HKDF_INFO = b"studiolo provider tokens v1"
_TOKEN_PREFIX = "v1."
_DISCOVERY_TTL_SECONDS = 3600.0
_REFRESH_MARGIN = timedelta(seconds=60)


# --- errors ------------------------------------------------------------------------------------------------
class YouTubeNotConnected(Conflict):
    code = "youtube_not_connected"


class YouTubeConnectFailed(StudioloError):
    status_code = 400
    code = "youtube_connect_failed"


class YouTubeProviderUnavailable(StudioloError):
    status_code = 502
    code = "youtube_provider_unavailable"


class TokenRefused(YouTubeProviderUnavailable):
    """Google's token endpoint refused the code or the refresh token (as the sign-in's, a 502 to the browser)."""

    code = "oauth_token_exchange_failed"


class UploadError(Exception):
    """Ends an upload attempt: the row is marked failed with this code (the session kept when retryable)."""

    def __init__(self, code: str, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable


# --- token encryption --------------------------------------------------------------------------------------
class TokenCipher:
    """AES-256-GCM under a key derived (HKDF-SHA256) from the server's secret key. The associated data binds a
    ciphertext to its row and column: a value copied into another user's row does not decrypt."""

    def __init__(self, secret_key: str) -> None:
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO)
        self._aead = AESGCM(hkdf.derive(secret_key.encode()))

    def encrypt(self, plaintext: str, context: str) -> str:
        nonce = secrets.token_bytes(12)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), context.encode())
        return _TOKEN_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def decrypt(self, token: str, context: str) -> str | None:
        """The plaintext, or None when it cannot be read (another secret key, tampering)."""
        if not token.startswith(_TOKEN_PREFIX):
            return None
        try:
            raw = base64.urlsafe_b64decode(token[len(_TOKEN_PREFIX) :].encode())
            return self._aead.decrypt(raw[:12], raw[12:], context.encode()).decode()
        except (InvalidTag, ValueError):
            return None


@dataclass(frozen=True)
class Authorization:
    url: str
    cookie: str


@dataclass(frozen=True)
class _Endpoints:
    authorize: str
    token: str
    revoke: str | None


@dataclass
class _Tokens:
    access: str
    refresh: str | None
    expires_at: datetime | None
    scopes: list[str]


def _pkce_challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


class GoogleConnection:
    """A user's Google connection for YouTube: consent, encrypted tokens, refresh and revocation."""

    def __init__(self, *, db: Database, settings: Settings, secret_key: str) -> None:
        self.db = db
        self.settings = settings
        self._state_key = secret_key
        self._cipher = TokenCipher(secret_key)
        self._discovery: tuple[float, dict[str, Any]] | None = None

    # --- the consent round trip ---------------------------------------------------------------------------------------
    def configured(self) -> bool:
        return bool(self.settings.google_client_id)

    def _require_configured(self) -> None:
        if not self.configured():
            raise NotFound(
                "Publishing to YouTube needs a Google OAuth client (STUDIOLO_GOOGLE_CLIENT_ID and _SECRET).",
                code="youtube_not_configured",
            )

    def start_connect(self, user_id: str, next_path: str | None, redirect_uri: str) -> Authorization:
        """Google's consent URL for the YouTube scopes (state + PKCE S256) and the signed cookie that goes with it."""
        self._require_configured()
        endpoints = self._endpoints()
        state, verifier = secrets.token_urlsafe(32), secrets.token_urlsafe(48)
        query = {
            "client_id": self.settings.google_client_id,
            "response_type": "code",
            "redirect_uri": redirect_uri,
            "scope": " ".join(SCOPES),
            "state": state,
            "code_challenge": _pkce_challenge(verifier),
            "code_challenge_method": "S256",
            "access_type": "offline",
            "include_granted_scopes": "true",
            "prompt": "consent",
        }
        now = utcnow()
        claims = {
            "aud": _STATE_AUDIENCE,
            "sub": user_id,
            "st": state,
            "cv": verifier,
            "nx": safe_next(next_path, "/films"),
            "iat": now,
            "exp": now + timedelta(minutes=STATE_MINUTES),
        }
        separator = "&" if "?" in endpoints.authorize else "?"
        return Authorization(
            url=f"{endpoints.authorize}{separator}{urlencode(query)}",
            cookie=jwt.encode(claims, self._state_key, algorithm="HS256"),
        )

    def finish_connect(
        self,
        *,
        cookie: str | None,
        state: str | None,
        code: str | None,
        error: str | None,
        redirect_uri: str,
        user_id: str | None,
    ) -> str:
        """Check the callback against the cookie, exchange the code, keep the tokens; returns where to go next."""
        self._require_configured()
        mismatch = YouTubeConnectFailed(
            "The YouTube connection could not be matched to this browser (it expired or was started elsewhere); "
            "start again.",
            code="oauth_state_mismatch",
        )
        if not cookie or not state:
            raise mismatch
        try:
            data = jwt.decode(
                cookie,
                self._state_key,
                algorithms=["HS256"],
                audience=_STATE_AUDIENCE,
                options={"require": ["exp", "aud", "sub", "st", "cv"]},
            )
        except jwt.InvalidTokenError as exc:
            raise mismatch from exc
        if not secrets.compare_digest(str(data["st"]).encode(), state.encode()):
            raise mismatch
        owner = str(data["sub"])
        if user_id is not None and user_id != owner:
            raise mismatch  # signed in as someone else since the start: never attach tokens to the wrong account
        if error:
            if error == "access_denied":
                raise YouTubeConnectFailed("The YouTube access was declined at Google.", code="oauth_access_denied")
            raise YouTubeConnectFailed(
                "Google refused the YouTube access.", code="oauth_provider_error", details={"error": error[:100]}
            )
        if not code:
            raise YouTubeConnectFailed("Google sent no authorization code.", code="oauth_provider_error")
        endpoints = self._endpoints()
        body = self._token_request(
            endpoints.token,
            {
                "grant_type": "authorization_code",
                "code": code,
                "code_verifier": str(data["cv"]),
                "redirect_uri": redirect_uri,
            },
        )
        scopes = str(body.get("scope", "")).split()
        if UPLOAD_SCOPE not in scopes:
            raise YouTubeConnectFailed(
                "The permission to upload videos was not granted; tick it on Google's consent page.",
                code="youtube_scope_not_granted",
                details={"scopes": scopes},
            )
        self._store_tokens(owner, body, scopes)
        return str(data.get("nx", "/films"))

    def connection(self, user_id: str) -> ConnectionView:
        with self.db.session() as session:
            row = session.get(ProviderToken, (user_id, PROVIDER))
            # Tokens sealed under another secret key cannot be used: not connected, the user connects again.
            if row is None or UPLOAD_SCOPE not in row.scopes.split() or self._decrypt_row(row) is None:
                return ConnectionView(available=self.configured(), connected=False, scopes=[])
            return ConnectionView(available=self.configured(), connected=True, scopes=row.scopes.split())

    def disconnect(self, user_id: str) -> None:
        """Forget the tokens; Google is asked to revoke them too, best effort (a failure there is only logged)."""
        with self.db.session() as session:
            row = session.get(ProviderToken, (user_id, PROVIDER))
            if row is None:
                return
            tokens = self._decrypt_row(row)
            session.delete(row)
        if tokens is None or not self.configured():
            return
        try:
            endpoints = self._endpoints()
            if endpoints.revoke:
                with self.http() as client:
                    client.post(endpoints.revoke, data={"token": tokens.refresh or tokens.access})
        except (httpx.HTTPError, StudioloError) as exc:
            log.warning("YouTube token revocation failed (the tokens are forgotten here anyway): %r", exc)

    # --- tokens -------------------------------------------------------------------------------------------
    def _context(self, user_id: str, column: str) -> str:
        return f"provider_tokens:{user_id}:{PROVIDER}:{column}"

    def _store_tokens(self, user_id: str, body: dict[str, Any], scopes: list[str]) -> None:
        expires_in = body.get("expires_in")
        expires_at = utcnow() + timedelta(seconds=int(expires_in)) if isinstance(expires_in, int | float) else None
        with self.db.session() as session:
            row = session.get(ProviderToken, (user_id, PROVIDER))
            access = self._cipher.encrypt(str(body["access_token"]), self._context(user_id, "access"))
            refresh_plain = body.get("refresh_token")
            refresh = (
                self._cipher.encrypt(str(refresh_plain), self._context(user_id, "refresh"))
                if isinstance(refresh_plain, str) and refresh_plain
                else None
            )
            if row is None:
                session.add(
                    ProviderToken(
                        user_id=user_id,
                        provider=PROVIDER,
                        scopes=" ".join(scopes),
                        access_token=access,
                        refresh_token=refresh,
                        expires_at=expires_at,
                        updated_at=utcnow(),
                    )
                )
            else:
                row.scopes = " ".join(scopes) if scopes else row.scopes
                row.access_token = access
                if refresh is not None:  # a refresh answer usually has none: the old one stays valid
                    row.refresh_token = refresh
                row.expires_at = expires_at
                row.updated_at = utcnow()

    def _decrypt_row(self, row: ProviderToken) -> _Tokens | None:
        access = self._cipher.decrypt(row.access_token, self._context(row.user_id, "access"))
        if access is None:
            return None
        refresh = (
            self._cipher.decrypt(row.refresh_token, self._context(row.user_id, "refresh"))
            if row.refresh_token
            else None
        )
        return _Tokens(access=access, refresh=refresh, expires_at=row.expires_at, scopes=row.scopes.split())

    def tokens(self, user_id: str) -> _Tokens | None:
        with self.db.session() as session:
            row = session.get(ProviderToken, (user_id, PROVIDER))
            return self._decrypt_row(row) if row is not None else None

    def access_token(self, user_id: str, *, force_refresh: bool = False) -> str:
        tokens = self.tokens(user_id)
        if tokens is None:
            raise UploadError(
                "youtube_not_connected", "The YouTube connection is gone; connect again.", retryable=False
            )
        expired = tokens.expires_at is not None and tokens.expires_at - _REFRESH_MARGIN <= utcnow()
        if not (force_refresh or expired):
            return tokens.access
        if not tokens.refresh:
            raise UploadError(
                "youtube_not_connected",
                "The YouTube access expired and cannot be renewed; connect again.",
                retryable=False,
            )
        try:
            body = self._token_request(
                self._endpoints().token, {"grant_type": "refresh_token", "refresh_token": tokens.refresh}
            )
        except TokenRefused as exc:
            raise UploadError(
                "youtube_not_connected", "Google no longer accepts this connection; connect again.", retryable=False
            ) from exc
        except StudioloError as exc:
            raise UploadError("youtube_unavailable", exc.message) from exc
        self._store_tokens(user_id, body, str(body.get("scope", "")).split())
        return str(body["access_token"])

    # --- Google's endpoints -------------------------------------------------------------------------------
    def http(self, *, timeout: float | None = None) -> httpx.Client:
        seconds = timeout if timeout is not None else self.settings.hub_timeout_seconds
        return httpx.Client(timeout=httpx.Timeout(seconds, connect=min(seconds, 10.0)), follow_redirects=False)

    def _endpoints(self) -> _Endpoints:
        now = time.monotonic()
        cached = self._discovery
        if cached is None or now - cached[0] > _DISCOVERY_TTL_SECONDS:
            try:
                with self.http() as client:
                    response = client.get(self.settings.google_discovery_url)
                    response.raise_for_status()
                    doc = response.json()
            except (httpx.HTTPError, ValueError) as exc:
                raise YouTubeProviderUnavailable("Google could not be reached; try again later.") from exc
            if not isinstance(doc, dict) or not all(
                isinstance(doc.get(k), str) and doc[k] for k in ("authorization_endpoint", "token_endpoint")
            ):
                raise YouTubeProviderUnavailable("Google's OpenID configuration is incomplete.")
            cached = (now, doc)
            self._discovery = cached
        doc = cached[1]
        revoke = doc.get("revocation_endpoint")
        return _Endpoints(
            authorize=doc["authorization_endpoint"],
            token=doc["token_endpoint"],
            revoke=revoke if isinstance(revoke, str) and revoke else None,
        )

    def _token_request(self, url: str, form: dict[str, str]) -> dict[str, Any]:
        form = {
            **form,
            "client_id": self.settings.google_client_id,
            "client_secret": self.settings.google_client_secret,
        }
        try:
            with self.http() as client:
                response = client.post(url, data=form, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise YouTubeProviderUnavailable("Google could not be reached; try again later.") from exc
        if response.status_code >= 500:
            raise YouTubeProviderUnavailable("Google's token endpoint failed; try again later.")
        try:
            body = response.json()
        except ValueError as exc:
            raise YouTubeProviderUnavailable("Google's token endpoint answered something unreadable.") from exc
        if response.status_code != 200 or not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
            error = body.get("error") if isinstance(body, dict) else None
            log.warning("Google token request refused: %s %s", response.status_code, error)
            raise TokenRefused(
                "Google did not accept the request for a YouTube token.",
                details={"error": str(error or "")[:100]},
            )
        return body
