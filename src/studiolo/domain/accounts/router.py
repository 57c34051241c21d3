"""HTTP routes for accounts: /auth (sign-up, codes, sign-in, sessions, profile, password, deletion),
/api-keys, /setup (first run) and /admin (users, audit log). Handlers stay thin: limits, then one service call.

Argon2 work runs in the thread pool (``run_in_threadpool``): it takes >= 50 ms and releases the GIL, so the
event loop keeps serving other requests while passwords are hashed.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, BackgroundTasks, Body, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from studiolo.deps import (
    ACCESS_COOKIE,
    CSRF_COOKIE,
    REFRESH_COOKIE,
    AdminPrincipal,
    OriginDep,
    PrincipalDep,
    ServicesDep,
    SessionPrincipal,
    client_ip,
    require_session_for_own_account,
)
from studiolo.domain.accounts.schemas import (
    Accepted,
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyView,
    AuditPage,
    ChangePasswordRequest,
    DeleteAccountRequest,
    EmailRequest,
    LoginRequest,
    LogoutRequest,
    ProfilePatch,
    RefreshRequest,
    RegisterRequest,
    ResetRequest,
    RoleChange,
    SessionView,
    SetupRequest,
    SetupStatus,
    SuspendRequest,
    TokenPair,
    UserPage,
    UserView,
    VerifyRequest,
)
from studiolo.errors import Unauthorized
from studiolo.services import Services

router = APIRouter(tags=["accounts"])
admin_router = APIRouter(prefix="/admin", tags=["admin"])

SENT = "If the address can receive mail, a message is on its way. Check your inbox (and spam folder)."


def cookies_secure(request: Request, services: Services) -> bool:
    mode = services.settings.cookie_secure
    if mode != "auto":
        return mode == "always"
    host = (request.url.hostname or "").lower()
    return request.url.scheme == "https" or host in ("localhost", "127.0.0.1", "::1")


# Responses that carry a secret (tokens, a new API key) must never be stored by a browser or proxy cache.
NO_STORE = {"Cache-Control": "no-store"}
# Sign-out also empties this site's HTTP cache in the browser: private images cached during the session must not
# be shown to whoever uses the browser next (the images themselves are ``no-cache``, see gallery/router.py).
SIGNED_OUT = {"Clear-Site-Data": '"cache"'}


def session_response(request: Request, services: Services, pair: TokenPair, use_cookies: bool) -> Response:
    """Tokens in the body; with ``use_cookies`` (the web studio) also as HttpOnly cookies + the CSRF cookie."""
    response = Response(pair.model_dump_json(), media_type="application/json", headers=NO_STORE)
    if use_cookies:
        secure = cookies_secure(request, services)
        claims = services.codec.decode_access(pair.access_token)
        response.set_cookie(
            ACCESS_COOKIE, pair.access_token, max_age=pair.expires_in, httponly=True, secure=secure, samesite="lax"
        )
        response.set_cookie(
            REFRESH_COOKIE,
            pair.refresh_token,
            max_age=services.settings.refresh_token_days * 86400,
            httponly=True,
            secure=secure,
            samesite="strict",
            path="/api/v1/auth",
        )
        # Readable by the page's script (not HttpOnly): it copies it into X-CSRF-Token.
        response.set_cookie(
            CSRF_COOKIE,
            services.codec.sign("csrf", claims.session_id),
            max_age=services.settings.refresh_token_days * 86400,
            secure=secure,
            samesite="strict",
        )
    return response


def _clear_cookies(response: Response) -> None:
    response.delete_cookie(ACCESS_COOKIE)
    response.delete_cookie(REFRESH_COOKIE, path="/api/v1/auth")
    response.delete_cookie(CSRF_COOKIE)


# --- sign-up and codes ------------------------------------------------------------------------------------
@router.post("/auth/register", response_model=Accepted, status_code=202)
async def register(
    body: RegisterRequest, request: Request, services: ServicesDep, origin: OriginDep, after: BackgroundTasks
) -> Accepted:
    """Create an account (or, for a known address, email its owner): the answer is the same either way."""
    services.limiter.hit("register", f"ip:{client_ip(request)}")
    start = await run_in_threadpool(services.accounts.register, body.email, body.password, body.display_name, origin)
    after.add_task(start)  # the address-dependent work starts once this answer is sent (AccountService.register)
    return Accepted(message=SENT)


@router.post("/auth/resend-code", response_model=Accepted, status_code=202)
def resend_code(body: EmailRequest, request: Request, services: ServicesDep, after: BackgroundTasks) -> Accepted:
    services.limiter.hit("code", f"ip:{client_ip(request)}")
    after.add_task(services.accounts.resend_code(body.email))  # after the answer, as in register
    return Accepted(message=SENT)


@router.post("/auth/verify", response_model=TokenPair)
async def verify(body: VerifyRequest, request: Request, services: ServicesDep, origin: OriginDep) -> Response:
    """Check the 6-digit code from the sign-up email, with the sign-up password; signs the user in."""
    services.limiter.hit("code", f"ip:{client_ip(request)}")
    pair = await run_in_threadpool(services.accounts.verify_email, body.email, body.code, body.password, origin)
    return session_response(request, services, pair, body.use_cookies)


# --- sign-in and sessions -------------------------------------------------------------------------------------
@router.post("/auth/login", response_model=TokenPair)
async def login(body: LoginRequest, request: Request, services: ServicesDep, origin: OriginDep) -> Response:
    services.limiter.hit("login", f"ip:{client_ip(request)}")
    pair = await run_in_threadpool(services.accounts.login, body.email, body.password, origin)
    return session_response(request, services, pair, body.use_cookies)


@router.post("/auth/refresh", response_model=TokenPair)
async def refresh(body: RefreshRequest, request: Request, services: ServicesDep, origin: OriginDep) -> Response:
    """Exchange a refresh token (body, or the web studio's cookie) for a new pair; the old one is spent."""
    token = body.refresh_token or request.cookies.get(REFRESH_COOKIE)
    if not token:
        raise Unauthorized("No refresh token given.", code="invalid_token")
    pair = await run_in_threadpool(services.accounts.refresh, token, origin)
    return session_response(request, services, pair, body.use_cookies or body.refresh_token is None)


@router.post("/auth/logout", status_code=204)
async def logout(body: LogoutRequest, request: Request, services: ServicesDep, principal: SessionPrincipal) -> Response:
    """End this session (or, with ``everywhere``, every session and access token of the account). Needs a session:
    an API key, even a leaked read-only one, cannot sign its owner out."""
    token = body.refresh_token or request.cookies.get(REFRESH_COOKIE)
    await run_in_threadpool(services.accounts.logout, principal.user_id, principal.session_id, token, body.everywhere)
    response = Response(status_code=204, headers=SIGNED_OUT)
    _clear_cookies(response)
    return response


@router.get("/auth/sessions", response_model=list[SessionView])
async def list_sessions(services: ServicesDep, principal: SessionPrincipal) -> list[SessionView]:
    return await run_in_threadpool(services.accounts.sessions, principal.user_id, principal.session_id)


@router.delete("/auth/sessions/{session_id}", status_code=204)
async def revoke_session(session_id: str, services: ServicesDep, principal: SessionPrincipal) -> Response:
    await run_in_threadpool(services.accounts.revoke_session, principal.user_id, session_id)
    return Response(status_code=204)


# --- me -------------------------------------------------------------------------------------------------
@router.get("/auth/me", response_model=UserView)
async def me(services: ServicesDep, principal: PrincipalDep) -> UserView:
    principal.require("read")
    return await run_in_threadpool(services.accounts.me, principal.user_id)


@router.patch("/auth/me", response_model=UserView)
async def update_me(body: ProfilePatch, services: ServicesDep, principal: SessionPrincipal) -> UserView:
    return await run_in_threadpool(services.accounts.update_profile, principal.user_id, body.display_name)


@router.post("/auth/password", response_model=TokenPair)
async def change_password(
    body: ChangePasswordRequest,
    request: Request,
    services: ServicesDep,
    principal: SessionPrincipal,
    origin: OriginDep,
) -> Response:
    """Change the password: every other session ends; this client gets a new pair (cookies if it used them)."""
    services.limiter.hit("login", f"user:{principal.user_id}")
    pair = await run_in_threadpool(
        lambda: services.accounts.change_password(
            principal.user_id, body.current_password, body.new_password, origin, keep_api_keys=body.keep_api_keys
        )
    )
    return session_response(request, services, pair, ACCESS_COOKIE in request.cookies)


@router.post("/auth/password-reset", response_model=Accepted, status_code=202)
def request_reset(
    body: EmailRequest, request: Request, services: ServicesDep, origin: OriginDep, after: BackgroundTasks
) -> Accepted:
    """Email a reset code to the address if it has an account; the answer is the same either way, and is sent
    before any work that depends on the address starts (as in register)."""
    services.limiter.hit("reset", f"ip:{client_ip(request)}")
    after.add_task(services.accounts.request_password_reset(body.email, origin))
    return Accepted(message=SENT)


@router.post("/auth/password-reset/confirm", status_code=204)
async def confirm_reset(body: ResetRequest, request: Request, services: ServicesDep, origin: OriginDep) -> Response:
    services.limiter.hit("code", f"ip:{client_ip(request)}")
    await run_in_threadpool(
        lambda: services.accounts.reset_password(
            body.email, body.code, body.new_password, origin, keep_api_keys=body.keep_api_keys
        )
    )
    return Response(status_code=204)


@router.delete("/auth/me", status_code=204)
async def delete_me(
    body: DeleteAccountRequest, services: ServicesDep, principal: SessionPrincipal, origin: OriginDep
) -> Response:
    """Delete the account, its pictures, jobs, collections, keys and sessions. Cannot be undone."""
    services.limiter.hit("login", f"user:{principal.user_id}")
    await run_in_threadpool(
        lambda: services.admin.delete_account(
            principal.user_id, principal.user_id, origin, password=body.password, confirm_email=body.confirm_email
        )
    )
    response = Response(status_code=204, headers=SIGNED_OUT)
    _clear_cookies(response)
    return response


# --- API keys -------------------------------------------------------------------------------------------
@router.post("/api-keys", response_model=ApiKeyCreated, status_code=201)
async def create_api_key(
    body: ApiKeyCreate, response: Response, services: ServicesDep, principal: SessionPrincipal, origin: OriginDep
) -> ApiKeyCreated:
    """A new key for scripts and tools (use it as a Bearer token). The secret is in this response only."""
    response.headers.update(NO_STORE)
    return await run_in_threadpool(services.keys.create, principal.user_id, body, origin)


@router.get("/api-keys", response_model=list[ApiKeyView])
async def list_api_keys(services: ServicesDep, principal: SessionPrincipal) -> list[ApiKeyView]:
    return await run_in_threadpool(services.keys.list, principal.user_id)


@router.delete("/api-keys/{key_id}", response_model=ApiKeyView)
async def revoke_api_key(
    key_id: str, services: ServicesDep, principal: SessionPrincipal, origin: OriginDep
) -> ApiKeyView:
    return await run_in_threadpool(services.keys.revoke, principal.user_id, key_id, origin)


# --- first run ------------------------------------------------------------------------------------------
@router.get("/setup", response_model=SetupStatus)
async def setup_status(services: ServicesDep) -> SetupStatus:
    return SetupStatus(
        needs_setup=await run_in_threadpool(services.admin.needs_setup),
        auth_mode=services.settings.auth_mode,
        oauth_providers=services.oauth.provider_names(),
    )


@router.post("/setup", response_model=TokenPair)
async def setup(body: SetupRequest, request: Request, services: ServicesDep, origin: OriginDep) -> Response:
    """Create the first administrator with the setup token from the server log; signs them in."""
    services.limiter.hit("login", f"ip:{client_ip(request)}")
    await run_in_threadpool(
        lambda: services.admin.create_admin(
            body.email, body.password, body.display_name, origin, setup_token=body.token
        )
    )
    pair = await run_in_threadpool(services.accounts.login, body.email, body.password, origin)
    return session_response(request, services, pair, use_cookies=True)


# --- admin ----------------------------------------------------------------------------------------------
@admin_router.get("/users", response_model=UserPage)
async def admin_list_users(
    services: ServicesDep,
    admin: AdminPrincipal,
    q: Annotated[str, Query(max_length=200)] = "",
    status: Literal["pending", "active", "suspended"] | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: str | None = None,
) -> UserPage:
    return await run_in_threadpool(lambda: services.admin.list_users(q=q, status=status, limit=limit, cursor=cursor))


@admin_router.get("/users/{user_id}", response_model=UserView)
async def admin_get_user(user_id: str, services: ServicesDep, admin: AdminPrincipal) -> UserView:
    return await run_in_threadpool(services.admin.get_user, user_id)


@admin_router.post("/users/{user_id}/suspend", response_model=UserView)
async def admin_suspend(
    user_id: str,
    services: ServicesDep,
    admin: AdminPrincipal,
    origin: OriginDep,
    body: Annotated[SuspendRequest | None, Body()] = None,
) -> UserView:
    """Suspend: the user's sessions, access tokens and API keys stop working at once. An optional ``reason`` is
    what they are told when they next try."""
    reason = (body.reason or "").strip() if body else ""
    return await run_in_threadpool(
        services.admin.set_status, admin.user_id, user_id, "suspended", origin, reason or None
    )


@admin_router.post("/users/{user_id}/activate", response_model=UserView)
async def admin_activate(user_id: str, services: ServicesDep, admin: AdminPrincipal, origin: OriginDep) -> UserView:
    return await run_in_threadpool(services.admin.set_status, admin.user_id, user_id, "active", origin)


@admin_router.post("/users/{user_id}/role", response_model=UserView)
async def admin_set_role(
    user_id: str, body: RoleChange, services: ServicesDep, admin: AdminPrincipal, origin: OriginDep
) -> UserView:
    require_session_for_own_account(admin, user_id)
    return await run_in_threadpool(services.admin.set_role, admin.user_id, user_id, body.role, origin)


@admin_router.delete("/users/{user_id}", status_code=204)
async def admin_delete_user(user_id: str, services: ServicesDep, admin: AdminPrincipal, origin: OriginDep) -> Response:
    require_session_for_own_account(admin, user_id)
    await run_in_threadpool(services.admin.delete_account, admin.user_id, user_id, origin)
    return Response(status_code=204)


@admin_router.get("/audit", response_model=AuditPage)
async def admin_audit(
    services: ServicesDep,
    admin: AdminPrincipal,
    actor_id: str | None = None,
    action: Annotated[str | None, Query(max_length=48)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> AuditPage:
    return await run_in_threadpool(
        lambda: services.admin.audit_log(actor_id=actor_id, action=action, cursor=cursor, limit=limit)
    )
