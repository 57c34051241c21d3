"""HTTP routes for publishing films to YouTube: connecting the Google account (incremental consent), the
connection's state, uploads and their progress (domain/film/youtube.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse

from studiolo.deps import OwnerId, ServicesDep, client_ip, current_owner_id, current_principal, session_principal
from studiolo.domain.accounts.authn import Principal
from studiolo.domain.accounts.router import cookies_secure
from studiolo.domain.film.youtube_google import CALLBACK_PATH, STATE_COOKIE, STATE_MINUTES
from studiolo.domain.film.youtube_schemas import ConnectionView, PublicationView, PublishRequest
from studiolo.errors import Unauthorized
from studiolo.services import Services

# The consent round trip: /api/v1/auth/google/youtube (a signed-in session, not an API key: it is a browser's
# redirect) and its callback, /api/v1/auth/oauth/google/youtube/callback.
connect_router = APIRouter(tags=["films"])
# The rest, under the films API.
router = APIRouter(prefix="/films", tags=["films"], dependencies=[Depends(current_owner_id)])

_Param = Annotated[str | None, Query(max_length=2048)]
SessionPrincipal = Annotated[Principal, Depends(session_principal)]


def _redirect_uri(request: Request, services: Services) -> str:
    """The callback URL registered with Google; the same string at start and at the code exchange."""
    base = services.settings.public_url or str(request.base_url)
    return f"{base.rstrip('/')}{CALLBACK_PATH}"


@connect_router.get("/auth/google/youtube", status_code=302, response_class=RedirectResponse)
async def connect(
    request: Request,
    services: ServicesDep,
    principal: SessionPrincipal,
    next_path: Annotated[str, Query(alias="next", max_length=2048)] = "/films",
) -> Response:
    """Send the signed-in browser to Google to grant the YouTube upload (and captions) scopes; it comes back to
    ``next`` (a path on this site, the film page)."""
    authorization = await run_in_threadpool(
        services.youtube.google.start_connect, principal.user_id, next_path, _redirect_uri(request, services)
    )
    response = RedirectResponse(authorization.url, status_code=302)
    response.set_cookie(
        STATE_COOKIE,
        authorization.cookie,
        max_age=STATE_MINUTES * 60,
        path=CALLBACK_PATH,
        httponly=True,
        secure=cookies_secure(request, services),
        samesite="lax",
    )
    return response


@connect_router.get("/auth/oauth/google/youtube/callback", status_code=302, response_class=RedirectResponse)
async def callback(
    request: Request,
    services: ServicesDep,
    code: _Param = None,
    state: _Param = None,
    error: _Param = None,
) -> Response:
    """Where Google sends the browser back: keeps the tokens (encrypted), then redirects to the film page."""
    # Each callback makes us call Google: limited like the sign-in callbacks, per address.
    services.limiter.hit("login", f"ip:{client_ip(request)}")
    try:
        user_id: str | None = (await current_principal(request)).user_id
    except Unauthorized:
        user_id = None  # the session may have lapsed during the consent: the signed state cookie names the user
    next_path = await run_in_threadpool(
        lambda: services.youtube.google.finish_connect(
            cookie=request.cookies.get(STATE_COOKIE),
            state=state,
            code=code,
            error=error,
            redirect_uri=_redirect_uri(request, services),
            user_id=user_id,
        )
    )
    separator = "&" if "?" in next_path else "?"
    response = RedirectResponse(f"{next_path}{separator}youtube=connected", status_code=302)
    response.headers["Cache-Control"] = "no-store"
    response.delete_cookie(STATE_COOKIE, path=CALLBACK_PATH)
    return response


@router.get("/youtube/connection", response_model=ConnectionView)
def connection(services: ServicesDep, owner: OwnerId) -> ConnectionView:
    """Whether the caller's Google account is connected for YouTube uploads, and the scopes granted."""
    return services.youtube.google.connection(owner)


@router.delete("/youtube/connection", status_code=204)
def disconnect(services: ServicesDep, owner: OwnerId) -> Response:
    """Forget the YouTube connection (and ask Google to revoke its tokens)."""
    services.youtube.google.disconnect(owner)
    return Response(status_code=204)


@router.post("/{film_id}/youtube", status_code=202, response_model=PublicationView)
def publish(film_id: str, body: PublishRequest, services: ServicesDep, owner: OwnerId) -> PublicationView:
    """Upload the film's last render to YouTube (in the background; GET the list for its progress)."""
    return services.youtube.publish(owner, film_id, body)


@router.get("/{film_id}/youtube", response_model=list[PublicationView])
def publications(film_id: str, services: ServicesDep, owner: OwnerId) -> list[PublicationView]:
    """The film's YouTube uploads, newest first, with their progress and video links."""
    return services.youtube.publications(owner, film_id)


@router.post("/{film_id}/youtube/{publication_id}/resume", status_code=202, response_model=PublicationView)
def resume(film_id: str, publication_id: str, services: ServicesDep, owner: OwnerId) -> PublicationView:
    """Go on with a failed or interrupted upload from where YouTube says it got."""
    return services.youtube.resume(owner, film_id, publication_id)
