"""Billing in a real browser (Debian's Chromium, Playwright) against a real ``studiolo serve`` (issue 15).

Stripe mode, with tests/stripe_server.py as Stripe (its API for the SDK, its checkout page, signed webhooks): a new
user on the free plan generates until the monthly quota is hit, reads the refusal next to the Generate button with
its reset time and upgrade link, chooses Basic on /pricing, pays on the checkout page, and once the webhook has
landed /billing shows Basic and the generator works again. Quotas mode: the billing page's usage bars, and an
administrator assigning a plan and granting credits. The billing pages pass axe-core (light and dark), and
screenshots of each view go to test-artifacts/screenshots/billing/ (and /tmp/shots/ when that folder exists).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.e2e.conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.e2e.test_web_studio import (
    AXE_RUN,
    DESKTOP,
    JOB_TIMEOUT_MS,
    PASSWORD,
    PHONE,
    REPO,
    Studio,
    api_json,
    axe,
    browser,
    new_context,
    sign_in,
    studio_server,
    wait_until,
)
from tests.stripe_server import StripeServer

pytestmark = pytest.mark.slow
__all__ = ["axe", "browser"]  # fixtures shared with test_web_studio.py

SHOTS = [REPO / "test-artifacts" / "screenshots" / "billing"]
if Path("/tmp/shots").is_dir():
    SHOTS.append(Path("/tmp/shots"))
WEBHOOK_SECRET = "whsec_browser_test"
# The echo engine makes quick jobs; a free plan's five images are used up in two submissions.
MORE: dict[str, Any] = {"enable_echo_engine": True, "default_model": "echo", "rate_limit_generate": "1000/minute"}


@pytest.fixture(scope="module")
def stripe() -> Iterator[StripeServer]:
    # The webhook URL is known once the studio runs (it needs the fake's address first): set below.
    with StripeServer(webhook_secret=WEBHOOK_SECRET) as server:
        yield server


@pytest.fixture(scope="module")
def paid_studio(tmp_path_factory: pytest.TempPathFactory, stripe: StripeServer) -> Iterator[Studio]:
    keys = {"stripe_secret_key": "sk_test_browser", "stripe_webhook_secret": WEBHOOK_SECRET}
    for studio in studio_server(
        tmp_path_factory.mktemp("web-billing"), billing="stripe", stripe_api_base=stripe.api_base, **keys, **MORE
    ):
        stripe.webhook_url = f"{studio.url}/api/v1/billing/stripe/webhook"
        yield studio


@pytest.fixture(scope="module")
def team_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    yield from studio_server(tmp_path_factory.mktemp("web-billing-quotas"), billing="quotas", **MORE)


def shoot(page: Page, name: str, *, show: str | None = None, dark: bool = True) -> None:
    """Screenshots at the desktop and the phone size (and the desktop in the dark theme)."""
    page.evaluate("() => document.fonts.ready")
    sizes = [(DESKTOP, "light"), (PHONE, "light")] + ([(DESKTOP, "dark")] if dark else [])
    for size, scheme in sizes:
        page.set_viewport_size(size)
        page.emulate_media(color_scheme=scheme)  # type: ignore[arg-type]
        if show:
            page.locator(show).first.evaluate("(e) => e.scrollIntoView({ block: 'center' })")
        suffix = "-dark" if scheme == "dark" else ""
        for folder in SHOTS:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"billing-{name}-{size['width']}x{size['height']}{suffix}.png"
            page.screenshot(path=str(path), full_page=show is None, animations="disabled")
    page.set_viewport_size(DESKTOP)
    page.emulate_media(color_scheme="light")


def assert_accessible(page: Page, axe_script: Path, name: str) -> None:
    """axe-core on the page in the light and the dark theme: serious and critical findings fail."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(axe_script))
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)  # type: ignore[arg-type]
        found = page.evaluate(AXE_RUN, None)
        bad = [f"{v['id']}: {v['help']} -> {[n['target'] for n in v['nodes']]}" for v in found
               if v["impact"] in ("serious", "critical")]  # fmt: skip
        assert not bad, f"{name} ({scheme}): " + "\n".join(bad)
    page.emulate_media(color_scheme="light")


def at(path: str) -> Any:
    """A URL matcher for wait_for_url: this path exactly ("**/pricing" would also match /signin?next=/pricing)."""
    return lambda url: urlsplit(url).path == path


def generate(page: Page, prompt: str, n: int) -> None:
    page.fill("#prompt", prompt)
    page.fill("#n", str(n))
    page.click("#generate")


def wait_jobs_done(page: Page) -> None:
    def done() -> bool:
        jobs = api_json(page, "/api/v1/jobs?limit=50")["items"]
        return all(j["status"] in ("succeeded", "failed", "canceled") for j in jobs)

    wait_until(done, "the jobs to finish", timeout=JOB_TIMEOUT_MS / 1000)


# --- stripe: hit the quota, upgrade, generate again ------------------------------------------------------------
def test_free_user_hits_the_quota_upgrades_through_checkout_and_generates_again(
    browser: Browser, paid_studio: Studio, stripe: StripeServer
) -> None:
    context, problems = new_context(browser, paid_studio)
    page = context.new_page()
    sign_in(page, paid_studio.register("flo"), PASSWORD, "/generate")
    page.wait_for_url(at("/generate"))
    expect(page.locator("#gen-form")).to_have_attribute("data-ready", "true")

    # More images in one job than the free plan allows: said before submit (the quote), and again when pressed (403).
    refusal = page.locator("#billing-refusal")
    page.fill("#n", "6")
    expect(refusal.locator(".refusal-message")).to_have_text("The Free plan allows 4 images per job.")
    expect(refusal.locator(".refusal-reset")).to_have_count(0)  # nothing to wait for: only another plan helps
    page.fill("#prompt", "six lighthouses")
    page.click("#generate")
    expect(refusal).to_have_attribute("data-code", "plan_forbids")
    expect(refusal.locator("a.refusal-upgrade")).to_have_text("Upgrade your plan")
    expect(page.locator(".job-card")).to_have_count(0)

    # The cost before submit: the free plan's 50 credits, 1 credit an image at the echo model's size and steps.
    page.fill("#n", "4")
    cost = page.locator("#cost-text")
    expect(cost).to_have_text("Costs 4 credits · 50 left")
    expect(refusal).to_be_hidden()
    assert "credits = images x" in (cost.get_attribute("title") or "")
    shoot(page, "generator-cost", show="#cost-line")

    generate(page, "a lighthouse at dusk", 4)
    expect(page.locator(".job-card")).to_have_count(1)
    generate(page, "a lighthouse at dawn", 1)
    expect(page.locator(".job-card")).to_have_count(2)
    wait_jobs_done(page)

    # Five of five used: the next one is refused next to the button, with when it comes back and the way out.
    generate(page, "one more lighthouse", 1)
    expect(refusal).to_be_visible()
    expect(refusal).to_have_attribute("data-code", "quota_exceeded")
    expect(refusal.locator(".refusal-message")).to_contain_text("your Free plan has 0 of 5 left this")
    expect(refusal.locator(".refusal-message")).not_to_contain_text("UTC")  # said once, in local time
    expect(refusal.locator(".refusal-reset time")).to_have_attribute("datetime", re.compile(r"^20\d\d-"))
    upgrade = refusal.locator("a.refusal-upgrade")
    expect(upgrade).to_have_attribute("href", "/pricing")
    expect(page.locator(".job-card")).to_have_count(2)  # nothing was queued
    shoot(page, "generator-402", show="#billing-refusal")

    # /pricing: the free plan is marked; Basic goes to Stripe's checkout page.
    upgrade.click()
    page.wait_for_url(at("/pricing"))
    expect(page.locator(".plan-card.current h2")).to_have_text("Free")
    shoot(page, "pricing")
    page.get_by_role("button", name="Choose Basic").click()
    page.wait_for_url(f"{stripe.url}/checkout/**")
    expect(page.locator("#mode")).to_have_text("subscription")
    page.click("#pay")  # the fake sends the signed webhooks, then redirects to the success URL

    page.wait_for_url(at("/billing"))
    expect(page.locator("#checkout-banner")).to_contain_text("your payment went through")
    expect(page.locator("#current-plan")).to_have_text("Basic")
    assert [d.status for d in stripe.deliveries] == [200] * len(stripe.deliveries) and stripe.deliveries
    expect(page.locator(".badge-sub-active")).to_be_visible()
    expect(page.locator("table.ledger")).to_contain_text("Monthly grant")
    expect(page.get_by_role("button", name="Manage subscription")).to_be_visible()
    expect(page.locator("#payments-h ~ .table-wrap")).to_contain_text("$9.99")
    shoot(page, "billing-basic")

    # The generator works again on the new plan.
    page.goto("/generate")
    expect(page.locator("#gen-form")).to_have_attribute("data-ready", "true")
    expect(cost).to_contain_text("Costs 1 credit")
    expect(page.locator("#billing-refusal")).to_be_hidden()
    generate(page, "a lighthouse, upgraded", 1)
    expect(page.locator(".job-card")).to_have_count(3)
    expect(page.locator("#billing-refusal")).to_be_hidden()
    wait_jobs_done(page)
    expect(page.locator(".job-card").first).to_have_class(re.compile(r"\bfinished\b"))

    # The portal button opens Stripe's portal, which comes back to /billing.
    page.goto("/billing")
    page.get_by_role("button", name="Manage subscription").click()
    page.wait_for_url(f"{stripe.url}/**")
    page.click("#return")
    page.wait_for_url(at("/billing"))
    assert problems.seen == [], problems.seen


def test_billing_pages_are_accessible_and_the_admin_views(
    axe: Path, browser: Browser, paid_studio: Studio, stripe: StripeServer
) -> None:
    # axe is test tooling injected into the page: this context bypasses the pages' CSP (test_web_studio.py).
    context, _ = new_context(browser, paid_studio, bypass_csp=True)
    page = context.new_page()
    page.goto("/pricing")  # signed out: the catalogue with sign-up links
    expect(page.get_by_role("link", name="Sign up to choose Basic")).to_be_visible()
    assert_accessible(page, axe, "pricing (signed out)")
    sign_in(page, paid_studio.register("gil"), PASSWORD, "/pricing")
    page.wait_for_url(at("/pricing"))
    assert_accessible(page, axe, "pricing")
    # A credit pack bought (the checkout completed by the fake, as its Pay button does): a purchase and a payment.
    csrf = next(c["value"] for c in context.cookies() if c["name"] == "studiolo_csrf")
    pack = {"credit_pack": "credits-500"}
    r = page.request.post("/api/v1/billing/checkout", data=pack, headers={"X-CSRF-Token": csrf})
    assert r.ok, r.text()
    stripe.complete_checkout(r.json()["url"].rsplit("/", 1)[-1])
    page.goto("/billing")
    expect(page.locator("table.ledger")).to_contain_text("Purchase")
    expect(page.locator("#payments-h ~ .table-wrap")).to_contain_text("$5.00")
    # No subscription: Stripe's portal is offered for the invoices and the card, under that name.
    expect(page.locator("#manage-subscription")).to_have_text("Invoices and card")
    assert_accessible(page, axe, "billing")
    shoot(page, "billing-credits")

    # The administrator: plans, a user's billing, revenue on the analytics page.
    admin_context, admin_problems = new_context(browser, paid_studio, bypass_csp=True)
    admin = admin_context.new_page()
    sign_in(admin, ADMIN_EMAIL, ADMIN_PASSWORD, "/admin/plans")
    admin.wait_for_url(at("/admin/plans"))
    assert_accessible(admin, axe, "admin plans")
    admin.get_by_role("button", name="Edit Basic").click()
    expect(admin.locator("#editor-h")).to_have_text("Edit Basic")
    expect(admin.locator("#pf-price")).to_have_value("9.99")
    admin.fill("#pf-description", "50 images a month, every feature, priority queue.")
    shoot(admin, "admin-plan-editor", show="#plan-editor", dark=False)
    with admin.expect_navigation():  # saved, the page reloads with the new state
        admin.click("#plan-save")
    expect(admin.locator("tr[data-slug=basic]")).to_be_visible()
    assert api_json(admin, "/api/v1/admin/billing/plans/basic")["description"].endswith("priority queue.")
    shoot(admin, "admin-plans")

    admin.goto("/admin/users?q=gil")
    admin.locator("td a[href^='/admin/users/']").first.click()
    admin.wait_for_url("**/admin/users/*")
    admin.fill("#grant-amount", "120")
    admin.fill("#grant-reason", "Beta tester")
    with admin.expect_navigation():  # saved, the page reloads with the new state
        admin.click("#grant-form [type=submit]")
    expect(admin.locator("table.ledger")).to_contain_text("Beta tester")
    expect(admin.locator("#credit-balance")).to_have_text("670")  # the free plan's 50, 500 bought, 120 granted
    assert_accessible(admin, axe, "admin user")
    shoot(admin, "admin-user")

    admin.goto("/admin")
    section = admin.locator("#billing-analytics")
    expect(section.locator(".stat").first).to_contain_text("$")  # the credit pack above, at least
    expect(section.locator(".stat").first).not_to_have_text("$0.00")
    for chart in ("[data-revenue] svg.chart", "[data-usage] svg.chart"):
        expect(admin.locator(chart)).to_have_count(1)
    assert_accessible(admin, axe, "admin analytics")
    shoot(admin, "admin-analytics", show="#billing-analytics", dark=False)
    assert admin_problems.seen == [], admin_problems.seen


# --- quotas: usage bars, an administrator's plan and credits --------------------------------------------------
def test_quotas_mode_billing_page_and_admin_assignment(axe: Path, browser: Browser, team_studio: Studio) -> None:
    context, problems = new_context(browser, team_studio, bypass_csp=True)
    page = context.new_page()
    email = team_studio.register("hal")
    sign_in(page, email, PASSWORD, "/generate")
    page.wait_for_url(at("/generate"))
    expect(page.locator("#gen-form")).to_have_attribute("data-ready", "true")
    generate(page, "three foxes", 3)
    expect(page.locator(".job-card")).to_have_count(1)
    wait_jobs_done(page)

    page.goto("/billing")
    month = page.get_by_role("progressbar", name="This month")
    expect(month).to_have_attribute("aria-valuenow", "3")
    expect(month).to_have_attribute("aria-valuemax", "5")
    width = month.locator("div").evaluate("(e) => e.style.width")
    assert width == "60%", width
    expect(page.locator(".usage").first).to_contain_text("3 of 5 images")
    expect(page.locator("#manage-subscription")).to_have_count(0)  # no payments here
    expect(page.locator("#payments-h")).to_have_count(0)
    assert_accessible(page, axe, "billing (quotas)")
    shoot(page, "billing-quotas")
    page.goto("/pricing")
    expect(page.locator(".plan-note").first).to_contain_text("Ask your administrator")

    # The administrator moves the user to Pro: their billing page says so at once.
    admin_context, _ = new_context(browser, team_studio)
    admin = admin_context.new_page()
    sign_in(admin, ADMIN_EMAIL, ADMIN_PASSWORD, "/admin/users")
    admin.wait_for_url(at("/admin/users"))
    admin.get_by_role("link", name=email).click()
    admin.select_option("#assign-plan", "pro")
    admin.fill("#assign-reason", "Team lead")
    with admin.expect_navigation():  # saved, the page reloads with the new state
        admin.click("#assign-form [type=submit]")
    expect(admin.locator("#current-plan")).to_have_text("Pro")
    page.goto("/billing")
    expect(page.locator("#current-plan")).to_have_text("Pro")
    expect(page.locator(".usage").first).to_contain_text("no limit")

    # A longer ledger: the page shows the newest 20 entries, "Show older" the rest (GET /billing/ledger?cursor=).
    user_id = admin.url.rsplit("/", 1)[-1]
    csrf = next(c["value"] for c in admin_context.cookies() if c["name"] == "studiolo_csrf")
    for i in range(20):
        grant = {"amount": 1, "reason": f"Gift {i}"}
        r = admin.request.post(f"/api/v1/admin/users/{user_id}/credits", data=grant, headers={"X-CSRF-Token": csrf})
        assert r.ok, r.text()
    total = len(api_json(page, "/api/v1/billing/ledger?limit=100")["items"])
    assert total > 20, total
    page.reload()
    rows = page.locator("table.ledger tbody tr")
    expect(rows).to_have_count(20)
    expect(rows.first).to_contain_text("Gift 19")
    page.get_by_role("button", name="Show older").click()
    expect(rows).to_have_count(total)
    expect(page.get_by_role("button", name="Show older")).to_be_hidden()
    expect(rows.last).to_contain_text("Monthly grant")
    assert problems.seen == [], problems.seen
