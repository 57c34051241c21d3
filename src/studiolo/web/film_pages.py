"""The film studio's pages (issue 16): /films (the list, the Trash and the new-film form), /films/{id} (the
storyboard editor, the render with its progress per stage, the player, downloads, sharing and YouTube), and
/watch/{token}, a public film's page for anyone with its share link.

The pages are shells rendered on the server with what the server knows without the film API (the styles, the
limits, whether the plan includes the film studio); static/js/films.js and film.js then read and change the films
through the JSON API (/api/v1/films..., CONTRACTS.md §3), as the queue page does with jobs.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from studiolo.deps import ServicesDep
from studiolo.errors import NotFound
from studiolo.web.pages import MaybeViewer, ViewerDep, call, render

router = APIRouter(include_in_schema=False)

# The choices FilmCreate takes (CONTRACTS.md §3): fixed by the API's schema, shown with the words people use.
ASPECTS = (("16:9", "16:9 landscape"), ("9:16", "9:16 portrait (phones)"), ("1:1", "1:1 square"))
RESOLUTIONS = (("720p", "720p"), ("1080p", "1080p"))
# Render stages in order, and what the progress list calls them (the names are the contract's).
STAGES = (
    ("images", "Scene images"),
    ("narration", "Narration"),
    ("music", "Music"),
    ("mix", "Sound mix"),
    ("motion", "Motion"),
    ("subtitles", "Subtitles"),
    ("encode", "Encoding"),
    ("thumbnail", "Thumbnail"),
    ("check", "Quality check"),
)
FILM_ID = r"[0-9a-fA-F-]{36}"
SHARE_TOKEN = r"[A-Za-z0-9_-]{1,64}"  # secrets.token_urlsafe


async def _plan_refusal(services: Any, viewer: Any) -> dict[str, str] | None:
    """The plan_forbids refusal a render would meet, said on the page before anyone tries: billing on, the viewer
    not an administrator (never refused), and their plan without the film studio."""
    billing = services.billing
    if not billing.enabled or viewer.is_admin:
        return None
    summary = await call(billing.summary, viewer.user_id)
    if "film" in summary.plan.features:
        return None
    return {
        "message": f"Your {summary.plan.name} plan does not include the film studio.",
        "upgrade_url": "/pricing",
    }


def _context(services: Any) -> dict[str, Any]:
    settings = services.settings
    return {
        "film_enabled": settings.film_enabled,
        "max_words": settings.film_max_words,
        "stages": STAGES,
        "aspects": ASPECTS,
        "resolutions": RESOLUTIONS,
    }


@router.get("/films")
async def films_page(
    request: Request, viewer: ViewerDep, services: ServicesDep, view: Literal["", "trash"] = ""
) -> Response:
    catalog = await call(services.generation.style_catalog, viewer.user_id)
    return render(
        request,
        "films.html",
        viewer,
        **_context(services),
        trash=view == "trash",
        styles=catalog.styles,
        refusal=await _plan_refusal(services, viewer),
        trash_days=services.settings.trash_days,
    )


@router.get("/films/{film_id}")
async def film_page(
    request: Request,
    viewer: ViewerDep,
    services: ServicesDep,
    film_id: Annotated[str, Path(max_length=64)],
) -> Response:
    if not re.fullmatch(FILM_ID, film_id):
        raise NotFound("No such film.", code="film_not_found")  # the 404 page, as for another user's film
    catalog = await call(services.generation.style_catalog, viewer.user_id)
    return render(
        request,
        "film.html",
        viewer,
        **_context(services),
        film_id=film_id.lower(),
        styles=catalog.styles,
        refusal=await _plan_refusal(services, viewer),
    )


@router.get("/watch/{token}")
async def watch_page(
    request: Request,
    viewer: MaybeViewer,
    services: ServicesDep,
    token: Annotated[str, Path(max_length=64)],
) -> Response:
    """A public film, for anyone with its share link (no account needed): the player with its subtitles and the
    downloads. Only while its owner keeps it public: otherwise the 404 page, as for a link that never existed."""
    if not re.fullmatch(SHARE_TOKEN, token):
        raise NotFound("No public film at this link.", code="film_not_found")
    film = await call(services.film.shared, token)
    page = render(request, "watch.html", viewer, film=film)
    # The token is the secret of the link: kept out of Referer headers the page's links would send.
    page.headers["Referrer-Policy"] = "no-referrer"
    return page
