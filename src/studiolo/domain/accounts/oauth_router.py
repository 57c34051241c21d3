"""HTTP routes for "Sign in with Google / GitHub": the list of providers, the start redirect and the callback.

The browser leaves for the provider with a signed state cookie and comes back to the callback with it. That
cookie is SameSite=Lax, not Strict: the return is a top-level navigation started on the provider's site, and a
Strict cookie would not be sent on it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import RedirectResponse

from studiolo.deps import OriginDep, ServicesDep, client_ip
from studiolo.domain.accounts.oauth import STATE_COOKIE, STATE_COOKIE_PATH, STATE_MINUTES, Callback, Mode
from studiolo.domain.accounts.router import cookies_secure, session_response
from studiolo.domain.accounts.schemas import TokenPair
from studiolo.services import Services

router = APIRouter(prefix="/auth/oauth", tags=["accounts"])

_Param = Annotated[str | None, Query(max_length=2048)]


def _redirect_uri(request: Request, services: Services, provider: str) -> str:
    """The callback URL registered with the provider; the same string must be sent at start and at exchange."""
    base = services.settings.public_url or str(request.base_url)
    return f"{base.rstrip('/')}/api/v1/auth/oauth/{provider}/callback"


@router.get("/providers", response_model=list[str])
def list_providers(services: ServicesDep) -> list[str]:
    """The sign-in providers this server offers (public: the sign-in page draws its buttons from it)."""
    return services.oauth.provider_names()


@router.get("/{provider}/start", status_code=302, response_class=RedirectResponse)
async def start(
    provider: str,
    request: Request,
    services: ServicesDep,
    next_path: Annotated[str, Query(alias="next", max_length=2048)] = "/",
    mode: Mode = "redirect",
) -> Response:
    """Send the browser to the provider. Afterwards it lands on ``next`` (a path on this site) signed in, or
    with ``mode=json`` the callback answers the token pair as JSON (for API clients)."""
    authorization = await services.oauth.start(provider, next_path, mode, _redirect_uri(request, services, provider))
    response = RedirectResponse(authorization.url, status_code=302)
    response.set_cookie(
        STATE_COOKIE,
        authorization.cookie,
        max_age=STATE_MINUTES * 60,
        path=STATE_COOKIE_PATH,
        httponly=True,
        secure=cookies_secure(request, services),
        samesite="lax",
    )
    return response


@router.get("/{provider}/callback", response_model=TokenPair, responses={302: {"description": "signed in"}})
async def callback(
    provider: str,
    request: Request,
    services: ServicesDep,
    origin: OriginDep,
    code: _Param = None,
    state: _Param = None,
    error: _Param = None,
    error_description: _Param = None,
) -> Response:
    """Where the provider sends the browser back: signs in (web cookies, then a redirect to ``next``)."""
    # Each callback makes us call the provider: limited like password sign-ins, per address.
    services.limiter.hit("login", f"ip:{client_ip(request)}")
    signed_in = await services.oauth.finish(
        provider,
        Callback(code=code, state=state, error=error, error_description=error_description),
        request.cookies.get(STATE_COOKIE),
        _redirect_uri(request, services, provider),
        origin,
    )
    if signed_in.mode == "json":
        response = session_response(request, services, signed_in.pair, use_cookies=False)
    else:
        with_cookies = session_response(request, services, signed_in.pair, use_cookies=True)
        response = RedirectResponse(signed_in.next_path, status_code=302)
        for value in with_cookies.headers.getlist("set-cookie"):
            response.headers.append("set-cookie", value)
    response.headers["Cache-Control"] = "no-store"
    response.delete_cookie(STATE_COOKIE, path=STATE_COOKIE_PATH)
    return response
