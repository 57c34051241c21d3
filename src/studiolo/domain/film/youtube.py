"""Publishing a rendered film to YouTube (issue 16): the Google connection and the resumable upload.

Connection. A signed-in user grants the YouTube scopes through Google's usual consent page (incremental consent:
``include_granted_scopes=true``, ``access_type=offline`` and ``prompt=consent`` so a refresh token comes back). The
flow keeps no server-side state, like the sign-in (accounts/oauth.py): the state, the PKCE verifier, the user and
where to go back to travel in a short-lived signed cookie. The tokens are stored encrypted (AES-GCM, a key derived
with HKDF from the server's secret key, the row's user and column as associated data) in ``provider_tokens``:
unlike passwords they must be usable again, so they cannot be hashed.

Two scopes are asked for: ``youtube.upload`` (videos.insert) and ``youtube.force-ssl``, which Google requires for
captions.insert; without the second, the subtitles could not be attached.

Upload. The YouTube Data API v3 resumable protocol: a POST with the video's metadata opens a session (its URI comes
back in ``Location``), PUTs send the file in chunks (multiples of 256 KiB, ``Content-Range: bytes a-b/total``), a
308 answer's ``Range`` says what arrived; after an error, ``Content-Range: bytes */total`` asks the server how far
it got. The session URI and the bytes confirmed are kept on the publication row after every chunk, so an upload
cut by a crash or a restart goes on from there (``resume`` or the sweeper, which picks up rows whose heartbeat is
older than the lease). 5xx answers and network errors are retried with exponential backoff; a 401 refreshes the
access token once. When the video is in, the film's SRT is posted as an English caption track.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlencode

import httpx
import jwt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import BaseModel, Field, field_validator
from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.orm import Session

from studiolo.db.base import utcnow
from studiolo.db.session import Database
from studiolo.domain.accounts.redirects import safe_next
from studiolo.domain.film.models import FilmProject, FilmPublication, ProviderToken
from studiolo.errors import Conflict, NotFound, StudioloError
from studiolo.settings import Settings
from studiolo.storage.base import ObjectStore

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

CHUNK_UNIT = 256 * 1024  # the protocol's: every chunk but the last is a multiple of it
DEFAULT_CHUNK_BYTES = 32 * CHUNK_UNIT  # 8 MiB
ACTIVE_STATUSES = ("pending", "uploading", "processing")
Privacy = Literal["private", "unlisted", "public"]

_HKDF_INFO = b"studiolo provider tokens v1"
_TOKEN_PREFIX = "v1."
_DISCOVERY_TTL_SECONDS = 3600.0
_REFRESH_MARGIN = timedelta(seconds=60)
_HEARTBEAT_SECONDS = 5.0


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


class _UploadError(Exception):
    """Ends an upload attempt: the row is marked failed with this code (the session kept when retryable)."""

    def __init__(self, code: str, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable


class _Stopped(Exception):
    """The service is closing: the row is left as it is, for the next process to go on with."""


# --- schemas -----------------------------------------------------------------------------------------------
class PublishRequest(BaseModel):
    title: str | None = Field(default=None, min_length=1, max_length=100)
    description: str | None = Field(default=None, max_length=5000)
    tags: list[str] | None = Field(default=None, max_length=50)
    privacy: Privacy = "private"

    @field_validator("title", "description")
    @classmethod
    def _no_angle_brackets(cls, value: str | None) -> str | None:
        # YouTube refuses < and > in titles and descriptions (invalidTitle / invalidDescription).
        if value is not None and ("<" in value or ">" in value):
            raise ValueError("must not contain < or >")
        return value

    @field_validator("tags")
    @classmethod
    def _tags_fit(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        tags = [t.strip() for t in value if t.strip()]
        if any(len(t) > 100 or "<" in t or ">" in t for t in tags) or sum(len(t) for t in tags) > 500:
            raise ValueError("at most 500 characters of tags, each at most 100, without < or >")
        return tags


class PublicationError(BaseModel):
    code: str
    message: str


class PublicationView(BaseModel):
    id: str
    film_id: str
    provider: str
    status: str  # pending | uploading | processing | done | failed
    title: str
    description: str
    tags: list[str]
    privacy: str
    bytes_sent: int
    total_bytes: int
    video_id: str | None
    url: str | None
    captions_uploaded: bool
    error: PublicationError | None
    created_at: datetime
    updated_at: datetime


class ConnectionView(BaseModel):
    available: bool  # this server has a Google OAuth client: the "Connect YouTube" button can work
    connected: bool
    scopes: list[str]


def publication_view(row: FilmPublication) -> PublicationView:
    error = PublicationError(code=row.error_code, message=row.error_message or "") if row.error_code else None
    return PublicationView(
        id=row.id,
        film_id=row.project_id,
        provider=row.provider,
        status=row.status,
        title=row.title,
        description=row.description,
        tags=list(row.tags or []),
        privacy=row.privacy,
        bytes_sent=row.bytes_sent,
        total_bytes=row.total_bytes,
        video_id=row.video_id,
        url=f"https://youtu.be/{row.video_id}" if row.video_id else None,
        captions_uploaded=row.captions_uploaded,
        error=error,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


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


def _parse_range(header: str | None) -> int:
    """The next byte to send after a 308: ``Range: bytes=0-N`` -> N + 1; no header -> 0 (nothing arrived)."""
    if not header or not header.startswith("bytes=0-"):
        return 0
    try:
        return int(header[len("bytes=0-") :]) + 1
    except ValueError:
        return 0


def _google_error(response: httpx.Response) -> tuple[str, str]:
    """The reason and message of a Google API error body, as far as it has them."""
    try:
        body = response.json()
    except ValueError:
        return "", response.text[:300]
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        errors = error.get("errors")
        reason = ""
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            reason = str(errors[0].get("reason", ""))
        return reason, str(error.get("message", ""))[:500]
    if isinstance(error, str):
        return error, str(body.get("error_description", ""))[:500]
    return "", response.text[:300]


class YouTubeService:
    def __init__(
        self,
        *,
        db: Database,
        settings: Settings,
        store: ObjectStore,
        secret_key: str,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        lease_seconds: float = 180.0,
        max_retries: int = 6,
        backoff_seconds: float | None = None,
    ) -> None:
        if chunk_bytes <= 0 or chunk_bytes % CHUNK_UNIT:
            raise ValueError(f"chunk_bytes must be a positive multiple of {CHUNK_UNIT}")
        self.db = db
        self.settings = settings
        self.store = store
        self.chunk_bytes = chunk_bytes
        self.lease_seconds = lease_seconds
        self.max_retries = max_retries
        self.backoff_seconds = settings.retry_backoff_seconds if backoff_seconds is None else backoff_seconds
        self._state_key = secret_key
        self._cipher = TokenCipher(secret_key)
        self._discovery: tuple[float, dict[str, Any]] | None = None
        self._lock = threading.Lock()
        self._threads: dict[str, threading.Thread] = {}
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None

    # --- connection ---------------------------------------------------------------------------------------
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
                with self._http() as client:
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

    def _tokens(self, user_id: str) -> _Tokens | None:
        with self.db.session() as session:
            row = session.get(ProviderToken, (user_id, PROVIDER))
            return self._decrypt_row(row) if row is not None else None

    def _access_token(self, user_id: str, *, force_refresh: bool = False) -> str:
        tokens = self._tokens(user_id)
        if tokens is None:
            raise _UploadError(
                "youtube_not_connected", "The YouTube connection is gone; connect again.", retryable=False
            )
        expired = tokens.expires_at is not None and tokens.expires_at - _REFRESH_MARGIN <= utcnow()
        if not (force_refresh or expired):
            return tokens.access
        if not tokens.refresh:
            raise _UploadError(
                "youtube_not_connected",
                "The YouTube access expired and cannot be renewed; connect again.",
                retryable=False,
            )
        try:
            body = self._token_request(
                self._endpoints().token, {"grant_type": "refresh_token", "refresh_token": tokens.refresh}
            )
        except TokenRefused as exc:
            raise _UploadError(
                "youtube_not_connected", "Google no longer accepts this connection; connect again.", retryable=False
            ) from exc
        except StudioloError as exc:
            raise _UploadError("youtube_unavailable", exc.message) from exc
        self._store_tokens(user_id, body, str(body.get("scope", "")).split())
        return str(body["access_token"])

    # --- Google's endpoints -------------------------------------------------------------------------------
    def _http(self, *, timeout: float | None = None) -> httpx.Client:
        seconds = timeout if timeout is not None else self.settings.hub_timeout_seconds
        return httpx.Client(timeout=httpx.Timeout(seconds, connect=min(seconds, 10.0)), follow_redirects=False)

    def _endpoints(self) -> _Endpoints:
        now = time.monotonic()
        cached = self._discovery
        if cached is None or now - cached[0] > _DISCOVERY_TTL_SECONDS:
            try:
                with self._http() as client:
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
            with self._http() as client:
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

    # --- publications -------------------------------------------------------------------------------------
    def _project(self, session: Session, owner_id: str, film_id: str) -> FilmProject:
        project = session.scalar(
            select(FilmProject).where(
                FilmProject.id == film_id, FilmProject.owner_id == owner_id, FilmProject.deleted_at.is_(None)
            )
        )
        if project is None:
            raise NotFound("No such film.", code="film_not_found")
        return project

    def publish(self, owner_id: str, film_id: str, request: PublishRequest) -> PublicationView:
        """Record the publication and start uploading in the background; 409 when not connected or not rendered."""
        connected = self.connection(owner_id).connected
        with self.db.session() as session:
            project = self._project(session, owner_id, film_id)
            media_key = (project.outputs or {}).get("mp4")
            if not isinstance(media_key, str) or not media_key:
                raise Conflict("Render the film before publishing it.", code="no_render")
            if not connected:
                raise YouTubeNotConnected("Connect your YouTube account first.", details={"connect_url": CONNECT_PATH})
            active = session.scalar(
                select(FilmPublication.id).where(
                    FilmPublication.project_id == project.id, FilmPublication.status.in_(ACTIVE_STATUSES)
                )
            )
            if active is not None:  # a double click must not put the film on the channel twice
                raise Conflict(
                    "This film is being uploaded already.", code="upload_in_progress", details={"publication": active}
                )
            total = self._size(media_key)
            row = FilmPublication(
                project_id=project.id,
                owner_id=owner_id,
                provider="youtube",
                status="uploading",
                title=request.title or project.title[:100].replace("<", "").replace(">", "") or "Untitled",
                description=request.description or "",
                tags=request.tags or [],
                privacy=request.privacy,
                media_key=media_key,
                total_bytes=total,
                bytes_sent=0,
            )
            session.add(row)
            session.flush()
            view = publication_view(row)
        self._spawn(view.id)
        return view

    def publications(self, owner_id: str, film_id: str) -> list[PublicationView]:
        with self.db.session() as session:
            self._project(session, owner_id, film_id)
            rows = session.scalars(
                select(FilmPublication)
                .where(FilmPublication.project_id == film_id, FilmPublication.owner_id == owner_id)
                .order_by(FilmPublication.created_at.desc(), FilmPublication.id.desc())
            )
            return [publication_view(r) for r in rows]

    def get(self, owner_id: str, film_id: str, publication_id: str) -> PublicationView:
        with self.db.session() as session:
            row = self._publication(session, owner_id, film_id, publication_id)
            return publication_view(row)

    def _publication(self, session: Session, owner_id: str, film_id: str, publication_id: str) -> FilmPublication:
        row = session.scalar(
            select(FilmPublication).where(
                FilmPublication.id == publication_id,
                FilmPublication.project_id == film_id,
                FilmPublication.owner_id == owner_id,
            )
        )
        if row is None:
            raise NotFound("No such publication.", code="publication_not_found")
        return row

    def resume(self, owner_id: str, film_id: str, publication_id: str) -> PublicationView:
        """Go on with a failed or interrupted upload from where YouTube says it got."""
        with self.db.session() as session:
            self._project(session, owner_id, film_id)
            row = self._publication(session, owner_id, film_id, publication_id)
            if row.status == "done":
                raise Conflict("This film is already on YouTube.", code="already_published")
        if self._running(publication_id) or not self._claim(publication_id, explicit=True):
            raise Conflict("This upload is going on already.", code="upload_in_progress")
        if not self.connection(owner_id).connected:
            self._fail(publication_id, "youtube_not_connected", "Connect your YouTube account first.")
            raise YouTubeNotConnected("Connect your YouTube account first.", details={"connect_url": CONNECT_PATH})
        self._spawn(publication_id)
        return self.get(owner_id, film_id, publication_id)

    def _claim(self, publication_id: str, *, explicit: bool) -> bool:
        """Take a publication to upload (atomic, for several processes): a failed one when asked to, an active
        one whose heartbeat is older than the lease (its process died)."""
        now = utcnow()
        stale = now - timedelta(seconds=self.lease_seconds)
        conditions: list[ColumnElement[bool]] = [
            and_(FilmPublication.status.in_(ACTIVE_STATUSES), FilmPublication.updated_at < stale)
        ]
        if explicit:
            conditions.append(FilmPublication.status == "failed")
        with self.db.session() as session:
            result = session.execute(
                update(FilmPublication)
                .where(FilmPublication.id == publication_id, or_(*conditions))
                .values(status="uploading", updated_at=now, error_code=None, error_message=None)
                .execution_options(synchronize_session=False)
            )
            return bool(getattr(result, "rowcount", 0))

    def resume_stale(self) -> int:
        """Start again every active upload whose process stopped (a restart); returns how many."""
        stale = utcnow() - timedelta(seconds=self.lease_seconds)
        with self.db.session() as session:
            ids = list(
                session.scalars(
                    select(FilmPublication.id).where(
                        FilmPublication.status.in_(ACTIVE_STATUSES), FilmPublication.updated_at < stale
                    )
                )
            )
        started = 0
        for pub_id in ids:
            if not self._running(pub_id) and self._claim(pub_id, explicit=False):
                self._spawn(pub_id)
                started += 1
        return started

    # --- background threads -------------------------------------------------------------------------------
    def start(self) -> None:
        """The sweeper: at start, then every lease, picks up uploads a stopped process left."""
        with self._lock:
            if self._sweeper is not None and self._sweeper.is_alive():
                return
            self._stop.clear()
            self._sweeper = threading.Thread(target=self._sweep, name="youtube-sweeper", daemon=True)
            self._sweeper.start()

    def _sweep(self) -> None:
        while not self._stop.is_set():
            try:
                self.resume_stale()
            except Exception:  # a database hiccup must not end the sweeper
                log.exception("YouTube upload sweep failed")
            self._stop.wait(max(self.lease_seconds, 1.0))

    def close(self, timeout: float = 10.0) -> None:
        self._stop.set()
        with self._lock:
            threads = [*self._threads.values(), *([self._sweeper] if self._sweeper else [])]
            self._sweeper = None
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def wait(self, publication_id: str, timeout: float = 30.0) -> None:
        """Block until this process's upload thread for the publication ends (tests, the CLI)."""
        with self._lock:
            thread = self._threads.get(publication_id)
        if thread is not None:
            thread.join(timeout)

    def _running(self, publication_id: str) -> bool:
        with self._lock:
            thread = self._threads.get(publication_id)
            return thread is not None and thread.is_alive()

    def _spawn(self, publication_id: str) -> None:
        with self._lock:
            thread = threading.Thread(
                target=self._run, args=(publication_id,), name=f"youtube-{publication_id[:8]}", daemon=True
            )
            self._threads[publication_id] = thread
        thread.start()

    def _run(self, publication_id: str) -> None:
        try:
            self._upload(publication_id)
        except _Stopped:
            # Left as it is, but with its heartbeat put back past the lease: the next process's start-up sweep
            # takes it at once instead of waiting for the lease to run out.
            log.info("YouTube upload %s paused by shutdown; it goes on after the restart", publication_id)
            self._release(publication_id)
        except _UploadError as exc:
            self._fail(publication_id, exc.code, exc.message)
        except Exception as exc:
            log.exception("YouTube upload %s failed", publication_id)
            self._fail(publication_id, "youtube_upload_failed", f"The upload failed: {exc!r}"[:500])
        finally:
            with self._lock:
                if self._threads.get(publication_id) is threading.current_thread():
                    del self._threads[publication_id]

    # --- row updates --------------------------------------------------------------------------------------
    def _save(self, publication_id: str, **values: Any) -> None:
        with self.db.session() as session:
            session.execute(
                update(FilmPublication)
                .where(FilmPublication.id == publication_id)
                .values(updated_at=utcnow(), **values)
                .execution_options(synchronize_session=False)
            )

    def _release(self, publication_id: str) -> None:
        with self.db.session() as session:
            session.execute(
                update(FilmPublication)
                .where(FilmPublication.id == publication_id, FilmPublication.status.in_(ACTIVE_STATUSES))
                .values(updated_at=utcnow() - timedelta(seconds=self.lease_seconds + 1))
                .execution_options(synchronize_session=False)
            )

    def _fail(self, publication_id: str, code: str, message: str) -> None:
        log.warning("YouTube upload %s failed: %s %s", publication_id, code, message)
        self._save(publication_id, status="failed", error_code=code, error_message=message[:2000])

    # --- the upload ---------------------------------------------------------------------------------------
    def _size(self, key: str) -> int:
        path = self.store.local_path(key)
        if path is not None and path.exists():
            return path.stat().st_size
        if not self.store.exists(key):
            raise Conflict("The film's rendered video is missing; render it again.", code="no_render")
        return len(self.store.get(key))

    def _upload(self, publication_id: str) -> None:
        with self.db.session() as session:
            row = session.get_one(FilmPublication, publication_id)
            owner_id, film_id = row.owner_id, row.project_id
            metadata = {
                "snippet": {
                    "title": row.title,
                    "description": row.description,
                    "tags": list(row.tags or []),
                    "categoryId": "22",
                },
                "status": {"privacyStatus": row.privacy, "selfDeclaredMadeForKids": False},
            }
            media_key, session_url, video_id = row.media_key, row.session_url, row.video_id
            captions_done = row.captions_uploaded
            project = session.get(FilmProject, film_id)
            srt_key = (project.outputs or {}).get("srt") if project is not None else None
        uploader = _Uploader(self, publication_id, owner_id)
        if video_id is None:
            with _Media(self.store, media_key) as media:
                video_id = uploader.upload_video(media, metadata, session_url)
            self._save(publication_id, video_id=video_id, status="processing", session_url=None)
        if not captions_done and isinstance(srt_key, str) and srt_key and self.store.exists(srt_key):
            try:
                uploader.upload_captions(video_id, self.store.get(srt_key))
            except _UploadError as exc:
                # The video is on YouTube: the publication is done, with the captions' failure on it.
                self._save(publication_id, status="done", error_code="captions_failed", error_message=exc.message)
                return
            self._save(publication_id, captions_uploaded=True)
        self._save(publication_id, status="done", error_code=None, error_message=None)


class _Media:
    """The MP4 being uploaded: read by ranges from the store's file, or from memory for remote stores."""

    def __init__(self, store: ObjectStore, key: str) -> None:
        self._store = store
        self._key = key
        self._file: Any = None
        self._data: bytes | None = None
        self.size = 0

    def __enter__(self) -> _Media:
        path: Path | None = self._store.local_path(self._key)
        if path is not None and path.exists():
            self._file = path.open("rb")
            self.size = path.stat().st_size
        else:
            if not self._store.exists(self._key):
                raise _UploadError(
                    "no_render", "The film's rendered video is missing; render it again.", retryable=False
                )
            self._data = self._store.get(self._key)
            self.size = len(self._data)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()

    def pieces(self, start: int, end: int, piece: int = 64 * 1024) -> Iterator[bytes]:
        """Bytes [start, end) in pieces."""
        position = start
        while position < end:
            size = min(piece, end - position)
            if self._data is not None:
                chunk = self._data[position : position + size]
            else:
                self._file.seek(position)
                chunk = self._file.read(size)
            if not chunk:
                raise _UploadError("youtube_upload_failed", "The video file changed while uploading.", retryable=False)
            position += len(chunk)
            yield chunk


class _Uploader:
    """One upload attempt of one publication, in its thread."""

    def __init__(self, service: YouTubeService, publication_id: str, owner_id: str) -> None:
        self.service = service
        self.publication_id = publication_id
        self.owner_id = owner_id
        self.api = service.settings.film_youtube_api_base.rstrip("/")
        self._token: str | None = None
        self._last_beat = time.monotonic()

    # --- plumbing -----------------------------------------------------------------------------------------
    def _auth(self, *, refresh: bool = False) -> dict[str, str]:
        if refresh or self._token is None:
            self._token = self.service._access_token(self.owner_id, force_refresh=refresh)
        return {"Authorization": f"Bearer {self._token}"}

    def _beat(self, **values: Any) -> None:
        self.service._save(self.publication_id, **values)
        self._last_beat = time.monotonic()

    def _sleep(self, attempt: int) -> None:
        """Backoff before retry ``attempt`` (1, 2, ...), capped at 30 s (well inside the lease), with jitter; stops
        at shutdown."""
        delay = min(30.0, self.service.backoff_seconds * (2 ** (attempt - 1))) * (0.75 + secrets.randbelow(500) / 1000)
        if self.service._stop.wait(delay):
            raise _Stopped
        self._beat()

    def _check_stop(self) -> None:
        if self.service._stop.is_set():
            raise _Stopped

    def _request(self, client: httpx.Client, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """A request with a 401 answered by one token refresh, 5xx and network errors retried with backoff."""
        refreshed = False
        failures = 0
        while True:
            self._check_stop()
            headers = {**kwargs.pop("headers", {}), **self._auth()}
            try:
                response = client.request(method, url, headers=headers, **kwargs)
            except httpx.HTTPError as exc:
                failures += 1
                if failures > self.service.max_retries:
                    raise _UploadError("youtube_unavailable", f"YouTube could not be reached: {exc!r}"[:500]) from exc
                self._sleep(failures)
                kwargs["headers"] = {k: v for k, v in headers.items() if k != "Authorization"}
                continue
            kwargs["headers"] = {k: v for k, v in headers.items() if k != "Authorization"}
            if response.status_code == 401 and not refreshed:
                refreshed = True
                self._auth(refresh=True)
                continue
            if response.status_code >= 500:
                failures += 1
                if failures > self.service.max_retries:
                    raise _UploadError("youtube_unavailable", f"YouTube answered {response.status_code} repeatedly.")
                self._sleep(failures)
                continue
            return response

    def _refused(self, response: httpx.Response, what: str) -> _UploadError:
        reason, message = _google_error(response)
        if response.status_code == 401:
            return _UploadError(
                "youtube_not_connected", "YouTube refused the connection; connect again.", retryable=False
            )
        code = "youtube_quota_exceeded" if reason in ("quotaExceeded", "uploadLimitExceeded") else "youtube_rejected"
        text = f"YouTube refused the {what} ({response.status_code}{', ' + reason if reason else ''}): {message}"
        return _UploadError(code, text.strip()[:1000], retryable=code == "youtube_quota_exceeded")

    # --- the video ----------------------------------------------------------------------------------------
    def _open_session(self, client: httpx.Client, metadata: dict[str, Any], total: int) -> str:
        response = self._request(
            client,
            "POST",
            f"{self.api}/upload/youtube/v3/videos",
            params={"uploadType": "resumable", "part": "snippet,status"},
            json=metadata,
            headers={"X-Upload-Content-Type": "video/mp4", "X-Upload-Content-Length": str(total)},
        )
        location = response.headers.get("location")
        if response.status_code != 200 or not location:
            raise self._refused(response, "upload")
        self._beat(session_url=location, bytes_sent=0, total_bytes=total)
        return str(location)

    def _status(self, client: httpx.Client, session_url: str, total: int) -> tuple[int, str | None] | None:
        """What the session holds: (next byte, None), (total, video id) when complete, None when it is gone."""
        response = self._request(
            client, "PUT", session_url, headers={"Content-Range": f"bytes */{total}", "Content-Length": "0"}
        )
        if response.status_code == 308:
            return _parse_range(response.headers.get("range")), None
        if response.status_code in (200, 201):
            return total, self._video_id(response)
        if response.status_code in (404, 410):
            return None
        raise self._refused(response, "upload")

    def _video_id(self, response: httpx.Response) -> str:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("id"), str) or not body["id"]:
            raise _UploadError("youtube_upload_failed", "YouTube finished the upload without a video id.")
        return str(body["id"])

    def upload_video(self, media: _Media, metadata: dict[str, Any], session_url: str | None) -> str:
        total = media.size
        with self.service._http(timeout=max(60.0, self.service.settings.hub_timeout_seconds)) as client:
            offset = 0
            if session_url:
                known = self._status(client, session_url, total)
                if known is None:
                    session_url = None  # expired (a week old) or unknown: a new session from the start
                else:
                    offset, video_id = known
                    if video_id is not None:
                        self._beat(bytes_sent=total)
                        return video_id
            if not session_url:
                session_url = self._open_session(client, metadata, total)
            self._beat(bytes_sent=offset, total_bytes=total)
            failures = 0
            refreshed = False
            while True:
                self._check_stop()
                end = min(offset + self.service.chunk_bytes, total)
                try:
                    response = self._put_chunk(client, session_url, media, offset, end, total)
                except httpx.HTTPError as exc:
                    response = None
                    log.info("YouTube chunk upload interrupted (%r); asking the session what arrived", exc)
                if response is not None and response.status_code == 308:
                    offset = _parse_range(response.headers.get("range"))
                    failures = 0
                    refreshed = False
                    self._beat(bytes_sent=offset)
                    continue
                if response is not None and response.status_code in (200, 201):
                    self._beat(bytes_sent=total)
                    return self._video_id(response)
                if response is not None and response.status_code == 401 and not refreshed:
                    refreshed = True  # once: a second 401 in a row is refused below
                    self._auth(refresh=True)
                    continue
                if response is not None and response.status_code in (404, 410):
                    session_url = self._open_session(client, metadata, total)
                    offset = 0
                    continue
                if response is not None and response.status_code < 500:
                    raise self._refused(response, "upload")
                failures += 1
                if failures > self.service.max_retries:
                    raise _UploadError("youtube_unavailable", "YouTube kept failing; the upload can be resumed.")
                self._sleep(failures)
                known = self._status(client, session_url, total)
                if known is None:
                    session_url = self._open_session(client, metadata, total)
                    offset = 0
                    continue
                offset, video_id = known
                self._beat(bytes_sent=offset)
                if video_id is not None:
                    return video_id

    def _put_chunk(
        self, client: httpx.Client, session_url: str, media: _Media, start: int, end: int, total: int
    ) -> httpx.Response:
        def body() -> Iterator[bytes]:
            for piece in media.pieces(start, end):
                if time.monotonic() - self._last_beat > _HEARTBEAT_SECONDS:
                    self._beat()  # a slow chunk must not look like a dead process to the sweeper
                yield piece

        headers = {
            **self._auth(),
            "Content-Type": "video/mp4",
            "Content-Length": str(end - start),
            "Content-Range": f"bytes {start}-{end - 1}/{total}",
        }
        return client.put(session_url, content=body(), headers=headers)

    # --- the captions -------------------------------------------------------------------------------------
    def upload_captions(self, video_id: str, srt: bytes) -> None:
        boundary = "studiolo-" + secrets.token_hex(12)
        snippet = {"snippet": {"videoId": video_id, "language": "en", "name": "Studiolo", "isDraft": False}}
        body = b"".join(
            [
                f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n".encode(),
                json.dumps(snippet).encode(),
                f"\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n".encode(),
                srt,
                f"\r\n--{boundary}--\r\n".encode(),
            ]
        )
        with self.service._http() as client:
            response = self._request(
                client,
                "POST",
                f"{self.api}/upload/youtube/v3/captions",
                params={"uploadType": "multipart", "part": "snippet"},
                content=body,
                headers={"Content-Type": f"multipart/related; boundary={boundary}"},
            )
        if response.status_code not in (200, 201):
            raise self._refused(response, "captions")
