"""A small, real OpenID Connect provider (Google-shaped) and OAuth 2 provider (GitHub-shaped) for tests.

It speaks the real protocols over real HTTP (uvicorn on 127.0.0.1, a free port, a background thread): discovery,
an authorization endpoint that approves at once (or refuses, when told), a token endpoint that checks the client
secret, the single-use code, the redirect URI and the PKCE verifier, RS256 ID tokens from a key made at start
(published at /jwks), and GitHub's /user and /user/emails behind the access token.

Tests steer it through ``provider.behaviour`` (who signs in, and what to get wrong in the ID token). It signs
with PyJWT, a different JOSE library from the one Studiolo verifies with, so the two check each other.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from tests.threaded_server import ThreadedServer

CLIENT_ID = "studiolo-test-client"
CLIENT_SECRET = "studiolo-test-secret"
KEY_ID = "test-key-1"


@dataclass
class GoogleUser:
    sub: str = "google-subject-1"
    email: str = "ada@example.com"
    email_verified: bool = True
    name: str = "Ada Lovelace"


@dataclass
class GitHubUser:
    id: int = 4242
    login: str = "octocat"
    name: str | None = "Mona Octocat"
    emails: list[dict[str, Any]] = field(
        default_factory=lambda: [{"email": "mona@example.com", "primary": True, "verified": True, "visibility": None}]
    )


@dataclass
class Behaviour:
    """Who signs in, and what (if anything) the provider gets wrong."""

    google: GoogleUser = field(default_factory=GoogleUser)
    github: GitHubUser = field(default_factory=GitHubUser)
    deny: bool = False  # the user clicks "Cancel": redirect back with error=access_denied
    rogue_key: bool = False  # sign the ID token with a key that is not published (same kid)
    nonce: str | None = None  # echo this instead of the nonce the client sent
    id_token_lifetime: int = 300  # seconds from now; negative gives an already expired token
    audience: str | None = None  # instead of the client id
    issuer: str | None = None  # instead of the provider's issuer


@dataclass
class _Grant:
    client_id: str
    redirect_uri: str
    challenge: str
    nonce: str | None
    scope: str = ""


def _pkce_challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def _new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class LocalProvider:
    """Start with ``start()``, stop with ``stop()``; ``url`` is its base URL (also the OIDC issuer)."""

    def __init__(self) -> None:
        self._key = _new_rsa_key()
        self._rogue = _new_rsa_key()
        self._lock = threading.Lock()
        self.behaviour = Behaviour()
        self.grants: dict[str, _Grant] = {}
        self.github_tokens: set[str] = set()
        self.authorize_requests: list[dict[str, str]] = []
        self.token_requests: list[dict[str, str]] = []
        # OAuth 2 tokens for APIs (YouTube): access token -> its scopes; refresh token -> its scopes; revoked ones
        self.access_tokens: dict[str, set[str]] = {}
        self.refresh_tokens: dict[str, set[str]] = {}
        self.revoked: list[str] = []
        self.url = ""
        self._http = ThreadedServer(self._app(), "test OpenID provider")

    def reset(self) -> None:
        with self._lock:
            self.behaviour = Behaviour()
            self.grants.clear()
            self.github_tokens.clear()
            self.authorize_requests.clear()
            self.token_requests.clear()
            self.access_tokens.clear()
            self.refresh_tokens.clear()
            self.revoked.clear()

    # --- API tokens (tests/youtube_server.py checks its Bearer tokens here) --------------------------------
    def token_scopes(self, token: str) -> set[str] | None:
        """The scopes of a live access token, or None (unknown, expired or revoked)."""
        with self._lock:
            scopes = self.access_tokens.get(token)
            return set(scopes) if scopes is not None else None

    def expire_access_tokens(self) -> None:
        """Every access token given so far stops working (as after its hour): APIs answer 401 to them."""
        with self._lock:
            self.access_tokens.clear()

    def _issue(self, scopes: set[str]) -> str:
        access = secrets.token_urlsafe(24)
        with self._lock:
            self.access_tokens[access] = set(scopes)
        return access

    # --- lifecycle --------------------------------------------------------------------------------------
    def start(self) -> None:
        self.url = self._http.start()

    def stop(self) -> None:
        self._http.stop()

    # --- the protocol -----------------------------------------------------------------------------------
    def _app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self._discovery),
                Route("/authorize", self._authorize),
                Route("/token", self._token, methods=["POST"]),
                Route("/jwks", self._jwks),
                Route("/revoke", self._revoke, methods=["POST"]),
                Route("/login/oauth/authorize", self._authorize),
                Route("/login/oauth/access_token", self._github_token, methods=["POST"]),
                Route("/user", self._github_user),
                Route("/user/emails", self._github_emails),
            ]
        )

    async def _discovery(self, request: Request) -> Response:
        return JSONResponse(
            {
                "issuer": self.url,
                "authorization_endpoint": f"{self.url}/authorize",
                "token_endpoint": f"{self.url}/token",
                "jwks_uri": f"{self.url}/jwks",
                "revocation_endpoint": f"{self.url}/revoke",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            }
        )

    async def _jwks(self, request: Request) -> Response:
        jwk = RSAAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
        return JSONResponse({"keys": [{**jwk, "kid": KEY_ID, "use": "sig", "alg": "RS256"}]})

    async def _authorize(self, request: Request) -> Response:
        q = dict(request.query_params)
        self.authorize_requests.append(q)
        if q.get("client_id") != CLIENT_ID:
            return PlainTextResponse("unknown client", status_code=400)
        redirect_uri = q.get("redirect_uri", "")
        if not redirect_uri.startswith("http"):
            return PlainTextResponse("redirect_uri missing", status_code=400)
        back: dict[str, str] = {"state": q.get("state", "")}
        if q.get("response_type") != "code" or q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            back["error"] = "invalid_request"
        elif self.behaviour.deny:
            back["error"] = "access_denied"
        else:
            code = secrets.token_urlsafe(24)
            with self._lock:
                self.grants[code] = _Grant(
                    CLIENT_ID, redirect_uri, q["code_challenge"], q.get("nonce"), q.get("scope", "")
                )
            back["code"] = code
        return RedirectResponse(f"{redirect_uri}?{urlencode(back)}", status_code=302)

    async def _redeem(self, request: Request) -> tuple[_Grant | None, str]:
        """The grant behind a token request, or None and the OAuth error to answer."""
        form = {k: str(v) for k, v in (await request.form()).items()}
        self.token_requests.append(form)
        client_id, secret = form.get("client_id"), form.get("client_secret")
        basic = request.headers.get("authorization", "")
        if basic.lower().startswith("basic "):
            client_id, _, secret = base64.b64decode(basic[6:]).decode().partition(":")
        if client_id != CLIENT_ID or secret != CLIENT_SECRET:
            return None, "invalid_client"
        if form.get("grant_type") == "refresh_token":
            with self._lock:
                scopes = self.refresh_tokens.get(form.get("refresh_token", ""))
            if scopes is None:
                return None, "invalid_grant"
            return _Grant(CLIENT_ID, "", "", None, " ".join(sorted(scopes))), ""
        with self._lock:
            grant = self.grants.pop(form.get("code", ""), None)  # single use
        if form.get("grant_type") != "authorization_code" or grant is None:
            return None, "invalid_grant"
        if form.get("redirect_uri") != grant.redirect_uri:
            return None, "invalid_grant"
        if _pkce_challenge(form.get("code_verifier", "")) != grant.challenge:
            return None, "invalid_grant"
        return grant, ""

    async def _token(self, request: Request) -> Response:
        grant, error = await self._redeem(request)
        if grant is None:
            return JSONResponse({"error": error}, status_code=401 if error == "invalid_client" else 400)
        scopes = set(grant.scope.split())
        if not grant.redirect_uri:  # a refresh: a new access token, no new refresh or ID token
            body = {"access_token": self._issue(scopes), "token_type": "Bearer", "expires_in": 3599}
            return JSONResponse({**body, "scope": " ".join(sorted(scopes))}, headers={"Cache-Control": "no-store"})
        if scopes - {"openid", "email", "profile"}:
            # An API scope (YouTube), asked for with access_type=offline: Google-style, the granted scopes are
            # listed and a refresh token comes with the access token.
            refresh = secrets.token_urlsafe(32)
            with self._lock:
                self.refresh_tokens[refresh] = scopes
            body = {
                "access_token": self._issue(scopes),
                "refresh_token": refresh,
                "token_type": "Bearer",
                "expires_in": 3599,
                "scope": " ".join(sorted(scopes)),
            }
            return JSONResponse(body, headers={"Cache-Control": "no-store"})
        b, user, now = self.behaviour, self.behaviour.google, int(time.time())
        claims = {
            "iss": b.issuer or self.url,
            "aud": b.audience or CLIENT_ID,
            "azp": CLIENT_ID,
            "sub": user.sub,
            "email": user.email,
            "email_verified": user.email_verified,
            "name": user.name,
            "iat": now,
            "exp": now + b.id_token_lifetime,
            "nonce": b.nonce if b.nonce is not None else grant.nonce,
        }
        key = self._rogue if b.rogue_key else self._key
        id_token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": KEY_ID})
        access = secrets.token_urlsafe(24)
        return JSONResponse(
            {"access_token": access, "token_type": "Bearer", "expires_in": 3599, "id_token": id_token},
            headers={"Cache-Control": "no-store"},
        )

    async def _revoke(self, request: Request) -> Response:
        token = str((await request.form()).get("token", ""))
        with self._lock:
            found = self.refresh_tokens.pop(token, None) is not None or self.access_tokens.pop(token, None) is not None
            if found:
                self.revoked.append(token)
        return Response(status_code=200 if found else 400)

    async def _github_token(self, request: Request) -> Response:
        # GitHub answers errors with 200, and form-encoded unless the client asks for JSON.
        grant, error = await self._redeem(request)
        body: dict[str, str] = {"error": error}
        if grant is not None:
            access = "gho_" + secrets.token_urlsafe(24)
            self.github_tokens.add(access)
            body = {"access_token": access, "token_type": "bearer", "scope": "read:user,user:email"}
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse(body)
        return PlainTextResponse(urlencode(body), media_type="application/x-www-form-urlencoded")

    def _github_authorized(self, request: Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() in ("bearer", "token") and token in self.github_tokens

    async def _github_user(self, request: Request) -> Response:
        if not self._github_authorized(request):
            return JSONResponse({"message": "Requires authentication"}, status_code=401)
        u = self.behaviour.github
        return JSONResponse({"id": u.id, "login": u.login, "name": u.name, "email": None, "type": "User"})

    async def _github_emails(self, request: Request) -> Response:
        if not self._github_authorized(request):
            return JSONResponse({"message": "Requires authentication"}, status_code=401)
        return JSONResponse(self.behaviour.github.emails)
