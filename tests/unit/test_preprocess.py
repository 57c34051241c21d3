"""Control maps made from a picture (engines/preprocess.py): the OpenCV ones, and depth with a tiny random DPT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from studiolo.engines.base import CONTROL_TYPES, AdapterRef, EngineError
from studiolo.engines.preprocess import BUILTIN_TYPES, available_types, make_control_map
from tests.tiny_controlnet import make_tiny_depth_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _drawing() -> Image.Image:
    """A black-on-white drawing: a square outline in the left half, the right half empty (120x100)."""
    image = Image.new("RGB", (120, 100), "white")
    ImageDraw.Draw(image).rectangle([10, 20, 50, 80], outline="black", width=3)
    return image


def _gray(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L"), dtype=np.int16)


@pytest.mark.parametrize("kind", BUILTIN_TYPES)
def test_maps_are_rgb_at_the_asked_size(kind: str) -> None:
    out = make_control_map(kind, _drawing(), 64, 48)
    assert out.mode == "RGB" and out.size == (64, 48)


@pytest.mark.parametrize("kind", ["canny", "scribble", "lineart", "softedge"])
def test_line_maps_are_white_on_black_where_the_strokes_are(kind: str) -> None:
    out = _gray(make_control_map(kind, _drawing(), 120, 100))
    assert out[:, 70:].max() == 0  # the empty half stays black
    assert out[20:81, 8:53].max() >= 100  # the square's strokes come out light
    assert (out > 32).mean() < 0.35  # lines (soft ones for softedge), not a filled picture
    assert np.array_equal(out, _gray(make_control_map(kind, _drawing(), 120, 100)))  # no randomness


def test_canny_finds_both_sides_of_a_stroke_and_nothing_in_flat_areas() -> None:
    out = _gray(make_control_map("canny", _drawing(), 120, 100))
    assert set(np.unique(out)) <= {0, 255}
    row = out[50]
    assert row[5:15].max() == 255 and row[45:55].max() == 255  # the left and right sides of the square
    assert row[20:40].max() == 0  # inside the square is flat


def test_scribble_turns_a_drawn_stroke_into_a_solid_white_line() -> None:
    out = _gray(make_control_map("scribble", _drawing(), 120, 100))
    assert out[50, 10:13].min() == 255  # on the 3-pixel stroke itself, not only at its edges
    assert out[50, 25:35].max() == 0


def test_lineart_keeps_thin_lines_inverted() -> None:
    out = _gray(make_control_map("lineart", _drawing(), 120, 100))
    assert out[50, 10:13].min() > 100 and out[50, 25:35].max() < 20


def test_tile_is_the_picture_resized() -> None:
    picture = Image.new("RGB", (30, 30), (200, 40, 10))
    out = np.asarray(make_control_map("tile", picture, 64, 64))
    assert out.shape == (64, 64, 3) and np.abs(out.astype(int) - [200, 40, 10]).max() <= 1


@pytest.mark.parametrize("kind", ["depth", "pose", "seg", "normal", "mlsd"])
def test_maps_needing_a_model_are_preprocessor_unavailable(kind: str) -> None:
    with pytest.raises(EngineError) as caught:
        make_control_map(kind, _drawing(), 64, 64)
    assert caught.value.code == "preprocessor_unavailable"
    assert "preprocess=false" in str(caught.value)


def test_every_control_type_is_known() -> None:
    assert set(BUILTIN_TYPES) | {"depth"} <= set(CONTROL_TYPES)


def test_depth_with_an_installed_preprocessor(tmp_path: Path) -> None:
    folder = make_tiny_depth_model(tmp_path / "tiny-dpt")
    depth = AdapterRef(id="tiny-depth", kind="preprocessor", path=folder, meta={"preprocessor": "depth"})
    lora = AdapterRef(id="not-a-preprocessor", kind="lora", path=folder, meta={"preprocessor": "depth"})
    assert available_types([lora]) == list(BUILTIN_TYPES)
    assert available_types([depth]) == [*BUILTIN_TYPES, "depth"]
    picture = Image.new("RGB", (90, 70))
    ImageDraw.Draw(picture).ellipse([20, 10, 70, 60], fill=(220, 180, 40))
    out = make_control_map("depth", picture, 64, 48, preprocessors=[lora, depth])
    gray = _gray(out)
    assert out.mode == "RGB" and out.size == (64, 48)
    assert gray.min() == 0 and gray.max() == 255  # normalised over the picture
    assert np.array_equal(gray, _gray(make_control_map("depth", picture, 64, 48, preprocessors=[depth])))
    with pytest.raises(EngineError) as caught:
        make_control_map("depth", picture, 64, 48, preprocessors=[lora])
    assert caught.value.code == "preprocessor_unavailable"
