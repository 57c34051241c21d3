"""The API documentation at /docs: Swagger UI from the installed package, under the pages' security headers.

FastAPI's own page loaded Swagger UI from a public CDN with an inline script, so it broke offline and carried no
Content-Security-Policy or X-Frame-Options. tests/e2e/test_web_hardening.py renders the page in Chromium (no
CSP refusal, no request to another host).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from studiolo.app import create_app
from studiolo.services import Services
from studiolo.web.api_docs import SWAGGER_FILES, swagger_dist
from tests.integration.test_web_pages import HTML, Page, assert_page_headers


@pytest.fixture
def client(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services=services, start_workers=False)) as c:
        yield c


def test_docs_page_loads_only_its_own_files_under_the_pages_headers(client: TestClient) -> None:
    r = client.get("/docs", headers=HTML)
    assert r.status_code == 200 and r.headers["content-type"] == "text/html; charset=utf-8"
    assert_page_headers(r)  # CSP with script-src 'self', X-Frame-Options: DENY, nosniff
    doc = Page(r.text)
    # No other host anywhere in the page (not even a link), and no inline script for the CSP to refuse.
    assert not re.search(r"(?i)(https?:)?//[a-z0-9]", r.text), r.text
    scripts = doc.all("script")
    assert scripts and all(s.get("src", "").startswith("/") for s in scripts)
    loaded = [s["src"] for s in scripts] + [a["href"] for a in doc.all("link")]
    assert {urlsplit(u).path for u in loaded} >= {
        "/docs/assets/swagger-ui-bundle.js",
        "/docs/assets/swagger-ui.css",
        "/static/js/api-docs.js",
    }
    for url in loaded:
        got = client.get(url, headers={"Accept-Encoding": "gzip"})
        assert got.status_code == 200, url
        assert got.headers["cache-control"] == "public, max-age=31536000, immutable", url  # fingerprinted
        assert got.headers["x-content-type-options"] == "nosniff"
    (main,) = doc.all("main", id="swagger-ui")
    assert main["data-openapi-url"] == "/openapi.json"
    assert client.get("/openapi.json").status_code == 200


def test_docs_assets_are_the_packages_files_and_nothing_else(client: TestClient) -> None:
    dist = swagger_dist()
    for name in SWAGGER_FILES:
        got = client.get(f"/docs/assets/{name}", headers={"Accept-Encoding": "identity"})
        assert got.status_code == 200 and got.content == (dist / name).read_bytes(), name
        assert got.headers["cache-control"] == "no-cache"  # no fingerprint: revalidate
        etag = got.headers["etag"]
        assert client.get(f"/docs/assets/{name}", headers={"If-None-Match": etag}).status_code == 304
    assert client.get("/docs/assets/swagger-ui.css").headers["content-type"].startswith("text/css")
    assert client.get("/docs/assets/swagger-ui-bundle.js").headers["content-type"].startswith("text/javascript")
    # Only what the page loads: not the package's index.html (an inline script), source maps, or anything else.
    for name in ("index.html", "swagger-initializer.js", "swagger-ui-bundle.js.map", "../__init__.py", "%2e%2e"):
        assert client.get(f"/docs/assets/{name}").status_code == 404, name


def test_redoc_and_the_cdn_pages_are_gone(client: TestClient) -> None:
    assert client.get("/redoc").status_code == 404
    assert client.get("/docs/oauth2-redirect").status_code == 404
