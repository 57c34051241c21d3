"""The API documentation at ``/docs``: Swagger UI served from the installed package, never from a CDN.

FastAPI's own ``/docs`` page loads Swagger UI from a public CDN and starts it with an inline script, so it does
not work offline and cannot carry the pages' Content-Security-Policy (``script-src 'self'``). Here the page is a
template with the same security headers as every studio page, Swagger UI's files come from the
``swagger-ui-bundle-v2`` package (Swagger UI's Apache-2.0 dist files, no build step) under ``/docs/assets/``,
fingerprinted and gzipped like ``/static/``, and the start-up code is a script of ours
(static/js/api-docs.js). ReDoc (FastAPI's ``/redoc``, also from a CDN) is not offered.
tests/integration/test_api_docs.py checks the page names no other host; tests/e2e/test_web_hardening.py renders it.
"""

from __future__ import annotations

import functools
import importlib.resources
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import Response

from studiolo.errors import NotFound
from studiolo.web.pages import render
from studiolo.web.render import Assets

router = APIRouter(include_in_schema=False)

ASSET_PREFIX = "/docs/assets/"
# What the page loads; the package's other files (source maps, the ES-module builds, its own index.html with an
# inline script) are not served.
SWAGGER_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png")


def swagger_dist() -> Path:
    """The Swagger UI dist folder inside the installed ``swagger_ui_bundle`` package (``vendor/swagger-ui-X.Y.Z``)."""
    vendor = Path(str(importlib.resources.files("swagger_ui_bundle") / "vendor"))
    found = sorted(p for p in vendor.iterdir() if p.is_dir() and p.name.startswith("swagger-ui-"))
    if not found:
        raise RuntimeError(f"no Swagger UI files in {vendor}: reinstall swagger-ui-bundle-v2")
    return found[-1]


@functools.cache
def swagger_assets() -> Assets:
    """Swagger UI's files, read (and the 1.5 MB bundle gzipped) on the first visit to /docs, not at start-up."""
    return Assets(swagger_dist(), include=SWAGGER_FILES, prefix=ASSET_PREFIX)


@router.get("/docs")
def api_docs(request: Request) -> Response:
    """Swagger UI for ``/openapi.json``."""
    assets = swagger_assets()
    return render(
        request,
        "api_docs.html",
        None,
        openapi_url=request.app.openapi_url,
        swagger_js=assets.url("swagger-ui-bundle.js"),
        swagger_css=assets.url("swagger-ui.css"),
        favicon=assets.url("favicon-32x32.png"),
    )


@router.get(ASSET_PREFIX + "{name}")
def api_docs_asset(request: Request, name: str) -> Response:
    assets = swagger_assets()
    asset = assets.get(name)
    if asset is None:
        raise NotFound("No such file.")
    return assets.response(request, name, immutable=request.query_params.get("v") == asset.version)
