"""Built-in style templates, the standard sizes, aspect ratios and quality presets.

Built-ins live in code (versioned with the product); users' own templates live in the database.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources

# Picker thumbnails of the built-in styles: made by tools/style_thumbnails.py with the demo model, shipped as
# package data (pyproject: "web/static/**/*"; tests/integration/test_style_thumbnails.py builds the wheel to check),
# served by the web app under /static.
THUMBNAIL_DIR = resources.files("studiolo") / "web" / "static" / "styles"
THUMBNAIL_URL_PREFIX = "/static/styles/"


@dataclass(frozen=True)
class Style:
    slug: str
    name: str
    category: str
    prompt_template: str
    negative_template: str = ""
    builtin: bool = True

    def apply(self, prompt: str, negative: str) -> tuple[str, str]:
        """Return (prompt, negative prompt) with this style's templates applied."""
        styled = (
            self.prompt_template.replace("{prompt}", prompt)
            if "{prompt}" in self.prompt_template
            else (f"{prompt}, {self.prompt_template}" if self.prompt_template else prompt)
        )
        neg = ", ".join(p for p in (negative.strip(), self.negative_template.strip()) if p)
        return styled, neg

    @property
    def thumbnail_url(self) -> str | None:
        """Where the picker finds this style's thumbnail; None for users' own styles (they have none)."""
        return _builtin_thumbnail_url(self.slug) if self.builtin else None


_COMMON_NEG = "blurry, low quality, watermark, text, deformed"

BUILTIN_STYLES: tuple[Style, ...] = (
    Style("none", "No style", "basic", "{prompt}"),
    Style(
        "photorealistic",
        "Photorealistic",
        "photography",
        "{prompt}, photorealistic, 35mm photograph, natural light, sharp focus, highly detailed",
        f"painting, illustration, cartoon, {_COMMON_NEG}",
    ),
    Style(
        "cinematic",
        "Cinematic",
        "photography",
        "cinematic film still of {prompt}, shallow depth of field, anamorphic, film grain, dramatic lighting",
        f"cartoon, flat, {_COMMON_NEG}",
    ),
    Style(
        "ghibli",
        "Ghibli",
        "illustration",
        "{prompt}, studio ghibli style, hand-painted anime background, soft pastel colours, whimsical",
        f"photorealistic, 3d render, {_COMMON_NEG}",
    ),
    Style(
        "anime",
        "Anime",
        "illustration",
        "anime artwork of {prompt}, anime style, key visual, vibrant, studio quality",
        f"photo, realistic, {_COMMON_NEG}",
    ),
    Style(
        "comic",
        "Comic book",
        "illustration",
        "comic book panel of {prompt}, bold ink outlines, halftone shading, vivid flat colours",
        f"photo, realistic, {_COMMON_NEG}",
    ),
    Style(
        "pixel-art",
        "Pixel art",
        "digital",
        "pixel art of {prompt}, 16-bit, crisp pixels, limited palette, retro game sprite",
        f"smooth, blurry, photo, {_COMMON_NEG}",
    ),
    Style(
        "cyberpunk",
        "Cyberpunk",
        "digital",
        "{prompt}, cyberpunk, neon lights, rain-soaked streets, futuristic city, high contrast",
        _COMMON_NEG,
    ),
    Style(
        "3d-render",
        "3D render",
        "digital",
        "3d render of {prompt}, octane render, global illumination, soft shadows, highly detailed",
        f"2d, flat, sketch, {_COMMON_NEG}",
    ),
    Style(
        "oil-painting",
        "Oil painting",
        "traditional",
        "oil painting of {prompt}, visible brush strokes, rich impasto texture, classical composition",
        f"photo, 3d render, {_COMMON_NEG}",
    ),
    Style(
        "watercolor",
        "Watercolor",
        "traditional",
        "watercolor painting of {prompt}, soft washes, paper texture, delicate bleeding edges",
        f"photo, 3d render, harsh lines, {_COMMON_NEG}",
    ),
    Style(
        "pencil-sketch",
        "Pencil sketch",
        "traditional",
        "pencil sketch of {prompt}, graphite, cross-hatching, monochrome, on textured paper",
        f"colour, photo, {_COMMON_NEG}",
    ),
    Style(
        "fantasy",
        "Fantasy",
        "art",
        "epic fantasy art of {prompt}, magical atmosphere, intricate detail, dramatic sky, concept art",
        _COMMON_NEG,
    ),
    Style(
        "minimalist",
        "Minimalist",
        "art",
        "minimalist illustration of {prompt}, clean shapes, negative space, flat colours",
        f"cluttered, busy, {_COMMON_NEG}",
    ),
    Style(
        "vaporwave",
        "Vaporwave",
        "digital",
        "{prompt}, vaporwave aesthetic, pink and teal, retro 80s, glitch, sunset grid",
        _COMMON_NEG,
    ),
)

BUILTIN_BY_SLUG = {s.slug: s for s in BUILTIN_STYLES}


@cache  # the package's files do not change while it runs; the catalog is read on every generator page
def _builtin_thumbnail_url(slug: str) -> str | None:
    exists = slug in BUILTIN_BY_SLUG and THUMBNAIL_DIR.joinpath(f"{slug}.webp").is_file()
    return f"{THUMBNAIL_URL_PREFIX}{slug}.webp" if exists else None


# ZiaGen's eight sizes, 512x512 to 1024x1024.
STANDARD_SIZES: tuple[tuple[int, int], ...] = (
    (512, 512),
    (512, 768),
    (768, 512),
    (768, 768),
    (576, 1024),
    (1024, 576),
    (768, 1024),
    (1024, 1024),
)

ASPECT_RATIOS: tuple[str, ...] = ("1:1", "16:9", "9:16", "4:3", "3:4")


def size_label(width: int, height: int) -> str:
    """A size's name in the catalog: its shape and ratio ("Portrait 2:3"), squares by how big they are. Pages show it
    with the pixels ("Portrait 2:3 (512x768)"); it once was "512x512", which they showed as "512x512 (512x512)".
    No two STANDARD_SIZES may share one (tests/unit/test_style_labels.py)."""
    if width == height:
        return "Small square" if width <= 512 else "Large square" if width >= 1024 else "Square"
    d = math.gcd(width, height)
    return f"{'Landscape' if width > height else 'Portrait'} {width // d}:{height // d}"


def style_name(slug: str | None, names: Mapping[str, str] | None = None) -> str:
    """What people call a style: a built-in's name, one of ``names`` (a user's own styles), "No style" for none;
    a style nobody here knows (another user's, deleted) keeps its slug."""
    if not slug or slug == "none":
        return "No style"
    builtin = BUILTIN_BY_SLUG.get(slug)
    return builtin.name if builtin else (names or {}).get(slug, slug)


# Quality preset -> inference steps. Distilled "turbo" models need 1-4 steps; they get their own table.
QUALITY_STEPS: dict[str, int] = {"draft": 12, "standard": 25, "high": 40}
TURBO_QUALITY_STEPS: dict[str, int] = {"draft": 1, "standard": 2, "high": 4}


def is_turbo(model_id: str) -> bool:
    return "turbo" in model_id.lower() or "lcm" in model_id.lower()


def aspect_size(ratio: str, base: int) -> tuple[int, int]:
    """Width/height for an aspect ratio with the short side near ``base``, both multiples of 8."""
    w, h = (int(x) for x in ratio.split(":"))
    if w >= h:
        height = base
        width = round(base * w / h / 8) * 8
    else:
        width = base
        height = round(base * h / w / 8) * 8
    return width, height
