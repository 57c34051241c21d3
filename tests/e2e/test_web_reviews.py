"""The review queue in a real browser (Debian's Chromium, Playwright) against a real ``studiolo serve`` (issue 17).

The output check holds every image (threshold 0, policy blur: the real open_nsfw model scores the echo engine's
pictures, and 0 flags any score). A user makes three pictures; the administrator opens Admin → Reviews, reveals one,
approves it, rejects one with a reason and rejects the last while suspending its owner (confirming the dialog).
The owner's lightbox had said "Held for review" and offered no download; after the rejection it shows the reason.
The page passes axe-core, and screenshots go to test-artifacts/screenshots/reviews/ (and /tmp/shots/ if it exists).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.e2e.conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.e2e.test_web_studio import (
    AXE_RUN,
    DESKTOP,
    PASSWORD,
    PHONE,
    REPO,
    Studio,
    axe,
    browser,
    new_context,
    sign_in,
    studio_server,
    wait_images_loaded,
    wait_until,
)

pytestmark = pytest.mark.slow
__all__ = ["axe", "browser"]  # fixtures shared with test_web_studio.py

SHOTS = [REPO / "test-artifacts" / "screenshots" / "reviews"]
if Path("/tmp/shots").is_dir():
    SHOTS.append(Path("/tmp/shots"))


@pytest.fixture(scope="module")
def held_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    yield from studio_server(
        tmp_path_factory.mktemp("web-reviews"),
        enable_echo_engine=True,
        default_model="echo",
        nsfw_check=True,
        nsfw_threshold=0.0,
        nsfw_policy="blur",
    )


def shoot(page: Page, name: str) -> None:
    for size in (DESKTOP, PHONE):
        page.set_viewport_size(size)
        for folder in SHOTS:
            folder.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(folder / f"{name}-{size['width']}.png"), full_page=True, animations="disabled")
    page.set_viewport_size(DESKTOP)


def _make_held_images(studio: Studio, email: str, count: int) -> list[str]:
    with httpx.Client(base_url=studio.url, timeout=30.0) as client:
        r = client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert r.status_code == 200, r.text
        client.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
        prompts = ["a red lighthouse at dusk", "a green hill under snow", "a yellow boat on a blue sea"]
        jobs = []
        for k in range(count):
            r = client.post("/api/v1/generations", json={"prompt": prompts[k % 3], "size": "256x256", "steps": 2})
            assert r.status_code == 202, r.text
            jobs.append(r.json()["id"])

        def done() -> list[str] | None:
            views = [client.get(f"/api/v1/jobs/{j}").json() for j in jobs]
            if all(v["status"] == "succeeded" for v in views):
                return [o["image_id"] for v in views for o in v["outputs"]]
            assert not any(v["status"] in ("failed", "canceled") for v in views), views
            return None

        ids: list[str] = wait_until(done, "the user's pictures", timeout=120)
        for image_id in ids:
            assert client.get(f"/api/v1/images/{image_id}").json()["review_state"] == "pending"
        return ids


def test_an_administrator_reviews_held_images_and_the_owner_sees_why(
    browser: Browser, axe: Path, held_studio: Studio
) -> None:
    owner_email = held_studio.register("maker")
    approve_id, reject_id, ban_id = _make_held_images(held_studio, owner_email, 3)

    # The owner: a blurred tile, and a lightbox that says it is held and offers no download.
    owner_ctx, owner_problems = new_context(browser, held_studio)
    owner = owner_ctx.new_page()
    sign_in(owner, owner_email, PASSWORD)
    owner.wait_for_url("**/generate")
    # The generator's job cards say so too, and offer nothing that starts from the private original.
    held_card = owner.locator(".result[data-held]").first
    expect(held_card.locator(".result-held")).to_contain_text("Held for review")
    expect(held_card.locator(".act-img2img")).to_be_hidden()
    shoot(owner, "owner-held-generate")
    owner.goto(f"/gallery?image={reject_id}")
    expect(owner.locator("#lb-review")).to_contain_text("Held for review")
    assert owner.request.get(f"/api/v1/images/{reject_id}/file").status == 403
    expect(owner.locator("#lb-download")).to_be_hidden()
    for action in ("#lb-img2img", "#lb-upscale-2"):  # made from the original, which is refused
        expect(owner.locator(action)).to_be_hidden()
    shoot(owner, "owner-held-lightbox")

    # The administrator's queue: all three, oldest first.
    admin_ctx, admin_problems = new_context(browser, held_studio, bypass_csp=True)
    admin = admin_ctx.new_page()
    sign_in(admin, ADMIN_EMAIL, ADMIN_PASSWORD)
    admin.wait_for_url("**/generate")
    admin.goto("/admin")
    admin.get_by_role("navigation", name="Administration").get_by_role("link", name="Reviews").click()
    admin.wait_for_url("**/admin/reviews")
    cards = admin.locator(".review-card")
    expect(cards).to_have_count(3)
    assert [cards.nth(k).get_attribute("data-review") for k in range(3)] == [approve_id, reject_id, ban_id]
    expect(cards.first).to_contain_text(owner_email)
    wait_images_loaded(admin, ".review-card img")
    admin.add_script_tag(path=str(axe))
    violations = [v for v in admin.evaluate(AXE_RUN, None) if v["impact"] in ("serious", "critical")]
    assert violations == [], violations
    shoot(admin, "admin-reviews")

    # Reveal swaps the blurred thumbnail for the original.
    first = admin.locator(f'.review-card[data-review="{approve_id}"]')
    first.get_by_role("button", name="Reveal").click()
    expect(first.locator("img")).to_have_attribute("src", f"/api/v1/admin/reviews/{approve_id}/file")
    wait_images_loaded(admin, f'.review-card[data-review="{approve_id}"] img')
    expect(first.get_by_role("button", name="Blur")).to_have_attribute("aria-pressed", "true")
    shoot(admin, "admin-reviews-revealed")
    first.get_by_role("button", name="Approve").click()
    expect(first).to_have_count(0)

    second = admin.locator(f'.review-card[data-review="{reject_id}"]')
    second.get_by_label("Reason").fill("Please keep it to landscapes.")
    second.get_by_role("button", name="Reject", exact=True).click()
    expect(second).to_have_count(0)

    # The owner: the rejected image says why; the approved one is an ordinary picture again.
    owner.goto(f"/gallery?image={reject_id}")
    expect(owner.locator("#lb-review")).to_have_text("Rejected: Please keep it to landscapes.")
    shoot(owner, "owner-rejected-lightbox")
    owner.goto(f"/gallery?image={approve_id}")
    expect(owner.locator("#lb-prompt")).not_to_be_empty()
    expect(owner.locator("#lb-review")).to_be_hidden()
    expect(owner.locator("#lb-download")).to_be_visible()
    expect(owner.locator("#lb-img2img")).to_be_visible()
    assert owner.request.get(f"/api/v1/images/{approve_id}/file").status == 200

    third = admin.locator(f'.review-card[data-review="{ban_id}"]')
    third.get_by_role("button", name="Reject and suspend owner").click()
    admin.get_by_role("dialog").get_by_role("button", name="Reject and suspend").click()
    # The queue is empty: the page reloads to say so.
    expect(admin.get_by_text("Nothing is waiting for review.")).to_be_visible()
    admin.get_by_role("link", name="Rejected").click()
    expect(admin.locator(".review-card")).to_have_count(2)
    expect(admin.locator(f'.review-card[data-review="{reject_id}"]')).to_contain_text("Please keep it to landscapes.")
    expect(admin.locator(".review-card").first).to_contain_text("suspended")
    shoot(admin, "admin-reviews-rejected")

    audit = held_studio.server.client.get("/api/v1/admin/audit?action=image_reviewed").json()["items"]
    assert sorted(e["details"]["decision"] for e in audit) == ["approve", "ban", "reject"]
    # The owner was suspended with the ban: their session no longer works.
    assert owner.request.get(f"/api/v1/images/{reject_id}").status in (401, 403)
    assert owner_problems.seen == [] and admin_problems.seen == []
    owner_ctx.close()
    admin_ctx.close()
