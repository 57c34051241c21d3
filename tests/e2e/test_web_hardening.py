"""The web studio against an attacker, in Chromium: links from another site, a shared browser, crafted ids.

The studio runs on 127.0.0.1; the attacker's page on 127.0.0.2 (another origin and another site, so the
browser treats its links as cross-site, as it would evil.example). What is checked:

- ``next`` after a sign-in, a no-JavaScript sign-in and a resumed session (zero clicks: an expired access cookie
  and a live refresh cookie) never leaves the studio, for each way a browser could read it as another host;
- a crafted ``/gallery?image=../admin/...`` link never makes the page call an admin route;
- signing out leaves nothing of the user in the browser (offline copies, remembered settings), with the offline
  gallery still working for whoever is signed in;
- the generator's prompt limit is the server's, and errors show at their field;
- /docs renders from the studio's own files under its Content-Security-Policy.

Screenshots of the changed pages go to test-artifacts/screenshots/ like the studio test's.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, Request, expect

from tests.e2e import test_web_studio
from tests.e2e.conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.e2e.test_web_studio import (
    JOB_TIMEOUT_MS,
    PASSWORD,
    SCREENSHOTS,
    TERMINAL,
    Studio,
    new_context,
    sign_in,
    wait_images_loaded,
    wait_until,
)

pytestmark = pytest.mark.slow

ATTACKER_HOST = "127.0.0.2"
# The studio test's fixtures, for this module: its own browser and its own `studiolo serve`.
browser = test_web_studio.browser
studio = test_web_studio.studio


# --- the attacker's site ----------------------------------------------------------------------------------
@dataclass
class Attacker:
    """A site of its own that links into the studio and records every path a browser asks it for."""

    base: str
    hits: list[str] = field(default_factory=list)

    def lure(self, target: str) -> str:
        """A page of the attacker's with one link (``#go``) to ``target``."""
        return f"{self.base}/lure?to={quote(target, safe='')}"

    def landed(self) -> list[str]:
        """Paths a browser was sent to on the attacker's site (other than the lure pages)."""
        return [h for h in self.hits if not h.startswith(("/lure", "/favicon.ico"))]


@pytest.fixture(scope="module")
def attacker() -> Iterator[Attacker]:
    site = Attacker("")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            site.hits.append(self.path)
            if self.path.startswith("/lure?"):
                (to,) = parse_qs(urlsplit(self.path).query)["to"]
                body = f'<!doctype html><title>Prize</title><a id="go" href="{html.escape(to)}">Claim your prize</a>'
            else:
                body = "<!doctype html><title>Attacker</title><h1>You are on the attacker's site</h1>"
            data = body.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((ATTACKER_HOST, 0), Handler)
    site.base = f"http://{ATTACKER_HOST}:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield site
    finally:
        server.shutdown()
        server.server_close()


def follow(page: Page, attacker: Attacker, target: str) -> None:
    """Open the attacker's page and click its link to ``target`` (a cross-site navigation into the studio)."""
    page.goto(attacker.lure(target))
    page.click("#go")


def settled(studio: Studio, attacker: Attacker, *paths: str) -> Any:
    """A wait_for_url predicate: on the attacker's site, or on one of the studio's ``paths``."""
    return lambda url: url.startswith(attacker.base) or (url.startswith(studio.url) and urlsplit(url).path in paths)


# --- 1: ``next`` never leaves the site ------------------------------------------------------------------------
def off_site_next(attacker: Attacker) -> list[str]:
    """``next`` values a browser reads as the attacker's host: it drops tab, CR and LF, and reads "\\" as "/"."""
    host = attacker.base.removeprefix("http://")
    return [
        f"/\t/{host}/landed-tab",
        f"/\n/{host}/landed-lf",
        f"/\r/{host}/landed-cr",
        f"/\t\\{host}/landed-tab-backslash",
        f"/\\{host}/landed-backslash",
        f"//{host}/landed-slashes",
        f"{attacker.base}/landed-absolute",
    ]


def test_next_never_leaves_the_site_after_sign_in(browser: Browser, studio: Studio, attacker: Attacker) -> None:
    email = studio.register("nia")
    variants = off_site_next(attacker)
    for javascript in (True, False):  # the page's script (JSON sign-in), then the plain form (POST /signin)
        context, problems = new_context(browser, studio, java_script_enabled=javascript)
        page = context.new_page()
        for value in variants:
            follow(page, attacker, f"{studio.url}/signin?next={quote(value, safe='')}")
            page.wait_for_url("**/signin?**")
            page.fill("#email", email)
            page.fill("#password", PASSWORD)
            page.click("#signin-form [type=submit]")
            page.wait_for_url(settled(studio, attacker, "/generate"))
            assert urlsplit(page.url).path == "/generate", (javascript, repr(value), page.url)
            context.clear_cookies()
        # A path on the site still goes through, query included (as the studio sends it: percent-encoded).
        follow(page, attacker, f"{studio.url}/signin?next={quote('/gallery?q=red%20fox', safe='')}")
        page.fill("#email", email)
        page.fill("#password", PASSWORD)
        page.click("#signin-form [type=submit]")
        page.wait_for_url("**/gallery?q=red*")
        assert attacker.landed() == [], attacker.landed()
        assert problems.seen == [], problems.seen
        context.close()


def test_next_never_leaves_the_site_when_the_session_resumes(
    browser: Browser, studio: Studio, attacker: Attacker
) -> None:
    """Zero clicks on the studio: an expired access cookie and a live refresh cookie resume the session on the
    sign-in page, which then follows ``next`` by itself."""
    email = studio.register("rae")
    context, problems = new_context(browser, studio)
    page = context.new_page()
    sign_in(page, email, PASSWORD)
    page.wait_for_url("**/generate")
    for value in off_site_next(attacker):
        context.clear_cookies(name="studiolo_access")  # expired; the refresh cookie lives on
        follow(page, attacker, f"{studio.url}/signin?next={quote(value, safe='')}")
        page.wait_for_url(settled(studio, attacker, "/generate"))
        assert urlsplit(page.url).path == "/generate", (repr(value), page.url)
    # The resumed session still goes back where it should.
    context.clear_cookies(name="studiolo_access")
    follow(page, attacker, f"{studio.url}/dashboard")
    page.wait_for_url("**/dashboard")
    expect(page.get_by_role("heading", level=1)).to_have_text("Dashboard")
    assert attacker.landed() == [], attacker.landed()
    assert problems.seen == [], problems.seen
    context.close()


def test_the_pages_path_rules_in_the_browser(browser: Browser, studio: Studio) -> None:
    """app.js's helpers as the pages use them: the ``next`` rule, id checks and path segments."""
    context, problems = new_context(browser, studio)
    page = context.new_page()
    page.goto("/signin")
    got = page.evaluate(
        """async () => {
          const src = [...document.scripts].map((s) => s.src).find((s) => s.includes("/static/js/app.js"));
          const m = await import(src);  // the page's own instance (same URL), not a second copy
          const attempt = (f) => { try { return f(); } catch (e) { return "refused: " + e.name; } };
          return {
            next: ["/\\t/evil.example", "/\\n/evil.example", "/\\\\evil.example", "//evil.example", "https://evil.example",
                   "evil", "/gallery?q=a%20b#x", "/a/../gallery"].map((v) => m.sameOriginPath(v)),
            ids: ["0191c3a0-1234-7abc-8def-0123456789ab", "../admin/users/x/activate#", "", "0191c3a0"].map(m.isId),
            paths: [attempt(() => m.apiPath`images/${"../admin"}/x`), attempt(() => m.apiPath`images/${"a#b?c"}`),
                    attempt(() => m.apiPath`images/${".."}`), attempt(() => m.apiPath`images/${"."}`),
                    attempt(() => m.apiPath`images/${""}`)],
          };
        }"""
    )
    assert got["next"] == [None, None, None, None, None, None, "/gallery?q=a%20b#x", "/gallery"]
    assert got["ids"] == [True, False, False, False]
    assert got["paths"] == ["images/..%2Fadmin/x", "images/a%23b%3Fc", *["refused: TypeError"] * 3]
    assert problems.seen == [], problems.seen
    context.close()


# --- 8: a crafted id never reaches an admin route ---------------------------------------------------------------
def user_id(studio: Studio, email: str) -> str:
    r = studio.server.client.get("/api/v1/admin/users", params={"q": email})
    assert r.status_code == 200, r.text
    (user,) = r.json()["items"]
    return str(user["id"])


def test_a_crafted_gallery_link_never_calls_an_admin_route(
    browser: Browser, studio: Studio, attacker: Attacker
) -> None:
    """/gallery?image=../admin/users/<id>/activate%23 once made the lightbox's buttons call the admin route
    with the administrator's CSRF header (Regenerate activated a suspended account)."""
    victim = user_id(studio, studio.register("sid"))
    r = studio.server.client.post(f"/api/v1/admin/users/{victim}/suspend")
    assert r.status_code == 200 and r.json()["status"] == "suspended", r.text
    context, problems = new_context(browser, studio)
    sent: list[Request] = []
    context.on("request", lambda r: sent.append(r))
    page = context.new_page()
    sign_in(page, ADMIN_EMAIL, ADMIN_PASSWORD)
    page.wait_for_url("**/generate")
    crafted = [
        f"../admin/users/{victim}/activate#",
        f"../../api/v1/admin/users/{victim}/activate#",
        f"..%2Fadmin%2Fusers%2F{victim}%2Factivate%23",
        f"%2e%2e/admin/users/{victim}/activate#",
        "..",
    ]
    for image in crafted:
        follow(page, attacker, f"{studio.url}/gallery?image={quote(image, safe='')}")
        page.wait_for_url("**/gallery?image=*")
        refused = page.locator(".toast", has_text="There is no such image.")
        expect(refused.or_(page.locator("#lightbox[open]")).first).to_be_visible()
        # Should the lightbox open, press every button it has, as a lured administrator would.
        if page.locator("#lightbox").is_visible():
            for button in ("#lb-star", "#lb-regen-same", "#lb-regen-new", "#lb-tags-form [type=submit]", "#lb-delete"):
                page.click(button)
            page.goto("/dashboard")  # leaving sends the delete at once
        else:
            expect(refused).to_be_visible()
    page.screenshot(path=str(SCREENSHOTS / "gallery-crafted-link-1440x900.png"), animations="disabled")
    admin_calls = [f"{r.method} {r.url}" for r in sent if urlsplit(r.url).path.startswith("/api/v1/admin")]
    r = studio.server.client.get(f"/api/v1/admin/users/{victim}")
    assert r.json()["status"] == "suspended", (r.json(), admin_calls)
    assert admin_calls == [], admin_calls
    assert page.locator("#lightbox").is_hidden()
    assert problems.seen == [], problems.seen
    context.close()


# --- 9: signing out leaves nothing of the user behind -------------------------------------------------------------
CACHED = """async () => {
  const out = {};
  for (const name of ["studiolo-pages", "studiolo-images"]) {
    const keys = (await caches.has(name)) ? await (await caches.open(name)).keys() : [];
    out[name] = keys.map((r) => new URL(r.url).pathname + new URL(r.url).search);
  }
  return out;
}"""
STORED = "() => Object.fromEntries(Object.keys(localStorage).map((k) => [k, localStorage.getItem(k)]))"
FETCH_STATUS = "async (url) => { try { return (await fetch(url)).status; } catch { return 'failed'; } }"


def make_image(studio: Studio, email: str, prompt: str) -> str:
    """One image in ``email``'s gallery, made through the API with the account's own token."""
    with httpx.Client(base_url=studio.url, timeout=30.0) as client:
        login = client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert login.status_code == 200, login.text
        client.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
        r = client.post("/api/v1/generations", json={"prompt": prompt, "quality": "draft"})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        job = wait_until(
            lambda: (j := client.get(f"/api/v1/jobs/{job_id}").json())["status"] in TERMINAL and j,
            f"job {job_id}",
            timeout=JOB_TIMEOUT_MS / 1000,
        )
    assert job["status"] == "succeeded", job
    return str(job["outputs"][0]["image_id"])


def open_gallery_under_the_worker(page: Page) -> list[str]:
    """Load /gallery under the service worker, so the page and its thumbnails are kept; returns the tiles' ids."""
    page.goto("/gallery")
    page.evaluate("async () => { await navigator.serviceWorker.ready; }")
    if not page.evaluate("() => navigator.serviceWorker.controller !== null"):
        page.reload()
    page.wait_for_function("() => navigator.serviceWorker.controller !== null")
    page.goto("/gallery")
    wait_images_loaded(page, "#gallery .tile img")
    ids: list[str] = page.locator("#gallery .tile").evaluate_all("(ts) => ts.map((t) => t.dataset.id)")
    # The worker writes its copies just after handing the responses over.
    wait_until(
        lambda: len((c := cached(page))["studiolo-images"]) >= len(ids) and "/gallery" in c["studiolo-pages"],
        "the worker's copies of the gallery",
    )
    return ids


def cached(page: Page) -> dict[str, list[str]]:
    """What the service worker's user caches hold (paths with query), read from the page."""
    found: dict[str, list[str]] = page.evaluate(CACHED)
    return found


def nothing_cached(page: Page) -> bool:
    return not any(cached(page).values())


def thumbnail(image_id: str) -> str:
    return f"/api/v1/images/{image_id}/file?size=300"


def test_sign_out_leaves_nothing_of_the_user_on_a_shared_browser(browser: Browser, studio: Studio) -> None:
    ann, ben = studio.register("ann"), studio.register("ben")
    ann_image = make_image(studio, ann, "ann's private lighthouse")
    ben_image = make_image(studio, ben, "ben's red bicycle")
    context, problems = new_context(browser, studio)
    page = context.new_page()
    sign_in(page, ann, PASSWORD)
    page.wait_for_url("**/generate")
    page.select_option("#quality", "draft")  # remembered by this browser (localStorage)
    page.select_option("#theme-select", "dark")  # the device's, not the user's
    assert open_gallery_under_the_worker(page) == [ann_image]
    stored = page.evaluate(STORED)
    assert "studiolo-generator" in stored and "studiolo-theme" in stored, stored

    # An expired access cookie goes through /signin and resumes the same session: the offline copies stay.
    context.clear_cookies(name="studiolo_access")
    page.goto("/gallery")
    page.wait_for_url(lambda url: urlsplit(url).path == "/gallery")
    kept = cached(page)
    assert "/gallery" in kept["studiolo-pages"], kept
    assert [u for u in kept["studiolo-images"] if u.startswith(f"/api/v1/images/{ann_image}/file")], kept

    # Sign out, with the access cookie expired again (15 idle minutes): the session really ends, and this
    # browser forgets Ann: no saved pages or pictures, no remembered settings; the theme stays.
    context.clear_cookies(name="studiolo_access")
    page.click("#sign-out")
    page.wait_for_url("**/signin")
    assert not [c["name"] for c in context.cookies() if c["name"].startswith("studiolo_")]
    wait_until(lambda: nothing_cached(page), "the worker's copies to go")
    stored = page.evaluate(STORED)
    assert "studiolo-generator" not in stored and "studiolo-theme" in stored, stored
    page.goto("/gallery")
    assert urlsplit(page.url).path == "/signin"
    expect(page.locator("#resuming")).to_be_hidden()
    page.screenshot(path=str(SCREENSHOTS / "signed-out-1440x900.png"), full_page=True, animations="disabled")

    # Offline, the next person gets the offline page, and Ann's pictures are not in the worker's cache.
    context.set_offline(True)
    page.goto("/gallery")
    expect(page.get_by_role("heading", level=1)).to_have_text("You are offline")
    assert page.evaluate(FETCH_STATUS, thumbnail(ann_image)) == "failed"
    context.set_offline(False)

    # Ben signs in on the same browser: his gallery works offline, with his pictures only.
    sign_in(page, ben, PASSWORD, "/gallery")
    page.wait_for_url(lambda url: urlsplit(url).path == "/gallery")  # not /signin?next=/gallery
    assert open_gallery_under_the_worker(page) == [ben_image]
    context.set_offline(True)
    page.reload()
    expect(page.locator("#offline-banner")).to_be_visible()
    assert page.locator("#gallery .tile").evaluate_all("(ts) => ts.map((t) => t.dataset.id)") == [ben_image]
    wait_images_loaded(page, "#gallery .tile img")
    assert page.evaluate(FETCH_STATUS, thumbnail(ann_image)) == "failed"
    context.set_offline(False)

    # Ben's sessions end elsewhere (signed out everywhere from another device): the next visit finds the
    # session over, and this browser forgets him too.
    with httpx.Client(base_url=studio.url, timeout=30.0) as other_device:
        token = other_device.post("/api/v1/auth/login", json={"email": ben, "password": PASSWORD}).json()
        r = other_device.post(
            "/api/v1/auth/logout",
            json={"everywhere": True},
            headers={"Authorization": f"Bearer {token['access_token']}"},
        )
        assert r.status_code == 204, r.text
    page.goto("/gallery")
    page.wait_for_url("**/signin?next=*")
    wait_until(lambda: nothing_cached(page), "the worker's copies to go")
    assert "studiolo-generator" not in page.evaluate(STORED)
    assert problems.seen == [], problems.seen
    context.close()


# --- the generator's limits and errors ----------------------------------------------------------------------------
def test_prompt_limit_is_the_servers_and_errors_show_at_their_field(browser: Browser, studio: Studio) -> None:
    email = studio.register("pia")
    context, problems = new_context(browser, studio)
    posted: list[str] = []
    context.on("request", lambda r: posted.append(r.url) if r.method == "POST" and "/generations" in r.url else None)
    page = context.new_page()
    sign_in(page, email, PASSWORD)
    page.wait_for_url("**/generate")
    counter = page.locator("#prompt-count")
    expect(counter).to_have_text("0 / 2,000")  # STUDIOLO_MAX_PROMPT_CHARS's default, not a number of the page's
    page.fill("#prompt", "\N{FOX FACE}" * 3)
    expect(counter).to_have_text("3 / 2,000")  # characters as the server counts them, not UTF-16 units

    # Over the limit: said at the prompt (and above the button), before anything is sent.
    page.fill("#prompt", "a" * 2001)
    expect(counter).to_have_text("2,001 / 2,000")
    expect(counter).to_have_class("counter over")
    page.click("#generate")
    expect(page.locator("#prompt-error")).to_have_text("The prompt is longer than 2,000 characters.")
    expect(page.locator("#prompt")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#prompt")).to_be_focused()
    assert posted == []
    page.locator("#prompt").evaluate("(e) => e.closest('.field').scrollIntoView({ block: 'center' })")
    page.screenshot(path=str(SCREENSHOTS / "generate-prompt-too-long-1440x900.png"), animations="disabled")

    # A limit only the server checks (images per job): its answer names the field, and the page shows it there.
    page.fill("#prompt", "a fox in the snow")
    page.fill("#n", "9")
    page.click("#generate")
    expect(page.locator("#n-error")).to_contain_text("8")
    expect(page.locator("#n")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#prompt-error")).to_be_empty()
    assert len(posted) == 1
    assert problems.seen == [], problems.seen
    context.close()


# --- /docs ------------------------------------------------------------------------------------------------------
def test_api_docs_render_from_the_studios_own_files(browser: Browser, studio: Studio) -> None:
    context, problems = new_context(browser, studio)
    sent: list[str] = []
    context.on("request", lambda r: sent.append(r.url))
    page = context.new_page()
    page.goto("/docs")
    operation = page.locator(".opblock", has_text="/api/v1/generations").first
    expect(operation).to_be_visible()
    operation.locator(".opblock-summary").first.click()
    expect(operation.get_by_role("button", name="Try it out")).to_be_visible()
    page.screenshot(path=str(SCREENSHOTS / "api-docs-1440x900.png"), animations="disabled")
    elsewhere = [u for u in sent if not u.startswith(studio.url)]
    assert elsewhere == [], elsewhere  # works offline: nothing from a CDN
    assert problems.seen == [], problems.seen  # no Content-Security-Policy refusal, no script error
    context.close()
