"""The web studio's pages, served by Studiolo itself at ``/``.

Pages are rendered on the server from the same services the API uses (so the first view needs no extra round
trip and works without JavaScript); the scripts under static/js then talk to the JSON API with the session
cookie for everything interactive. A page that needs a signed-in user redirects to /signin, whose script first
tries to renew an expired session (the refresh cookie is scoped to /api/v1/auth, so the page cannot see it).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import quote, urlencode, urlsplit

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.exc import SQLAlchemyError

from studiolo import __version__
from studiolo.deps import OriginDep, ServicesDep, client_ip, current_principal
from studiolo.domain.accounts.authn import Principal
from studiolo.domain.accounts.redirects import safe_next
from studiolo.domain.accounts.router import session_response
from studiolo.domain.billing.service import FORMULA
from studiolo.domain.generation.catalog import draws_images
from studiolo.domain.generation.schemas import GenerationParams
from studiolo.domain.generation.styles import style_name
from studiolo.errors import Forbidden, NotFound, StudioloError, Unauthorized
from studiolo.services import Services
from studiolo.settings import Settings
from studiolo.web import charts
from studiolo.web.adapter_panels import catalog_tables, generator_adapters
from studiolo.web.render import Assets, html_response, make_environment

T = TypeVar("T")
router = APIRouter(include_in_schema=False)
_assets = Assets()
_env = make_environment(_assets)
_env.globals["version"] = __version__
_env.globals["charts"] = charts
_env.globals["style_name"] = style_name


# The signed-in caller a page renders for: the principal the API's authentication produced (its user state is
# already checked and cached there; a page needs no extra query to know who is looking).
Viewer = Principal


class SignInRequired(Exception):
    """Raised by a page dependency; answered with a redirect to the sign-in page (see ``install``)."""


async def optional_viewer(request: Request) -> Viewer | None:
    try:
        principal = await current_principal(request)
    except (Unauthorized, Forbidden) as exc:
        if exc.code == "account_suspended":
            request.state.suspended = exc  # a page that needs a user says why there is none (required_viewer)
        return None
    return principal


async def required_viewer(request: Request, viewer: Annotated[Viewer | None, Depends(optional_viewer)]) -> Viewer:
    if viewer is None:
        suspended: Forbidden | None = getattr(request.state, "suspended", None)
        if suspended is not None:
            # Not the sign-in page: it would only say "suspended" after they typed their password again.
            raise suspended
        raise SignInRequired()
    viewer.require("read")  # pages show the account's data: a generate-only API key may not read them either
    return viewer


async def admin_viewer(viewer: Annotated[Viewer, Depends(required_viewer)]) -> Viewer:
    if not viewer.is_admin:
        raise Forbidden("This page is for administrators.", code="admin_required")
    return viewer


MaybeViewer = Annotated[Viewer | None, Depends(optional_viewer)]
ViewerDep = Annotated[Viewer, Depends(required_viewer)]
AdminViewer = Annotated[Viewer, Depends(admin_viewer)]
Cursor = Annotated[str | None, Query(max_length=200)]


def render(request: Request, template: str, viewer: Viewer | None, **context: Any) -> Response:
    services: Services = request.app.state.services
    html = _env.get_template(template).render(
        request=request,
        viewer=viewer,
        path=request.url.path,
        auth_required=services.settings.auth_mode != "none",
        billing_on=services.billing.enabled,  # the nav's Billing and Pricing links (base.html)
        **context,
    )
    return html_response(html, request)


async def error_page(request: Request, status_code: int, code: str, message: str) -> Response:
    """Errors on page requests as a page, not JSON (errors.install_error_handlers calls this), with the header the
    signed-in viewer sees on every other page."""
    services: Services | None = getattr(request.app.state, "services", None)
    viewer = None
    if services is not None and code not in ("database_unavailable", "internal_error"):
        # Only where finding the viewer cannot fail the same way again (a database that is down, a bug). The
        # viewer only picks the header here (no data is shown for them): a database error now means a plain one.
        try:
            viewer = await optional_viewer(request)
        except SQLAlchemyError:
            viewer = None
    html = _env.get_template("error.html").render(
        request=request,
        viewer=viewer,
        path=request.url.path,
        auth_required=services is None or services.settings.auth_mode != "none",
        billing_on=services is not None and services.billing.enabled,
        status_code=status_code,
        code=code,
        message=message,
        hide_sign_in=code == "account_suspended",  # its page offers sign-out and another account itself
    )
    return html_response(html, request, status_code=status_code)


async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await run_in_threadpool(lambda: fn(*args, **kwargs))


def page_url(path: str, **params: Any) -> str:
    query = urlencode({k: v for k, v in params.items() if v not in (None, "", False)})
    return f"{path}?{query}" if query else path


_env.globals["page_url"] = page_url


# --- public pages -----------------------------------------------------------------------------------------
@router.get("/")
def landing(request: Request, viewer: MaybeViewer) -> Response:
    if viewer is not None:
        return RedirectResponse("/generate", status_code=303)
    return render(request, "landing.html", None)


# Where a sign-in sends the browser when ``next`` is missing or not a path on this site.
AFTER_SIGN_IN = "/generate"


async def _auth_page(request: Request, viewer: Viewer | None, template: str, **context: Any) -> Response:
    if viewer is not None and template != "reset.html":
        return RedirectResponse(AFTER_SIGN_IN, status_code=303)
    services: Services = request.app.state.services
    providers = services.oauth.provider_names()
    needs_setup = await call(services.admin.needs_setup)
    # The forms and OAuth links carry ``next`` on only once it passed the one rule (redirects.safe_next).
    context.setdefault("next", safe_next(request.query_params.get("next"), AFTER_SIGN_IN))
    return render(request, template, None, providers=providers, needs_setup=needs_setup, **context)


@router.get("/signin")
async def signin_page(request: Request, viewer: MaybeViewer) -> Response:
    return await _auth_page(request, viewer, "signin.html")


@router.post("/signin")
async def signin_form(request: Request, services: ServicesDep, origin: OriginDep) -> Response:
    """Sign-in without JavaScript: the same form posted as a plain form; cookies set, then back to ``next``."""
    host = request.headers.get("host", "")
    sent_origin = request.headers.get("origin")
    # Login CSRF: a foreign page must not sign a visitor into someone else's account. Browsers send Origin
    # on every POST form submission; a missing header (old clients) is accepted, a foreign one is not.
    if sent_origin is not None and urlsplit(sent_origin).netloc != host:
        raise Forbidden("Sign in from this site's own page.", code="csrf_failed")
    form = await request.form()
    email, password = str(form.get("email", ""))[:320], str(form.get("password", ""))[:1024]
    next_url = safe_next(str(form.get("next", "")), AFTER_SIGN_IN)
    services.limiter.hit("login", f"ip:{client_ip(request)}")
    try:
        pair = await call(services.accounts.login, email, password, origin)
    except StudioloError as exc:
        page = await _auth_page(request, None, "signin.html", form_error=exc.message, email=email, next=next_url)
        page.status_code = exc.status_code
        return page
    tokens = session_response(request, services, pair, use_cookies=True)
    redirect = RedirectResponse(next_url, status_code=303, headers={"Cache-Control": "no-store"})  # sets tokens
    for name, value in tokens.raw_headers:
        if name == b"set-cookie":
            redirect.raw_headers.append((name, value))
    return redirect


@router.get("/signup")
async def signup_page(request: Request, viewer: MaybeViewer) -> Response:
    return await _auth_page(request, viewer, "signup.html")


@router.get("/verify")
async def verify_page(
    request: Request, viewer: MaybeViewer, email: Annotated[str, Query(max_length=320)] = ""
) -> Response:
    return await _auth_page(request, viewer, "signup.html", verify_email=email)


@router.get("/reset")
async def reset_page(
    request: Request, viewer: MaybeViewer, email: Annotated[str, Query(max_length=320)] = ""
) -> Response:
    return await _auth_page(request, viewer, "reset.html", email=email)


@router.get("/setup")
async def setup_page(
    request: Request, services: ServicesDep, token: Annotated[str, Query(max_length=128)] = ""
) -> Response:
    """The form behind the setup link the server logs on first start; it posts to POST /api/v1/setup."""
    needs_setup = await call(services.admin.needs_setup)
    html = _env.get_template("setup.html").render(
        request=request, viewer=None, path="/setup", auth_required=True, needs_setup=needs_setup, token=token
    )
    # The token is a secret in the URL: keep it out of caches and of Referer headers sent to other sites.
    return html_response(html, request, extra={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


@router.get("/offline")
def offline_page(request: Request) -> Response:
    """What the service worker shows for a page it has never cached while the network is down. It is cached once
    for whoever uses the device, so it is rendered for nobody: app.js shows the signed-in header when there is a
    session (base.html, ``offline_shell``)."""
    return render(request, "offline.html", None, offline_shell=True)


# --- the studio -------------------------------------------------------------------------------------------
@functools.cache
def _schema_limit(field: str, key: str) -> int | None:
    """A bound from the request schema (``maxLength``, ``maximum``) of one GenerationParams field."""
    value = GenerationParams.model_json_schema()["properties"].get(field, {}).get(key)
    return int(value) if value is not None else None


def generation_limits(settings: Settings) -> dict[str, int]:
    """The limits the generator's fields show and check, from the settings and the schema the API enforces: the
    page never carries a number of its own (it once said 10,000 characters where the server took 2,000)."""
    prompt_schema = _schema_limit("prompt", "maxLength") or settings.max_prompt_chars
    images_schema = _schema_limit("n", "maximum") or settings.max_images_per_job
    return {
        "prompt": min(settings.max_prompt_chars, prompt_schema),
        "negative_prompt": _schema_limit("negative_prompt", "maxLength") or prompt_schema,
        "images": min(settings.max_images_per_job, images_schema),
    }


@router.get("/generate")
async def generate_page(request: Request, viewer: ViewerDep, services: ServicesDep) -> Response:
    catalog = await call(services.generation.style_catalog, viewer.user_id)
    groups: dict[str, list[Any]] = {}
    for style in catalog.styles:
        groups.setdefault(style.category, []).append(style)
    # Upscalers and image-to-video models draw nothing: not offered to draw with (GET /upscalers, films' motion).
    models = [m for m in services.catalog.models() if draws_images(m.arch)]
    # Issue 19: the adapter panels read the installed adapters here, so they need no API round trip.
    adapter_data = await call(generator_adapters, services, models)
    return render(
        request,
        "generate.html",
        viewer,
        catalog=catalog,
        style_groups=groups,
        models=models,
        default_model=services.catalog.default_model_id(),
        limits=generation_limits(services.settings),
        cost_rate=services.settings.cost_per_megapixel_step,
        billing_formula=FORMULA,
        describer=services.describe.describer,  # the "From a photo" tab says which describer answers
        adapter_data=adapter_data,
    )


@router.get("/models")
async def models_page(request: Request, viewer: ViewerDep, services: ServicesDep) -> Response:
    """The model catalog: installed models, and adapters (LoRA, ControlNet, ...) with their kind and base family."""
    tables = await call(catalog_tables, services)
    return render(request, "models.html", viewer, **tables)


@router.get("/queue")
def queue_page(request: Request, viewer: ViewerDep) -> Response:
    """The signed-in user's waiting and running jobs, live (static/js/queue.js reads them from the API)."""
    return render(request, "queue.html", viewer)


@router.get("/gallery")
async def gallery_page(
    request: Request,
    viewer: ViewerDep,
    services: ServicesDep,
    q: Annotated[str, Query(max_length=500)] = "",
    style: Annotated[str, Query(max_length=64)] = "",
    model: Annotated[str, Query(max_length=200)] = "",
    starred: bool = False,
    collection: Annotated[str, Query(max_length=64)] = "",
    cursor: Cursor = None,
    view: Literal["", "trash"] = "",
) -> Response:
    filters = {"q": q, "style": style, "model": model, "starred": starred, "collection": collection}
    catalog = await call(services.generation.style_catalog, viewer.user_id)
    # Tiles, the lightbox and the filters name styles as people know them ("Oil painting"), never by slug.
    style_names = {s.slug: s.name for s in catalog.styles}
    if view == "trash":
        # The Trash lists itself from GET /images?trash=true (gallery.js): its tiles carry their own actions.
        return render(
            request,
            "gallery.html",
            viewer,
            trash=True,
            # STUDIOLO_TRASH_DAYS comes with the Trash's API; 30 is its documented default.
            trash_days=services.settings.trash_days,
            filters=filters,
            collections=[],
            style_names=style_names,
        )
    current_collection = None
    if collection:
        try:
            current_collection = await call(services.gallery.get_collection, viewer.user_id, collection)
        except NotFound:
            return render(
                request,
                "gallery.html",
                viewer,
                missing_collection=True,
                filters=filters,
                page=None,
                collections=[],
                styles=[],
                models=[],
                style_names=style_names,
            )
    page = await call(
        services.gallery.list,
        viewer.user_id,
        limit=48,
        cursor=cursor,
        style=style or None,
        model=model or None,
        starred=True if starred else None,
        collection_id=collection or None,
        q=q or None,
    )
    collections = (await call(services.gallery.list_collections, viewer.user_id, limit=100)).items
    api_query = urlencode({k: ("true" if v is True else v) for k, v in filters.items() if v})
    return render(
        request,
        "gallery.html",
        viewer,
        page=page,
        filters=filters,
        collections=collections,
        styles=catalog.styles,
        style_names=style_names,
        models=[m.id for m in services.catalog.models()],
        current_collection=current_collection,
        api_query=api_query,
        filtered=any(filters.values()),
        more_url=page_url("/gallery", **filters, cursor=page.next_cursor) if page.next_cursor else None,
    )


@router.get("/collections")
async def collections_page(
    request: Request, viewer: ViewerDep, services: ServicesDep, cursor: Cursor = None
) -> Response:
    page = await call(services.gallery.list_collections, viewer.user_id, limit=60, cursor=cursor)
    return render(request, "collections.html", viewer, page=page)


@router.get("/dashboard")
async def dashboard_page(request: Request, viewer: ViewerDep, services: ServicesDep) -> Response:
    stats = await call(services.generation.stats, viewer.user_id)
    recent = await call(services.generation.list, viewer.user_id, limit=12)
    catalog = await call(services.generation.style_catalog, viewer.user_id)
    per_day = [(str(d.date), d.images) for d in stats.per_day]
    return render(
        request,
        "dashboard.html",
        viewer,
        stats=stats,
        recent=recent.items,
        per_day=per_day,
        style_names={s.slug: s.name for s in catalog.styles},
        cost_rate=services.settings.cost_per_megapixel_step,
    )


@router.get("/account")
async def account_page(request: Request, viewer: ViewerDep, services: ServicesDep) -> Response:
    is_session = viewer.via == "session"
    user = await call(services.accounts.me, viewer.user_id)
    sessions = await call(services.accounts.sessions, viewer.user_id, viewer.session_id) if is_session else []
    keys = await call(services.keys.list, viewer.user_id) if is_session else []
    return render(request, "account.html", viewer, user=user, sessions=sessions, keys=keys, is_session=is_session)


# --- PWA plumbing -----------------------------------------------------------------------------------------
@router.get("/static/{path:path}")
def static_file(request: Request, path: str) -> Response:
    asset = _assets.get(path)
    if asset is None:
        raise NotFound("No such file.")
    # Cached for a year only under today's fingerprint: during a rolling upgrade an old server asked for a new
    # release's URL must not pin its old bytes under that URL (test_static_files_media_types_caching_gzip_and_etags).
    return _assets.response(request, path, immutable=request.query_params.get("v") == asset.version)


@functools.cache
def _service_worker_body() -> tuple[bytes, str]:
    """sw.js with today's fingerprinted shell URLs filled in (built once), and its version, used as the ETag."""
    asset = _assets.get("js/sw.js")
    assert asset is not None
    shell = [_assets.url(n) for n in _SHELL_ASSETS]
    version = hashlib.sha256(" ".join(shell).encode()).hexdigest()[:12]
    body = asset.body.decode().replace("__SHELL__", json.dumps(shell)).replace("__VERSION__", version)
    return body.encode(), f'"{version}"'


@router.get("/sw.js")
def service_worker(request: Request) -> Response:
    # Served from the root so its scope is the whole studio; a new release changes the shell URLs, so browsers
    # (which re-check this file on navigations) install a new worker that drops the old caches.
    body, etag = _service_worker_body()
    headers = {
        "Cache-Control": "no-cache",
        "ETag": etag,
        "Service-Worker-Allowed": "/",
        "X-Content-Type-Options": "nosniff",
    }
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="text/javascript", headers=headers)


@router.get("/manifest.webmanifest")
def manifest(request: Request) -> Response:
    return _assets.response(request, "manifest.webmanifest", immutable=False)


_SHELL_ASSETS = [
    "css/app.css",
    "js/theme.js",
    "js/app.js",
    "js/gallery.js",
    "js/generate.js",
    "js/gen-jobs.js",
    "js/gen-mask.js",
    "js/gen-history.js",
    "js/gen-cost.js",
    "js/gen-adapters.js",
    "js/describe.js",
    "js/billing.js",
    "js/films.js",
    "js/film.js",
    "js/queue.js",
    "js/auth.js",
    "js/account.js",
    "js/account-webhooks.js",
    "js/lightbox.js",
    "js/image-actions.js",
    "js/compare.js",
    "icons/icon.svg",
    "icons/icon-192.png",
]


def signin_redirect(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/signin?next={quote(target, safe='')}", status_code=303)


def install(app: FastAPI) -> None:
    """Add the pages (the admin pages and the API documentation too), and answer SignInRequired with a redirect."""
    from studiolo.web.admin_pages import router as admin_pages_router
    from studiolo.web.api_docs import router as api_docs_router
    from studiolo.web.billing_pages import router as billing_pages_router
    from studiolo.web.film_pages import router as film_pages_router

    async def _to_signin(request: Request, exc: Exception) -> Response:
        return signin_redirect(request)

    app.add_exception_handler(SignInRequired, _to_signin)
    app.include_router(router)
    app.include_router(admin_pages_router)
    app.include_router(billing_pages_router)
    app.include_router(film_pages_router)
    app.include_router(api_docs_router)
