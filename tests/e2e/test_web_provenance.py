"""The lightbox's Content Credentials line in a real browser, against a real ``studiolo serve`` whose worker signs
its images (the fixtures of test_web_studio.py)."""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, expect

from tests.e2e.test_web_gallery import signed_in_gallery
from tests.e2e.test_web_studio import Studio, browser, studio

pytestmark = pytest.mark.slow
__all__ = ["browser", "studio"]  # fixtures shared with test_web_studio.py


def test_the_lightbox_says_the_images_content_credentials_are_valid(browser: Browser, studio: Studio) -> None:
    context, problems, page, ids = signed_in_gallery(browser, studio, "credentials", ["a signed lighthouse"])
    page.locator(f'#gallery .tile[data-id="{ids[0]}"] a.open').click()
    line = page.locator("#lb-credentials")
    expect(line).to_have_text("valid")
    expect(line).to_have_attribute("data-state", "valid")
    assert page.locator("#lb-meta dt", has_text="Content Credentials").count() == 1
    assert problems.seen == [], problems.seen
    context.close()
