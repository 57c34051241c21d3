"""Typed FastAPI dependencies shared by every router: the service graph and who is calling.

Credentials: ``Authorization: Bearer <access token or ais_ API key>``, or the web studio's HttpOnly cookie.
A cookie-authenticated request that changes something must also send ``X-CSRF-Token`` equal to the
``studiolo_csrf`` cookie, which is an HMAC of the session id (a cross-site page can make the browser send the
cookie, but cannot read it to copy into the header).

Scopes follow the method: reading (GET/HEAD) needs ``read``, anything else ``generate``; the admin routes need
``admin`` (and the admin role). Account management (password, API keys, sessions, signing out, deletion) needs a
signed-in session: an API key cannot mint more keys, end a session or lock its owner out, and an admin key cannot
change its own owner's role or delete them. Every route states one of these
(tests/integration/test_api_keys.py walks them all with keys of every scope).
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Request

from studiolo.domain.accounts.audit import Origin
from studiolo.domain.accounts.authn import LOCAL_PRINCIPAL, Principal
from studiolo.errors import Forbidden, Unauthorized
from studiolo.services import Services

ACCESS_COOKIE = "studiolo_access"
REFRESH_COOKIE = "studiolo_refresh"
CSRF_COOKIE = "studiolo_csrf"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


# Dependencies that never block are ``async def``: FastAPI runs a plain ``def`` dependency in the thread
# pool, and each such hop cost more than the whole job lookup (bench/api.py, GET /jobs/{id}).
async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def client_ip(request: Request) -> str:
    """The caller's address as uvicorn resolved it (X-Forwarded-For only from trusted proxies)."""
    return request.client.host if request.client else "unknown"


# AUTOMATIC1111's clients authenticate with HTTP Basic (its --api-auth): under its face the password is the API key.
BASIC_AUTH_PREFIXES = ("/sdapi/",)


def bearer_credential(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "basic" and request.url.path.startswith(BASIC_AUTH_PREFIXES):
        try:
            _user, sep, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            sep, password = "", ""
        if not sep or not password:
            raise Unauthorized("Use HTTP Basic with your API key as the password.", code="invalid_token")
        return password
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthorized("Use 'Authorization: Bearer <token or API key>'.", code="invalid_token")
    return value.strip()


async def current_principal(request: Request) -> Principal:
    """The authenticated caller, or 401. Runs on every protected request: no I/O beyond a cached user state."""
    cached: Principal | None = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    services: Services = request.app.state.services
    if services.settings.auth_mode == "none":
        principal = LOCAL_PRINCIPAL
    else:
        credential = bearer_credential(request)
        from_cookie = credential is None
        if from_cookie:
            credential = request.cookies.get(ACCESS_COOKIE)
        if not credential:
            raise Unauthorized("Sign in first: send 'Authorization: Bearer <token or API key>'.")
        principal = services.authenticator.authenticate(credential)
        if from_cookie and request.method not in SAFE_METHODS:
            expected = services.codec.sign("csrf", principal.session_id)
            sent = request.headers.get(CSRF_HEADER, "")
            if not hmac.compare_digest(sent.encode(), expected.encode()):
                raise Forbidden("Missing or wrong X-CSRF-Token header.", code="csrf_failed")
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]


async def current_owner_id(request: Request, principal: PrincipalDep) -> str:
    """The acting user's id, after checking the credential's scope for this kind of request."""
    principal.require("read" if request.method in SAFE_METHODS else "generate")
    return principal.user_id


async def session_principal(principal: PrincipalDep) -> Principal:
    if principal.via == "api_key":
        raise Forbidden("Manage your account from a signed-in session, not with an API key.", code="session_required")
    return principal


def require_session_for_own_account(principal: Principal, user_id: str) -> None:
    """An admin route aimed at the caller's own account needs a session, like the account routes: a leaked admin
    key must not demote or delete the administrator who made it."""
    if principal.via == "api_key" and user_id == principal.user_id:
        raise Forbidden(
            "Manage your own account from a signed-in session, not with an API key.", code="session_required"
        )


async def admin_principal(principal: PrincipalDep) -> Principal:
    if not principal.is_admin:
        raise Forbidden("This needs an administrator.", code="admin_required")
    return principal


async def generation_charge(request: Request, principal: PrincipalDep) -> Callable[[int], None]:
    """A function that counts that many job submissions against the caller's IP, user and (if used) API key. The
    scope is checked first, so a refused read-only key uses up no budget."""
    principal.require("generate")
    services: Services = request.app.state.services
    keys = [f"user:{principal.user_id}", f"ip:{client_ip(request)}"]
    if principal.api_key_id:
        keys.append(f"key:{principal.api_key_id}")
    return lambda cost: services.limiter.hit("generate", *keys, cost=cost)


# For a route that learns its cost from the body (a batch): call it with the number of submissions.
GenerationCharge = Annotated[Callable[[int], None], Depends(generation_charge)]


async def generation_rate_limit(charge: GenerationCharge) -> None:
    """Counts one job submission (see generation_charge)."""
    charge(1)


def request_origin(request: Request) -> Origin:
    return Origin(ip=client_ip(request), user_agent=request.headers.get("user-agent", ""))


ServicesDep = Annotated[Services, Depends(get_services)]
OwnerId = Annotated[str, Depends(current_owner_id)]
SessionPrincipal = Annotated[Principal, Depends(session_principal)]
AdminPrincipal = Annotated[Principal, Depends(admin_principal)]
OriginDep = Annotated[Origin, Depends(request_origin)]
GenerationLimit = Depends(generation_rate_limit)


def multipart_body(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    """``openapi_extra`` for a route that reads its multipart form itself (so FastAPI cannot document it): the form's
    fields, for /docs, the typed clients and the fuzz test."""
    schema = {"type": "object", "required": required, "properties": properties}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}
