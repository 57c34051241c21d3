"""The visible watermark (safety/visible.py): where it lands, that it reads on white, black and busy images, that
it keeps a legible size and its shape on banners and portraits, and what a bad logo file does."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studiolo.domain.safety.visible import MIN_TEXT_PX, VisibleMark, apply_visible, visible_mark
from studiolo.settings import Settings


def changed_box(before: Image.Image, after: Image.Image) -> tuple[int, int, int, int]:
    """The bounding box (left, top, right, bottom) of the pixels the mark changed."""
    diff = np.abs(np.asarray(after.convert("RGB"), np.int16) - np.asarray(before.convert("RGB"), np.int16)).max(axis=2)
    rows, cols = np.nonzero(diff > 8)
    assert rows.size, "the mark changed nothing"
    return int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1


def luma(image: Image.Image, box: tuple[int, int, int, int]) -> np.ndarray:
    return np.asarray(image.convert("L").crop(box), np.float64)


@pytest.mark.parametrize(
    "position", ["bottom-right", "bottom-left", "top-right", "top-left", "center"], ids=lambda p: str(p)
)
def test_the_mark_lands_where_it_is_asked(position: str) -> None:
    base = Image.new("RGB", (512, 384), (120, 120, 120))
    left, top, right, bottom = changed_box(base, apply_visible(base, VisibleMark(position=position)))  # type: ignore[arg-type]
    margin = min(base.size) // 50
    cx, cy = (left + right) / 2, (top + bottom) / 2
    if position == "center":
        assert abs(cx - 256) < 8 and abs(cy - 192) < 8
        return
    vertical, horizontal = position.split("-")
    assert (left <= margin + 2) if horizontal == "left" else (right >= 512 - margin - 2)
    assert (top <= margin + 2) if vertical == "top" else (bottom >= 384 - margin - 2)
    assert (cx < 256) == (horizontal == "left") and (cy < 192) == (vertical == "top")


@pytest.mark.parametrize("background", [(250, 250, 250), (8, 8, 8), "busy"], ids=["white", "black", "busy"])
def test_the_text_reads_on_any_background(background: tuple[int, int, int] | str) -> None:
    # Legibility as contrast between the letters (their brightest pixels) and the halo around them (its darkest):
    # with the old hard outline at 60 % opacity, white letters on white had none (the outline alone showed).
    if background == "busy":
        rng = np.random.default_rng(0)
        base = Image.fromarray(rng.integers(60, 200, (512, 512, 3), dtype=np.uint8), "RGB")
    else:
        base = Image.new("RGB", (512, 512), background)
    marked = apply_visible(base, VisibleMark())
    box = changed_box(base, marked)
    lum = luma(marked, box)
    assert np.percentile(lum, 99) - np.percentile(lum, 1) >= 90
    if background != "busy":  # on a flat image: the letters are lighter than the background, the halo darker
        flat = luma(base, box)[0, 0]
        assert lum.max() > flat or flat > 240
        assert lum.min() < flat or flat < 15


def test_text_keeps_a_legible_size_on_small_images() -> None:
    base = Image.new("RGB", (256, 256), (30, 60, 90))
    left, top, right, bottom = changed_box(base, apply_visible(base, VisibleMark()))
    assert bottom - top >= MIN_TEXT_PX  # the halo included: the letters alone were 9 px tall at 25 % of 512
    assert right - left <= 0.9 * 256 + 1


@pytest.mark.parametrize("size", [(2048, 256), (512, 2048), (1024, 1024)])
def test_banners_and_portraits_get_a_mark_of_the_same_weight(size: tuple[int, int]) -> None:
    base = Image.new("RGB", size, (200, 180, 160))
    left, top, right, bottom = changed_box(base, apply_visible(base, VisibleMark()))
    side = (size[0] * size[1]) ** 0.5
    assert 0.2 * side <= right - left <= 0.34 * side  # ~25 % of the side of the same-area square, halo included
    assert bottom - top <= size[1] / 3 + 1 and right - left <= 0.9 * size[0] + 1
    ratio = (right - left) / (bottom - top)
    assert 4 < ratio < 12  # the text's own shape: never squashed


def test_modes_and_size_are_kept() -> None:
    for mode in ("RGB", "RGBA", "L"):
        image = Image.new(mode, (300, 200))
        marked = apply_visible(image, VisibleMark())
        assert marked.mode == mode and marked.size == image.size
    assert apply_visible(Image.new("P", (300, 200)), VisibleMark()).mode == "RGB"


def test_opacity_scales_the_mark() -> None:
    base = Image.new("RGB", (512, 512), (128, 128, 128))

    def strength(opacity: float) -> float:
        diff = np.asarray(apply_visible(base, VisibleMark(opacity=opacity)), np.float64) - 128
        return float(np.abs(diff).sum())

    assert strength(0.2) < 0.5 * strength(0.6) < strength(1.0)


def test_a_logo_is_drawn_with_its_shape(tmp_path: Path) -> None:
    path = tmp_path / "logo.png"
    logo = Image.new("RGBA", (200, 100), (220, 30, 30, 255))
    logo.save(path)
    base = Image.new("RGB", (800, 800), (255, 255, 255))
    marked = apply_visible(base, VisibleMark(logo=path, opacity=1.0))
    left, top, right, bottom = changed_box(base, marked)
    assert (right - left, bottom - top) == (200, 100)  # 25 % of 800, its 2:1 shape kept
    r, g, b = marked.getpixel(((left + right) // 2, (top + bottom) // 2))  # type: ignore[misc]
    assert (r, g, b) == (220, 30, 30)


def test_an_unreadable_logo_falls_back_to_the_text(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bad = tmp_path / "not-a-logo.png"
    bad.write_text("no image here")
    base = Image.new("RGB", (512, 512), (10, 10, 10))
    with caplog.at_level(logging.WARNING, logger="studiolo.domain.safety.visible"):
        marked = apply_visible(base, VisibleMark(logo=bad))
    assert np.array_equal(np.asarray(marked), np.asarray(apply_visible(base, VisibleMark())))
    assert "cannot be read" in caplog.text


def test_visible_mark_follows_the_settings(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        watermark_text="Acme AI",
        watermark_position="top-left",
        watermark_opacity=0.4,
        watermark_scale=0.3,
    )
    assert visible_mark(settings) == VisibleMark(text="Acme AI", logo=None, position="top-left", opacity=0.4, scale=0.3)


def test_non_latin_text_is_drawn() -> None:
    base = Image.new("RGB", (512, 512), (90, 90, 90))
    box = changed_box(base, apply_visible(base, VisibleMark(text="Сделано в Studiolo")))
    assert box[2] - box[0] > 64
