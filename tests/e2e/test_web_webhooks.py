"""Account → Webhooks in a real browser (Debian's Chromium, Playwright) against a real ``studiolo serve`` (issue 18).

A user adds an endpoint that points at a local Standard Webhooks receiver (tests/webhook_receiver.py; private
addresses allowed for it), only for one of their API keys and two events; the page shows its secret at once. A test
event arrives signed with that secret and appears in the delivery log with its attempt; "Resend" delivers it again
with the same webhook-id; rotating the secret makes the next delivery verify with the new one. The page passes
axe-core; the endpoint is disabled, then deleted. A refused URL is said next to its field, the rest kept.
Screenshots go to test-artifacts/screenshots/webhooks/.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from tests.e2e.test_web_studio import (
    AXE_RUN,
    DESKTOP,
    OVERFLOW,
    PASSWORD,
    PHONE,
    REPO,
    Studio,
    axe,
    browser,
    new_context,
    sign_in,
    studio_server,
)
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.slow
__all__ = ["axe", "browser"]  # fixtures shared with test_web_studio.py

SHOTS = REPO / "test-artifacts" / "screenshots" / "webhooks"


@pytest.fixture(scope="module")
def hook_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    yield from studio_server(tmp_path_factory.mktemp("web-webhooks"), webhooks_allow_private=True)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    hooks = Receiver()
    hooks.start()
    yield hooks
    hooks.stop()


def shoot(section: Locator, page: Page, name: str) -> None:
    """The section alone, cut from a full-page picture (an element screenshot of a tall section scrolls, and the
    sticky app bar would cover part of it); toasts are dismissed first. Fails if the page is wider than a phone."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.evaluate("() => document.querySelectorAll('.toast').forEach((t) => t.remove())")
    for size in (DESKTOP, PHONE):
        page.set_viewport_size(size)
        page.evaluate("() => window.scrollTo(0, 0)")
        assert page.evaluate(OVERFLOW) == 0, f"the page is wider than {size['width']} px"
        box = section.bounding_box()
        assert box is not None
        shot = SHOTS / f"{name}-{size['width']}.png"
        page.screenshot(path=str(shot), full_page=True, clip=box, animations="disabled")
    page.set_viewport_size(DESKTOP)


def _api_key(studio: Studio, email: str, name: str) -> None:
    with httpx.Client(base_url=studio.url, timeout=30.0) as client:
        r = client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert r.status_code == 200, r.text
        client.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
        assert client.post("/api/v1/api-keys", json={"name": name}).status_code == 201


def test_an_owner_manages_a_webhook_endpoint_and_its_delivery_log(
    browser: Browser, axe: Path, hook_studio: Studio, receiver: Receiver
) -> None:
    email = hook_studio.register("hooks")
    _api_key(hook_studio, email, "render farm")
    context, problems = new_context(browser, hook_studio)
    page = context.new_page()
    sign_in(page, email, PASSWORD)
    page.wait_for_url("**/generate")
    page.goto("/account")
    section = page.locator("section[aria-labelledby=hooks-h]")
    expect(section.locator("#no-hooks")).to_have_text("No endpoints yet.")

    # The per-job secret: hidden until asked for.
    account_secret = section.locator("#account-secret")
    account_secret.get_by_role("button", name="Show secret").click()
    expect(account_secret.locator("[data-secret-value]")).to_contain_text("whsec_")

    # An endpoint with a long URL, two events and one API key; its secret is shown at once.
    url = receiver.url.rstrip("/") + "/hooks/studiolo/" + "a-rather-long-path-segment/" * 4 + "receive"
    # The API's refusal stands next to the field, and nothing typed is lost.
    section.get_by_label("URL").fill("ftp://example.com/hook")
    section.get_by_label("Description").fill("Render farm notifier")
    section.get_by_role("checkbox", name="job.succeeded").check()
    section.get_by_role("checkbox", name="job.failed").check()
    section.get_by_label("Jobs").select_option(label="Only jobs of the API key “render farm”")
    section.get_by_role("button", name="Add endpoint").click()
    expect(section.locator("#hook-url-error")).to_have_text("The webhook must be an http or https URL.")
    expect(section.get_by_label("URL")).to_be_focused()
    expect(section.get_by_label("Description")).to_have_value("Render farm notifier")
    expect(section.get_by_role("checkbox", name="job.failed")).to_be_checked()
    shoot(section, page, "account-webhooks-refused")
    section.get_by_label("URL").fill(url)
    section.get_by_role("button", name="Add endpoint").click()
    item = section.locator("li[data-hook]")
    expect(item).to_have_count(1)
    expect(item.locator(".hook-url")).to_have_text(url)
    expect(item).to_contain_text("job.succeeded, job.failed")
    expect(item).to_contain_text("Only jobs of the API key “render farm”")
    secret = item.locator("[data-secret-value]")
    expect(secret).to_contain_text("whsec_")
    expect(item.get_by_role("button", name="Copy secret")).to_be_focused()
    expect(section.get_by_label("URL")).to_have_value("")
    receiver.secrets[:] = [secret.inner_text()]

    # A test event: signed with that secret, then in the log with its attempt.
    item.get_by_role("button", name="Send test event").click()
    first = receiver.wait(1)[0]
    assert first.payload is not None and first.payload["type"] == "webhook.test" and first.by_hand
    log = item.locator(".hook-log")
    row = log.locator("tbody tr")
    expect(row).to_have_count(1)
    expect(row.locator(".badge")).to_have_text("succeeded")
    expect(row).to_contain_text("HTTP 200")
    row.locator("summary").click()
    expect(row.locator(".attempts li")).to_have_count(1)

    # Rotate (after a confirmation), then resend: the same webhook-id, verified with the new secret alone.
    item.get_by_role("button", name="Rotate secret").click()
    page.get_by_role("dialog").get_by_role("button", name="Rotate secret").click()
    expect(item.locator("[data-secret-note]")).to_contain_text("previous secret also signs until")
    new_secret = secret.inner_text()
    assert new_secret.startswith("whsec_") and new_secret != receiver.secrets[0]
    receiver.secrets[:] = [new_secret]
    row.get_by_role("button", name="Resend").click()
    second = receiver.wait(2)[1]
    assert second.by_hand and second.headers["webhook-id"] == first.headers["webhook-id"]
    expect(row.locator("summary")).to_have_text("2 attempts")
    expect(row.locator(".badge")).to_have_text("succeeded")
    expect(row.locator(".attempts li")).to_have_count(2)  # the open attempts stay open across the refresh
    shoot(section, page, "account-webhooks")

    # axe-core is injected, so this check runs in a context with the page's CSP off (the same session).
    audit_ctx, _ = new_context(browser, hook_studio, bypass_csp=True, storage_state=context.storage_state())
    audit = audit_ctx.new_page()
    audit.goto("/account")
    audit.locator("li[data-hook]").get_by_role("button", name="Delivery log").click()
    expect(audit.locator(".hook-log tbody tr")).to_have_count(1)
    audit.add_script_tag(path=str(axe))
    violations = [v for v in audit.evaluate(AXE_RUN, None) if v["impact"] in ("serious", "critical")]
    assert violations == [], violations
    audit_ctx.close()

    # Disable: the reason is shown and the button offers to enable it again; then delete (confirmed).
    item.get_by_role("button", name="Disable").click()
    expect(item).to_contain_text("Disabled by you.")
    expect(item.locator(".badge-failed")).to_have_text("disabled")
    expect(item.get_by_role("button", name="Enable")).to_be_visible()
    item.get_by_role("button", name="Delete").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete endpoint").click()
    expect(item).to_have_count(0)
    expect(section.locator("#no-hooks")).to_be_visible()
    expect(section.get_by_label("URL")).to_be_focused()
    assert page.request.get("/api/v1/webhooks/endpoints").json() == {"data": []}
    assert problems.seen == []
    context.close()
