"""The film studio's pages (issue 16): /films (the list, the Trash and the new-film form) and /films/{id} (the
storyboard editor, the render with its progress per stage, the player, downloads, sharing and YouTube).

The pages are shells rendered on the server with what the server knows without the film API (the styles, the
limits, whether the plan includes the film studio); static/js/films.js and film.js then read and change the films
through the JSON API (/api/v1/films..., CONTRACTS.md §3), as the queue page does with jobs.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from studiolo.deps import ServicesDep
from studiolo.web.pages import ViewerDep, call, render

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
FILM_ID = r"^[0-9a-fA-F-]{36}$"


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
    film_id: Annotated[str, Path(pattern=FILM_ID)],
) -> Response:
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
