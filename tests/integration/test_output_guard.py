"""The output check every generated image passes before it is stored (issue 17, safety/outputs.py): the policy's
three outcomes, the marks drawn into the stored original, and what the job and image rows record."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image as PILImage
from sqlalchemy import select

from studiolo.domain.gallery.models import Image
from studiolo.domain.safety import invisible
from studiolo.domain.safety.outputs import OutputGuard, blurred
from studiolo.errors import UnderReview
from studiolo.services import Services
from tests.helpers import LOCAL_USER_ID, app_with, drain, submit


class _Scores:
    """A classifier with a chosen verdict: the policy under test, not the model (tests/unit/test_nsfw.py has that)."""

    name = "fixed"

    def __init__(self, score: float) -> None:
        self.value = score

    def score(self, image: PILImage.Image) -> float:
        return self.value


def _guard(services: Services) -> OutputGuard:
    guard = services.runner.guard
    assert guard is not None
    return guard


def _run(services: Services, **params: Any) -> tuple[Any, list[Any]]:
    job_id = submit(services, size="512x512", n=2, **params)
    drain(services)
    view = services.generation.get(LOCAL_USER_ID, job_id)
    images = [services.gallery.get(LOCAL_USER_ID, out.image_id) for out in view.outputs]
    return view, images


def _original(services: Services, image_id: str) -> PILImage.Image:
    key, _ = services.gallery.file(LOCAL_USER_ID, image_id, "original")
    return PILImage.open(io.BytesIO(services.gallery.read(key))).convert("RGB")


def test_every_stored_image_carries_the_install_watermark_and_its_check(settings_factory: Any) -> None:
    with app_with(settings_factory, nsfw_policy="blur") as (services, _):
        _guard(services).classifier = _Scores(0.01)
        view, images = _run(services, seed=7)
        assert view.status == "succeeded" and view.blocked_outputs == 0 and len(images) == 2
        payload = _guard(services).payload
        for image in images:
            assert image.nsfw_score == 0.01 and image.review_state is None
            assert image.metadata["safety"]["invisible_watermark"] is True
            assert "visible_watermark" not in image.metadata["safety"]  # billing off, "plan": no plan asks for it
            found, confidence = invisible.extract(_original(services, image.id))
            assert found == payload and confidence > 0.9


def test_blocked_outputs_are_not_stored_and_the_job_says_how_many(settings_factory: Any) -> None:
    with app_with(settings_factory, nsfw_policy="block", nsfw_threshold=0.5) as (services, _):
        _guard(services).classifier = _Scores(0.97)
        before = services.gallery.list(LOCAL_USER_ID).items
        view, images = _run(services)
        assert view.status == "succeeded"
        assert view.blocked_outputs == 2 and images == []
        assert services.gallery.list(LOCAL_USER_ID).items == before


def test_held_images_get_blurred_thumbnails_and_a_pending_review(settings_factory: Any) -> None:
    with app_with(settings_factory, nsfw_policy="blur", nsfw_threshold=0.5) as (services, _):
        _guard(services).classifier = _Scores(0.8)
        view, images = _run(services, seed=11)
        assert view.blocked_outputs == 0 and len(images) == 2
        image = images[0]
        assert image.review_state == "pending" and image.nsfw_score == 0.8
        # The thumbnails show the blurred picture, not the picture.
        with pytest.raises(UnderReview):  # its owner gets the blurred thumbnails only
            services.gallery.file(LOCAL_USER_ID, image.id, "original")
        thumb = _pixels(_thumbnail(services, image.id))
        with services.db.session() as session:
            key = session.scalars(select(Image.original_key).where(Image.id == image.id)).one()
        original = PILImage.open(io.BytesIO(services.gallery.read(key))).convert("RGB")
        size = (thumb.shape[1], thumb.shape[0])
        to_blurred = np.abs(thumb - _pixels(blurred(original).resize(size))).mean()
        to_original = np.abs(thumb - _pixels(original.resize(size))).mean()
        assert to_blurred < 0.5 * to_original


def test_always_visible_watermark_marks_the_corner_only(settings_factory: Any) -> None:
    with app_with(settings_factory, watermark_visible="never") as (services, _):
        _, plain = _run(services, seed=5)
        plain_pixels = np.asarray(_original(services, plain[0].id), dtype=np.float64)
    with app_with(settings_factory, watermark_visible="always", watermark_position="bottom-right") as (services, _):
        _, marked = _run(services, seed=5)
        assert marked[0].metadata["safety"]["visible_watermark"] is True
        marked_pixels = np.asarray(_original(services, marked[0].id), dtype=np.float64)
    changed = np.abs(marked_pixels - plain_pixels).max(axis=2) > 24  # above the invisible mark's small changes
    assert changed[-80:, -260:].mean() > 0.05  # the text in the bottom-right corner
    assert changed[:256, :256].mean() == 0.0  # and nothing in the top-left


def _thumbnail(services: Services, image_id: str) -> PILImage.Image:
    key, _ = services.gallery.file(LOCAL_USER_ID, image_id, "300")
    return PILImage.open(io.BytesIO(services.gallery.read(key))).convert("RGB")


def _pixels(image: PILImage.Image) -> np.ndarray[Any, Any]:
    return np.asarray(image, dtype=np.float64)


def test_blurring_leaves_no_detail_of_a_detailed_picture() -> None:
    # A picture of fine detail (a 4-pixel checkerboard with text-sized features): nothing of it survives.
    cells = (np.indices((512, 512)).sum(axis=0) // 4 % 2 * 255).astype(np.uint8)
    picture = PILImage.fromarray(np.stack([cells] * 3, axis=-1), "RGB")
    flat = _pixels(blurred(picture))
    assert flat.std() < 3 and abs(flat.mean() - 127.5) < 3
