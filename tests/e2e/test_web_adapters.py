"""The generator's adapter panels (issue 19) in a real browser (Debian's Chromium, Playwright) against a real
``studiolo serve``: LoRA, ControlNet, reference image and hires fix, and the models page's adapters table.

The install has a tiny random diffusers model (tests/tiny_pipeline.py: a 32-wide text encoder, so adapters match it
by ``meta.context_dim == 32``) and adapter rows written straight into the ``adapters`` table: the page lists them
server-side (web/adapter_panels.py reads AdapterCatalog), so it needs no GET /api/v1/adapters. No worker runs jobs
(``inline_workers=0``): what is checked is the request the page sends and the params of the job the server queued.

The control map preview posts to POST /api/v1/controls/preview (domain/adapters/preview.py): the canny map is made
in-house and shown beside the picture.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import Browser, Locator, Page, Request, expect

from studiolo.db.session import Database
from studiolo.domain.adapters.models import InstalledAdapter
from studiolo.domain.generation.models import InstalledModel
from studiolo.settings import Settings
from tests.e2e.test_web_studio import (
    AXE,
    AXE_RUN,
    DESKTOP,
    PASSWORD,
    PHONE,
    Studio,
    api_json,
    browser,
    new_context,
    sign_in,
    studio_server,
)
from tests.tiny_pipeline import make_tiny_sd_pipeline

pytestmark = pytest.mark.slow
__all__ = ["browser"]  # the fixture shared with test_web_studio.py

MODEL = "tiny-sd"
TIMES = "\u00d7"  # the multiplication sign the page writes sizes with
ADAPTERS: list[dict[str, Any]] = [
    {"id": "ink-style", "kind": "lora", "family": None, "format": "kohya", "meta": {"context_dim": 32, "rank": 4}},
    {"id": "film-grain", "kind": "lora", "family": None, "format": "peft", "meta": {"context_dim": 32, "rank": 4}},
    # Made for SDXL: never offered with the 32-wide tiny model.
    {"id": "xl-detail", "kind": "lora", "family": "sdxl", "format": "kohya", "meta": {"context_dim": 2048}},
    {
        "id": "cn-canny-tiny",
        "kind": "controlnet",
        "family": None,
        "format": "diffusers",
        "meta": {"context_dim": 32, "control_type": "canny"},
    },
    {"id": "ip-tiny", "kind": "ip_adapter", "family": None, "format": "diffusers", "meta": {"context_dim": 32}},
]


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    root = tmp_path_factory.mktemp("web-adapters")
    model_dir = make_tiny_sd_pipeline(root / "tiny-sd")
    for served in studio_server(root, inline_workers=0, rate_limit_generate="1000/minute"):
        db = Database(Settings(env="test", data_dir=root / "data").resolved_database_url)
        with db.session() as session:
            session.add(InstalledModel(id=MODEL, engine="diffusers", source="folder", path=str(model_dir)))
            for a in ADAPTERS:
                session.add(InstalledAdapter(source="single_file", path=str(root / a["id"]), size_bytes=1_500_000, **a))
        db.engine.dispose()
        yield served


def png(color: tuple[int, int, int] = (250, 250, 250)) -> bytes:
    """A small picture with clear edges (a canny map of it is not empty)."""
    img = Image.new("RGB", (96, 96), color)
    ImageDraw.Draw(img).rectangle((24, 24, 72, 72), outline=(0, 0, 0), width=4)
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def shoot(page: Page, name: str, show: str) -> None:
    for size in (DESKTOP, PHONE):
        page.set_viewport_size(size)
        page.locator(show).first.evaluate("(e) => e.scrollIntoView({ block: 'start' })")
        page.screenshot(path=f"/tmp/web-adapters-{name}-{size['width']}.png", animations="disabled")
    page.set_viewport_size(DESKTOP)


def check_axe(page: Page) -> None:
    """axe-core on the page as it is (panels open), light and dark; serious or critical findings fail. Loaded through
    the DevTools protocol (page.evaluate), so the page keeps its Content-Security-Policy."""
    page.evaluate(AXE.read_text(encoding="utf-8") + "\n;true")
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)  # type: ignore[arg-type]
        found = page.evaluate(AXE_RUN, None)
        bad = [f"{v['id']}: {v['help']} -> {[n['target'] for n in v['nodes']]}" for v in found
               if v["impact"] in ("serious", "critical")]  # fmt: skip
        assert not bad, f"{scheme}: " + "\n".join(bad)
    page.emulate_media(color_scheme="light")


def set_range(slider: Locator, value: str) -> None:
    """Move a slider as a user's drag ends up (its value, then the input event the page listens to)."""
    slider.evaluate("(e, v) => { e.value = v; e.dispatchEvent(new Event('input', { bubbles: true })); }", value)


def submitted(page: Page) -> tuple[Request, dict[str, Any]]:
    """Press Generate; the POST /generations request and the job the server queued for it."""
    with page.expect_request(lambda r: r.url.endswith("/api/v1/generations") and r.method == "POST") as info:
        page.click("#generate")
    request = info.value
    response = request.response()
    assert response is not None and response.status == 202, response and response.text()
    job: dict[str, Any] = api_json(page, f"/api/v1/jobs/{response.json()['id']}")
    return request, job


def test_adapter_panels_send_loras_controls_and_hires_and_keep_them(browser: Browser, studio: Studio) -> None:
    context, problems = new_context(browser, studio)
    page = context.new_page()
    sign_in(page, studio.register("lora"), PASSWORD, "/generate")
    page.wait_for_url("**/generate")
    form = page.locator("#gen-form")
    expect(form).to_have_attribute("data-ready", "true")

    # -- a model that takes no adapters (the demo): the panels say so ---------------------------------------
    page.select_option("#model", "studiolo-demo")  # an installed model is the default: the tiny one
    page.locator("#lora-panel > summary").click()
    expect(page.locator("#lora-note")).to_contain_text("cannot take LoRAs")
    expect(page.locator("#lora-pick")).to_be_disabled()

    # -- the tiny model: only the LoRAs of its family, with the family shown ------------------------------
    page.select_option("#model", MODEL)
    expect(page.locator("#lora-note")).to_be_hidden()
    options = page.locator("#lora-pick option").all_text_contents()
    assert options == ["film-grain (custom base (32-wide))", "ink-style (custom base (32-wide))"], options
    page.select_option("#lora-pick", "ink-style")
    page.click("#lora-add")
    page.select_option("#lora-pick", "film-grain")
    page.click("#lora-add")
    items = page.locator("#lora-list > li")
    expect(items).to_have_count(2)
    page.get_by_label("ink-style", exact=True).fill("0.75")
    page.get_by_label("ink-style", exact=True).press("Tab")
    page.get_by_role("button", name="Remove LoRA film-grain").click()
    expect(items).to_have_count(1)
    expect(page.locator("#lora-pick option")).to_have_text(["film-grain (custom base (32-wide))"])

    # -- hires fix: the final size follows the scale ---------------------------------------------------------
    page.locator("#hires-panel > summary").click()
    page.check("#hires-on")
    page.fill("#hires-scale", "1.5")
    expect(page.locator("#hires-size")).to_contain_text(f"Final size 768{TIMES}768 (first pass 512{TIMES}512")
    page.select_option("#hires-upscaler", "latent")
    page.fill("#prompt", "a fox in the snow")
    shoot(page, "lora-hires", "#lora-panel")

    request, job = submitted(page)
    sent = request.post_data_json
    assert sent["loras"] == [{"name": "ink-style", "weight": 0.75}]
    assert sent["hires"] == {"scale": 1.5, "upscaler": "latent", "strength": 0.5}
    assert job["params"]["loras"] == [{"name": "ink-style", "weight": 0.75}]
    assert job["params"]["hires"]["width"] == 768 and job["params"]["hires"]["upscaler"] == "latent"

    # -- ControlNet: a picture uploaded, its map previewed, sent as a multipart file ----------------------------
    page.locator("#control-panel > summary").click()
    page.click("#control-add")
    unit = page.locator(".control-unit").first
    expect(unit.get_by_label("ControlNet model")).to_have_value("")  # automatic: the installed one that fits
    expect(unit.locator(".hint").first).to_have_text("Automatic uses cn-canny-tiny (custom base (32-wide)).")
    # A pose map cannot be made here (no preprocessor): the box is off and locked, and says to upload a map.
    unit.get_by_label("Type").select_option("pose")
    made_here = unit.get_by_label("Make the map from the picture (off: the picture is already a map)")
    expect(made_here).not_to_be_checked()
    expect(made_here).to_be_disabled()
    expect(unit.get_by_text("Studiolo cannot make a Pose map here: upload a ready-made map.")).to_be_visible()
    unit.get_by_label("Type").select_option("canny")
    expect(made_here).to_be_checked()
    expect(made_here).to_be_enabled()
    unit.locator("input[type=file]").set_input_files({"name": "edges.png", "mimeType": "image/png", "buffer": png()})
    expect(unit.locator(".slot-thumb").first).to_be_visible()
    with page.expect_response("**/api/v1/controls/preview") as preview:
        unit.get_by_role("button", name="Preview map").click()
    assert preview.value.ok, preview.value.status
    expect(unit.locator(".slot-status")).to_have_text(re.compile(r"map, as the job will use it"))
    expect(unit.locator(".map-thumb")).to_be_visible()
    set_range(unit.get_by_label("Strength"), "0.8")
    page.locator("#reference-panel > summary").click()
    expect(page.locator("#reference-model option").first).to_have_text("Automatic (ip-tiny)")
    shoot(page, "controlnet", "#control-panel")
    check_axe(page)

    request, job = submitted(page)
    # Multipart (Chromium does not hand over a body holding a file): accepted at all means the picture came as
    # control_image_0, as a unit without one is 422 missing_control_image.
    assert request.headers["content-type"].startswith("multipart/form-data")
    assert job["params"]["controls"] == [
        {"type": "canny", "model": "cn-canny-tiny", "strength": 0.8, "start": 0.0, "end": 1.0, "preprocess": True}
    ], job["params"]["controls"]
    assert job["params"]["loras"] == [{"name": "ink-style", "weight": 0.75}]

    # -- a unit without a picture is said before anything is sent ------------------------------------------------
    page.click("#control-add")
    page.click("#generate")
    expect(page.locator("[data-form-error]")).to_contain_text("Unit 2 has no picture")
    page.get_by_role("button", name="Remove unit 2").click()

    # -- a reload keeps every setting (and the small picture) ------------------------------------------------
    page.reload()
    expect(form).to_have_attribute("data-ready", "true")
    expect(page.locator("#model")).to_have_value(MODEL)
    expect(page.locator("#lora-summary")).to_have_text("ink-style 0.75")
    expect(page.locator("#hires-summary")).to_have_text(f"{TIMES}1.5 → 768{TIMES}768")
    expect(page.locator("#control-summary")).to_have_text("Canny edges")
    page.locator("#control-panel > summary").click()
    expect(page.locator(".control-unit")).to_have_count(1)
    expect(page.locator(".control-unit .slot-thumb").first).to_be_visible()
    expect(page.locator(".control-unit").get_by_label("Strength")).to_have_value("0.8")

    # -- the models page: the adapters in their own table ---------------------------------------------------
    page.goto("/models")
    rows = page.locator("#adapters-table tbody tr")
    expect(rows).to_have_count(len(ADAPTERS))
    expect(rows.filter(has_text="xl-detail")).to_contain_text("SDXL")
    expect(rows.filter(has_text="cn-canny-tiny")).to_contain_text("ControlNet")
    expect(page.locator("#models-table tr", has_text=MODEL)).to_contain_text("custom base (32-wide)")
    shoot(page, "models", "#adapters-h")
    assert not problems.seen, problems.seen
    context.close()
