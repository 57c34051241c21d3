"""The film studio in a real browser (issue 16): Debian's Chromium driven by Playwright against a real
``studiolo serve`` with its worker, the demo model, espeak-ng and ffmpeg.

A user writes a film on /films (the word count, a voice sample, podcast speakers), lands on its storyboard, edits a
scene (an unsaved edit survives a reload), renders it while the stages tick by on the job's event stream, plays the
film in the page until the <video> fires ``ended`` (with its subtitle track loaded), and downloads the SRT. Deleting
to the Trash and restoring, and a refused script, are checked too. The pages pass axe-core (light and dark), and
screenshots (desktop light and dark, phone) go to test-artifacts/screenshots/films/ (and /tmp/shots/ when it exists).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from PIL import Image as PILImage
from playwright.sync_api import Browser, Page, expect

from studiolo.domain.film.schemas import STAGES
from tests.e2e.test_web_billing import assert_accessible, at
from tests.e2e.test_web_studio import (
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

pytestmark = pytest.mark.slow
__all__ = ["axe", "browser"]  # fixtures shared with test_web_studio.py

SHOTS = [REPO / "test-artifacts" / "screenshots" / "films"]
if Path("/tmp/shots").is_dir():
    SHOTS.append(Path("/tmp/shots"))
SCRIPT = (
    "The lighthouse keeper climbs the stairs at dusk. Far below, the sea is calm.\n\n"
    "She lights the great lamp, and its beam sweeps across the dark water.\n\n"
    "By morning a small boat rests safe in the harbour."
)
# A film renders its scene images on the queue, then narration, music, motion and the encode: minutes on a loaded
# 2-core machine (the limit is generous; the wait ends as soon as the film is rendered).
RENDER_TIMEOUT_MS = 6 * JOB_TIMEOUT_MS


@pytest.fixture(scope="module")
def film_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    # A Google OAuth client (never called here): the YouTube button is offered, and says to connect first.
    google = {"google_client_id": "browser-test.apps.googleusercontent.com", "google_client_secret": "browser-test"}
    yield from studio_server(tmp_path_factory.mktemp("web-films"), rate_limit_generate="1000/minute", **google)


def shoot(page: Page, name: str) -> None:
    """Full-page screenshots at the desktop size (light and dark) and the phone size."""
    page.evaluate("() => document.fonts.ready")
    for size, scheme in ((DESKTOP, "light"), (DESKTOP, "dark"), (PHONE, "light")):
        page.set_viewport_size(size)
        page.emulate_media(color_scheme=scheme)  # type: ignore[arg-type]
        # Nothing may stick out sideways (a phone would scroll the whole page).
        overflow = page.evaluate("() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{name} at {size['width']}px ({scheme}) overflows by {overflow}px"
        suffix = "-dark" if scheme == "dark" else ""
        for folder in SHOTS:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"films-{name}-{size['width']}x{size['height']}{suffix}.png"
            page.screenshot(path=str(path), full_page=True, animations="disabled")
    page.set_viewport_size(DESKTOP)
    page.emulate_media(color_scheme="light")


def new_film(page: Page, title: str, script: str, characters: Sequence[Path] = ()) -> str:
    """Fill the new-film form with defaults (and character pictures), create it, and return the film's id."""
    page.goto("/films")
    expect(page.locator("#film-form")).to_have_attribute("data-ready", "true")
    page.fill("#film-title", title)
    page.fill("#film-script", script)
    if characters:
        page.set_input_files("#film-characters", [str(c) for c in characters])
        expect(page.locator("#character-picks li")).to_have_count(len(characters))
    page.click("#film-create")
    page.wait_for_url(re.compile(r"/films/[0-9a-f-]{36}$"))
    return page.url.rsplit("/", 1)[1]


# --- write, edit, render, play, download --------------------------------------------------------------------
def test_write_edit_render_play_and_download_a_film(browser: Browser, film_studio: Studio, axe: Path) -> None:
    context, problems = new_context(browser, film_studio, bypass_csp=True, accept_downloads=True)
    page = context.new_page()
    sign_in(page, film_studio.register("fen"), PASSWORD, "/films")
    page.wait_for_url(at("/films"))
    expect(page.get_by_role("link", name="Films", exact=True)).to_have_attribute("aria-current", "page")
    expect(page.locator("#films-empty")).to_be_visible()
    expect(page.locator("#film-form")).to_have_attribute("data-ready", "true")

    # -- the form: live word count, voices grouped by language, a sample, podcast speakers ----------------------
    page.fill("#film-title", "The lighthouse keeper")
    page.fill("#film-script", SCRIPT)
    max_words = page.locator("#film-form").get_attribute("data-max-words")
    expect(page.locator("#script-count")).to_have_text(f"37 / {max_words} words")
    voices = api_json(page, "/api/v1/films/voices")
    assert voices["voices"], voices
    expect(page.locator("#film-voice")).to_have_value(voices["default"])
    assert page.locator("#film-voice optgroup").count() >= 1
    with page.expect_response(lambda r: "/api/v1/films/voices/" in r.url and "/sample" in r.url) as sample:
        page.click("#voice-sample")
    assert sample.value.status == 200 and sample.value.headers["content-type"].startswith("audio/")
    page.check("#film-podcast")
    expect(page.locator("#speakers")).to_be_visible()
    expect(page.locator("#speaker-list .speaker")).to_have_count(0)  # no NAME: lines in this script
    page.uncheck("#film-podcast")
    # A reload keeps what was typed (sessionStorage) until the film is made.
    page.reload()
    expect(page.locator("#film-title")).to_have_value("The lighthouse keeper")
    expect(page.locator("#film-script")).to_have_value(SCRIPT)
    expect(page.locator("#film-form")).to_have_attribute("data-ready", "true")
    shoot(page, "new")
    assert_accessible(page, axe, "films")
    page.click("#film-create")
    page.wait_for_url(re.compile(r"/films/[0-9a-f-]{36}$"))
    film_id = page.url.rsplit("/", 1)[1]

    # -- the storyboard: edit a scene's prompt and save it ---------------------------------------------------------
    scenes = page.locator("#scenes > .scene")
    expect(scenes.first).to_be_visible()
    film = api_json(page, f"/api/v1/films/{film_id}")
    assert film["title"] == "The lighthouse keeper" and film["status"] == "draft", film
    expect(scenes).to_have_count(len(film["scenes"]))
    first = scenes.first
    save = first.locator(".scene-save")
    expect(save).to_be_disabled()
    first.locator("textarea[name=prompt]").fill("a lighthouse at dusk, warm lamp light, calm sea")
    expect(save).to_be_enabled()
    # An unsaved edit survives a reload (sessionStorage), then is saved.
    page.reload()
    first = page.locator("#scenes > .scene").first
    expect(first.locator("textarea[name=prompt]")).to_have_value("a lighthouse at dusk, warm lamp light, calm sea")
    first.locator(".scene-save").click()
    expect(page.locator("#storyboard-live")).to_have_text("Scene 1 saved.")
    expect(page.locator("#scenes > .scene").first.locator(".scene-save")).to_be_disabled()
    saved = api_json(page, f"/api/v1/films/{film_id}")["scenes"][0]
    assert saved["prompt"] == "a lighthouse at dusk, warm lamp light, calm sea", saved
    expect(page.locator("#film-quote")).to_contain_text("scene image")
    shoot(page, "storyboard")
    assert_accessible(page, axe, "film storyboard")

    # -- render: the stages tick by on the job's event stream ------------------------------------------------------
    page.evaluate(
        """() => { window.__stages = [];
          new MutationObserver((records) => { for (const r of records) window.__stages.push(
            r.target.dataset.stage + ":" + r.target.dataset.state); })
          .observe(document.getElementById("stages"),
                   { subtree: true, attributes: true, attributeFilter: ["data-state"] }); }"""
    )
    page.click("#render-button")
    expect(page.locator("#progress")).to_be_visible()
    status = page.locator("#film-status")
    expect(status).to_have_text(re.compile(r"^(rendered|failed|canceled)$"), timeout=RENDER_TIMEOUT_MS)
    assert status.inner_text() == "rendered", page.locator("#render-error").inner_text()
    seen: list[str] = page.evaluate("window.__stages")
    assert any(s.endswith(":running") for s in seen), seen  # live, not only the final state after a reload
    for stage in STAGES:
        expect(page.locator(f".stage[data-stage={stage}]")).to_have_attribute(
            "data-state", re.compile(r"^(done|cached|skipped)$")
        )
    expect(page.locator("#cancel-button")).to_be_hidden()

    # -- play the film in the page until it ends, its subtitles loaded ---------------------------------------------
    video = page.locator("#player video")
    expect(video).to_be_visible()
    track = video.locator("track")
    expect(track).to_have_attribute("kind", "subtitles")
    assert track.get_attribute("default") is not None
    played = page.evaluate(
        """async () => {
          const v = document.querySelector("#player video");
          const ended = new Promise((resolve) => v.addEventListener("ended", () => resolve(true), { once: true }));
          v.muted = true;  // autoplay policy: a muted video may play without a gesture
          await v.play();
          await ended;
          const t = v.textTracks[0];
          return { ended: v.ended, duration: v.duration, cues: t && t.cues ? t.cues.length : 0, mode: t && t.mode };
        }"""
    )
    assert played["ended"] and played["duration"] > 1, played
    assert played["mode"] == "showing" and played["cues"] >= 1, played

    # -- download the SRT ------------------------------------------------------------------------------------------
    with page.expect_download() as download:
        page.click("#downloads a[data-file='film.srt']")
    srt = Path(download.value.path()).read_text(encoding="utf-8")
    blocks = [b for b in srt.strip().split("\n\n") if b.strip()]
    assert blocks and blocks[0].splitlines()[0] == "1", srt
    assert re.match(r"\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}$", blocks[0].splitlines()[1]), srt
    assert "lighthouse keeper" in srt.lower(), srt
    shoot(page, "rendered")
    assert_accessible(page, axe, "film rendered")

    # -- share it: the link opens the public watch page for someone signed out ---------------------------------
    page.check("#share-toggle")
    share = page.locator("#share-url")
    expect(share).to_have_value(re.compile(r"/watch/[A-Za-z0-9_-]+$"))
    visitor_context, _ = new_context(browser, film_studio)
    visitor = visitor_context.new_page()
    visitor.goto(share.input_value())
    expect(visitor.get_by_role("heading", level=1)).to_have_text("The lighthouse keeper")
    expect(visitor.locator("video track[kind=subtitles]")).to_have_count(1)
    shoot(visitor, "watch")
    page.uncheck("#share-toggle")
    expect(share).to_be_hidden()
    dead = visitor.goto(share.input_value() or visitor.url)
    assert dead is not None and dead.status == 404  # private again: the link is dead
    visitor_context.close()

    # -- YouTube without a connected account: said cleanly, with the way to connect ---------------------------------
    page.click("#youtube-button")
    result = page.locator("#youtube-result")
    connect = result.get_by_role("link", name="Connect YouTube")
    expect(connect).to_be_visible()
    assert (connect.get_attribute("href") or "").endswith(f"next=%2Ffilms%2F{film_id}")
    assert problems.seen == [], problems.seen
    context.close()


# --- the list, the Trash, and a refused script ------------------------------------------------------------------
def test_films_list_trash_restore_and_a_refused_script(browser: Browser, film_studio: Studio, tmp_path: Path) -> None:
    context, problems = new_context(browser, film_studio)
    page = context.new_page()
    sign_in(page, film_studio.register("gil"), PASSWORD, "/films")
    page.wait_for_url(at("/films"))

    # Punctuation alone is no script: said by the form, nothing created.
    expect(page.locator("#film-form")).to_have_attribute("data-ready", "true")
    page.fill("#film-title", "Nothing to say")
    page.fill("#film-script", "... !!! ???")
    page.click("#film-create")
    error = page.locator("#script-error, #film-form [data-form-error]").filter(has_text=re.compile(r"\S"))
    expect(error).to_have_count(1)
    assert urlsplit_path(page.url) == "/films"
    assert api_json(page, "/api/v1/films")["items"] == []

    # Podcast mode: each "NAME:" in the script gets a voice of its own ("10:30" is no speaker).
    page.fill("#film-script", "ANNA: Hello there.\nBEN: Hi Anna.\n10:30 we met.\nANNA: Good.")
    page.check("#film-podcast")
    expect(page.locator("#speaker-list label")).to_have_text(["ANNA", "BEN"])
    page.uncheck("#film-podcast")

    # A character picture, named after its file, goes with the new film.
    picture = tmp_path / "Old_Mara.png"
    PILImage.new("RGB", (64, 64), (200, 120, 40)).save(picture)
    film_id = new_film(page, "Harbour", "Old Mara watches the harbour. The water is still.", [picture])
    assert [c["name"] for c in api_json(page, f"/api/v1/films/{film_id}")["characters"]] == ["Old Mara"]
    expect(page.locator("#characters .character-name")).to_have_text(["Old Mara"])
    page.get_by_role("button", name="Remove Old Mara").click()
    expect(page.locator("#characters .character")).to_have_count(0)
    # Not a picture: the upload's error, next to the field.
    not_image = tmp_path / "Notes.png"
    not_image.write_text("not a picture")
    page.set_input_files("#character-file", str(not_image))
    expect(page.locator("#character-error")).not_to_be_empty()
    assert api_json(page, f"/api/v1/films/{film_id}")["characters"] == []
    # The film's settings: a new title, saved.
    page.click("#film-settings summary")
    page.fill("#set-title", "Harbour at night")
    page.click("#settings-form [type=submit]")
    expect(page.locator("#film-title-h")).to_have_text("Harbour at night")
    assert api_json(page, f"/api/v1/films/{film_id}")["title"] == "Harbour at night"
    page.goto("/films")
    item = page.locator(f"#film-list .film-item[data-id='{film_id}']")
    expect(item.locator(".film-item-title")).to_have_text("Harbour at night")
    expect(item.locator(".film-status")).to_have_text("draft")
    item.get_by_role("button", name="Move to the Trash “Harbour at night”").click()
    expect(item).to_have_count(0)
    expect(page.locator("#films-empty")).to_be_visible()
    page.click("#films-trash-link")
    page.wait_for_url("**/films?view=trash")
    trashed = page.locator(f"#film-list .film-item[data-id='{film_id}']")
    expect(trashed).to_be_visible()
    trashed.get_by_role("button", name="Restore “Harbour at night”").click()
    expect(trashed).to_have_count(0)
    page.goto("/films")
    expect(page.locator(f"#film-list .film-item[data-id='{film_id}']")).to_be_visible()
    # Another user's film is no page of theirs: the film page says it is not found.
    other = context.browser.new_context(base_url=film_studio.url) if context.browser else None
    assert other is not None
    stranger = other.new_page()
    sign_in(stranger, film_studio.register("hue"), PASSWORD, "/films")
    stranger.wait_for_url(at("/films"))
    stranger.goto(f"/films/{film_id}")
    expect(stranger.locator("#film-missing")).to_be_visible()
    other.close()
    assert problems.seen == [], problems.seen
    context.close()


def urlsplit_path(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).path


def _unused(*_: Any) -> None:  # keeps wait_until imported for the waits above when they are needed
    wait_until(lambda: True, "nothing")
