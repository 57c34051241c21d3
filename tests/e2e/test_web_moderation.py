"""A refused prompt in the web generator (issue 17, docs/safety.md "Prompt moderation"), in a real browser against a
real ``studiolo serve`` with a blocklist: the refusal is said in full by the Generate button, the field it concerns
is marked, and a refused negative prompt opens the collapsed "Advanced" section it sits in; nothing is queued."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from tests.e2e.test_web_generator import signed_in
from tests.e2e.test_web_studio import Studio, browser, studio_server

pytestmark = pytest.mark.slow
__all__ = ["browser"]


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    root = tmp_path_factory.mktemp("web-moderation")
    blocklist = root / "blocklist.txt"
    blocklist.write_text("grawlix\n", encoding="utf-8")
    yield from studio_server(root, moderation_blocklist_file=Path(blocklist))


def test_a_refused_prompt_is_said_by_the_button_and_marks_its_field(browser: Browser, studio: Studio) -> None:
    page, problems = signed_in(browser, studio, "moderated")
    bar = page.locator("#gen-form [data-form-error]")
    page.fill("#prompt", "a grawlix in the fog")
    page.click("#generate")
    expect(bar).to_have_text(
        "The prompt contains a word or phrase this site does not allow. Rephrase it and try again."
    )
    expect(page.locator("#prompt")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#prompt-error")).to_have_text("")  # said once, by the button
    page.fill("#prompt", "a fox in the fog")
    page.locator("#advanced summary").click()
    page.fill("#negative_prompt", "blurry, Gr4wlix")
    page.locator("#advanced summary").click()  # closed again: the refusal must open it
    expect(page.locator("#advanced")).not_to_have_attribute("open", "")
    page.click("#generate")
    expect(bar).to_contain_text("The negative prompt contains a word or phrase this site does not allow.")
    expect(page.locator("#advanced")).to_have_attribute("open", "")
    expect(page.locator("#negative_prompt")).to_be_focused()
    expect(page.locator("#negative_prompt")).to_have_attribute("aria-invalid", "true")
    assert "grawlix" not in bar.inner_text().lower()
    jobs = page.request.get("/api/v1/jobs").json()
    assert jobs["items"] == []
    assert problems.seen == []
