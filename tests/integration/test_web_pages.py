"""The web studio's pages through HTTP: who may see which page, redirects to sign-in, HTML errors, security
headers, escaping of user content, isolation between users, the gallery's filters and pages, and the files
the pages need (fingerprinted static files, the service worker, the web app manifest).

Browsers are signed in the way the studio signs them in: POST /api/v1/auth/login with ``use_cookies``, then
only the HttpOnly session cookie. The pages' scripts run in tests/e2e/test_web_studio.py (Playwright).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urljoin, urlsplit

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from studiolo.app import create_app
from studiolo.domain.accounts.audit import Origin
from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.domain.accounts.schemas import ApiKeyCreate
from studiolo.services import Services, build_services
from tests.helpers import create_user, drain, submit

PASSWORD = "velvet-harbor-1937"
STATIC_DIR = Path(__file__).resolve().parents[2] / "src" / "studiolo" / "web" / "static"
HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}  # what a browser sends when it navigates

# Every page and its main heading, for a signed-in administrator.
STUDIO_PAGES = {
    "/generate": "Generate",
    "/queue": "Queue",
    "/gallery": "Gallery",
    "/collections": "Collections",
    "/dashboard": "Dashboard",
    "/account": "Account",
    "/admin": "Analytics",
    "/admin/users": "Users",
    "/admin/jobs": "All jobs",
    "/admin/audit": "Audit log",
}
OPEN_PAGES = {"/offline": "You are offline", "/reset": "Reset your password"}  # signed in or not
ANONYMOUS_PAGES = {
    "/": "Your private AI image studio",
    "/signin": "Sign in",
    "/signup": "Create an account",
    "/verify?email=a%40example.com": "Check your email",
    "/setup": "Welcome to Studiolo",
    **OPEN_PAGES,
}
ADMIN_PAGES = [p for p in STUDIO_PAGES if p.startswith("/admin")]
EVIL = '<script>alert(1)</script>"><img src=x onerror=alert(1)>'


# --- reading pages ------------------------------------------------------------------------------------------
class Page(HTMLParser):
    """A rendered page: every element with its attributes, the text of each <h1>, and all text and attributes."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.h1: list[str] = []
        self.data: list[str] = []
        self._in_h1 = 0
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        self.elements.append((tag, values))
        self.data.extend(values.values())
        if tag == "h1":
            self._in_h1 += 1
            self.h1.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "h1" and self._in_h1:
            self._in_h1 -= 1

    def handle_data(self, data: str) -> None:
        self.data.append(data)
        if self._in_h1:
            self.h1[-1] += data

    @property
    def headings(self) -> list[str]:
        return [h.strip() for h in self.h1]

    def all(self, tag: str, **attrs: str) -> list[dict[str, str]]:
        return [a for t, a in self.elements if t == tag and all(a.get(k) == v for k, v in attrs.items())]

    def tiles(self) -> list[str]:
        return [a["data-id"] for t, a in self.elements if t == "div" and a.get("class") == "tile" and "data-id" in a]

    def urls(self) -> set[str]:
        """Every same-site URL the page loads or links to (src, href, srcset)."""
        found: set[str] = set()
        for _, a in self.elements:
            found.update(v for k, v in a.items() if k in ("src", "href") and v.startswith("/"))
            found.update(part.split()[0] for part in a.get("srcset", "").split(",") if part.strip())
        return found

    def assets(self) -> list[str]:
        """Scripts and stylesheets: what a browser fetches before it can run the page."""
        scripts = [a["src"] for a in self.all("script") if "src" in a]
        return scripts + [a["href"] for a in self.all("link", rel="stylesheet")]


def page(c: TestClient, url: str, status: int = 200) -> Page:
    r = c.get(url, headers=HTML, follow_redirects=False)
    assert r.status_code == status, (url, r.status_code, r.headers.get("location"), r.text[:300])
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    return Page(r.text)


def module_imports(c: TestClient, url: str, seen: set[str] | None = None) -> set[str]:
    """``url`` and every module it imports, recursively (``import ... from "./x.js"``), as absolute URLs."""
    seen = set() if seen is None else seen
    if url in seen:
        return seen
    seen.add(url)
    r = c.get(url)
    assert r.status_code == 200, (url, r.status_code)
    if url.split("?")[0].endswith(".js"):
        for spec in re.findall(r"""(?:\bfrom|^import)\s*["']([^"']+)["']""", r.text, flags=re.MULTILINE):
            module_imports(c, urljoin(url, spec), seen)
    return seen


def assert_page_headers(r: Any) -> None:
    csp = {d.strip().split(" ", 1)[0]: d.strip() for d in r.headers["content-security-policy"].split(";")}
    assert csp["default-src"] == "default-src 'self'"
    assert csp["script-src"] == "script-src 'self'"  # no inline script, no eval
    assert csp["frame-ancestors"] == "frame-ancestors 'none'" and csp["object-src"] == "object-src 'none'"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert "cookie" in r.headers["vary"].lower()


# --- browsers -----------------------------------------------------------------------------------------------
@dataclass
class Browser:
    client: TestClient
    user_id: str
    email: str

    def get(self, url: str, status: int = 200) -> Page:
        return page(self.client, url, status)

    def api(self, method: str, url: str, **kwargs: Any) -> Any:
        """An API call as the studio's scripts make it: cookie session plus the CSRF header."""
        headers = {"X-CSRF-Token": self.client.cookies.get("studiolo_csrf") or ""}
        r = self.client.request(method, url, headers=headers, **kwargs)
        assert r.status_code < 300, r.text
        return r.json()


@pytest.fixture
def anonymous(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services=services, start_workers=False)) as c:
        yield c


@pytest.fixture
def sign_in(services: Services) -> Iterator[Callable[..., Browser]]:
    """A factory: a new account, signed in with cookies in its own client (its own cookie jar)."""
    with ExitStack() as stack:

        def make(email: str, *, role: str = "user") -> Browser:
            user_id = create_user(services, email, password=PASSWORD, role=role)
            c = stack.enter_context(TestClient(create_app(services=services, start_workers=False)))
            r = c.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD, "use_cookies": True})
            assert r.status_code == 200, r.text
            assert c.cookies.get("studiolo_access") and "authorization" not in c.headers
            return Browser(c, user_id, email)

        yield make


@pytest.fixture
def admin(sign_in: Callable[..., Browser]) -> Browser:
    return sign_in("admin@example.com", role="admin")


def make_images(services: Services, owner: str, n: int = 1, **params: Any) -> list[str]:
    job_id = submit(services, owner, n=n, **params)
    drain(services)
    view = services.generation.get(owner, job_id)
    assert view.status == "succeeded", view
    return [o.image_id for o in view.outputs]


# --- who sees what ------------------------------------------------------------------------------------------
def test_every_page_renders_for_a_signed_in_cookie_session(admin: Browser, services: Services) -> None:
    make_images(services, admin.user_id, n=2, prompt="a quiet harbour")  # pages with content, not only empty states
    for url, heading in {**STUDIO_PAGES, **OPEN_PAGES}.items():
        r = admin.client.get(url, headers=HTML, follow_redirects=False)
        assert r.status_code == 200, (url, r.status_code, r.text[:300])
        assert heading in Page(r.text).headings, (url, Page(r.text).headings)
        assert_page_headers(r)
        assert r.headers["cache-control"] == "private, no-cache"
    # Signed in: the landing page and the sign-in forms send you to the studio.
    for url in ("/", "/signin", "/signup", "/verify?email=a%40example.com"):
        r = admin.client.get(url, headers=HTML, follow_redirects=False)
        assert (r.status_code, r.headers["location"]) == (303, "/generate"), url
    nav = admin.get("/gallery").all("a", **{"aria-current": "page"})
    assert [a["href"] for a in nav] == ["/gallery"]


def test_anonymous_visits_redirect_to_sign_in_with_the_way_back(anonymous: TestClient) -> None:
    urls = [*STUDIO_PAGES, "/gallery?q=red fox&starred=true", "/admin/users?status=active&q=a%26b"]
    for url in urls:
        r = anonymous.get(url, headers=HTML, follow_redirects=False)
        assert r.status_code == 303, (url, r.status_code)
        location = urlsplit(r.headers["location"])
        assert location.path == "/signin"
        (back,) = parse_qs(location.query)["next"]
        assert back == str(r.request.url).removeprefix("http://testserver")
        assert location.query == "next=" + quote(back, safe="")  # one opaque parameter: & and = encoded too
    # A stale or forged session is the same as none: the sign-in page, never a JSON 401.
    for headers in ({"Cookie": "studiolo_access=not-a-token"}, {"Authorization": "Bearer not-a-token"}):
        r = anonymous.get("/gallery", headers={**HTML, **headers}, follow_redirects=False)
        assert (r.status_code, r.headers["location"]) == (303, "/signin?next=%2Fgallery")


# What a browser could read as another host once it drops tab/CR/LF and turns "\\" into "/"; and, after them,
# paths on this site that must go through unchanged.
OFF_SITE_NEXT = [
    "/\t/evil.example/x",
    "/\n/evil.example/x",
    "/\r/evil.example/x",
    "/\t\\evil.example/x",
    "/\\evil.example/x",
    "//evil.example/x",
    "https://evil.example/x",
    "evil.example",
    "/\x7f/evil.example",
    " /gallery",
]
ON_SITE_NEXT = ["/gallery", "/gallery?q=red%20fox&starred=true", "/generate#job-1"]


def test_sign_in_carries_only_a_path_on_this_site_as_next(settings_factory: Callable[..., Any]) -> None:
    """The sign-in and sign-up pages render ``next`` into their form and OAuth links, and the no-JavaScript form
    redirects to it: each only after the one rule (redirects.safe_next); tests/e2e/test_web_hardening.py drives
    the pages' own scripts through the same values."""
    services = build_services(settings_factory(google_client_id="id", google_client_secret="secret"), upgrade_db=False)
    try:
        create_user(services, "next@example.com", password=PASSWORD)
        with TestClient(create_app(services=services, start_workers=False)) as c:
            for value in [*OFF_SITE_NEXT, *ON_SITE_NEXT]:
                expected = value if value in ON_SITE_NEXT else "/generate"
                for url in ("/signin", "/signup"):
                    doc = page(c, f"{url}?next={quote(value, safe='')}")
                    (oauth,) = [a["href"] for a in doc.all("a") if "/oauth/google/start" in a.get("href", "")]
                    assert parse_qs(urlsplit(oauth).query)["next"] == [expected], (url, value, oauth)
                    if url == "/signin":
                        assert doc.all("input", name="next")[0]["value"] == expected, value
                form = {"email": "next@example.com", "password": PASSWORD, "next": value}
                r = c.post("/signin", data=form, headers={"Origin": "http://testserver"}, follow_redirects=False)
                assert (r.status_code, r.headers["location"]) == (303, quote(expected, safe="/?=&#%")), value
                c.cookies.clear()
    finally:
        services.close(timeout=10)


def test_generator_takes_its_limits_from_the_server(settings_factory: Callable[..., Any]) -> None:
    """The prompt counter once said 10,000 where the server took 2,000: the page shows the server's numbers."""
    services = build_services(settings_factory(max_prompt_chars=1234, max_images_per_job=5), upgrade_db=False)
    try:
        create_user(services, "limits@example.com", password=PASSWORD)
        with TestClient(create_app(services=services, start_workers=False)) as c:
            login = {"email": "limits@example.com", "password": PASSWORD, "use_cookies": True}
            assert c.post("/api/v1/auth/login", json=login).status_code == 200
            doc = page(c, "/generate")
            (prompt,) = doc.all("textarea", name="prompt")
            assert prompt["data-limit"] == "1234" and "maxlength" not in prompt  # never cut a pasted prompt
            assert "0 / 1,234" in doc.data
            assert doc.all("input", name="n")[0]["max"] == "5"
            assert doc.all("textarea", name="negative_prompt")[0]["maxlength"] == "10000"  # the schema's bound
            # The API says which field a limit is about, so the page shows it there.
            headers = {"X-CSRF-Token": c.cookies.get("studiolo_csrf") or ""}
            for body, field in [({"prompt": "x" * 1235}, "prompt"), ({"prompt": "fox", "n": 6}, "n")]:
                r = c.post("/api/v1/generations", json=body, headers=headers)
                assert r.status_code == 422 and r.json()["error"]["details"]["field"] == field, r.text
    finally:
        services.close(timeout=10)


def test_public_pages_render_anonymously(anonymous: TestClient) -> None:
    for url, heading in ANONYMOUS_PAGES.items():
        r = anonymous.get(url, headers=HTML, follow_redirects=False)
        assert r.status_code == 200, (url, r.status_code)
        assert heading in Page(r.text).headings, (url, Page(r.text).headings)
        assert_page_headers(r)
    landing = page(anonymous, "/")
    assert {"/signup", "/signin"} <= landing.urls()
    assert not [a for a in landing.all("a") if a.get("href") in STUDIO_PAGES]


def test_admin_pages_are_a_403_page_for_other_users(sign_in: Callable[..., Browser]) -> None:
    user = sign_in("user@example.com")
    for url in ADMIN_PAGES:
        r = user.client.get(url, headers=HTML, follow_redirects=False)
        assert r.status_code == 403 and r.headers["content-type"] == "text/html; charset=utf-8", url
        doc = Page(r.text)
        assert doc.headings == ["Not allowed"] and "admin_required" in doc.data
        assert_page_headers(r)
        # An API client asking the same URL still gets the error envelope.
        r = user.client.get(url, headers={"Accept": "application/json"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "admin_required"
    assert not [a for a in user.get("/generate").all("a") if a.get("href") == "/admin"]  # no Admin link either


def test_unknown_pages_are_html_404s_but_the_api_keeps_its_envelope(admin: Browser, anonymous: TestClient) -> None:
    for c in (admin.client, anonymous):
        r = c.get("/no/such/page", headers=HTML)
        assert r.status_code == 404 and r.headers["content-type"] == "text/html; charset=utf-8"
        assert Page(r.text).headings == ["Not found"]
        assert_page_headers(r)
        for url in ("/api/v1/no-such-thing", "/api/v1/images/nope", "/static/no/such.css", "/no/such/page"):
            headers = {"Accept": "application/json"} if url == "/no/such/page" else HTML
            r = c.get(url, headers=headers)
            assert r.status_code in (401, 404) and r.headers["content-type"] == "application/json", url
            assert set(r.json()) == {"error", "request_id"}
    # A page's bad query string is an HTML page too, naming the field.
    r = admin.client.get("/gallery", params={"q": "x" * 501}, headers=HTML)
    assert r.status_code == 422 and "q:" in "".join(Page(r.text).data)


# --- escaping and isolation -----------------------------------------------------------------------------------
def test_user_content_is_escaped_on_every_page(sign_in: Callable[..., Browser], services: Services) -> None:
    evil = sign_in("evil@example.com", role="admin")  # an admin, so the admin pages show the same data
    evil.api("PATCH", "/api/v1/auth/me", json={"display_name": EVIL})
    (image_id,) = make_images(services, evil.user_id, prompt=EVIL, tags=["<b>tag</b>"])
    collection = evil.api("POST", "/api/v1/collections", json={"name": EVIL, "description": EVIL})
    evil.api("POST", f"/api/v1/collections/{collection['id']}/images", json={"image_ids": [image_id]})
    submit(services, evil.user_id, prompt=EVIL)  # stays queued: the generator shows it (from the API, as text)
    evil.api("POST", "/api/v1/api-keys", json={"name": EVIL, "scopes": ["read"]})

    pages = [
        "/gallery",
        f"/gallery?collection={collection['id']}",
        "/collections",
        "/dashboard",
        "/account",
        "/admin/users",
        "/admin/jobs",
        f"/gallery?q={quote(EVIL)}",
    ]
    for url in pages:
        html = evil.client.get(url, headers=HTML).text
        assert "<script>alert" not in html and "<img src=x" not in html and "<b>" not in html, url
        doc = Page(html)
        assert any(EVIL in d for d in doc.data), url  # shown, as text
        for tag, attrs in doc.elements:
            assert not [k for k in attrs if k.startswith("on")], (url, tag, attrs)  # no injected handlers
            if tag == "script":
                assert "src" in attrs or attrs.get("type") == "application/json", (url, attrs)
    html = evil.client.get("/generate", headers=HTML).text
    assert "<script>alert" not in html and "</script><img" not in html
    # The generator reads its jobs from the API (GET /jobs): the page itself carries none of them.
    assert EVIL not in html and "application/json" not in html


def test_pages_hold_an_api_key_to_the_read_scope(anonymous: TestClient, services: Services) -> None:
    """Found while auditing issue 13, item 2: pages took any credential, so a generate-only key could read the
    gallery, dashboard and account pages that the API refuses it. Pages show data: they need ``read``."""
    owner = create_user(services, "kim@example.com", password=PASSWORD)
    make_images(services, owner, prompt="a secret garden")
    maker = services.keys.create(owner, ApiKeyCreate(name="maker", scopes=["generate"]), Origin()).key
    reader = services.keys.create(owner, ApiKeyCreate(name="reader", scopes=["read"]), Origin()).key
    for url in STUDIO_PAGES:
        if url.startswith("/admin"):
            continue
        refused = anonymous.get(url, headers={**HTML, "Authorization": f"Bearer {maker}"}, follow_redirects=False)
        assert refused.status_code == 403, (url, refused.status_code)
        assert "secret garden" not in refused.text
        read = anonymous.get(url, headers={**HTML, "Authorization": f"Bearer {reader}"}, follow_redirects=False)
        assert read.status_code == 200, (url, read.status_code)


def test_password_forms_offer_to_keep_the_api_keys(sign_in: Callable[..., Browser], anonymous: TestClient) -> None:
    """A new password revokes the API keys unless the user keeps them: both forms carry the choice, unticked."""
    account = sign_in("lea@example.com").get("/account")
    reset = page(anonymous, "/reset")
    for form in (account, reset):
        [box] = form.all("input", name="keep_api_keys")
        assert box["type"] == "checkbox" and "checked" not in box


def test_one_user_never_sees_anothers_data(sign_in: Callable[..., Browser], services: Services) -> None:
    alice = sign_in("alice@example.com")
    images = make_images(services, alice.user_id, n=3, prompt="alpha secret lighthouse", style="watercolor")
    alice.api("PATCH", f"/api/v1/images/{images[0]}", json={"starred": True})
    collection = alice.api("POST", "/api/v1/collections", json={"name": "Alpha private trip"})
    alice.api("POST", f"/api/v1/collections/{collection['id']}/images", json={"image_ids": images[:2]})
    queued = submit(services, alice.user_id, prompt="alpha queued secret")
    secrets = [*images, queued, collection["id"], "alpha secret", "alpha queued", "Alpha private", alice.email]
    # Alice does see her own data (so the checks below are not vacuous).
    assert set(alice.get("/gallery").tiles()) == set(images)
    assert "Alpha private trip" in alice.client.get("/collections").text
    assert queued in alice.client.get("/api/v1/jobs").text  # what the generator page lists (it reads GET /jobs)

    bob = sign_in("bob@example.com")
    for url in [
        "/generate",
        "/gallery",
        "/gallery?starred=true",
        "/gallery?q=alpha",
        "/gallery?style=watercolor",
        f"/gallery?cursor={images[0]}",
        "/collections",
        "/dashboard",
        "/account",
    ]:
        html = bob.client.get(url, headers=HTML).text
        assert not [s for s in secrets if s in html], url
        assert Page(html).tiles() == []
    missing = bob.get(f"/gallery?collection={collection['id']}")
    assert "No such collection" in missing.data and "Alpha private trip" not in "".join(missing.data)
    counts = re.findall(
        r'<span class="value">([^<]*)</span><span class="label">(\w+)', bob.client.get("/dashboard").text
    )
    assert ("0", "Images") in counts and ("0", "Collections") in counts  # Bob's own counts, not the install's


# --- the gallery ----------------------------------------------------------------------------------------------
def test_gallery_filters(admin: Browser, services: Services) -> None:
    fox = make_images(services, admin.user_id, n=2, prompt="red fox in snow", style="watercolor", tags=["animals"])
    city = make_images(services, admin.user_id, prompt="neon city at night", style="cyberpunk")
    admin.api("PATCH", f"/api/v1/images/{city[0]}", json={"starred": True})
    collection = admin.api("POST", "/api/v1/collections", json={"name": "Foxes", "description": "all the foxes"})
    admin.api("POST", f"/api/v1/collections/{collection['id']}/images", json={"image_ids": fox[:1]})

    def tiles(query: str) -> list[str]:
        doc = admin.get("/gallery" + query)
        ids = doc.tiles()
        if ids:  # the grid hands its script the same filters for the next pages: they must agree with the API
            (grid,) = doc.all("div", id="gallery")
            api_ids = [i["id"] for i in admin.client.get(f"/api/v1/images?{grid['data-query']}").json()["items"]]
            assert api_ids == ids, query
        return ids

    assert tiles("") == [*city, *reversed(fox)]  # newest first
    assert tiles("?style=watercolor") == list(reversed(fox))
    assert tiles("?q=fox") == tiles("?q=animals") == list(reversed(fox))
    assert tiles("?starred=true") == city
    assert tiles("?model=echo") == [*city, *reversed(fox)]
    assert tiles(f"?collection={collection['id']}") == fox[:1]
    assert tiles("?style=cyberpunk&q=fox") == []
    assert tiles("?style=watercolor&q=fox&starred=true") == []

    doc = admin.get(f"/gallery?collection={collection['id']}&style=watercolor&starred=false&q=snow")
    assert doc.headings == ["Foxes"] and "all the foxes" in doc.data
    assert doc.all("option", value="watercolor")[0].get("selected") == ""
    assert doc.all("option", value=collection["id"])[0].get("selected") == ""
    assert doc.all("input", id="q")[0]["value"] == "snow"
    assert "checked" not in doc.all("input", name="starred")[0]
    assert "checked" in admin.get("/gallery?starred=true").all("input", name="starred")[0]
    assert tiles("?starred=True") == city  # how the "More images" link spells it (page_url)
    empty = admin.get("/gallery?q=zebra")
    assert "No images match" in empty.data and "/gallery" in empty.urls()  # a way to clear the filters
    assert "Your gallery is empty" not in empty.data


def test_gallery_pages_through_more_images_with_a_cursor(admin: Browser, services: Services) -> None:
    watercolor = [i for _ in range(7) for i in make_images(services, admin.user_id, n=8, style="watercolor")]
    other = make_images(services, admin.user_id, n=8, style="cyberpunk")
    newest_first = list(reversed(watercolor))

    def walk(url: str) -> list[str]:
        ids: list[str] = []
        while True:
            doc = admin.get(url)
            tiles = doc.tiles()
            assert len(tiles) <= 48
            ids += tiles
            more = doc.all("a", id="more-link")
            (grid,) = doc.all("div", id="gallery")
            if not more:
                assert "That is everything." in doc.data and grid["data-cursor"] == ""
                return ids
            url = more[0]["href"]
            assert parse_qs(urlsplit(url).query)["cursor"] == [grid["data-cursor"]]

    everything = walk("/gallery")
    assert everything == [*reversed(other), *newest_first] and len(set(everything)) == 64
    first = admin.get("/gallery")
    assert len(first.tiles()) == 48
    # The first row loads eagerly (it is the largest paint); the rest lazily.
    imgs = [a for a in first.all("img") if "srcset" in a]
    assert [("fetchpriority" in a, a.get("loading")) for a in imgs[:8]] == [(True, None)] * 8
    assert {a.get("loading") for a in imgs[8:]} == {"lazy"}
    # The link keeps the filters: the second page of a style is still that style.
    more = admin.get("/gallery?style=watercolor").all("a", id="more-link")[0]["href"]
    assert parse_qs(urlsplit(more).query)["style"] == ["watercolor"]
    assert walk("/gallery?style=watercolor") == newest_first
    # Every thumbnail a page shows is a real image of this user.
    for url in list(first.urls())[:5]:
        if url.startswith("/api/v1/images/"):
            assert admin.client.get(url).status_code == 200


# --- files the pages need -------------------------------------------------------------------------------------
MEDIA_TYPES = {
    ".css": "text/css",
    ".js": "text/javascript",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".webp": "image/webp",
}


def static_files() -> list[str]:
    return sorted(p.relative_to(STATIC_DIR).as_posix() for p in STATIC_DIR.rglob("*") if p.is_file())


def fingerprinted(c: TestClient, name: str) -> str:
    """The URL pages use for ``name``, read from what the server puts in a page (or the service worker)."""
    shell = c.get("/sw.js").text
    found = re.search(rf'"(/static/{re.escape(name)}\?v=[0-9a-f]+)"', shell)
    assert found, name
    return found.group(1)


def test_static_files_media_types_caching_gzip_and_etags(anonymous: TestClient) -> None:
    assert set(MEDIA_TYPES) >= {Path(n).suffix for n in static_files()}
    for name in static_files():
        plain = anonymous.get(f"/static/{name}", headers={"Accept-Encoding": "identity"})
        assert plain.status_code == 200, name
        assert plain.headers["content-type"].split(";")[0] == MEDIA_TYPES[Path(name).suffix], name
        assert plain.headers["x-content-type-options"] == "nosniff"
        assert plain.headers["cache-control"] == "no-cache"  # no fingerprint: revalidate
        assert "content-encoding" not in plain.headers
        on_disk = (STATIC_DIR / name).read_bytes()
        if name.endswith(".js"):  # served as written, but for the fingerprints added to import URLs
            assert re.sub(rb"""\?v=[0-9a-f]{12}(["'])""", rb"\1", plain.content) == on_disk, name
        else:
            assert plain.content == on_disk, name
        etag = plain.headers["etag"]
        version = etag.strip('"')
        versioned = anonymous.get(f"/static/{name}?v={version}", headers={"Accept-Encoding": "gzip"})
        assert versioned.headers["cache-control"] == "public, max-age=31536000, immutable", name
        assert versioned.content == plain.content and versioned.headers["etag"] == etag
        assert "accept-encoding" in versioned.headers["vary"].lower()
        if name.endswith((".css", ".js", ".svg")) and len(plain.content) > 512:
            assert versioned.headers["content-encoding"] == "gzip", name
            assert versioned.num_bytes_downloaded < len(plain.content), name
        if name.endswith(".png"):
            assert "content-encoding" not in versioned.headers  # already compressed
        not_modified = anonymous.get(f"/static/{name}?v={version}", headers={"If-None-Match": etag})
        assert not_modified.status_code == 304 and not_modified.content == b"", name
        assert not_modified.headers["etag"] == etag
        assert anonymous.get(f"/static/{name}", headers={"If-None-Match": '"other"'}).status_code == 200
    # A fingerprint that is not today's (an old page, a server from another release) is never cached for a year.
    stale = anonymous.get("/static/css/app.css?v=000000000000")
    assert stale.status_code == 200 and stale.headers["cache-control"] == "no-cache"


@pytest.mark.parametrize(
    "url",
    [
        "/static/no/such.css",
        "/static/",
        "/static/css",
        "/static/css/",
        "/static/../pages.py",
        "/static/%2e%2e/pages.py",
        "/static/..%2fpages.py",
        "/static/%2e%2e%2fpages.py",
        "/static/css/../../pages.py",
        "/static/css/%2e%2e/%2e%2e/render.py",
        "/static/..%5cpages.py",
        "/static//etc/passwd",
        "/static/%2fetc%2fpasswd",
        "/static/../../../../../../etc/passwd",
        "/static/css/app.css%00.png",
        "/static/CSS/APP.CSS",
    ],
)
def test_static_refuses_unknown_paths_and_traversal(anonymous: TestClient, url: str) -> None:
    r = anonymous.get(url, headers={"Accept-Encoding": "identity"})
    expected = 422 if "%00" in url else 404  # a NUL anywhere in a path is invalid_input (text_guard.py)
    assert r.status_code == expected, (url, r.status_code)
    assert b"import" not in r.content and b"root:" not in r.content


def test_every_static_url_on_every_page_resolves(admin: Browser, anonymous: TestClient, services: Services) -> None:
    make_images(services, admin.user_id, n=2)
    collection = admin.api("POST", "/api/v1/collections", json={"name": "Trip"})
    pages = {(admin.client, url) for url in [*STUDIO_PAGES, *OPEN_PAGES, f"/gallery?collection={collection['id']}"]}
    pages |= {(anonymous, url) for url in ANONYMOUS_PAGES}
    checked: set[str] = set()
    for c, url in pages:
        doc = page(c, url)
        for ref in doc.urls():
            if ref.startswith(("/static/", "/manifest")) and ref not in checked:
                assert c.get(ref).status_code == 200, (url, ref)
                checked.add(ref)
        icons = [a["href"] for a in doc.all("link") if "icon" in a.get("rel", "")]
        for asset in doc.assets() + icons:  # fingerprinted, and so is what the scripts import
            for loaded in module_imports(c, urljoin("http://testserver" + url, asset)):
                assert re.search(r"/static/.+\?v=[0-9a-f]{12}$", loaded), (url, loaded)
    assert {"/manifest.webmanifest", fingerprinted(anonymous, "css/app.css")} <= checked


def test_each_page_runs_each_module_once(admin: Browser, anonymous: TestClient) -> None:
    """A module is keyed by its URL: if a page's <script> and another module's import named app.js by two URLs
    (with and without the fingerprint), the browser would run two copies, each wiring the page's buttons."""
    for c, url in [*((admin.client, u) for u in STUDIO_PAGES), *((anonymous, u) for u in ANONYMOUS_PAGES)]:
        loaded: set[str] = set()
        for asset in page(c, url).assets():
            loaded |= module_imports(c, urljoin("http://testserver/", asset))
        paths = [urlsplit(u).path for u in loaded]
        assert len(paths) == len(set(paths)), (url, sorted(loaded))
        assert "/static/js/app.js" in paths, url


def test_service_worker(admin: Browser, anonymous: TestClient) -> None:
    r = anonymous.get("/sw.js")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
    assert r.headers["service-worker-allowed"] == "/" and r.headers["cache-control"] == "no-cache"
    assert "__SHELL__" not in r.text and "__VERSION__" not in r.text
    shell = json.loads(re.search(r"const SHELL = (\[.*?\]);", r.text).group(1))  # type: ignore[union-attr]
    assert shell and len(set(shell)) == len(shell)
    for url in shell:
        got = anonymous.get(url)
        assert got.status_code == 200 and got.headers["cache-control"].endswith("immutable"), url
    assert page(anonymous, "/offline").headings == ["You are offline"]  # the worker caches it at install too
    # Offline, the saved pages must still run: everything they load (imports included) is in the shell.
    for url in ("/generate", "/gallery", "/collections", "/dashboard", "/account", "/offline"):
        for asset in page(admin.client, url).assets():
            loaded = module_imports(admin.client, urljoin("http://testserver/", asset))
            missing = {u.removeprefix("http://testserver") for u in loaded} - set(shell)
            assert not missing, (url, missing)
    again = anonymous.get("/sw.js")
    assert again.text == r.text  # same release, same bytes: browsers keep the installed worker
    revalidated = anonymous.get("/sw.js", headers={"If-None-Match": r.headers["etag"]})
    assert revalidated.status_code == 304 and not revalidated.content  # browsers re-check it on navigations


def test_manifest(anonymous: TestClient, admin: Browser) -> None:
    r = anonymous.get("/manifest.webmanifest")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/manifest+json")
    manifest = json.loads(r.content)
    assert manifest["name"] == "Studiolo" and manifest["short_name"]
    assert manifest["display"] == "standalone" and manifest["scope"] == "/"
    assert admin.client.get(manifest["start_url"], headers=HTML).status_code == 200
    pngs = {}
    for icon in manifest["icons"]:
        got = anonymous.get(icon["src"])
        assert got.status_code == 200 and got.headers["content-type"] == icon["type"], icon
        if icon["type"] == "image/png":
            with Image.open(io.BytesIO(got.content)) as img:
                assert img.format == "PNG"
                assert f"{img.width}x{img.height}" == icon["sizes"], icon
            pngs[(icon["sizes"], icon.get("purpose", "any"))] = icon["src"]
    assert {("192x192", "any"), ("512x512", "any"), ("512x512", "maskable")} <= set(pngs)
    for shortcut in manifest.get("shortcuts", []):
        assert admin.client.get(shortcut["url"], headers=HTML).status_code == 200


def test_pages_work_without_sign_in_when_auth_is_off(settings_factory: Callable[..., Any]) -> None:
    services = build_services(settings_factory(auth_mode="none"), upgrade_db=False)
    try:
        with TestClient(create_app(services=services, start_workers=False)) as c:
            (image_id,) = make_images(services, LOCAL_USER_ID, prompt="made with sign-in off")
            for url, heading in {**STUDIO_PAGES, **OPEN_PAGES}.items():
                r = c.get(url, headers=HTML, follow_redirects=False)
                assert r.status_code == 200, (url, r.status_code)
                assert heading in Page(r.text).headings
            assert c.get("/", follow_redirects=False).headers["location"] == "/generate"
            assert c.get("/signin", follow_redirects=False).headers["location"] == "/generate"
            account = page(c, "/account")
            assert "sign-in is turned off" in "".join(account.data)
            assert not account.all("button", id="sign-out")  # nothing to sign out of
            assert page(c, "/gallery").tiles() == [image_id]
    finally:
        services.close(timeout=10)
