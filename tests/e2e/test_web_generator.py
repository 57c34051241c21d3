"""The generator and the queue view in a real browser (Debian's Chromium, Playwright) against a real ``studiolo
serve``: results that survive a reload and come back from a /generate#job- link, "Use settings" and ?remix=
filling every field, an AUTOMATIC1111 PNG dropped on the form, image-to-image and inpaint from a result, a
keyboard-only generate with prompt history, and the queue view in two tabs. Screenshots of the new views at a
phone and a desktop size go to test-artifacts/screenshots/generator/ (and /work/wt/shots/generator/ when that
folder exists), and axe-core checks them.

The install has the built-in demo model (the default; it does image-to-image and inpaint too) and the echo engine
(``echo``, for many quick jobs).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image, PngImagePlugin
from playwright.sync_api import Browser, Page, expect

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
    wait_images_loaded,
    wait_until,
)

pytestmark = pytest.mark.slow
__all__ = ["axe", "browser"]  # fixtures shared with test_web_studio.py

FIXTURES = REPO / "tests" / "fixtures" / "pnginfo"
SHOTS = [REPO / "test-artifacts" / "screenshots" / "generator"]
if Path("/work/wt/shots").is_dir():
    SHOTS.append(Path("/work/wt/shots/generator"))


# The echo engine too (image-to-image and inpaint, fast jobs), and room for many submissions.
MORE: dict[str, Any] = {"enable_echo_engine": True, "rate_limit_generate": "1000/minute"}


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    yield from studio_server(tmp_path_factory.mktemp("web-generator"), **MORE)


@pytest.fixture(scope="module")
def idle_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    """No worker runs jobs here: they stay queued for as long as the queue view's test needs."""
    yield from studio_server(tmp_path_factory.mktemp("web-queue"), **MORE, inline_workers=0)


def signed_in(browser: Browser, studio: Studio, name: str, **options: Any) -> tuple[Page, Any]:
    context, problems = new_context(browser, studio, **options)
    page = context.new_page()
    sign_in(page, studio.register(name), PASSWORD, "/generate")
    page.wait_for_url("**/generate")
    expect(page.locator("#gen-form")).to_have_attribute("data-ready", "true")
    return page, problems


def post(page: Page, path: str, body: Any) -> Any:
    """POST JSON with the page's session (cookie and CSRF header, as the page's own script sends it)."""
    csrf = next(c["value"] for c in page.context.cookies() if c["name"] == "studiolo_csrf")
    r = page.request.post(path, data=body, headers={"X-CSRF-Token": csrf})
    assert r.ok, f"POST {path}: {r.status} {r.text()}"
    return r.json()


def wait_job(page: Page, job_id: str) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        job: dict[str, Any] = api_json(page, f"/api/v1/jobs/{job_id}")
        return job if job["status"] in ("succeeded", "failed", "canceled") else None

    return wait_until(finished, f"job {job_id} to finish", timeout=JOB_TIMEOUT_MS / 1000)  # type: ignore[no-any-return]


def shoot(page: Page, name: str, axe_script: Path | None = None, show: str | None = None) -> None:
    """Screenshots at the desktop and the phone size; axe-core findings that are serious or critical fail."""
    if axe_script is not None:
        if not page.evaluate("() => typeof window.axe !== 'undefined'"):
            page.add_script_tag(path=str(axe_script))
        for scheme in ("light", "dark"):
            page.emulate_media(color_scheme=scheme)  # type: ignore[arg-type]
            found = page.evaluate(AXE_RUN, None)
            bad = [f"{v['id']}: {v['help']} -> {[n['target'] for n in v['nodes']]}" for v in found
                   if v["impact"] in ("serious", "critical")]  # fmt: skip
            assert not bad, f"{name} ({scheme}): " + "\n".join(bad)
        page.emulate_media(color_scheme="light")
    for size in (DESKTOP, PHONE):
        page.set_viewport_size(size)
        if show:  # what the picture is about, in view at this size too
            page.locator(show).first.evaluate("(e) => e.scrollIntoView({ block: 'center' })")
        for folder in SHOTS:
            folder.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(folder / f"{name}-{size['width']}x{size['height']}.png"), animations="disabled")
    page.set_viewport_size(DESKTOP)


def a1111_png() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", (FIXTURES / "a1111_parameters.txt").read_text())
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (40, 90, 160)).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


DROP_FILE = """([selector, b64, name]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const dt = new DataTransfer();
  dt.items.add(new File([bytes], name, { type: "image/png" }));
  const target = document.querySelector(selector);
  target.dispatchEvent(new DragEvent("dragover", { dataTransfer: dt, bubbles: true, cancelable: true }));
  target.dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
}"""


DROP_IMAGE = """([selector, id, url]) => {
  const dt = new DataTransfer();
  dt.setData("application/x-studiolo-image", id);
  dt.setData("text/uri-list", url);
  const target = document.querySelector(selector);
  target.dispatchEvent(new DragEvent("dragover", { dataTransfer: dt, bubbles: true, cancelable: true }));
  target.dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
}"""


# --- results never vanish ----------------------------------------------------------------------------------
def test_results_survive_reload_dismiss_and_job_links(browser: Browser, studio: Studio) -> None:
    page, problems = signed_in(browser, studio, "rita")
    expect(page.locator("#jobs-empty")).to_be_visible()
    # Eleven quick jobs through the API (the echo model): one more than the first page holds.
    body = {
        "generations": [{"prompt": f"echo job {i}", "model": "echo", "size": "64x64", "steps": 2} for i in range(11)]
    }
    ids = [j["id"] for j in post(page, "/api/v1/generations/batch", body)["jobs"]]
    for job_id in ids:
        wait_job(page, job_id)
    page.reload()
    cards = page.locator(".job-card:not([hidden])")
    expect(cards).to_have_count(10)
    # Newest first, each with its image and its finished line (the progress bar folded away).
    expect(cards.first).to_have_id(f"job-{ids[-1]}")
    expect(cards.first.locator(".job-results .tile")).to_have_count(1)
    expect(cards.first.locator(".progress")).to_be_hidden()
    expect(cards.first.locator(".job-meta")).to_contain_text("1 image")
    page.click("#jobs-older")
    expect(cards).to_have_count(11)
    expect(page.locator("#jobs-older")).to_be_hidden()

    # Dismiss one card and clear the rest: a reload keeps them dismissed, and nothing is deleted.
    page.locator(f"#job-{ids[-1]} .job-dismiss").click()
    expect(cards).to_have_count(10)
    page.click("#clear-finished")
    expect(cards).to_have_count(0)
    page.reload()
    expect(page.locator("#gen-form")).to_have_attribute("data-ready", "true")
    expect(cards).to_have_count(0)
    assert len(api_json(page, "/api/v1/jobs?limit=100")["items"]) == 11

    # A job link opens that job's card, even dismissed and off the first page.
    page.goto(f"/generate#job-{ids[0]}")
    card = page.locator(f"#job-{ids[0]}")
    expect(card).to_be_visible()
    expect(card).to_have_class("card job-card finished highlight")
    expect(card.locator(".job-title")).to_have_text("echo job 0")
    expect(card.locator(".job-results .tile")).to_have_count(1)
    wait_images_loaded(page, f"#job-{ids[0]} .job-results img")
    assert problems.seen == [], problems.seen


def test_batch_count_seed_kept_and_the_advanced_summary(browser: Browser, studio: Studio) -> None:
    page, problems = signed_in(browser, studio, "bo")
    page.select_option("#model", "echo")
    page.fill("#prompt", "two jobs of two")
    page.fill("#n", "2")
    page.fill("#seed", "1234")
    page.locator("#advanced > summary").click()
    page.fill("#negative_prompt", "blurry")
    page.fill("#tags", "one, two")
    page.fill("#steps", "3")
    page.fill("#batch_count", "2")
    page.locator("#advanced > summary").click()  # collapsed: the header still says what it holds
    summary = "Negative prompt · 2 tags · seed 1234 · 3 steps · 2 \u00d7 2 images"
    expect(page.locator("#adv-summary")).to_have_text(summary)
    # A wrong value is named in plain words next to its field, before anything is sent.
    page.fill("#seed", "4294967296")
    page.click("#generate")
    expect(page.locator("#seed-error")).to_have_text("Seed must be a whole number up to 4,294,967,295")
    expect(page.locator("#seed")).to_be_focused()
    page.fill("#seed", "1234")
    page.click("#generate")
    cards = page.locator(".job-card")
    expect(cards).to_have_count(2)
    expect(page.locator("#seed")).to_have_value("1234")  # what was typed stays
    expect(page.locator("#seed-error")).to_be_empty()
    for i in range(2):
        expect(cards.nth(i)).to_have_attribute("data-status", "succeeded", timeout=JOB_TIMEOUT_MS)
    seeds = sorted(s for j in api_json(page, "/api/v1/jobs")["items"] for s in j["seeds"])
    assert seeds == [1234, 1235, 1236, 1237]  # the second job starts where the first ended
    assert problems.seen == [], problems.seen


# --- settings back into the form ---------------------------------------------------------------------------
def test_use_settings_and_remix_link_fill_every_field(browser: Browser, studio: Studio) -> None:
    page, problems = signed_in(browser, studio, "remy")
    settings = {
        "prompt": "a fox in a blue coat",
        "negative_prompt": "text, watermark",
        "style": "watercolor",
        "model": "echo",
        "size": "640x448",
        "seed": 987654,
        "steps": 7,
        "guidance": 5.5,
    }
    job = post(page, "/api/v1/generations", settings)
    done = wait_job(page, job["id"])
    assert done["status"] == "succeeded", (done["status"], done["error"])
    image_id = done["outputs"][0]["image_id"]

    def check_filled() -> None:
        expect(page.locator("#prompt")).to_have_value(settings["prompt"])
        expect(page.locator("#negative_prompt")).to_have_value(settings["negative_prompt"])
        expect(page.locator("#style-watercolor")).to_be_checked()
        expect(page.locator("#model")).to_have_value("echo")
        expect(page.locator("#size")).to_have_value("size:640x448")
        expect(page.locator("#seed")).to_have_value("987654")
        expect(page.locator("#steps")).to_have_value("7")
        expect(page.locator("#guidance")).to_have_value("5.5")
        expect(page.locator("#settings-loaded")).to_contain_text("Settings loaded from “a fox in a blue coat”")

    page.reload()
    expect(page.locator("#gen-form")).to_have_attribute("data-ready", "true")
    page.locator(f"#job-{job['id']} .result").hover()  # the actions show over the image it points at
    page.locator(f"#job-{job['id']} .act-remix").click()
    check_filled()
    # The same from a link (the gallery's Remix).
    page.goto("/generate")
    page.goto(f"/generate?remix={image_id}")
    check_filled()
    assert "remix" not in page.url  # handled once: a reload does not load it again over new edits
    assert problems.seen == [], problems.seen


def test_dropping_an_a1111_png_fills_the_form_and_says_what_was_read(browser: Browser, studio: Studio) -> None:
    page, problems = signed_in(browser, studio, "ada")
    data = base64.b64encode(a1111_png()).decode()
    page.evaluate(DROP_FILE, ["#dropzone", data, "from-a1111.png"])
    loaded = page.locator("#settings-loaded")
    expect(loaded).to_contain_text("Read from an AUTOMATIC1111 image")
    expect(page.locator("#prompt")).to_have_value(
        "a red fox in the snow, watercolor, (masterpiece:1.2)\nsoft morning light"
    )
    expect(page.locator("#negative_prompt")).to_have_value("blurry, lowres, text")
    expect(page.locator("#seed")).to_have_value("1234")
    expect(page.locator("#steps")).to_have_value("28")
    expect(page.locator("#guidance")).to_have_value("6.5")
    expect(page.locator("#size")).to_have_value("size:512x768")
    # What could not be used is said, not dropped silently.
    expect(loaded).to_contain_text("model v1-5-pruned-emaonly (not installed)")
    expect(loaded).to_contain_text("Clip skip: 2")
    expect(page.locator("#init-editor")).to_be_hidden()
    shoot(page, "generate-png-read", show="#settings-loaded")
    # "Start from this image instead" makes it the image-to-image input after all.
    loaded.get_by_role("button", name="Start from this image instead").click()
    expect(page.locator("#init-editor")).to_be_visible()

    # A PNG without settings goes straight to the image-to-image drop zone.
    plain = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 50, 50)).save(plain, format="PNG")
    page.click("#init-remove")
    page.evaluate(DROP_FILE, ["#dropzone", base64.b64encode(plain.getvalue()).decode(), "plain.png"])
    expect(page.locator("#init-editor")).to_be_visible()
    assert problems.seen == [], problems.seen


# --- image-to-image and inpaint -------------------------------------------------------------------------------
def test_image_to_image_and_inpaint_from_a_result(axe: Path, browser: Browser, studio: Studio) -> None:
    page, problems = signed_in(browser, studio, "ines", bypass_csp=True)
    # On the built-in demo model, which does image-to-image and inpaint (a fresh install can use every control).
    job = post(page, "/api/v1/generations", {"prompt": "a red square", "size": "512x512", "steps": 2})
    image_id = wait_job(page, job["id"])["outputs"][0]["image_id"]

    # Image to image, from the result's button.
    page.reload()
    expect(page.locator("#gen-form")).to_have_attribute("data-ready", "true")
    page.locator(f"#job-{job['id']} .result").hover()
    page.locator(f"#job-{job['id']} .act-img2img").click()
    expect(page.locator("#init-editor")).to_be_visible()
    page.select_option("#model", "studiolo-demo")
    page.fill("#prompt", "the same square, bluer")
    page.click("#generate")
    expect(page.locator(".job-card")).to_have_count(2)
    first = page.locator(".job-card").first
    expect(first).to_have_attribute("data-status", "succeeded", timeout=JOB_TIMEOUT_MS)
    assert api_json(page, f"/api/v1/jobs/{first.get_attribute('data-job-id')}")["kind"] == "img2img"

    # Inpaint, from a link (the gallery's "Inpaint"): paint, undo, redo, invert twice, a bigger brush with ].
    page.goto(f"/generate?init={image_id}&mode=inpaint")
    expect(page.locator("#mask-on")).to_be_checked()
    page.select_option("#model", "studiolo-demo")
    canvas = page.locator("#mask-canvas")
    expect(canvas).to_be_visible()
    page.wait_for_function("() => document.getElementById('mask-canvas').width === 512")
    page.locator("#mask-brush").focus()
    page.keyboard.press("]")
    expect(page.locator("#brush-out")).to_have_text("46")
    box = canvas.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.6, steps=5)
    page.mouse.up()
    expect(page.locator("#mask-undo")).to_be_enabled()
    page.click("#mask-undo")
    expect(page.locator("#mask-redo")).to_be_enabled()
    page.click("#mask-redo")
    page.click("#mask-invert")
    page.click("#mask-invert")
    page.fill("#prompt", "a green circle in the middle")
    shoot(page, "generate-inpaint", axe, show="#init-editor")
    page.click("#generate")
    expect(page.locator(".job-card")).to_have_count(3)
    first = page.locator(".job-card").first
    expect(first).to_have_attribute("data-status", "succeeded", timeout=JOB_TIMEOUT_MS)
    assert api_json(page, f"/api/v1/jobs/{first.get_attribute('data-job-id')}")["kind"] == "inpaint"

    # A gallery tile or a result dragged onto the form (CONTRACTS.md: the image id, and its file URL).
    page.goto("/generate")
    expect(page.locator("#gen-form")).to_have_attribute("data-ready", "true")
    expect(page.locator("#init-editor")).to_be_hidden()
    page.evaluate(DROP_IMAGE, ["#prompt-count", image_id, f"{studio.url}/api/v1/images/{image_id}/file"])
    expect(page.locator("#init-editor")).to_be_visible()
    page.wait_for_function("() => document.getElementById('mask-canvas').width === 512")

    # Vary (strong), from a link: image-to-image of that image with a new seed, queued at once.
    page.goto(f"/generate?vary={image_id}&strength=0.7")
    expect(page.locator(".job-card")).to_have_count(4)
    varied = page.locator(".job-card").first
    expect(varied).to_have_attribute("data-status", "succeeded", timeout=JOB_TIMEOUT_MS)
    job_view = api_json(page, f"/api/v1/jobs/{varied.get_attribute('data-job-id')}")
    assert (job_view["kind"], job_view["params"]["strength"], job_view["model"]) == ("img2img", 0.7, "studiolo-demo")
    assert job_view["params"]["prompt"] == "a red square" and job_view["params"]["seed"] is None
    assert "vary" not in page.url
    assert problems.seen == [], problems.seen


# --- keyboard --------------------------------------------------------------------------------------------------
def test_keyboard_only_generate_and_prompt_history(browser: Browser, studio: Studio) -> None:
    page, problems = signed_in(browser, studio, "kai")
    for _ in range(40):  # from the top of the page to the prompt box, by Tab alone
        if page.evaluate("() => document.activeElement?.id") == "prompt":
            break
        page.keyboard.press("Tab")
    expect(page.locator("#prompt")).to_be_focused()
    page.keyboard.type("a quiet harbour at night")
    page.keyboard.press("Control+Enter")
    card = page.locator(".job-card").first
    expect(card).to_have_attribute("data-status", "succeeded", timeout=JOB_TIMEOUT_MS)
    # ↑ in the empty box brings the prompt back; ↓ past the newest empties it again.
    page.fill("#prompt", "")
    page.locator("#prompt").focus()
    page.keyboard.press("ArrowUp")
    expect(page.locator("#prompt")).to_have_value("a quiet harbour at night")
    page.keyboard.press("ArrowDown")
    expect(page.locator("#prompt")).to_have_value("")
    # The History list, by keyboard.
    page.locator("#history-toggle").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#history-list")).to_be_visible()
    expect(page.locator("#history-list .history-item").first).to_be_focused()
    shoot(page, "generate-history", show="#history-list")
    page.keyboard.press("Enter")
    expect(page.locator("#prompt")).to_have_value("a quiet harbour at night")
    expect(page.locator("#history-list")).to_be_hidden()
    assert problems.seen == [], problems.seen


# --- screenshots of the generator --------------------------------------------------------------------------------
def test_generator_views_screenshots_and_accessibility(axe: Path, browser: Browser, studio: Studio) -> None:
    page, _ = signed_in(browser, studio, "shay", bypass_csp=True)
    shoot(page, "generate-empty", axe)
    page.fill("#prompt", "a lighthouse on a cliff above a stormy sea, long exposure, dramatic clouds at dusk, "
              "photographed from the beach with the lamp lit")  # fmt: skip
    page.fill("#n", "2")
    page.select_option("#quality", "draft")
    page.locator("#prompt").press("Control+Enter")
    expect(page.locator(".job-card[data-status=succeeded]")).to_have_count(1, timeout=JOB_TIMEOUT_MS)
    wait_images_loaded(page, ".job-results img")
    page.locator("#advanced > summary").click()
    page.fill("#negative_prompt", "blurry")
    page.fill("#steps", "12")
    page.fill("#guidance", "4")
    page.locator("#advanced > summary").click()
    shoot(page, "generate-results", axe, show="#results-h")
    page.locator("#advanced > summary").click()
    shoot(page, "generate-advanced", axe, show="#advanced")


# --- the queue view, in two tabs -------------------------------------------------------------------------------
def test_queue_view_in_two_tabs(axe: Path, browser: Browser, idle_studio: Studio) -> None:
    context, problems = new_context(browser, idle_studio, bypass_csp=True)
    one = context.new_page()
    sign_in(one, idle_studio.register("quinn"), PASSWORD, "/queue")
    one.wait_for_url("**/queue")
    expect(one.locator("#queue-empty")).to_be_visible()
    shoot(one, "queue-empty", axe)
    body = {"generations": [{"prompt": f"waiting job {i}", "size": "512x512"} for i in range(3)]}
    ids = [j["id"] for j in post(one, "/api/v1/generations/batch", body)["jobs"]]
    two = context.new_page()
    two.goto("/queue")
    rows_one, rows_two = one.locator("#queue-list > li"), two.locator("#queue-list > li")
    expect(rows_one).to_have_count(3)
    expect(rows_two).to_have_count(3)
    expect(rows_two.first.locator(".queue-text")).to_contain_text("Waiting in the queue (position 1)")
    expect(rows_two.first.locator(".queue-place")).to_have_text("#1")
    shoot(two, "queue", axe)
    # Cancel one in the first tab: it is gone from the second one too.
    one.locator(f"#queue-{ids[0]} .queue-cancel").click()
    expect(rows_one).to_have_count(2)
    expect(rows_two).to_have_count(2)
    expect(two.locator(f"#queue-{ids[0]}")).to_have_count(0)
    # Cancel all in the second tab: the first one empties.
    two.click("#cancel-all")
    expect(rows_two).to_have_count(0)
    expect(rows_one).to_have_count(0)
    expect(one.locator("#queue-empty")).to_be_visible()
    statuses = {j["status"] for j in api_json(one, "/api/v1/jobs")["items"]}
    assert statuses == {"canceled"}
    # The generator's link counts what waits.
    post(one, "/api/v1/generations", {"prompt": "one more", "size": "512x512"})
    one.goto("/generate")
    expect(one.locator("#queue-link")).to_have_text("Queue (1)")
    assert problems.seen == [], problems.seen
    context.close()


def test_png_info_route_answers_the_browser_session(studio: Studio) -> None:
    """The API documents the route; a signed-out caller is refused (the unit and integration tests cover the rest)."""
    with httpx.Client(base_url=studio.url) as client:
        r = client.post("/api/v1/png-info", files={"file": ("a.png", a1111_png(), "image/png")})
        assert r.status_code == 401
        assert "/api/v1/png-info" in client.get("/openapi.json").json()["paths"]


# --- what the selected model can do -----------------------------------------------------------------------------
CAPABILITIES = {
    "studiolo-demo": {"txt2img": True, "img2img": False, "inpaint": False, "upscale": False, "max_pixels": 512 * 768,
                      "samplers": ["euler", "euler_a"], "schedulers": ["automatic", "karras"], "variation_seed": False},
    "echo": {"txt2img": True, "img2img": True, "inpaint": True, "upscale": False, "max_pixels": 2048 * 2048,
             "samplers": ["euler"], "schedulers": [], "variation_seed": True},
}  # fmt: skip


def test_the_form_follows_the_selected_models_capabilities(browser: Browser, studio: Studio) -> None:
    """GET /models as CONTRACTS.md gives it (``capabilities`` per model), put in front of this server's answer, which
    may not carry them yet: the generator turns off, with the reason, what the selected model cannot do."""
    context, problems = new_context(browser, studio)

    def with_capabilities(route: Any) -> None:
        answer = route.fetch()
        body = answer.json()
        for item in body["items"]:
            item["capabilities"] = CAPABILITIES.get(item["id"], CAPABILITIES["echo"])
        route.fulfill(response=answer, json=body)

    context.route("**/api/v1/models", with_capabilities)
    page = context.new_page()
    sign_in(page, studio.register("cap"), PASSWORD, "/generate")
    expect(page.locator("#gen-form")).to_have_attribute("data-ready", "true")
    # A size echo can make and the demo model cannot: switching to the demo model says so and takes it back.
    page.select_option("#model", "echo")
    page.select_option("#size", "size:768x768")
    page.select_option("#model", "studiolo-demo")
    expect(page.locator("#size")).to_have_value("")
    expect(page.locator("#size-note")).to_contain_text("That size is more than studiolo-demo can make")
    disabled = page.locator("#size option").evaluate_all("(os) => os.filter((o) => o.disabled).map((o) => o.value)")
    assert disabled == ["size:768x768", "size:576x1024", "size:1024x576", "size:768x1024", "size:1024x1024"], disabled
    page.locator("#image-input > summary").click()
    expect(page.locator("#image-note")).to_have_text(
        "studiolo-demo cannot start from an image: pick another model for image-to-image and inpaint."
    )
    expect(page.locator("#init-file")).to_be_disabled()
    page.locator("#advanced > summary").click()
    expect(page.locator("#sampler option")).to_have_text(["Model default", "euler", "euler_a"])
    expect(page.locator("#scheduler option")).to_have_text(["Model default", "automatic", "karras"])
    expect(page.locator("#variation_seed")).to_be_disabled()  # the fieldset is off, and with it its fields
    expect(page.locator("#variation-note")).to_have_text("studiolo-demo cannot blend in a variation seed.")
    page.select_option("#sampler", "euler_a")
    page.select_option("#scheduler", "karras")
    page.locator("#advanced > summary").click()
    expect(page.locator("#adv-summary")).to_have_text("euler_a · karras")
    shoot(page, "generate-model-limits", show="#image-input")

    page.select_option("#model", "echo")
    expect(page.locator("#image-note")).to_be_hidden()
    expect(page.locator("#init-file")).to_be_enabled()
    expect(page.locator("#scheduler-field")).to_be_hidden()
    expect(page.locator("#variation_seed")).to_be_enabled()
    expect(page.locator("#size-note")).to_be_hidden()
    assert problems.seen == [], problems.seen
    context.close()
