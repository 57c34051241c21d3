"""The gallery in a real browser: deletion through the Trash, the keyboard, range selection, compare, the
shortcut dialog and the lightbox, on Debian's Chromium against a real ``studiolo serve`` (the fixtures of
test_web_studio.py: one server for the module, a fresh account per test).

Deletion is the part that must never lose a decision: the DELETE is sent at once (leaving the page straight
after cannot cancel it), Undo restores from the Trash, and a request that fails (offline) puts the tile back and
says why. Each check reads the server's state through the API, not only what the page shows.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.e2e.test_web_studio import (
    JOB_TIMEOUT_MS,
    PASSWORD,
    PHONE,
    TERMINAL,
    PageAudit,
    Studio,
    api_json,
    axe,
    browser,
    new_context,
    sign_in,
    studio,
    wait_images_loaded,
    wait_until,
)

pytestmark = pytest.mark.slow
TIMES = "\N{MULTIPLICATION SIGN}"
__all__ = ["axe", "browser", "studio"]  # fixtures shared with test_web_studio.py


def make_images(studio: Studio, email: str, prompts: list[str]) -> list[str]:
    """One draft image per prompt in ``email``'s gallery, made through the API; ids newest first (the gallery's
    order)."""
    ids: list[str] = []
    with httpx.Client(base_url=studio.url, timeout=30.0) as client:
        login = client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert login.status_code == 200, login.text
        client.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
        for prompt in prompts:
            r = client.post("/api/v1/generations", json={"prompt": prompt, "quality": "draft", "size": "512x512"})
            assert r.status_code == 202, r.text
            job_id = r.json()["id"]
            job = wait_until(
                lambda job_id=job_id: (j := client.get(f"/api/v1/jobs/{job_id}").json())["status"] in TERMINAL and j,
                f"job {job_id}",
                timeout=JOB_TIMEOUT_MS / 1000,
            )
            assert job["status"] == "succeeded", job
            ids.append(job["outputs"][0]["image_id"])
    return ids[::-1]


def signed_in_gallery(browser: Browser, studio: Studio, name: str, prompts: list[str], **options: Any):  # type: ignore[no-untyped-def]
    """A new account with one image per prompt, signed in on /gallery in a fresh context."""
    email = studio.register(name)
    ids = make_images(studio, email, prompts)
    context, problems = new_context(browser, studio, **options)
    page = context.new_page()
    sign_in(page, email, PASSWORD)
    page.wait_for_url("**/generate")
    page.goto("/gallery")
    expect(page.locator("#gallery .tile")).to_have_count(len(ids))
    wait_images_loaded(page, "#gallery .tile img")
    return context, problems, page, ids


def image(page: Page, image_id: str) -> dict[str, Any]:
    return api_json(page, f"/api/v1/images/{image_id}")  # type: ignore[no-any-return]


def listed(page: Page, query: str = "") -> list[str]:
    return [i["id"] for i in api_json(page, "/api/v1/images" + query)["items"]]


def send(page: Page, method: str, path: str) -> int:
    """An API call made by the page itself (its session cookie and CSRF header); returns the status."""
    script = """async ([method, path]) => {
      const csrf = document.cookie.split("; ").find((c) => c.startsWith("studiolo_csrf="))?.split("=")[1] ?? "";
      return (await fetch(path, { method, headers: { "X-CSRF-Token": decodeURIComponent(csrf) } })).status; }"""
    return int(page.evaluate(script, [method, path]))


def tile_ids(page: Page) -> list[str]:
    return page.locator("#gallery .tile").evaluate_all("(ts) => ts.map((t) => t.dataset.id)")  # type: ignore[no-any-return]


def focused_image(page: Page) -> str | None:
    return page.evaluate("() => document.activeElement?.closest('#gallery .tile')?.dataset.id ?? null")  # type: ignore[no-any-return]


# --- deletion: at once, undoable, never lost --------------------------------------------------------------------
def test_delete_then_leave_at_once_keeps_it_in_the_trash_and_restore_brings_it_back(
    browser: Browser, studio: Studio
) -> None:
    context, problems, page, ids = signed_in_gallery(browser, studio, "tess", ["a quiet harbour", "a windmill"])
    victim, keep = ids

    # Delete from the tile menu and leave the page straight away: the request has already gone.
    tile = page.locator(f'#gallery .tile[data-id="{victim}"]')
    tile.hover()
    tile.get_by_role("button", name="More actions").click()
    page.get_by_role("menuitem", name="Move to Trash").click()
    page.goto("/dashboard")
    trashed = wait_until(lambda: image(page, victim)["trashed_at"] and image(page, victim), "the image in the Trash")
    assert trashed["purge_at"] is not None
    assert listed(page) == [keep]
    assert listed(page, "?trash=true") == [victim]

    # The Trash is reachable from the gallery's header and shows when it goes for good.
    page.goto("/gallery")
    expect(page.locator("#gallery .tile")).to_have_count(1)
    page.get_by_role("link", name="Trash").click()
    page.wait_for_url("**/gallery?view=trash")
    expect(page.get_by_role("heading", level=1)).to_have_text("Trash")
    card = page.locator(f'#trash .tile[data-id="{victim}"]')
    expect(card).to_be_visible()
    expect(card.locator(".trash-when")).to_have_text("Deleted today · purged in 30 days")
    card.get_by_role("button", name="Restore").click()
    expect(page.locator(".toast", has_text="Restored")).to_be_visible()
    expect(card).to_have_count(0)
    expect(page.locator("#trash-empty")).to_be_visible()
    assert image(page, victim)["trashed_at"] is None
    page.get_by_role("link", name="Back to the gallery").first.click()
    expect(page.locator("#gallery .tile")).to_have_count(2)
    assert sorted(tile_ids(page)) == sorted(ids)

    # Undo in the toast restores too; bulk delete and "Empty trash" (confirmed) purge for good.
    page.locator(f'#gallery .tile[data-id="{keep}"] a.open').click()
    page.click("#lb-delete")
    toast = page.locator(".toast", has_text="Image moved to the Trash.")
    expect(toast).to_be_visible()
    wait_until(lambda: image(page, keep)["trashed_at"], "trashed before Undo")
    toast.get_by_role("button", name="Undo").click()
    expect(page.locator(".toast", has_text="Restored.")).to_be_visible()
    assert image(page, keep)["trashed_at"] is None
    page.keyboard.press("Escape")
    expect(page.locator("#lightbox")).to_be_hidden()
    expect(page.locator("#gallery .tile")).to_have_count(2)

    for i in ids:
        page.locator(f'#gallery .tile[data-id="{i}"] .select').check()
    expect(page.locator("#bulk-count")).to_have_text("2 selected")
    page.locator("#bulkbar").get_by_role("button", name="Delete").click()
    expect(page.locator(".toast", has_text="2 images moved to the Trash.")).to_be_visible()
    wait_until(lambda: sorted(listed(page, "?trash=true")) == sorted(ids), "both in the Trash")
    page.goto("/gallery?view=trash")
    expect(page.locator("#trash .tile")).to_have_count(2)

    # In the Trash, a selection is restored at once (the bulk action); then both go again, and for good.
    page.locator("#trash .tile .select").first.check()
    page.click("#bulk-all")  # "Select all" is in the bar that the first selection shows
    expect(page.locator("#bulk-count")).to_have_text("2 selected")
    page.locator("#bulkbar").get_by_role("button", name="Restore").click()
    expect(page.locator(".toast", has_text="Restored 2 images to the gallery.")).to_be_visible()
    expect(page.locator("#trash-empty")).to_be_visible()
    assert sorted(listed(page)) == sorted(ids)
    page.goto("/gallery")
    page.locator("#gallery .tile .select").first.check()
    page.click("#bulk-all")
    page.locator("#bulkbar").get_by_role("button", name="Delete").click()
    wait_until(lambda: sorted(listed(page, "?trash=true")) == sorted(ids), "both in the Trash again")
    page.goto("/gallery?view=trash")
    expect(page.locator("#trash .tile")).to_have_count(2)
    page.get_by_role("button", name="Empty trash").click()
    page.get_by_role("dialog").get_by_role("button", name="Empty trash").click()
    expect(page.locator(".toast", has_text="2 images deleted forever.")).to_be_visible()
    expect(page.locator("#trash-empty")).to_be_visible()
    assert page.request.get(f"/api/v1/images/{victim}").status == 404
    assert problems.seen == [], problems.seen
    context.close()


def test_offline_delete_puts_the_tile_back_and_says_why(browser: Browser, studio: Studio) -> None:
    context, problems, page, ids = signed_in_gallery(browser, studio, "otto", ["a paper boat", "a kite", "a lantern"])
    before = tile_ids(page)
    middle = before[1]
    context.set_offline(True)
    page.locator(f'#gallery .tile[data-id="{middle}"] a.open').focus()
    page.keyboard.press("d")
    expect(page.locator(".toast.error")).to_contain_text("not deleted: you are offline")
    expect(page.locator(".toast.error")).to_contain_text("back in the gallery")
    expect(page.locator(f'#gallery .tile[data-id="{middle}"]')).to_be_visible()
    assert tile_ids(page) == before  # back in its place
    context.set_offline(False)
    assert image(page, middle)["trashed_at"] is None
    assert sorted(listed(page)) == sorted(ids)

    # Opened by its address while in the Trash, an image says so and can be restored from the viewer.
    assert send(page, "DELETE", f"/api/v1/images/{middle}") == 204
    page.goto(f"/gallery?image={middle}")
    note = page.locator("#lb-trashed")
    expect(note).to_have_text(re.compile("This image is in the Trash."))
    expect(page.locator("#lb-delete")).to_be_hidden()
    note.get_by_role("button", name="Restore").click()
    expect(note).to_be_hidden()
    expect(page.locator("#lb-delete")).to_be_visible()
    assert image(page, middle)["trashed_at"] is None
    assert problems.seen == [], problems.seen
    context.close()


# --- the keyboard -----------------------------------------------------------------------------------------------
def test_keyboard_only_star_trash_undo_restore_lightbox_and_shortcut_dialog(browser: Browser, studio: Studio) -> None:
    context, problems, page, ids = signed_in_gallery(browser, studio, "kim", ["a snail", "a lighthouse", "a teapot"])
    first, second, _ = ids  # the gallery's order, newest first: the teapot, the lighthouse, the snail

    # Tab from the top of the page to the first tile's image.
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.matches('#gallery a.open')"):
            break
    assert focused_image(page) == first
    # The focused tile shows it (an outline around the whole tile).
    outline = page.locator(f'#gallery .tile[data-id="{first}"]').evaluate("(t) => getComputedStyle(t).outlineStyle")
    assert outline == "solid"
    # The arrow keys move between images (no Tab through each tile's checkbox, star and menu).
    page.keyboard.press("ArrowRight")
    assert focused_image(page) == second
    page.keyboard.press("ArrowLeft")
    assert focused_image(page) == first

    page.keyboard.press("s")
    expect(page.locator(f'#gallery .tile[data-id="{first}"] .tile-star')).to_have_attribute("aria-pressed", "true")
    assert image(page, first)["starred"] is True

    page.keyboard.press("d")
    expect(page.locator(f'#gallery .tile[data-id="{first}"]')).to_have_count(0)
    assert focused_image(page) == second  # focus moves on, so the next key acts on the next image
    wait_until(lambda: image(page, first)["trashed_at"], "trashed by the d key")
    page.keyboard.press("Control+z")
    expect(page.locator(f'#gallery .tile[data-id="{first}"]')).to_have_count(1)
    wait_until(lambda: image(page, first)["trashed_at"] is None, "restored by Ctrl+Z")
    assert tile_ids(page) == ids

    # "?" lists the shortcuts by section; Esc closes it and focus comes back.
    page.keyboard.press("?")
    dialog = page.get_by_role("dialog", name="Keyboard shortcuts")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("heading", name="Gallery and image viewer")).to_be_visible()
    expect(dialog).to_contain_text("Move the image to the Trash")
    assert page.evaluate("() => document.getElementById('shortcuts-dialog').contains(document.activeElement)")
    page.keyboard.press("Tab")  # focus stays inside the modal dialog
    page.keyboard.press("Tab")
    assert page.evaluate("() => !document.querySelector('main').contains(document.activeElement)")
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)
    assert focused_image(page) == second

    # Enter opens the viewer; the arrows walk the gallery; Esc closes it onto the tile last shown.
    page.keyboard.press("Enter")
    lightbox = page.locator("#lightbox")
    expect(lightbox).to_be_visible()
    expect(page.locator("#lb-prompt")).to_have_text("a lighthouse")
    page.keyboard.press("ArrowRight")
    expect(page.locator("#lb-prompt")).to_have_text("a snail")
    expect(page.locator("#lb-next")).to_be_disabled()
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    expect(page.locator("#lb-prompt")).to_have_text("a teapot")
    expect(page.locator("#lb-prev")).to_be_disabled()
    expect(page.locator("#lb-remix")).to_have_attribute("href", f"/generate?remix={first}")
    expect(page.locator("#lb-img2img")).to_have_attribute("href", f"/generate?init={first}&mode=img2img")
    expect(page.locator("#lb-vary-strong")).to_have_attribute("href", f"/generate?vary={first}&strength=0.7")
    page.keyboard.press("Escape")
    expect(lightbox).to_be_hidden()
    wait_until(lambda: focused_image(page) == first, "focus back on the tile last shown")

    # Trash it again, then restore it from the Trash with the keyboard alone.
    page.keyboard.press("d")
    wait_until(lambda: image(page, first)["trashed_at"], "trashed")
    page.goto("/gallery?view=trash")
    restore = page.locator(f'#trash .tile[data-id="{first}"]').get_by_role("button", name="Restore")
    expect(restore).to_be_visible()
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.dataset.trash === 'restore'"):
            break
    page.keyboard.press("Enter")
    expect(page.locator(".toast", has_text="Restored")).to_be_visible()
    wait_until(lambda: image(page, first)["trashed_at"] is None, "restored from the Trash")

    # r opens the generator with the image's settings.
    page.goto("/gallery")
    page.locator(f'#gallery .tile[data-id="{second}"] a.open').focus()
    page.keyboard.press("r")
    page.wait_for_url(f"**/generate?remix={second}")
    assert problems.seen == [], problems.seen
    context.close()


# --- selection, compare, drag -----------------------------------------------------------------------------------
def test_shift_click_selects_a_range_and_two_compare_with_a_keyboard_slider(browser: Browser, studio: Studio) -> None:
    prompts = ["a red door", "a blue door", "a green door", "a yellow door", "a white door"]
    context, problems, page, ids = signed_in_gallery(browser, studio, "sel", prompts)
    order = tile_ids(page)
    check = lambda i: page.locator(f'#gallery .tile[data-id="{order[i]}"] .select')  # noqa: E731

    check(1).check()
    page.locator(f'#gallery .tile[data-id="{order[3]}"] a.open').click(modifiers=["Shift"])
    expect(page.locator("#bulk-count")).to_have_text("3 selected")
    assert [check(i).is_checked() for i in range(5)] == [False, True, True, True, False]
    expect(page.locator("#lightbox")).to_be_hidden()  # a shift-click selects, it does not open
    expect(page.get_by_role("button", name="Compare")).to_be_hidden()

    # Shift+Space on a focused tile extends from the last one selected; Esc clears the selection.
    page.locator(f'#gallery .tile[data-id="{order[4]}"] a.open').focus()
    page.keyboard.press("Shift+Space")
    expect(page.locator("#bulk-count")).to_have_text("4 selected")
    page.keyboard.press("Escape")
    expect(page.locator("#bulkbar")).to_be_hidden()
    # Space alone selects the focused image.
    page.locator(f'#gallery .tile[data-id="{order[0]}"] a.open').focus()
    page.keyboard.press("Space")
    expect(page.locator("#bulk-count")).to_have_text("1 selected")
    assert check(0).is_checked()

    check(2).check()
    check(2).check()
    compare = page.get_by_role("button", name="Compare")
    expect(compare).to_be_visible()
    compare.click()
    dialog = page.locator("#compare")
    expect(dialog).to_be_visible()
    wait_images_loaded(page, "#compare img")
    srcs = dialog.locator("img").evaluate_all("(imgs) => imgs.map((i) => i.getAttribute('src'))")
    assert order[0] in srcs[0] and order[2] in srcs[1], srcs
    slider = page.get_by_role("slider")
    expect(slider).to_be_focused()
    for _ in range(5):
        page.keyboard.press("ArrowRight")
    expect(slider).to_have_value("55")
    clip = page.locator("#compare-top").evaluate("(e) => getComputedStyle(e).clipPath")
    assert "55%" in clip, clip
    page.keyboard.press("Home")
    expect(slider).to_have_attribute("aria-valuetext", "0% first image, 100% second image")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()

    # A tile dragged out carries its file URL and its id (what the generator's drop zone reads).
    data = page.evaluate(
        """(id) => { const dt = new DataTransfer();
             document.querySelector(`#gallery .tile[data-id="${id}"] img`)
               .dispatchEvent(new DragEvent("dragstart", { bubbles: true, dataTransfer: dt }));
             return { uri: dt.getData("text/uri-list"), id: dt.getData("application/x-studiolo-image") }; }""",
        order[1],
    )
    assert data["id"] == order[1]
    assert data["uri"] == f"{studio.url}/api/v1/images/{order[1]}/file", data
    assert sorted(ids) == sorted(order)
    assert problems.seen == [], problems.seen
    context.close()


def test_lightbox_swipes_on_a_phone(browser: Browser, studio: Studio) -> None:
    context, problems, page, ids = signed_in_gallery(
        browser, studio, "swipe", ["a fern", "a pine cone"], viewport=PHONE, has_touch=True, is_mobile=True
    )
    # On a touch screen the tile controls show without hover.
    star = page.locator(f'#gallery .tile[data-id="{ids[0]}"] .tile-star')
    assert star.evaluate("(b) => getComputedStyle(b).opacity") == "1"
    page.locator(f'#gallery .tile[data-id="{ids[0]}"] a.open').click()
    expect(page.locator("#lb-prompt")).to_have_text("a pine cone")
    swipe = """([dx]) => {
        const stage = document.getElementById("lb-stage");
        const box = stage.getBoundingClientRect();
        const y = box.top + box.height / 2, x = box.left + box.width / 2;
        const ev = (type, clientX) => new PointerEvent(type,
          { bubbles: true, isPrimary: true, pointerType: "touch", clientX, clientY: y });
        stage.dispatchEvent(ev("pointerdown", x));
        stage.dispatchEvent(ev("pointerup", x + dx)); }"""
    page.evaluate(swipe, [-120])
    expect(page.locator("#lb-prompt")).to_have_text("a fern")
    page.evaluate(swipe, [120])
    expect(page.locator("#lb-prompt")).to_have_text("a pine cone")
    assert problems.seen == [], problems.seen
    context.close()


# --- how it looks: screenshots at both sizes, axe (light and dark) ----------------------------------------------
def test_gallery_views_screenshots_and_accessibility(axe: Path, browser: Browser, studio: Studio) -> None:
    context, _, page, ids = signed_in_gallery(
        browser, studio, "look", ["a lighthouse at dusk, " * 12, "a red fox", "an orange"], bypass_csp=True
    )
    audit = PageAudit(page, axe)
    page.locator("#gallery a.open").first.focus()
    audit.check("gallery-focused")
    page.locator("#gallery .tile .select").nth(0).check()
    page.locator("#gallery .tile .select").nth(1).check()
    page.get_by_role("button", name="Compare").click()
    wait_images_loaded(page, "#compare img")
    audit.check("gallery-compare")
    page.keyboard.press("Escape")
    page.click("#bulk-clear")
    page.locator("#gallery a.open").first.click()
    expect(page.locator("#lb-prompt")).not_to_be_empty()
    audit.check("gallery-lightbox")
    page.keyboard.press("?")
    expect(page.get_by_role("dialog", name="Keyboard shortcuts")).to_be_visible()
    audit.check("shortcuts")
    page.keyboard.press("Escape")
    page.keyboard.press("Escape")
    page.locator("#gallery .tile").first.hover()
    page.locator("#gallery .tile .tile-more").first.click()
    expect(page.get_by_role("menu")).to_be_visible()
    audit.check("gallery-tile-menu")
    page.keyboard.press("Escape")
    for i in ids[:2]:
        assert send(page, "DELETE", f"/api/v1/images/{i}") == 204
    page.goto("/gallery?view=trash")
    expect(page.locator("#trash .tile")).to_have_count(2)
    wait_images_loaded(page, "#trash img")
    audit.check("trash")
    problems = audit.verdict()
    assert not problems, "layout or accessibility problems (serious and critical axe findings):\n" + "\n".join(problems)
    context.close()


# --- upscale ---------------------------------------------------------------------------------------------------
def test_upscale_from_the_lightbox_links_to_the_job_then_opens_the_new_image(browser: Browser, studio: Studio) -> None:
    context, problems, page, ids = signed_in_gallery(browser, studio, "ups", ["a small house"])
    [original] = ids
    page.locator("#gallery a.open").first.click()
    expect(page.locator("#lb-prompt")).to_have_text("a small house")
    page.get_by_role("button", name=f"Upscale 2{TIMES}").click()
    expect(page.locator(".toast", has_text=f"Upscaling 2{TIMES}").get_by_role("button", name="Watch")).to_be_visible()
    ready = page.locator(".toast", has_text=f"The 2{TIMES} upscale is ready.")
    expect(ready).to_be_visible(timeout=JOB_TIMEOUT_MS)
    ready.get_by_role("button", name="Open").click()
    expect(page.locator("#lb-title")).to_contain_text(f"1024{TIMES}1024")
    made = [i for i in listed(page) if i != original]
    assert len(made) == 1
    upscaled = image(page, made[0])
    assert (upscaled["parent_id"], upscaled["width"], upscaled["prompt"]) == (original, 1024, "a small house")
    expect(page.get_by_role("link", name="Open the original image")).to_have_attribute(
        "href", f"/gallery?image={original}"
    )
    assert problems.seen == [], problems.seen
    context.close()
