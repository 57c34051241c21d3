"""Colour names for palettes: the nearest of a small list of everyday names, by distance in CIELAB (where equal
distances look about equally different), and hex strings checked and repaired."""

from __future__ import annotations

import re
from typing import Final

import numpy as np
from numpy.typing import NDArray

# Everyday names a prompt understands ("rust", not "#b7410e"); several shades per hue so a palette reads true.
NAMED: Final[dict[str, tuple[int, int, int]]] = {
    "black": (20, 20, 20),
    "charcoal": (54, 69, 79),
    "dark grey": (90, 90, 90),
    "grey": (140, 140, 140),
    "silver": (192, 192, 192),
    "white": (245, 245, 245),
    "cream": (243, 229, 196),
    "beige": (214, 196, 160),
    "tan": (200, 160, 110),
    "brown": (120, 72, 40),
    "dark brown": (70, 42, 25),
    "chestnut": (149, 69, 53),
    "rust": (183, 65, 14),
    "orange": (240, 130, 30),
    "peach": (250, 190, 150),
    "gold": (212, 175, 55),
    "yellow": (245, 215, 40),
    "olive": (120, 120, 40),
    "lime": (160, 210, 60),
    "green": (50, 140, 60),
    "dark green": (20, 70, 35),
    "mint": (170, 225, 190),
    "teal": (0, 128, 128),
    "turquoise": (64, 200, 200),
    "sky blue": (135, 195, 235),
    "blue": (40, 90, 200),
    "navy": (20, 30, 90),
    "indigo": (75, 40, 130),
    "purple": (130, 60, 160),
    "lavender": (190, 170, 225),
    "magenta": (200, 40, 150),
    "pink": (240, 150, 180),
    "red": (200, 30, 40),
    "crimson": (150, 20, 40),
    "maroon": (100, 20, 30),
    "skin tone": (225, 180, 150),
}
_HEX = re.compile(r"^#?([0-9a-fA-F]{6}|[0-9a-fA-F]{3})$")


def rgb_to_lab(rgb: NDArray[np.floating] | NDArray[np.integer]) -> NDArray[np.float64]:
    """sRGB (0..255, shape (..., 3)) to CIELAB (D65)."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = c @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


_NAMES: Final = list(NAMED)
_LAB: Final = rgb_to_lab(np.array([NAMED[n] for n in _NAMES]))


def name_of(rgb: tuple[int, int, int]) -> str:
    """The nearest everyday name of an sRGB colour."""
    distances = np.linalg.norm(_LAB - rgb_to_lab(np.array(rgb)), axis=1)
    return _NAMES[int(np.argmin(distances))]


def to_hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(max(0, min(255, int(v))) for v in rgb))


def parse_hex(text: str) -> tuple[int, int, int] | None:
    """``#a1b2c3``, ``a1b2c3`` or ``#abc`` as RGB; None when it is not a hex colour."""
    match = _HEX.match(text.strip())
    if not match:
        return None
    digits = match.group(1)
    if len(digits) == 3:
        digits = "".join(d * 2 for d in digits)
    return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)


def hex_of_name(name: str) -> str | None:
    """The hex of a name this list knows ("rust" -> #b7410e), None otherwise (a model's "ochre" is kept hexless)."""
    rgb = NAMED.get(name.strip().lower())
    return to_hex(rgb) if rgb else None
