"""The style picker's thumbnails: one small WebP per built-in style, in the API, and shipped in the package."""

from __future__ import annotations

import itertools
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from studiolo.domain.generation.styles import BUILTIN_STYLES, THUMBNAIL_DIR, Style

ROOT = Path(__file__).resolve().parents[2]
MAX_BYTES = 10_000


@pytest.mark.parametrize("style", BUILTIN_STYLES, ids=lambda s: s.slug)
def test_every_builtin_style_has_a_small_square_webp(style: Style) -> None:
    path = Path(str(THUMBNAIL_DIR.joinpath(f"{style.slug}.webp")))
    assert path.is_file(), "make it with: python tools/style_thumbnails.py"
    assert path.stat().st_size <= MAX_BYTES
    with Image.open(path) as image:
        assert image.format == "WEBP" and image.size == (128, 128)
    assert style.thumbnail_url == f"/static/styles/{style.slug}.webp"


# Mean absolute difference per 8-bit channel value between two thumbnails. The seven drawn as one lighthouse (issue 14)
# were 2.4-3.5 apart; the redrawn set's closest pair (anime, oil-painting: two houses at dusk, cel-shaded and
# painted) is 23.5 apart (tools/style_thumbnails.py).
MIN_DIFFERENCE = 12.0


def test_no_two_style_thumbnails_look_alike() -> None:
    pixels = {}
    for style in BUILTIN_STYLES:
        with Image.open(Path(str(THUMBNAIL_DIR.joinpath(f"{style.slug}.webp")))) as image:
            pixels[style.slug] = np.asarray(image.convert("RGB"), dtype=np.float32)
    close = [
        (a, b, round(float(np.abs(pixels[a] - pixels[b]).mean()), 1))
        for a, b in itertools.combinations(pixels, 2)
        if np.abs(pixels[a] - pixels[b]).mean() < MIN_DIFFERENCE
    ]
    assert not close, f"near-identical thumbnails (remake them with tools/style_thumbnails.py): {close}"


def test_styles_api_gives_builtins_a_thumbnail_and_user_styles_none(client: TestClient) -> None:
    created = client.post("/api/v1/styles", json={"slug": "mine", "name": "Mine", "prompt_template": "{prompt}, teal"})
    assert created.status_code == 201 and created.json()["thumbnail_url"] is None
    styles = {s["slug"]: s for s in client.get("/api/v1/styles").json()["styles"]}
    assert styles["mine"]["thumbnail_url"] is None
    for style in BUILTIN_STYLES:
        assert styles[style.slug]["thumbnail_url"] == f"/static/styles/{style.slug}.webp"


def test_a_style_without_a_file_has_no_thumbnail() -> None:
    assert Style("made-up", "Made up", "x", "{prompt}").thumbnail_url is None  # not a built-in slug
    assert Style("ghibli", "Mine", "x", "{prompt}", builtin=False).thumbnail_url is None


@pytest.mark.slow
def test_the_built_package_ships_every_thumbnail(tmp_path: Path) -> None:
    # Build a wheel from a copy of the sources (a build in the checkout would leave build/ and egg-info there).
    source = tmp_path / "source"
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q"]
    subprocess.run([*build, "-w", str(tmp_path / "dist"), str(source)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("studiolo-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [s.slug for s in BUILTIN_STYLES if f"studiolo/web/static/styles/{s.slug}.webp" not in names]
    assert not missing
