"""The studio's finish, in a real browser: the account page keeps a new key's secret on screen while the list
changes, validation says one plain thing next to its field without moving the form, every control shows keyboard
focus, placeholders are readable but do not look like values, the Theme control shows and keeps its state, error
and offline pages carry the signed-in header, and a suspended user is told why. axe-core finds nothing serious on
these pages in either theme; screenshots at phone and desktop size, light and dark, go to SHOTS for people to look
at."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Browser, Page, expect

from tests.e2e.conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.e2e.test_web_studio import (
    AXE_RUN,
    DESKTOP,
    OVERFLOW,
    PASSWORD,
    PHONE,
    TERMINAL,
    Studio,
    axe,  # noqa: F401  (a fixture)
    browser,  # noqa: F401  (a fixture)
    new_context,
    sign_in,
    studio,  # noqa: F401  (a fixture)
    wait_images_loaded,
    wait_until,
)

SHOTS = Path(os.environ.get("STUDIOLO_SHOTS_DIR", Path(__file__).resolve().parents[2] / "test-artifacts" / "polish"))

# WCAG contrast of every placeholder on the page against its field, and whether it is set apart from a value.
PLACEHOLDERS = """() => {
  const rgb = (c) => c.match(/[\\d.]+/g).slice(0, 4).map(Number);
  const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
  const lum = ([r, g, b]) => 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
  return [...document.querySelectorAll("[placeholder]")].filter((el) => el.offsetParent).map((el) => {
    const ph = getComputedStyle(el, "::placeholder");
    const value = getComputedStyle(el);
    return { id: el.id, ratio: ratio(rgb(ph.color), rgb(value.backgroundColor)), italic: ph.fontStyle === "italic",
             sameAsValue: ph.color === value.color && ph.fontStyle === value.fontStyle };
  });
}"""

ONE_ROW = """() => {
  const tops = [...document.querySelectorAll(".appbar-inner > *, .appbar-tools > *")]
    .filter((el) => el.offsetParent && !el.matches(".nav")).map((el) => el.getBoundingClientRect());
  return tops.every((r) => r.top < tops[0].bottom && r.bottom > tops[0].top);
}"""

BAR = """() => [...document.querySelectorAll(".appbar-inner > *, .appbar-tools > *")].filter((el) => el.offsetParent)
  .map((el) => { const r = el.getBoundingClientRect(); return [el.className || el.tagName, r.left, r.top]; })"""

# What has keyboard focus, and whether a ring shows on it (or on the box that draws it for a clipped control).
FOCUSED = """() => {
  const el = document.activeElement;
  const ring = (node) => { const s = getComputedStyle(node);
    return s.outlineStyle !== "none" && parseFloat(s.outlineWidth) >= 2 ? s.outlineColor : null; };
  const holder = el.closest(".tile") || el.closest(".dropzone") || el;
  return { tag: el.tagName, id: el.id, cls: el.className, ring: ring(el) || (holder !== el ? ring(holder) : null) };
}"""


def shoot(page: Page, name: str, audit: Audit, *, scheme: str = "light") -> None:
    """axe on the page as it is, then screenshots at both sizes in ``scheme`` (the OS preference; Theme: System)."""
    findings = audit.findings
    page.emulate_media(color_scheme=scheme)  # type: ignore[arg-type]
    page.set_viewport_size(DESKTOP)
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(audit.axe))
    findings[f"{name} ({scheme})"] = page.evaluate(AXE_RUN, None)
    for size in (DESKTOP, PHONE):
        page.set_viewport_size(size)
        assert page.evaluate(OVERFLOW) == 0, f"{name} at {size} is wider than the window"
        # The app bar stays one row on a phone: brand, theme, sign-in or -out and the menu side by side.
        assert page.evaluate(ONE_ROW), f"{name} at {size}: the app bar wraps: {page.evaluate(BAR)}"
        page.evaluate("() => scrollTo(0, 0)")
        page.screenshot(path=str(SHOTS / f"{name}-{scheme}-{size['width']}x{size['height']}.png"), full_page=True)
    page.set_viewport_size(DESKTOP)


@dataclass
class Audit:
    axe: Path
    findings: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def serious(findings: dict[str, list[dict[str, Any]]]) -> list[str]:
    return [
        f"{name}: {v['id']} ({v['impact']}): {v['help']} -> {[n['target'] for n in v['nodes']]}"
        for name, violations in findings.items()
        for v in violations
        if v["impact"] in ("serious", "critical")
    ]


def tab_until(page: Page, check: str, limit: int = 60) -> dict[str, Any]:
    """Press Tab until ``check`` (a JS predicate on document.activeElement) holds; every stop must show a ring."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        focused: dict[str, Any] = page.evaluate(FOCUSED)
        assert focused["ring"], f"no visible focus on {focused}"
        if page.evaluate(f"() => {{ const el = document.activeElement; return Boolean({check}); }}"):
            return focused
    raise AssertionError(f"never reached {check}")


def test_account_theme_focus_placeholders_errors_offline_and_suspension(
    axe: Path,  # noqa: F811
    browser: Browser,  # noqa: F811
    studio: Studio,  # noqa: F811
) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    audit = Audit(axe)
    context, problems = new_context(browser, studio, bypass_csp=True)
    page = context.new_page()
    sign_in(page, ADMIN_EMAIL, ADMIN_PASSWORD)
    page.wait_for_url("**/generate")

    # -- the Theme control: shows its state, offers system, keeps the choice, follows the OS on "system" ---------
    theme = page.locator("#theme-select")
    expect(theme).to_have_value("system")
    expect(page.get_by_label("Theme")).to_be_visible()
    theme.select_option("dark")
    assert page.evaluate("() => document.documentElement.dataset.theme") == "dark"
    page.reload()
    expect(theme).to_have_value("dark")
    dark_bg = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
    theme.select_option("system")
    assert page.evaluate("() => document.documentElement.dataset.theme") is None
    page.emulate_media(color_scheme="dark")
    assert page.evaluate("() => getComputedStyle(document.body).backgroundColor") == dark_bg
    page.emulate_media(color_scheme="light")
    assert page.evaluate("() => getComputedStyle(document.body).backgroundColor") != dark_bg
    page.reload()
    expect(theme).to_have_value("system")

    # -- the account page: plain validation once, no jump; a new key listed at once; revoking keeps the secret ---
    page.goto("/account")
    page.evaluate("() => { window.__samePage = true; }")  # gone if anything reloads the page
    form = page.locator("#key-form")
    height = form.bounding_box()["height"]  # type: ignore[index]
    page.click("#key-form [type=submit]")
    expect(page.locator("#key-name-error")).to_have_text("Give the key a name")
    expect(page.locator("#key-name")).to_be_focused()
    expect(page.locator("#key-name")).to_have_attribute("aria-invalid", "true")
    assert form.inner_text().count("Give the key a name") == 1
    assert form.bounding_box()["height"] == height  # type: ignore[index]
    shoot(page, "account-invalid", audit)

    rows = page.locator("#keys-body tr")
    before = rows.count()
    page.fill("#key-name", "nightly backup")
    page.click("#key-form [type=submit]")
    expect(page.locator("#new-key")).to_be_visible()
    expect(rows).to_have_count(before + 1)
    expect(rows.first).to_contain_text("nightly backup")
    page.fill("#key-name", "render farm")
    page.click("#key-form [type=submit]")
    expect(rows).to_have_count(before + 2)
    expect(page.locator("#new-key-name")).to_have_text("render farm")
    secret = page.locator("#new-key-value").inner_text()
    assert secret.startswith("ais_")
    page.locator("#keys-body tr", has_text="nightly backup").get_by_role("button", name="Revoke").click()
    page.get_by_role("dialog").get_by_role("button", name="Revoke").click()
    expect(page.locator("#keys-body tr", has_text="nightly backup")).to_contain_text("revoked")
    expect(page.locator("#new-key-value")).to_have_text(secret)  # the other key's secret is still there to copy
    assert page.evaluate("() => window.__samePage === true")
    api = httpx.get(f"{studio.url}/api/v1/auth/me", headers={"Authorization": f"Bearer {secret}"})
    assert api.status_code == 200, api.text
    shoot(page, "account", audit)
    shoot(page, "account", audit, scheme="dark")

    # Placeholders: readable (AA, 4.5:1) and set apart from typed values, in both themes.
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)  # type: ignore[arg-type]
        measured = page.evaluate(PLACEHOLDERS)
        assert measured and all(m["ratio"] >= 4.5 and m["italic"] and not m["sameAsValue"] for m in measured), (
            scheme,
            measured,
        )
    page.emulate_media(color_scheme="light")

    # Keyboard focus shows on every stop of the account page, the theme control and the file picker included.
    page.goto("/account")
    page.locator("body").focus()
    tab_until(page, "el.id === 'theme-select'")
    tab_until(page, "el.id === 'delete-password'", limit=80)

    # -- the dashboard and the admin pages: names, not slugs; the cost explained; the same p95 -------------------
    client = studio.server.client  # signed in as the administrator
    r = client.post(
        "/api/v1/generations", json={"prompt": "a lighthouse at dusk", "quality": "draft", "style": "watercolor"}
    )
    assert r.status_code == 202, r.text
    job = wait_until(
        lambda: (j := client.get(f"/api/v1/jobs/{r.json()['id']}").json())["status"] in TERMINAL and j, "the job"
    )
    assert job["status"] == "succeeded", job
    page.goto("/dashboard")
    expect(page.locator("#cost-note")).to_contain_text("not money")
    expect(page.locator("text=what is this?")).to_be_visible()
    expect(page.locator("table")).to_contain_text("Watercolor")  # the style's name, not its slug
    shoot(page, "dashboard", audit)
    shoot(page, "dashboard", audit, scheme="dark")
    page.goto("/admin")
    shoot(page, "admin", audit)
    shoot(page, "admin", audit, scheme="dark")
    page.goto("/admin/users")
    shoot(page, "admin-users", audit)

    # Gallery tiles show focus although they clip their content.
    page.goto("/gallery")
    wait_images_loaded(page, "#gallery .tile img")
    page.locator("body").focus()
    tile = tab_until(page, "el.matches('.tile a.open')")
    assert tile["ring"]
    page.screenshot(path=str(SHOTS / "gallery-tile-focus-1440x900.png"))

    # -- an error page knows who is looking ----------------------------------------------------------------
    page.goto("/no-such-page")
    expect(page.get_by_role("heading", level=1)).to_have_text("Not found")
    expect(page.get_by_role("navigation", name="Main").get_by_role("link", name="Gallery")).to_be_visible()
    expect(page.locator("#sign-out")).to_be_visible()
    shoot(page, "error-404", audit)
    shoot(page, "error-404", audit, scheme="dark")

    # -- offline: a page the worker never kept shows the offline page, with the signed-in header -------------
    page.goto("/dashboard")
    page.evaluate("async () => { await navigator.serviceWorker.ready; }")
    if not page.evaluate("() => navigator.serviceWorker.controller !== null"):
        page.reload()
    page.wait_for_function("() => navigator.serviceWorker.controller !== null")
    context.set_offline(True)
    page.goto("/collections?never=kept")
    expect(page.get_by_role("heading", level=1)).to_have_text("You are offline")
    expect(page.locator("#nav")).to_be_visible()
    expect(page.locator("#sign-out")).to_be_visible()
    expect(page.locator("a.btn", has_text="Sign in")).to_be_hidden()
    shoot(page, "offline", audit)
    shoot(page, "offline", audit, scheme="dark")
    context.set_offline(False)

    # -- a suspended user is told why, in a browser of their own ----------------------------------------------
    email = studio.register("sus")
    theirs, their_problems = new_context(browser, studio, bypass_csp=True)
    them = theirs.new_page()
    sign_in(them, email, PASSWORD)
    them.wait_for_url("**/generate")
    page.goto(f"/admin/users?q={email}")
    page.get_by_role("button", name="Suspend").click()
    page.get_by_label("Reason (optional, shown to them)").fill("Payments bounced three times")
    shoot(page, "admin-suspend-dialog", audit)
    page.get_by_role("dialog").get_by_role("button", name="Suspend").click()
    expect(page.locator("tr", has_text=email)).to_contain_text("suspended")
    them.goto("/gallery")
    expect(them.get_by_role("heading", level=1)).to_have_text("Your account is suspended")
    expect(them.locator("main")).to_contain_text("Payments bounced three times")
    expect(them.locator("main")).to_contain_text("ask the administrator")
    shoot(them, "suspended", audit)
    shoot(them, "suspended", audit, scheme="dark")
    them.click("#sign-out")
    them.wait_for_url("**/signin")
    them.fill("#email", email)
    them.fill("#password", PASSWORD)
    them.click("#signin-form [type=submit]")
    expect(them.locator("[data-form-error]")).to_contain_text("Payments bounced three times")
    shoot(them, "signin-suspended", audit)

    assert problems.seen == [] and their_problems.seen == [], (problems.seen, their_problems.seen)
    assert not serious(audit.findings), "\n".join(serious(audit.findings))
    theirs.close()
    context.close()
