"""How pages are rendered and shipped: the Jinja environment, fingerprinted static files (gzip in memory,
cached for a year), and the security headers every page gets."""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
import posixpath
import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import Response

WEB_DIR = Path(__file__).parent
STATIC_DIR = WEB_DIR / "static"

# Pages only ever load their own scripts, styles and fonts; images may come from an S3 endpoint through
# presigned redirects (any https origin), previews arrive as data: URLs and the mask editor draws blobs. Films play
# from the API or a presigned S3 URL; a voice sample plays from a blob the page fetched.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob: https:; "
    "media-src 'self' blob: https:; "
    "connect-src 'self'; worker-src 'self'; manifest-src 'self'; frame-ancestors 'none'; base-uri 'self'; "
    "form-action 'self'; object-src 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    # Pages carry a user's data: never in a shared cache; the service worker keeps its own copy for offline use.
    "Cache-Control": "private, no-cache",
}
# Static imports between the studio's modules: `import { x } from "./app.js"`, `import "./y.js"`.
_IMPORT = re.compile(r"""(?P<head>\b(?:from|import)\s*)(?P<quote>["'])(?P<path>\.{1,2}/[^"'?#\s]+\.js)(?P=quote)""")


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes | None
    media_type: str
    version: str


class Assets:
    """Every file under static/ (or ``include`` of another ``root``, served under ``prefix``), read once: a content
    hash for cache-busting URLs and a gzipped copy."""

    def __init__(self, root: Path = STATIC_DIR, *, include: Collection[str] | None = None, prefix: str = "/static/"):
        self._files: dict[str, Asset] = {}
        self._prefix = prefix
        self._sources = {
            p.relative_to(root).as_posix(): p
            for p in sorted(root.rglob("*"))
            if p.is_file() and (include is None or p.relative_to(root).as_posix() in include)
        }
        for rel in self._sources:
            self._load(rel, ())

    def _load(self, rel: str, importers: tuple[str, ...]) -> None:
        if rel in self._files:
            return
        path = self._sources[rel]
        body = path.read_bytes()
        if path.suffix == ".js":
            body = self._fingerprint_imports(rel, body, (*importers, rel))
        media_type = _media_type(path)
        compressible = media_type.startswith(
            ("text/", "application/javascript", "application/json", "application/manifest+json", "image/svg+xml")
        )
        gz = gzip.compress(body, 9, mtime=0) if compressible and len(body) > 512 else None
        self._files[rel] = Asset(body, gz, media_type, hashlib.sha256(body).hexdigest()[:12])

    def _fingerprint_imports(self, rel: str, body: bytes, chain: tuple[str, ...]) -> bytes:
        """``import … from "./app.js"`` -> ``"./app.js?v=<hash>"``, the URL the pages' <script> tags use.

        A module is keyed by its full URL: left bare, the import and the page's fingerprinted <script> would be
        two instances of app.js, each wiring the page (the theme and menu buttons then flip twice and do
        nothing, every data-api button calls the API twice), and the bare URL is neither cached for a year nor
        in the service worker's shell (tests/integration/test_web_pages.py::test_service_worker). A module's
        hash covers its imports' hashes, so a change to app.js gives its importers new URLs too.
        """

        def versioned(match: re.Match[str]) -> str:
            target = posixpath.normpath(posixpath.join(posixpath.dirname(rel), match["path"]))
            if target not in self._sources or target in chain:  # unknown, or an import cycle: left as written
                return match[0]
            self._load(target, chain)
            return f"{match['head']}{match['quote']}{match['path']}?v={self._files[target].version}{match['quote']}"

        return _IMPORT.sub(versioned, body.decode()).encode()

    def url(self, rel: str) -> str:
        asset = self._files[rel]  # a KeyError here is a template naming a file that does not exist
        return f"{self._prefix}{rel}?v={asset.version}"

    def fingerprint(self, url: str) -> str:
        """A ``/static/...`` URL from elsewhere (e.g. a style's thumbnail_url) with its content hash, if we ship it."""
        rel = url.removeprefix(self._prefix)
        return self.url(rel) if url.startswith(self._prefix) and rel in self._files else url

    def get(self, rel: str) -> Asset | None:
        return self._files.get(rel)

    def names(self) -> list[str]:
        return list(self._files)

    def response(self, request: Request, rel: str, *, immutable: bool) -> Response:
        asset = self._files[rel]
        etag = f'"{asset.version}"'
        headers = {
            "ETag": etag,
            "X-Content-Type-Options": "nosniff",
            "Vary": "Accept-Encoding",
            # A fingerprinted URL never changes content; unversioned ones (sw.js, the manifest) revalidate.
            "Cache-Control": "public, max-age=31536000, immutable" if immutable else "no-cache",
        }
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        body = asset.body
        if asset.gzipped is not None and "gzip" in request.headers.get("accept-encoding", ""):
            body = asset.gzipped
            headers["Content-Encoding"] = "gzip"
        return Response(body, media_type=asset.media_type, headers=headers)


def _media_type(path: Path) -> str:
    special = {
        ".js": "text/javascript",
        ".webmanifest": "application/manifest+json",
        ".webp": "image/webp",
        ".svg": "image/svg+xml",
        ".css": "text/css",
    }
    return special.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def make_environment(assets: Assets) -> Environment:
    env = Environment(
        loader=FileSystemLoader(WEB_DIR / "templates"),
        autoescape=select_autoescape(["html", "svg"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["static"] = assets.url
    env.filters["fingerprint"] = assets.fingerprint
    env.filters["thousands"] = lambda n: f"{int(n or 0):,}"
    env.filters["seconds"] = _seconds
    env.filters["credits"] = _credits
    env.filters["device"] = device
    env.filters["when"] = lambda d: d.strftime("%Y-%m-%d %H:%M") if d else "—"
    return env


_BROWSERS = (
    ("Edg/", "Edge"),
    ("OPR/", "Opera"),
    ("Firefox/", "Firefox"),
    ("HeadlessChrome", "Headless Chrome"),
    ("Chromium/", "Chromium"),
    ("Chrome/", "Chrome"),
    ("Safari/", "Safari"),
    ("curl/", "curl"),
    ("python-httpx", "Python httpx"),
    ("python-requests", "Python requests"),
)
_SYSTEMS = (
    ("iPhone", "iPhone"),
    ("iPad", "iPad"),
    ("Android", "Android"),
    ("Windows", "Windows"),
    ("Mac OS X", "macOS"),
    ("CrOS", "ChromeOS"),
    ("Linux", "Linux"),
)


def device(user_agent: str) -> str:
    """A readable name for a session's device ("Firefox on Windows") from its User-Agent; the raw text if unknown."""
    browser = next((name for key, name in _BROWSERS if key in user_agent), None)
    system = next((name for key, name in _SYSTEMS if key in user_agent), None)
    if browser and system:
        return f"{browser} on {system}"
    return browser or system or (user_agent[:60] or "unknown device")


def _seconds(value: Any) -> str:
    if value is None:
        return "—"
    v = float(value)
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.1f} s" if v < 120 else f"{v / 60:.1f} min"


def _credits(value: Any) -> str:
    """Credits to two decimals; a small amount that would print as 0.00 shows its first figures instead."""
    v = float(value or 0)
    return f"{v:,.2f}" if v == 0 or v >= 0.01 else f"{v:.2g}"


def html_response(body: str, request: Request, status_code: int = 200, extra: dict[str, str] | None = None) -> Response:
    """A page, gzipped when the client takes it (a gallery page with 50 tiles is ~40 KB of HTML)."""
    data = body.encode()
    headers = {**PAGE_HEADERS, **(extra or {}), "Vary": "Accept-Encoding, Cookie"}
    if len(data) > 1024 and "gzip" in request.headers.get("accept-encoding", ""):
        data = gzip.compress(data, 6)
        headers["Content-Encoding"] = "gzip"
    return Response(data, status_code=status_code, media_type="text/html; charset=utf-8", headers=headers)
