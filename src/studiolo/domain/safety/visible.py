"""The visible watermark (seed 001): a text or logo drawn on the stored original and so on every thumbnail.

Its width is ``scale`` of the image's (of the side of a square of the same area, so banners and portraits get
a mark of the same weight), at ``opacity``, in a corner or the centre with a margin of 2 % of the
shorter side. Text is white on a soft dark halo (not a hard outline, which read as hollow grey letters on white
skies and vanished into foliage), so it reads on light, dark and busy images alike; it is never drawn smaller than
``MIN_TEXT_PX`` (a 25 % wide mark on a 512 px image was 9 px tall), nor wider than 90 % of the image. Pillow's own
scalable font needs no system font; text outside Latin uses DejaVu Sans when the system has it. A logo file that
cannot be read falls back to the text, with a logged warning, rather than losing the image.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

from PIL import Image as PILImage
from PIL import ImageDraw, ImageFilter, ImageFont

from studiolo.settings import Settings

log = logging.getLogger(__name__)

MIN_TEXT_PX = 14  # font size below which the text stops being legible
_HALO = 0.9  # the halo's darkness under the text, before ``opacity``

Position = Literal["bottom-right", "bottom-left", "top-right", "top-left", "center"]


@dataclass(frozen=True)
class VisibleMark:
    text: str = "Made with Studiolo"
    logo: Path | None = None  # a PNG (alpha kept) drawn instead of the text
    position: Position = "bottom-right"
    opacity: float = 0.6
    scale: float = 0.25  # the mark's width as a share of the image's (of sqrt(width x height) when not square)


def visible_mark(settings: Settings) -> VisibleMark:
    return VisibleMark(
        text=settings.watermark_text,
        logo=settings.watermark_logo,
        position=settings.watermark_position,
        opacity=settings.watermark_opacity,
        scale=settings.watermark_scale,
    )


@lru_cache(maxsize=4)
def _logo(path: Path) -> PILImage.Image | None:
    try:
        with PILImage.open(path) as img:
            return img.convert("RGBA")
    except (OSError, ValueError):  # missing, unreadable, not an image: warned once per path (cached)
        log.warning("watermark logo %s cannot be read; drawing the watermark text instead", path)
        return None


@lru_cache(maxsize=8)
def _font(size: int, latin: bool) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    if not latin:
        try:
            return ImageFont.truetype("DejaVuSans.ttf", size)  # FreeType searches the system's font folders
        except OSError:
            pass
    return ImageFont.load_default(size=size)


def _text_stamp(text: str, width: int, image_width: int) -> PILImage.Image:
    """``text`` in white on a soft dark halo, as an RGBA image about ``width`` pixels wide."""
    latin = all(ord(c) < 0x250 for c in text)
    left, _, right, _ = _font(100, latin).getbbox(text)
    size = max(MIN_TEXT_PX, int(100 * width / max(1, right - left)))
    size = max(1, min(size, int(100 * 0.9 * image_width / max(1, right - left))))
    font = _font(size, latin)
    left, top, right, bottom = (round(v) for v in font.getbbox(text))
    pad = max(2, size // 4)  # room for the halo
    glyphs = PILImage.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(glyphs).text((pad - left, pad - top), text, font=font, fill=255)
    spread = 2 * max(1, size // 10) + 1
    halo = glyphs.filter(ImageFilter.MaxFilter(spread)).filter(ImageFilter.GaussianBlur(max(1.0, size / 6)))
    stamp = PILImage.new("RGBA", glyphs.size, (0, 0, 0, 0))
    stamp.putalpha(halo.point(lambda a: round(a * _HALO)))
    white = PILImage.new("RGBA", glyphs.size, (255, 255, 255, 0))
    white.putalpha(glyphs)
    stamp.alpha_composite(white)
    return stamp


def _stamp(mark: VisibleMark, width: int, image_width: int) -> PILImage.Image:
    logo = _logo(mark.logo) if mark.logo is not None else None
    if logo is not None:
        height = max(1, round(logo.height * width / logo.width))
        return logo.resize((width, height), PILImage.Resampling.LANCZOS)
    return _text_stamp(mark.text, width, image_width)


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
    # Scaled on the side of the square of the same area, not the width: on a 2048x256 banner a quarter of the
    # width was a quarter of the height in letters, on a tall portrait a 10 px line.
    width = max(8, round(math.sqrt(image.width * image.height) * mark.scale))
    stamp = _stamp(mark, width, image.width)
    shrink = min(1.0, 0.9 * image.width / stamp.width, (image.height / 3) / stamp.height)
    if shrink < 1.0:  # a logo wider than the image, a very wide image: smaller, its shape kept
        size = (max(1, round(stamp.width * shrink)), max(1, round(stamp.height * shrink)))
        stamp = stamp.resize(size, PILImage.Resampling.LANCZOS)
    alpha = stamp.getchannel("A").point(lambda a: round(a * mark.opacity))
    stamp.putalpha(alpha)
    base = image.convert("RGBA")
    base.alpha_composite(stamp, _place(base, stamp, mark.position))
    return base.convert(image.mode) if image.mode in ("RGB", "L", "RGBA") else base.convert("RGB")
