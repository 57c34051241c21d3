"""Sign in with Google (OpenID Connect) and GitHub (OAuth 2), through Authlib.

A provider is offered when its client id is configured (STUDIOLO_GOOGLE_CLIENT_ID, STUDIOLO_GITHUB_CLIENT_ID).

The flow keeps no server-side state: ``start`` puts the state, the PKCE verifier, the OIDC nonce and where to go
afterwards into a short-lived JWT (signed with the server key) that the router sets as an HttpOnly cookie;
``finish`` checks the provider's ``state`` against it, exchanges the code, proves who the person is (a verified
ID token for Google, the API for GitHub) and signs them in, creating or linking the account.

Linking rule (tests/integration/test_oauth.py): a provider identity is attached to an existing account only
when both sides proved the same mailbox (the provider says the address is verified and so does our row). A
pending sign-up is never linked: whoever typed that address never proved it, and linking would hand the account
to them or lock out the real owner.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import anyio.to_thread
import httpx
import jwt
from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError
from authlib.integrations.httpx_client import oauth2_client as _authlib_http
from joserfc import jwt as jose_jwt
from joserfc.errors import BadSignatureError, ClaimError, ExpiredTokenError, InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from studiolo.db.base import utcnow
from studiolo.db.session import Database
from studiolo.domain.accounts import audit, suspension
from studiolo.domain.accounts.audit import Origin
from studiolo.domain.accounts.models import OAuthAccount, User
from studiolo.domain.accounts.redirects import safe_next
from studiolo.domain.accounts.schemas import TokenPair
from studiolo.domain.accounts.service import AccountService, normalize_email
from studiolo.domain.accounts.tokens import TokenCodec
from studiolo.errors import Conflict, Forbidden, NotFound, StudioloError, Unauthorized
from studiolo.settings import Settings

log = logging.getLogger(__name__)

Provider = Literal["google", "github"]
Mode = Literal["redirect", "json"]

STATE_COOKIE = "studiolo_oauth"
STATE_COOKIE_PATH = "/api/v1/auth/oauth"  # sent back to the callback only
STATE_MINUTES = 10
_STATE_AUDIENCE = "studiolo:oauth-state"  # keeps this JWT from ever passing for an access token, and back

# Asymmetric algorithms only: an HS256 ID token "signed" with something public must never verify.
_ID_TOKEN_ALGORITHMS = ["RS256", "ES256"]
_CLOCK_LEEWAY_SECONDS = 60
_METADATA_TTL_SECONDS = 3600.0
# A token with an unknown key id makes us re-read the provider's keys (they rotate), at most this often, so
# forged tokens with random key ids cannot turn us into a request amplifier against the provider.
_JWKS_MIN_REFETCH_SECONDS = 60.0
# Authlib (1.7+) talks through httpx2 when it is installed (huggingface-hub brings it) and through httpx
# otherwise: its network errors are that library's classes, and one slipping through would be a 500. ValueError:
# a body that is not the JSON it should be; RecursionError: JSON nested past the interpreter's stack.
_PROVIDER_FAILURES: tuple[type[Exception], ...] = tuple(
    {
        httpx.HTTPError,
        getattr(getattr(_authlib_http, "httpx2", httpx), "HTTPError", httpx.HTTPError),
        ValueError,
        RecursionError,
    }
)
_GITHUB_HEADERS = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}


class OAuthFailed(StudioloError):
    """The sign-in cannot go on because of what came back from the browser or the provider."""

    status_code = 400
    code = "oauth_failed"


class ProviderUnavailable(StudioloError):
    """The provider could not be reached or answered something unusable (a bad gateway, not the user's fault)."""

    status_code = 502
    code = "oauth_provider_unavailable"


@dataclass(frozen=True)
class Authorization:
    """Where to send the browser, and the signed cookie that must come back with it."""

    url: str
    cookie: str


@dataclass(frozen=True)
class Callback:
    """The query string the provider sent the browser back with."""

    code: str | None = None
    state: str | None = None
    error: str | None = None
    error_description: str | None = None


@dataclass(frozen=True)
class SignedIn:
    pair: TokenPair
    next_path: str
    mode: Mode


@dataclass(frozen=True)
class Identity:
    """Who the provider says the person is. ``email`` is set only when the provider verified it."""

    provider: str
    subject: str
    email: str | None
    display_name: str


@dataclass(frozen=True)
class _Flow:
    state: str
    verifier: str
    nonce: str
    next_path: str
    mode: Mode


@dataclass(frozen=True)
class _Endpoints:
    authorize: str
    token: str
    issuer: str = ""
    jwks: str = ""


class OAuthService:
    def __init__(self, settings: Settings, *, db: Database, accounts: AccountService, codec: TokenCodec):
        self.settings = settings
        self.db = db
        self.accounts = accounts
        self.codec = codec
        # Provider metadata is fetched on first use, not at start: a server with no network must still start.
        self._discovery: tuple[float, dict[str, Any]] | None = None
        self._jwks: tuple[float, KeySet] | None = None

    def provider_names(self) -> list[str]:
        names = []
        if self.settings.google_client_id:
            names.append("google")
        if self.settings.github_client_id:
            names.append("github")
        return names

    # --- the two halves of the flow ---------------------------------------------------------------------
    async def start(self, provider: str, next_path: str | None, mode: Mode, redirect_uri: str) -> Authorization:
        """The provider's authorization URL (state, PKCE S256, and a nonce for OpenID Connect) + the state cookie."""
        name = self._provider(provider)
        flow = _Flow(
            state=secrets.token_urlsafe(32),
            verifier=secrets.token_urlsafe(48),
            nonce=secrets.token_urlsafe(32) if name == "google" else "",
            next_path=safe_next(next_path),
            mode=mode,
        )
        async with self._client(name, redirect_uri) as client:
            endpoints = await self._endpoints(name, client)
            extra = {"nonce": flow.nonce} if flow.nonce else {}
            url, _ = client.create_authorization_url(
                endpoints.authorize, state=flow.state, code_verifier=flow.verifier, **extra
            )
        return Authorization(url=str(url), cookie=self._seal(name, flow))

    async def finish(
        self, provider: str, callback: Callback, cookie: str | None, redirect_uri: str, origin: Origin
    ) -> SignedIn:
        """Check the callback against the cookie, prove the identity with the provider, sign the person in."""
        name = self._provider(provider)
        flow = self._unseal(name, cookie, callback.state)
        if callback.error:
            if callback.error == "access_denied":
                raise OAuthFailed("Sign-in was canceled at the provider.", code="oauth_access_denied")
            raise OAuthFailed(
                "The provider refused the sign-in.",
                code="oauth_provider_error",
                details={"error": callback.error[:100], "description": (callback.error_description or "")[:300]},
            )
        if not callback.code:
            raise OAuthFailed("The provider sent no authorization code.", code="oauth_provider_error")
        if name == "google":
            identity = await self._google_identity(callback.code, flow, redirect_uri)
        else:
            identity = await self._github_identity(callback.code, flow, redirect_uri)
        pair = await anyio.to_thread.run_sync(self._sign_in, identity, origin)
        return SignedIn(pair=pair, next_path=flow.next_path, mode=flow.mode)

    # --- state cookie -----------------------------------------------------------------------------------
    def _seal(self, provider: str, flow: _Flow) -> str:
        now = utcnow()
        claims = {
            "aud": _STATE_AUDIENCE,
            "prv": provider,
            "st": flow.state,
            "cv": flow.verifier,
            "nn": flow.nonce,
            "nx": flow.next_path,
            "md": flow.mode,
            "iat": now,
            "exp": now + timedelta(minutes=STATE_MINUTES),
        }
        return jwt.encode(claims, self.codec.key, algorithm="HS256")

    def _unseal(self, provider: str, cookie: str | None, state: str | None) -> _Flow:
        mismatch = OAuthFailed(
            "The sign-in could not be matched to this browser (it expired or was started elsewhere); start again.",
            code="oauth_state_mismatch",
        )
        if not cookie or not state:
            raise mismatch
        try:
            data = jwt.decode(
                cookie,
                self.codec.key,
                algorithms=["HS256"],
                audience=_STATE_AUDIENCE,
                options={"require": ["exp", "aud", "st", "cv"]},
            )
        except jwt.InvalidTokenError as exc:
            raise mismatch from exc
        if data.get("prv") != provider or not hmac.compare_digest(str(data["st"]).encode(), state.encode()):
            raise mismatch
        mode: Mode = "json" if data.get("md") == "json" else "redirect"
        return _Flow(
            state=str(data["st"]),
            verifier=str(data["cv"]),
            nonce=str(data.get("nn", "")),
            next_path=safe_next(str(data.get("nx", "/"))),
            mode=mode,
        )

    # --- providers --------------------------------------------------------------------------------------
    def _provider(self, provider: str) -> Provider:
        if provider == "google" and self.settings.google_client_id:
            return "google"
        if provider == "github" and self.settings.github_client_id:
            return "github"
        raise NotFound(f"No sign-in provider '{provider[:40]}' is configured.", code="oauth_provider_not_found")

    def _client(self, provider: Provider, redirect_uri: str) -> Any:
        s = self.settings
        client_id, secret, scope = (
            (s.google_client_id, s.google_client_secret, "openid email profile")
            if provider == "google"
            else (s.github_client_id, s.github_client_secret, "read:user user:email")
        )
        # client_secret_post: the one client authentication both Google and GitHub accept.
        return AsyncOAuth2Client(
            client_id=client_id,
            client_secret=secret,
            scope=scope,
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            token_endpoint_auth_method="client_secret_post",
            timeout=s.hub_timeout_seconds,
        )

    async def _endpoints(self, provider: Provider, client: Any) -> _Endpoints:
        s = self.settings
        if provider == "github":
            return _Endpoints(authorize=s.github_authorize_url, token=s.github_token_url)
        now = time.monotonic()
        if self._discovery is None or now - self._discovery[0] > _METADATA_TTL_SECONDS:
            doc = await _get_json(client, s.google_discovery_url)
            wanted = ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri")
            if not isinstance(doc, dict) or not all(isinstance(doc.get(k), str) and doc[k] for k in wanted):
                raise ProviderUnavailable("The provider's OpenID configuration is incomplete.")
            self._discovery = (now, doc)
        doc = self._discovery[1]
        return _Endpoints(
            authorize=doc["authorization_endpoint"],
            token=doc["token_endpoint"],
            issuer=doc["issuer"],
            jwks=doc["jwks_uri"],
        )

    async def _exchange(self, client: Any, token_url: str, code: str, verifier: str) -> dict[str, Any]:
        try:
            token = await client.fetch_token(
                token_url, grant_type="authorization_code", code=code, code_verifier=verifier
            )
        except OAuthError as exc:
            # invalid_client here means our client id or secret is wrong: the operator needs to see it.
            log.warning("OAuth code exchange refused by %s: %s", token_url, getattr(exc, "error", exc))
            raise ProviderUnavailable(
                "The provider did not accept the sign-in code; start again.",
                code="oauth_token_exchange_failed",
                details={"error": str(getattr(exc, "error", ""))[:100]},
            ) from exc
        except _PROVIDER_FAILURES as exc:
            log.warning("OAuth code exchange with %s failed: %r", token_url, exc)
            raise ProviderUnavailable("The sign-in provider could not be reached; try again later.") from exc
        if not isinstance(token, Mapping) or not isinstance(token.get("access_token"), str):
            raise ProviderUnavailable(
                "The provider answered without an access token.", code="oauth_token_exchange_failed"
            )
        return dict(token)

    # --- Google: OpenID Connect -------------------------------------------------------------------------
    async def _google_identity(self, code: str, flow: _Flow, redirect_uri: str) -> Identity:
        async with self._client("google", redirect_uri) as client:
            endpoints = await self._endpoints("google", client)
            token = await self._exchange(client, endpoints.token, code, flow.verifier)
            id_token = token.get("id_token")
            if not isinstance(id_token, str):
                raise ProviderUnavailable("The provider sent no ID token.", code="oauth_token_exchange_failed")
            claims = await self._verify_id_token(client, endpoints, id_token, flow.nonce)
        verified = claims.get("email_verified") in (True, "true")  # older tokens carry it as a string
        email = claims.get("email")
        name = claims.get("name")
        return Identity(
            provider="google",
            subject=str(claims["sub"]),
            email=email if verified and isinstance(email, str) else None,
            display_name=name if isinstance(name, str) else "",
        )

    async def _keys(self, client: Any, jwks_uri: str, *, refresh: bool) -> KeySet:
        now = time.monotonic()
        cached = self._jwks
        stale = cached is None or now - cached[0] > _METADATA_TTL_SECONDS
        if cached is not None and not stale and not (refresh and now - cached[0] > _JWKS_MIN_REFETCH_SECONDS):
            return cached[1]
        doc = await _get_json(client, jwks_uri)
        try:
            keys = KeySet.import_key_set(doc)
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise ProviderUnavailable("The provider's signing keys could not be read.") from exc
        self._jwks = (now, keys)
        return keys

    async def _verify_id_token(self, client: Any, endpoints: _Endpoints, id_token: str, nonce: str) -> dict[str, Any]:
        """Signature (the provider's published keys), issuer, audience, expiry and our nonce, or 401."""

        def invalid(reason: str) -> Unauthorized:
            return Unauthorized(
                "The provider's ID token did not check out; sign-in refused.",
                code="oauth_invalid_id_token",
                details={"reason": reason},
            )

        keys = await self._keys(client, endpoints.jwks, refresh=False)
        try:
            try:
                token = jose_jwt.decode(id_token, keys, algorithms=_ID_TOKEN_ALGORITHMS)
            except InvalidKeyIdError:
                keys = await self._keys(client, endpoints.jwks, refresh=True)
                token = jose_jwt.decode(id_token, keys, algorithms=_ID_TOKEN_ALGORITHMS)
            jose_jwt.JWTClaimsRegistry(
                leeway=_CLOCK_LEEWAY_SECONDS,
                iss={"essential": True, "value": endpoints.issuer},
                aud={"essential": True, "value": self.settings.google_client_id},
                exp={"essential": True},
                iat={"essential": True},
                sub={"essential": True},
                nonce={"essential": True, "value": nonce},
            ).validate(token.claims)
        except (BadSignatureError, InvalidKeyIdError) as exc:
            raise invalid("signature") from exc
        except ExpiredTokenError as exc:
            raise invalid("expired") from exc
        except ClaimError as exc:
            raise invalid(f"claim:{exc.claim}") from exc
        except (JoseError, ValueError) as exc:
            raise invalid("malformed") from exc
        claims = dict(token.claims)
        audience = claims["aud"]
        # Several audiences: OpenID Connect Core 3.1.3.7 wants the authorized party to be us.
        if isinstance(audience, list) and len(audience) > 1 and claims.get("azp") != self.settings.google_client_id:
            raise invalid("claim:azp")
        return claims

    # --- GitHub: OAuth 2 + the REST API -----------------------------------------------------------------
    async def _github_identity(self, code: str, flow: _Flow, redirect_uri: str) -> Identity:
        api = self.settings.github_api_url.rstrip("/")
        async with self._client("github", redirect_uri) as client:
            endpoints = await self._endpoints("github", client)
            await self._exchange(client, endpoints.token, code, flow.verifier)
            # Authlib's client now carries the access token and sends it as a Bearer header.
            user = await _get_json(client, f"{api}/user", headers=_GITHUB_HEADERS, with_token=True)
            emails = await _get_json(client, f"{api}/user/emails", headers=_GITHUB_HEADERS, with_token=True)
        if not isinstance(user, dict) or not isinstance(user.get("id"), int) or not isinstance(emails, list):
            raise ProviderUnavailable("GitHub answered with an unexpected user record.")
        # Only the primary address, and only if GitHub verified it: a secondary one may be anyone's typo.
        primary = next(
            (
                e["email"]
                for e in emails
                if isinstance(e, dict) and e.get("primary") is True and e.get("verified") is True
                if isinstance(e.get("email"), str)
            ),
            None,
        )
        name = user.get("name") or user.get("login") or ""
        return Identity(
            provider="github",
            subject=str(user["id"]),
            email=primary,
            display_name=name if isinstance(name, str) else "",
        )

    # --- accounts ---------------------------------------------------------------------------------------
    def _sign_in(self, identity: Identity, origin: Origin) -> TokenPair:
        try:
            return self._resolve_and_start(identity, origin)
        except IntegrityError:
            # Two first sign-ins of the same person raced to create the user or the link; the winner's rows
            # are committed now, so a second pass finds them.
            return self._resolve_and_start(identity, origin)

    def _resolve_and_start(self, identity: Identity, origin: Origin) -> TokenPair:
        with self.db.session() as session:
            link = session.scalar(
                select(OAuthAccount).where(
                    OAuthAccount.provider == identity.provider, OAuthAccount.subject == identity.subject
                )
            )
            user = session.get(User, link.user_id) if link is not None else None
            if user is None:
                if identity.email is None:
                    raise Forbidden(
                        f"Your {identity.provider} account has no verified email address; verify one there first.",
                        code="oauth_email_unverified",
                    )
                email = normalize_email(identity.email)
                user = session.scalar(select(User).where(User.email == email))
                if user is None:
                    user = User(
                        email=email,
                        display_name=identity.display_name.strip()[:120] or email.split("@")[0],
                        status="active",
                        email_verified_at=utcnow(),
                    )
                    session.add(user)
                    session.flush()
                    audit.record(
                        session,
                        "register",
                        actor_id=user.id,
                        origin=origin,
                        target_id=user.id,
                        method=identity.provider,
                    )
                elif user.email_verified_at is None:
                    raise Conflict(
                        "An account with this email is waiting for its email verification. Finish that (or reset "
                        "the password), then sign in with this provider to link it.",
                        code="oauth_email_unverified_account",
                    )
                session.add(
                    OAuthAccount(user_id=user.id, provider=identity.provider, subject=identity.subject, email=email)
                )
                audit.record(
                    session,
                    "oauth_linked",
                    actor_id=user.id,
                    origin=origin,
                    target_id=user.id,
                    provider=identity.provider,
                )
                session.flush()
            self._refuse_inactive(session, user)
            user.last_login_at = utcnow()
            audit.record(session, "login", actor_id=user.id, origin=origin, method=identity.provider)
            return self.accounts.start_session(session, user, origin)

    @staticmethod
    def _refuse_inactive(session: Session, user: User) -> None:
        if user.status == "suspended":
            raise suspension.suspended(suspension.reason(session, user.id))
        if user.status != "active":
            raise Conflict(
                "This account is waiting for its email verification; finish that first.",
                code="oauth_email_unverified_account",
            )


async def _get_json(client: Any, url: str, *, headers: dict[str, str] | None = None, with_token: bool = False) -> Any:
    """GET ``url`` and parse JSON; any network failure, error status or non-JSON body is a 502, never a 500."""
    try:
        response = await client.request("GET", url, headers=headers, withhold_token=not with_token)
        response.raise_for_status()
        return response.json()
    except (*_PROVIDER_FAILURES, OAuthError) as exc:
        log.warning("OAuth provider request to %s failed: %r", url, exc)
        raise ProviderUnavailable("The sign-in provider could not be reached; try again later.") from exc
