"""The visible watermark (seed 001): a text or logo drawn on the stored original and so on every thumbnail.

Its width is ``scale`` of the image's, at ``opacity``, in a corner or the centre with a margin of 2 % of the
shorter side. Text is drawn in Pillow's own scalable font (no system font needed) with a thin dark outline, so it
reads on light and dark images alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

from studiolo.settings import Settings

Position = Literal["bottom-right", "bottom-left", "top-right", "top-left", "center"]


@dataclass(frozen=True)
class VisibleMark:
    text: str = "Made with Studiolo"
    logo: Path | None = None  # a PNG (alpha kept) drawn instead of the text
    position: Position = "bottom-right"
    opacity: float = 0.6
    scale: float = 0.25  # the mark's width as a share of the image's


def visible_mark(settings: Settings) -> VisibleMark:
    return VisibleMark(
        text=settings.watermark_text,
        logo=settings.watermark_logo,
        position=settings.watermark_position,
        opacity=settings.watermark_opacity,
        scale=settings.watermark_scale,
    )


@lru_cache(maxsize=4)
def _logo(path: Path) -> PILImage.Image:
    with PILImage.open(path) as img:
        return img.convert("RGBA")


def _text_stamp(text: str, width: int) -> PILImage.Image:
    """``text`` in white with a dark outline, as an RGBA image about ``width`` pixels wide."""
    probe = ImageFont.load_default(size=100)
    left, top, right, bottom = probe.getbbox(text, stroke_width=6)
    size = max(6, int(100 * width / max(1, right - left)))
    font = ImageFont.load_default(size=size)
    stroke = max(1, size // 14)
    left, top, right, bottom = (round(v) for v in font.getbbox(text, stroke_width=stroke))
    stamp = PILImage.new("RGBA", (right - left, bottom - top), (0, 0, 0, 0))
    ImageDraw.Draw(stamp).text(
        (-left, -top), text, font=font, fill=(255, 255, 255, 255), stroke_width=stroke, stroke_fill=(0, 0, 0, 255)
    )
    return stamp


def _stamp(mark: VisibleMark, width: int) -> PILImage.Image:
    if mark.logo is not None:
        logo = _logo(mark.logo)
        height = max(1, round(logo.height * width / logo.width))
        return logo.resize((width, height), PILImage.Resampling.LANCZOS)
    return _text_stamp(mark.text, width)


def _place(image: PILImage.Image, stamp: PILImage.Image, position: Position) -> tuple[int, int]:
    margin = max(2, min(image.size) // 50)
    x = {"left": margin, "right": image.width - stamp.width - margin}
    y = {"top": margin, "bottom": image.height - stamp.height - margin}
    if position == "center":
        return (image.width - stamp.width) // 2, (image.height - stamp.height) // 2
    vertical, horizontal = position.split("-")
    return x[horizontal], y[vertical]


def apply_visible(image: PILImage.Image, mark: VisibleMark) -> PILImage.Image:
    """A copy of ``image`` with the mark drawn on it (same size and mode family: RGB stays RGB)."""
    width = max(8, round(image.width * mark.scale))
    stamp = _stamp(mark, width)
    if stamp.height > image.height // 2:  # a very wide image: keep the mark off most of its height
        stamp = stamp.resize((max(1, stamp.width * image.height // (2 * stamp.height)), image.height // 2))
    alpha = stamp.getchannel("A").point(lambda a: round(a * mark.opacity))
    stamp.putalpha(alpha)
    base = image.convert("RGBA")
    base.alpha_composite(stamp, _place(base, stamp, mark.position))
    return base.convert(image.mode) if image.mode in ("RGB", "L", "RGBA") else base.convert("RGB")
