"""The offline describer: what the pixels say, and nothing they cannot."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from studiolo.domain.understanding import offline
from studiolo.domain.understanding.offline import OfflineDescriber, palette
from studiolo.domain.understanding.ports import Photo
from studiolo.domain.understanding.schemas import PhotoDescription


def _photo(width: int, height: int, background: tuple[int, int, int], centre: tuple[int, int, int]) -> Photo:
    a = np.zeros((height, width, 3), np.uint8)
    a[:] = background
    a[height // 4 : height - height // 4, width // 4 : width - width // 4] = centre  # the frame's centre
    return Photo(Image.fromarray(a), b"")


def test_palette_names_and_shares() -> None:
    photo = _photo(300, 200, (0, 128, 128), (183, 65, 14))
    reply = OfflineDescriber().describe(photo, "character", "")
    d = PhotoDescription.model_validate(reply.data)  # the offline facts are in the schema's shape
    names = [c.name for c in d.colors]
    assert names[0] == "teal" and "rust" in names
    assert abs(sum(c.share or 0 for c in d.colors) - 1.0) < 0.02
    assert d.colors[0].hex == "#008080"
    assert d.orientation == "landscape"
    # No face in the frame: the subject is the centre, the background the rest.
    assert d.faces == [] and d.subject == ""
    assert d.subject_colors[0].name == "rust" and d.background_colors[0].name == "teal"
    # What only a vision model can say stays empty (the service lists it in known_by_vision_only).
    assert not (d.species or d.archetype or d.features or d.clothing or d.setting)


def test_light_and_orientation() -> None:
    dark = PhotoDescription.model_validate(
        OfflineDescriber().describe(_photo(100, 200, (15, 15, 20), (40, 40, 45)), "portrait", "").data
    )
    bright = PhotoDescription.model_validate(
        OfflineDescriber().describe(_photo(200, 200, (250, 250, 250), (0, 0, 0)), "portrait", "").data
    )
    assert dark.orientation == "portrait" and bright.orientation == "square"
    assert dark.brightness is not None and bright.brightness is not None and dark.brightness < 0.2 < bright.brightness
    assert dark.mood is not None and dark.mood.startswith("dark") and bright.mood.startswith("bright")
    assert bright.contrast is not None and dark.contrast is not None and bright.contrast > dark.contrast


def test_same_photo_same_palette() -> None:
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 255, (64 * 64, 3), dtype=np.uint8)
    assert palette(pixels, 5) == palette(pixels, 5)
    assert palette(np.zeros((0, 3), np.uint8), 5) == []
    # A 1x1 photo: too few pixels to cluster (found by tests/integration/test_fuzz.py).
    assert palette(np.array([[250, 250, 250]], np.uint8), 3) == [{"name": "white", "hex": "#fafafa", "share": 1.0}]
    tiny = OfflineDescriber().describe(Photo(Image.new("RGB", (1, 1), (0, 0, 0)), b""), "scene", "")
    assert tiny.data["colors"][0]["name"] == "black" and tiny.data["background_colors"] == []


def test_faces_come_from_the_packaged_cascade_and_shape_the_subject() -> None:
    assert offline._find_cascade() is not None  # opencv-python's cv2.data or Debian's opencv-data
    mask = offline._subject_mask(100, 100, [(0.4, 0.1, 0.2, 0.2)])
    assert mask[50, 50] and mask[99, 45] and not mask[5, 5] and not mask[50, 95]
    centre = offline._subject_mask(100, 100, [])
    assert centre[50, 50] and not centre[5, 5]


def test_a_found_face_makes_the_subject_a_person(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the describer does with the cascade's boxes (the detection itself is OpenCV's, on real photos): the face
    as fractions of the photo, the subject "a person", and the subject's colours taken under the face."""
    a = np.zeros((400, 300, 3), np.uint8)
    a[:] = (20, 110, 120)  # a teal wall
    a[100:400, 90:210] = (183, 65, 14)  # a rust figure below the face
    seen: list[tuple[int, ...]] = []

    def find(gray: np.ndarray) -> list[tuple[int, int, int, int]]:
        seen.append(gray.shape)
        h, w = gray.shape
        return [(int(w * 0.4), int(h * 0.1), int(w * 0.2), int(h * 0.15))]  # in the copy the cascade is given

    monkeypatch.setattr(offline._faces, "find", find)
    d = PhotoDescription.model_validate(
        OfflineDescriber().describe(Photo(Image.fromarray(a), b""), "portrait", "").data
    )
    assert seen == [(320, 240)]  # the cascade gets a grey copy at most 320 px long
    assert d.subject == "a person" and len(d.faces) == 1
    face = d.faces[0]
    assert (round(face.x, 2), round(face.y, 2), round(face.w, 2), round(face.h, 2)) == (0.4, 0.1, 0.2, 0.15)
    assert d.subject_colors[0].name == "rust" and d.background_colors[0].name == "teal"
