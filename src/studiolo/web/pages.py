"""Server-rendered pages. For now the first-run setup page (the web studio of issue 5 will live here too)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from studiolo.deps import ServicesDep

_templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=select_autoescape(["html"])
)
router = APIRouter(include_in_schema=False)


@router.get("/setup", response_class=HTMLResponse)
async def setup_page(
    request: Request, services: ServicesDep, token: str = Query(default="", max_length=128)
) -> HTMLResponse:
    """The form behind the setup link the server logs on first start; it posts to POST /api/v1/setup."""
    needs_setup = await run_in_threadpool(services.admin.needs_setup)
    html = _templates.get_template("setup.html").render(needs_setup=needs_setup, token=token)
    # The token is a secret in the URL: keep it out of caches and of Referer headers sent to other sites.
    headers = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}
    return HTMLResponse(html, headers=headers)
