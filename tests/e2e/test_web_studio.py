"""The web studio in a real browser: Debian's Chromium driven by Playwright against a real ``studiolo serve``.

One server for the module, on its own data directory, with the built-in demo model (the default on a fresh
install) and a real SMTP server (aiosmtpd) that receives the sign-up codes. Each test has its own browser
context (cookies, storage, service worker) and its own account, so the tests do not depend on each other.

What is checked: sign-up with the emailed code, generating with live progress, the gallery and its lightbox
(regenerate, collections, delete to the Trash with undo), offline use through the service worker, sign-in/out and the
redirect of signed-out visitors, and every page's accessibility (axe-core, injected into each page; serious
and critical findings fail). Screenshots of every page at a phone and a desktop size are written to
test-artifacts/screenshots/ for people to look at. The pages keep their Content-Security-Policy (only the axe
context bypasses it, to inject the test tool), and any CSP refusal or uncaught script error fails a test.

Chromium is Debian's package, the one thing the README's pip command cannot install: with CI=true (.ci/run,
which installs it) a missing Chromium fails these tests; on a developer's machine without it they are skipped
with a message saying how to install it. axe-core comes with the test dependencies. No browser is ever
downloaded (``playwright install`` is never run).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import axe_playwright_python
import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    ViewportSize,
    WebError,
    expect,
    sync_playwright,
)

from tests.e2e.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, Launcher, Server, studiolo_env
from tests.smtp_server import Handler, smtp_server

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
# axe-core's browser bundle as the axe-playwright-python test dependency ships it (only the file is used).
AXE = Path(axe_playwright_python.__file__).parent / "axe.min.js"
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
AXE_REPORT = REPO / "test-artifacts" / "axe-report.json"
DESKTOP: ViewportSize = {"width": 1440, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}
PASSWORD = "violet sparrow harbour 42"
# Jobs on the demo model take a few seconds on a 2-core machine; generous limits for a loaded one.
JOB_TIMEOUT_MS = 120_000
TERMINAL = ("succeeded", "failed", "canceled")


def _missing_tool(message: str) -> None:
    """In CI a missing browser or axe-core is a failure (.ci/run installs both); on a developer's machine that
    ran only the README's pip command, the browser tests say what to install instead of failing the suite."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


# --- fixtures ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.is_file():
        _missing_tool(
            f"Chromium is missing ({CHROMIUM}): the browser tests drive Debian's chromium package. Install it with "
            "`apt-get install -y chromium` (.ci/run does); never `playwright install`."
        )
    # A loaded 2-core machine runs the server, a worker and the browser at once: generous waits (never a
    # measure of speed; a passing wait returns as soon as its condition holds).
    expect.set_options(timeout=15_000)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def axe() -> Path:
    """axe-core's browser bundle, injected into each page by the accessibility test."""
    if not AXE.is_file():
        _missing_tool(f"axe-core is missing ({AXE}): install the test dependencies with `pip install -e '.[test]'`.")
    return AXE


@dataclass
class Studio:
    server: Server
    mailbox: Handler
    users: int = 0

    @property
    def url(self) -> str:
        return self.server.url

    def new_email(self, name: str) -> str:
        self.users += 1
        return f"{name}{self.users}@example.com"

    def register(self, name: str) -> str:
        """A verified account made through the API (sign-up, the emailed code, verify); returns its email."""
        email = self.new_email(name)
        with httpx.Client(base_url=self.url, timeout=30.0) as client:
            seen = len(self.mailbox.received)
            r = client.post("/api/v1/auth/register", json={"email": email, "password": PASSWORD})
            assert r.status_code == 202, r.text
            code = self.mailbox.wait_for_code(email, after=seen)
            r = client.post("/api/v1/auth/verify", json={"email": email, "code": code, "password": PASSWORD})
            assert r.status_code == 200, r.text
        return email


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    """``studiolo serve`` on a fresh data directory (demo model, SMTP mail), and the SMTP server's mailbox."""
    yield from studio_server(tmp_path_factory.mktemp("web-studio"))


def studio_server(root: Path, **overrides: Any) -> Iterator[Studio]:
    """A studio as the ``studio`` fixture starts it, with more settings (``overrides``, as studiolo_env takes them)."""
    mailbox = Handler()
    launcher = Launcher(root / "logs")
    with smtp_server(mailbox) as smtp_port:
        env = studiolo_env(
            root / "data",
            mailer="smtp",
            smtp_host="127.0.0.1",
            smtp_port=smtp_port,
            smtp_security="none",
            smtp_timeout_seconds=10,
            mail_from="Studiolo <noreply@example.com>",
            # Every browser here comes from 127.0.0.1: the per-address sign-in limit is for strangers, not tests.
            rate_limit_login="100/minute",
            rate_limit_register="100/minute",
            **overrides,
        )
        try:
            # launcher.server also creates the administrator with `studiolo users create-admin`.
            yield Studio(launcher.server(env, root), mailbox)
        finally:
            launcher.close()


@dataclass
class Problems:
    """Uncaught script errors and Content-Security-Policy refusals seen by a browser context."""

    seen: list[str] = field(default_factory=list)

    def console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            self.seen.append(f"CSP: {message.text}")

    def error(self, error: WebError) -> None:
        self.seen.append(f"uncaught: {error.error}")


def new_context(browser: Browser, studio: Studio, **options: Any) -> tuple[BrowserContext, Problems]:
    options.setdefault("viewport", DESKTOP)
    context = browser.new_context(base_url=studio.url, **options)
    context.set_default_timeout(30_000)
    problems = Problems()
    context.on("console", problems.console)
    context.on("weberror", problems.error)
    return context, problems


def api_json(page: Page, path: str) -> Any:
    """GET an API path with the page's own session cookie."""
    response = page.request.get(path)
    assert response.ok, f"GET {path}: {response.status} {response.text()}"
    return response.json()


def wait_until(check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting: {what}")
        time.sleep(0.1)


def wait_images_loaded(page: Page, selector: str) -> None:
    """Every image matching ``selector`` has been decoded (its naturalWidth is known and not zero)."""
    page.wait_for_function(
        """(sel) => { const imgs = [...document.querySelectorAll(sel)];
                      return imgs.length > 0 && imgs.every((i) => i.complete && i.naturalWidth > 0); }""",
        arg=selector,
    )


def sign_in(page: Page, email: str, password: str, next_path: str = "") -> None:
    page.goto("/signin" + (f"?next={next_path}" if next_path else ""))
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("#signin-form [type=submit]")


# Records every value the job card's progress bar takes (a MutationObserver sees each change, where polling
# from the test could miss the short-lived ones).
RECORD_PROGRESS = """() => {
  window.__progress = [];
  window.__progressText = [];
  new MutationObserver((records) => {
    for (const r of records) {
      if (r.attributeName === "aria-valuenow") window.__progress.push(Number(r.target.getAttribute("aria-valuenow")));
      if (r.attributeName === "aria-valuetext") window.__progressText.push(r.target.getAttribute("aria-valuetext"));
    }
  }).observe(document.getElementById("jobs"), {
    subtree: true, attributes: true, attributeFilter: ["aria-valuenow", "aria-valuetext"],
  });
}"""


# --- the main flow ----------------------------------------------------------------------------------------
def test_sign_up_generate_and_manage_the_gallery_then_read_it_offline(browser: Browser, studio: Studio) -> None:
    context, problems = new_context(browser, studio)
    page = context.new_page()
    email = studio.new_email("ada")
    prompt = "a lighthouse by the sea at dusk"

    # -- sign up: the landing page's link, the form, then the code from the email ------------------------------
    page.goto("/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Your private AI image studio")
    page.get_by_role("link", name="Create an account").click()
    page.wait_for_url("**/signup")
    page.fill("#display_name", "Ada")
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    seen = len(studio.mailbox.received)
    page.click("#register-form [type=submit]")
    expect(page.locator("#step-verify")).to_be_visible()
    expect(page.locator("#step-register")).to_be_hidden()
    expect(page.locator("#verify-address")).to_have_text(email)
    # The password typed a moment ago is carried in memory: the verify step does not ask for it again.
    expect(page.locator("#verify-password-field")).to_be_hidden()
    assert urlsplit(page.url).path == "/verify"
    code = studio.mailbox.wait_for_code(email, after=seen)
    page.fill("#code", code)
    page.click("#verify-form [type=submit]")
    page.wait_for_url("**/generate")

    # -- generate two images and watch the job's progress live ----------------------------------------------
    expect(page.locator("#jobs-empty")).to_be_visible()
    page.fill("#prompt", prompt)
    page.fill("#n", "2")
    page.select_option("#quality", "draft")
    page.select_option("#size", "size:512x512")
    page.evaluate(RECORD_PROGRESS)
    page.click("#generate")
    card = page.locator(".job-card")
    expect(card).to_have_count(1)
    expect(page.locator("#jobs-empty")).to_be_hidden()
    expect(card.locator(".job-title")).to_have_text(prompt)
    expect(card).to_have_attribute("data-status", "succeeded", timeout=JOB_TIMEOUT_MS)
    progress: list[float] = page.evaluate("window.__progress")
    intermediate = [v for v in progress if 0 < v < 100]
    assert len(set(intermediate)) >= 2, f"progress bar values seen: {progress}"
    assert intermediate == sorted(intermediate), progress
    # The demo model makes the two images one after another: the card says which (CONTRACTS.md "Progress").
    said: list[str] = page.evaluate("window.__progressText")
    assert any(t.startswith("Image 1 of 2 · step ") for t in said), said
    assert any(t.startswith("Image 2 of 2 · step ") for t in said), said
    expect(card.locator("[role=progressbar]")).to_have_attribute("aria-valuenow", "100")
    expect(card.locator(".job-status")).to_have_text("succeeded")
    # The two results arrive without a reload.
    results = card.locator(".job-results .tile")
    expect(results).to_have_count(2)
    wait_images_loaded(page, ".job-card .job-results img")
    image_ids = results.evaluate_all("(tiles) => tiles.map((t) => t.dataset.imageId)")
    [job] = api_json(page, "/api/v1/jobs")["items"]
    assert job["status"] == "succeeded" and job["model"] == "studiolo-demo", job
    assert sorted(o["image_id"] for o in job["outputs"]) == sorted(image_ids)

    # -- a reload keeps the settings chosen (count, quality, size), not the prompt; the finished job and its
    # images are still there (the generator lists the user's jobs from GET /jobs) ------------------------------
    page.reload()
    expect(page.locator("#n")).to_have_value("2")
    expect(page.locator("#quality")).to_have_value("draft")
    expect(page.locator("#size")).to_have_value("size:512x512")
    expect(page.locator("#prompt")).to_have_value("")
    expect(page.locator(".job-card")).to_have_count(1)
    expect(page.locator(".job-card .job-results .tile")).to_have_count(2)

    # -- the gallery shows both; the lightbox shows one with its settings --------------------------------------
    page.get_by_role("link", name="Open the gallery").click()
    page.wait_for_url("**/gallery")
    tiles = page.locator("#gallery .tile")
    expect(tiles).to_have_count(2)
    assert sorted(tiles.evaluate_all("(ts) => ts.map((t) => t.dataset.id)")) == sorted(image_ids)
    wait_images_loaded(page, "#gallery .tile img")
    first_id = tiles.first.get_attribute("data-id")
    first = api_json(page, f"/api/v1/images/{first_id}")
    tiles.first.locator("a.open").click()
    lightbox = page.locator("#lightbox")
    expect(lightbox).to_be_visible()
    expect(page.locator("#lb-prompt")).to_have_text(prompt)
    meta = page.locator("#lb-meta")
    expect(meta).to_contain_text("studiolo-demo")
    expect(meta).to_contain_text(str(first["seed"]))
    size = f"{first['width']}\N{MULTIPLICATION SIGN}{first['height']}"
    expect(page.locator("#lb-title")).to_have_text(f"{size} · seed {first['seed']}")

    # -- regenerate with the same seed: a new job is queued and finishes ------------------------------------
    page.click("#lb-regen-same")
    expect(page.locator(".toast", has_text="Queued")).to_be_visible()
    jobs = wait_until(lambda: [j for j in api_json(page, "/api/v1/jobs")["items"] if j["id"] != job["id"]], "regen job")
    regen_id = jobs[0]["id"]
    regen = wait_until(
        lambda: (j := api_json(page, f"/api/v1/jobs/{regen_id}"))["status"] in TERMINAL and j,
        "the regenerated job to finish",
        timeout=JOB_TIMEOUT_MS / 1000,
    )
    assert regen["status"] == "succeeded", regen
    assert [o["seed"] for o in regen["outputs"]] == [first["seed"]]
    regen_image = regen["outputs"][0]["image_id"]

    # -- add the image to a new collection from the lightbox; /collections lists it -------------------------
    page.select_option("#lb-collection", "__new")
    expect(page.locator("#lb-new-name")).to_be_visible()
    page.fill("#lb-new-name", "Seaside")
    page.click("#lb-collection-form [type=submit]")
    expect(page.locator(".toast", has_text="Added to “Seaside”.")).to_be_visible()
    page.click("#lb-close")
    expect(lightbox).to_be_hidden()
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Collections").click()
    page.wait_for_url("**/collections")
    item = page.locator("ul.collections > li", has_text="Seaside")
    expect(item).to_have_count(1)
    expect(item).to_contain_text("1 image")
    expect(item.locator("img.collection-cover")).to_be_visible()
    item.get_by_role("link", name="Seaside").click()
    expect(page.locator("#gallery .tile")).to_have_count(1)
    expect(page.locator(f'#gallery .tile[data-id="{first_id}"]')).to_have_count(1)

    # -- delete from the lightbox: the image goes to the Trash at once, Undo restores it; deleted again, it stays
    # in the Trash (out of the gallery's listings) --------------------------------------------------------------
    page.goto("/gallery")
    expect(tiles).to_have_count(3)  # the two made above and the regenerated one
    order = tiles.evaluate_all("(ts) => ts.map((t) => t.dataset.id)")
    victim = next(i for i in order if i != regen_image)
    tile = page.locator(f'#gallery .tile[data-id="{victim}"]')
    trashed = lambda image_id: api_json(page, f"/api/v1/images/{image_id}")["trashed_at"]  # noqa: E731

    def delete_from_lightbox() -> None:
        tile.locator("a.open").click()
        expect(lightbox).to_be_visible()
        expect(page.locator("#lb-prompt")).not_to_be_empty()
        page.click("#lb-delete")
        expect(tile).to_have_count(0)
        # The viewer moves on to the next image (culling one after another); Esc closes it.
        page.keyboard.press("Escape")
        expect(lightbox).to_be_hidden()

    delete_from_lightbox()
    toast = page.locator(".toast", has_text="Image moved to the Trash.")
    expect(toast).to_be_visible()
    wait_until(lambda: trashed(victim), f"image {victim} in the Trash")
    toast.get_by_role("button", name="Undo").click()
    expect(page.locator(".toast", has_text="Restored.")).to_be_visible()
    expect(tile).to_have_count(1)
    assert tiles.evaluate_all("(ts) => ts.map((t) => t.dataset.id)") == order  # back in its place
    assert trashed(victim) is None

    delete_from_lightbox()
    expect(toast).to_be_visible()
    wait_until(lambda: trashed(victim), f"image {victim} in the Trash")

    # Leaving the page straight after a delete cannot lose it: the request went when the button was pressed.
    plain, plain_problems = new_context(browser, studio, storage_state=context.storage_state(), service_workers="block")
    other = plain.new_page()
    other.goto("/gallery")
    other_tile = other.locator(f'#gallery .tile[data-id="{regen_image}"]')
    other_tile.locator("a.open").click()
    expect(other.locator("#lb-prompt")).not_to_be_empty()
    other.click("#lb-delete")
    expect(other_tile).to_have_count(0)
    other.goto("/dashboard")
    wait_until(lambda: other.request.get(f"/api/v1/images/{regen_image}").json()["trashed_at"], "trashed on leaving")
    assert plain_problems.seen == [], plain_problems.seen
    plain.close()

    remaining = [i["id"] for i in api_json(page, "/api/v1/images")["items"]]
    assert remaining == [i for i in order if i not in (victim, regen_image)], remaining

    assert problems.seen == [], problems.seen

    # -- offline: the service worker serves the gallery page and its thumbnails from its caches --------------
    page.goto("/gallery")
    page.evaluate("async () => { await navigator.serviceWorker.ready; }")
    if not page.evaluate("() => navigator.serviceWorker.controller !== null"):
        page.reload()  # a worker that activated after this page loaded controls it from the next load
    page.wait_for_function("() => navigator.serviceWorker.controller !== null")
    page.goto("/gallery")  # loaded under the worker, so the page and its thumbnails are now cached
    wait_images_loaded(page, "#gallery .tile img")
    online_tiles = tiles.evaluate_all("(ts) => ts.map((t) => t.dataset.id)")
    assert online_tiles == remaining
    expect(page.locator("#offline-banner")).to_be_hidden()

    context.set_offline(True)
    response = page.reload()
    assert response is not None and response.from_service_worker
    expect(page.get_by_role("heading", level=1)).to_have_text("Gallery")
    expect(page.locator("#offline-banner")).to_be_visible()
    assert tiles.evaluate_all("(ts) => ts.map((t) => t.dataset.id)") == online_tiles
    wait_images_loaded(page, "#gallery .tile img")
    context.set_offline(False)
    expect(page.locator("#offline-banner")).to_be_hidden()
    context.close()


# --- signing in and out -----------------------------------------------------------------------------------
def test_sign_in_errors_sign_out_and_signed_out_redirects(browser: Browser, studio: Studio) -> None:
    email = studio.register("bea")
    context, problems = new_context(browser, studio)
    page = context.new_page()

    # A signed-out visitor is sent to sign in, and brought back afterwards.
    page.goto("/gallery")
    assert urlsplit(page.url).path == "/signin"
    assert parse_qs(urlsplit(page.url).query) == {"next": ["/gallery"]}

    # A wrong password shows the API's own message in the form.
    wrong = httpx.post(f"{studio.url}/api/v1/auth/login", json={"email": email, "password": "not the password"})
    assert wrong.status_code == 401
    message = wrong.json()["error"]["message"]
    page.fill("#email", email)
    page.fill("#password", "not the password either")
    page.click("#signin-form [type=submit]")
    expect(page.locator("#signin-form [data-form-error]")).to_have_text(message)
    assert urlsplit(page.url).path == "/signin"

    page.fill("#password", PASSWORD)
    page.click("#signin-form [type=submit]")
    page.wait_for_url("**/gallery")
    expect(page.get_by_role("heading", level=1)).to_have_text("Gallery")

    # An expired access cookie: the sign-in page renews the session from the refresh cookie and returns.
    context.clear_cookies(name="studiolo_access")
    detour = page.goto("/dashboard")
    assert detour is not None and urlsplit(detour.url).path == "/signin"
    page.wait_for_url("**/dashboard")
    expect(page.get_by_role("heading", level=1)).to_have_text("Dashboard")

    # Sign out: back to the sign-in page, and the studio's pages are closed again.
    page.click("#sign-out")
    page.wait_for_url("**/signin")
    assert not [c for c in context.cookies() if c["name"] in ("studiolo_access", "studiolo_refresh")]
    page.goto("/gallery")
    assert urlsplit(page.url).path == "/signin"
    assert parse_qs(urlsplit(page.url).query) == {"next": ["/gallery"]}
    expect(page.locator("#resuming")).to_be_hidden()

    sign_in(page, email, PASSWORD)
    page.wait_for_url("**/generate")
    assert problems.seen == [], problems.seen
    context.close()


# --- every page: screenshots at two sizes, axe-core at the desktop size -----------------------------------
# The page's width beyond the viewport (0 when nothing sticks out sideways).
OVERFLOW = "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
AXE_RUN = """async (only) => {
  const options = { resultTypes: ["violations"] };
  if (only) options.runOnly = { type: "rule", values: only };
  const r = await axe.run(document, options);
  return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, helpUrl: v.helpUrl,
    nodes: v.nodes.map((n) => ({ target: n.target, summary: n.failureSummary })) }));
}"""


@dataclass
class PageAudit:
    """Screenshots each page at both sizes, runs axe-core on it in the light and the dark theme, and measures
    horizontal overflow; collects the findings for one verdict at the end."""

    page: Page
    axe_script: Path
    findings: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    overflow: dict[str, int] = field(default_factory=dict)

    def check(self, name: str) -> None:
        self.page.evaluate("() => document.fonts.ready")
        self.axe(name)
        for size in (DESKTOP, PHONE):
            self.page.set_viewport_size(size)
            label = f"{name}-{size['width']}x{size['height']}"
            if excess := self.page.evaluate(OVERFLOW):
                self.overflow[label] = excess
            self.page.screenshot(path=str(SCREENSHOTS / f"{label}.png"), full_page=True, animations="disabled")
        self.page.set_viewport_size(DESKTOP)

    def axe(self, name: str) -> None:
        if not self.page.evaluate("() => typeof window.axe !== 'undefined'"):
            self.page.add_script_tag(path=str(self.axe_script))
        self.findings[name] = self.page.evaluate(AXE_RUN, None)
        # The dark palette has its own contrasts to get right (nothing else changes with the theme).
        self.page.emulate_media(color_scheme="dark")
        self.findings[f"{name} (dark)"] = self.page.evaluate(AXE_RUN, ["color-contrast"])
        self.page.emulate_media(color_scheme="light")

    def verdict(self) -> list[str]:
        lines = [f"{label}: the page is {px} px wider than the window" for label, px in self.overflow.items()]
        for name, violations in self.findings.items():
            for v in violations:
                if v["impact"] in ("serious", "critical"):
                    targets = "; ".join(" ".join(n["target"]) for n in v["nodes"])
                    lines.append(f"{name}: {v['id']} ({v['impact']}): {v['help']} -> {targets}")
        return lines


def test_every_page_screenshots_and_accessibility(axe: Path, browser: Browser, studio: Studio) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    # The pages' Content-Security-Policy allows only their own scripts; axe is test tooling injected into
    # them, so this context (and only this one) bypasses it.
    context, _ = new_context(browser, studio, bypass_csp=True)
    page = context.new_page()
    audit = PageAudit(page, axe)

    # -- signed out -------------------------------------------------------------------------------------------
    page.goto("/")
    audit.check("landing")
    page.goto("/signin")
    audit.check("signin")
    page.goto("/reset")
    audit.check("reset")
    page.goto("/signup")
    audit.check("signup")
    email = studio.new_email("cy")
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.click("#register-form [type=submit]")
    expect(page.locator("#step-verify")).to_be_visible()
    audit.check("verify")

    # -- signed in as the administrator (made with `studiolo users create-admin`) -------------------------------
    sign_in(page, ADMIN_EMAIL, ADMIN_PASSWORD)
    page.wait_for_url("**/generate")
    audit.check("generate")
    page.fill("#prompt", "a red fox in the snow, watercolor")
    page.fill("#n", "2")
    page.select_option("#quality", "draft")
    page.click("#generate")
    card = page.locator(".job-card").first
    expect(card).to_have_attribute("data-status", "succeeded", timeout=JOB_TIMEOUT_MS)
    wait_images_loaded(page, ".job-card .job-results img")
    audit.check("generate-results")

    page.goto("/gallery")
    wait_images_loaded(page, "#gallery .tile img")
    audit.check("gallery")
    page.locator("#gallery .tile a.open").first.click()
    expect(page.locator("#lb-prompt")).not_to_be_empty()
    page.wait_for_function("() => document.getElementById('lb-img').complete")
    audit.check("lightbox")

    # A collection with a cover, made through the API as the same administrator.
    image_id = page.locator("#gallery .tile").first.get_attribute("data-id")
    client = studio.server.client
    made = client.post("/api/v1/collections", json={"name": "Winter", "description": "Cold light"})
    assert made.status_code == 201, made.text
    added = client.post(f"/api/v1/collections/{made.json()['id']}/images", json={"image_ids": [image_id]})
    assert added.status_code in (200, 201), added.text
    page.goto("/collections")
    audit.check("collections")
    for name, path in [
        ("queue", "/queue"),
        ("dashboard", "/dashboard"),
        ("account", "/account"),
        ("admin-analytics", "/admin"),
        ("admin-users", "/admin/users"),
        ("admin-jobs", "/admin/jobs"),
        ("admin-audit", "/admin/audit"),
    ]:
        page.goto(path)
        audit.check(name)

    # The phone menu, open.
    page.goto("/gallery")
    page.set_viewport_size(PHONE)
    page.click("#menu-toggle")
    expect(page.locator("#nav")).to_be_visible()
    expect(page.locator("#menu-toggle")).to_have_attribute("aria-expanded", "true")
    audit.axe("nav-open-phone")
    page.screenshot(path=str(SCREENSHOTS / f"nav-open-{PHONE['width']}x{PHONE['height']}.png"))

    # Everything axe said (moderate and minor findings too) is kept for people to read.
    AXE_REPORT.write_text(json.dumps(audit.findings, indent=2))
    problems = audit.verdict()
    assert not problems, "layout or accessibility problems (serious and critical axe findings):\n" + "\n".join(problems)
    context.close()
