"""The generator's "From a photo" tab in a real browser (Debian's Chromium) against a real ``studiolo serve`` with the
offline describer: choose a photo, describe it as a fursona, see which describer answered and which fields a vision
model would add, fill one in (the prompt follows), render image-to-image from the photo; the job carries the
description and the gallery's lightbox shows the photo with it. Screenshots at a desktop and a phone size go to
test-artifacts/screenshots/describe/ (and /work/wt/shots/describe/ when that folder exists); axe-core checks them."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import Browser, Page, expect

import tests.e2e.test_web_generator as generator
from tests.e2e.test_web_generator import shoot, signed_in, wait_job
from tests.e2e.test_web_studio import REPO, Studio, api_json, axe, browser, studio_server

pytestmark = pytest.mark.slow
__all__ = ["axe", "browser"]  # fixtures shared with test_web_studio.py

SHOTS = [REPO / "test-artifacts" / "screenshots" / "describe"]
if Path("/work/wt/shots").is_dir():
    SHOTS.append(Path("/work/wt/shots/describe"))


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    yield from studio_server(tmp_path_factory.mktemp("web-describe"), enable_echo_engine=True)


def _photo() -> bytes:
    """A stand-in photo: a rust-coloured figure on a teal wall (no real person's picture in the repository)."""
    image = Image.new("RGB", (480, 640), (20, 110, 120))
    draw = ImageDraw.Draw(image)
    draw.ellipse((170, 120, 310, 280), fill=(190, 80, 30))
    draw.rounded_rectangle((130, 270, 350, 640), 40, fill=(170, 70, 25))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def test_photo_to_character_describe_edit_render(axe: Path, browser: Browser, studio: Studio) -> None:
    page, problems = signed_in(browser, studio, "fenn", bypass_csp=True)
    page.select_option("#model", "echo")  # the render's settings come from the prompt tab: a quick model
    page.click("#tab-photo")
    expect(page.locator("#photo-panel")).to_be_visible()
    expect(page.locator("#gen-form")).to_be_hidden()
    expect(page.locator("#describer-note")).to_contain_text("No vision model is connected")
    expect(page.locator("#describe-go")).to_be_disabled()
    page.set_input_files("#photo-file", files=[{"name": "me.jpg", "mimeType": "image/jpeg", "buffer": _photo()}])
    expect(page.locator("#photo-preview")).to_be_visible()
    page.check("input[name=describe-template][value=fursona]")
    shoot_to(page, None, "from-a-photo-chosen", "#photo-drop")
    page.click("#describe-go")

    expect(page.locator("#description")).to_be_visible()
    expect(page.locator("#describer-badge")).to_have_text("read offline")
    subject_colours = page.get_by_role("list", name="Subject colours")
    expect(subject_colours).to_contain_text("rust")
    expect(subject_colours).not_to_contain_text("teal")  # the wall behind the figure is the background's
    expect(page.get_by_role("list", name="Background colours")).to_contain_text("teal")
    expect(page.locator("#describer-note")).to_be_hidden()
    expect(page.locator("#description-facts")).to_contain_text("portrait")
    expect(page.locator("#vision-note")).to_contain_text("A vision model would add who or what it shows, species")
    expect(page.locator("#d-species")).to_have_attribute("placeholder", "write it in")
    expect(page.locator("#d-style")).to_have_value("anime")
    prompt = page.locator("#d-prompt")
    # The figure's colours, not the wall's: the subject's palette leads a fursona's fur.
    expect(prompt).to_have_value(re.compile(r"^anthropomorphic animal fursona character, fur colours rust\b(?!.*teal)"))
    page.fill("#d-species", "red fox")  # what the user knows and the pixels do not: the prompt follows
    expect(prompt).to_have_value(re.compile(r"^anthropomorphic red fox fursona character, fur colours rust"))
    # The tab as a user sees it (axe-core checks it, light and dark).
    shoot_to(page, axe, "from-a-photo-described", "#description-colours")
    shoot_to(page, None, "from-a-photo-render", "#render-go")

    page.check("input[name=render-kind][value=img2img]")
    expect(page.locator("#d-strength-field")).to_be_visible()
    page.click("#render-go")
    card = page.locator("#jobs .job-card").first
    expect(card).to_be_visible()
    jobs = api_json(page, "/api/v1/jobs?limit=1")["items"]
    job = wait_job(page, jobs[0]["id"])
    assert job["status"] == "succeeded" and job["kind"] == "img2img", job
    described = api_json(page, "/api/v1/describe")["items"][0]
    image = api_json(page, f"/api/v1/images/{job['outputs'][0]['image_id']}")
    assert image["description_id"] == described["id"] and image["prompt"].startswith("anthropomorphic red fox")

    page.goto(f"/gallery?image={image['id']}")
    box = page.locator("#lb-description")
    expect(box).to_be_visible()
    expect(box).to_contain_text("From a photo (fursona), read offline")
    assert box.locator("img").evaluate("(img) => img.complete && img.naturalWidth > 0")
    assert problems.seen == [], problems.seen


def shoot_to(page: Page, axe_script: Path | None, name: str, show: str) -> None:
    """shoot() into this test's folders."""
    saved = generator.SHOTS
    generator.SHOTS = SHOTS
    try:
        shoot(page, name, axe_script, show=show)
    finally:
        generator.SHOTS = saved
