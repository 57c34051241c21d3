"""The offline describer (the default): what a photo's pixels tell without any downloaded weights. Dominant palette
(k-means in OpenCV) with everyday colour names and hex, brightness and contrast, orientation, where faces are (OpenCV's
Haar cascade, packaged data) and the colours of the subject against the background. What only a vision model can
say (species, clothing, setting...) it leaves empty and names in ``known_by_vision_only``.

Cost: well under 200 ms for a 1 MP photo on one core (bench/safety.py measures it): every step works on a small copy.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from studiolo.domain.understanding.colors import name_of, to_hex

if TYPE_CHECKING:
    import cv2
from studiolo.domain.understanding.ports import DescriberReply, Photo

log = logging.getLogger(__name__)

# The fields a vision model fills and pixel statistics cannot: the UI says so next to them.
VISION_ONLY: Final = ("species", "archetype", "features", "clothing", "setting")
_CASCADE_NAME: Final = "haarcascade_frontalface_default.xml"
# Debian's opencv-data package keeps the cascades here; opencv-python wheels under cv2.data (_cascade_dirs). OpenCV
# is imported on first use, not with this module: API processes and commands that never describe skip its ~0.1 s.
_DEBIAN_CASCADES: Final = "/usr/share/opencv4/haarcascades/"
_PALETTE_SIDE: Final = 64  # k-means on at most 64x64 pixels: a palette needs no more, and it stays a few ms
# Faces are looked for on a copy this long, down to 1/10 of its short side (a photo for a character shows its subject
# large): on this 2-core box 480 px at scale step 1.1 took ~250 ms a photo, 320 px at 1.2 takes ~30-120 ms.
_FACE_SIDE: Final = 320


def _cascade_dirs() -> tuple[str, str]:
    import cv2

    return getattr(getattr(cv2, "data", None), "haarcascades", ""), _DEBIAN_CASCADES


def _find_cascade() -> Path | None:
    for folder in _cascade_dirs():
        if folder and (Path(folder) / _CASCADE_NAME).is_file():
            return Path(folder) / _CASCADE_NAME
    return None


class _Faces:
    """One cascade per process, loaded on first use; detectMultiScale is not documented thread-safe, so a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cascade: cv2.CascadeClassifier | None = None
        self._loaded = False

    def find(self, gray: NDArray[np.uint8]) -> list[tuple[int, int, int, int]]:
        with self._lock:
            if not self._loaded:
                path = _find_cascade()
                self._loaded = True
                if path is None:
                    log.warning("No Haar face cascade in %s: the offline describer finds no faces.", _cascade_dirs())
                else:
                    import cv2

                    cascade = cv2.CascadeClassifier(str(path))
                    self._cascade = None if cascade.empty() else cascade
            if self._cascade is None:
                return []
            min_side = max(24, min(gray.shape) // 10)
            found = self._cascade.detectMultiScale(gray, scaleFactor=1.2, minNeighbors=5, minSize=(min_side, min_side))
        return [tuple(int(v) for v in box) for box in found] if len(found) else []  # type: ignore[misc]


_faces = _Faces()


def palette(pixels: NDArray[np.uint8], k: int) -> list[dict[str, Any]]:
    """The dominant colours of ``pixels`` (N x 3 RGB): k-means clusters as {name, hex, share}, largest first; clusters
    with the same everyday name are merged (two shades of "teal" are one colour to a prompt)."""
    import cv2

    data = pixels.reshape(-1, 3).astype(np.float32)
    if len(data) == 0:
        return []
    distinct = np.unique(data, axis=0)
    if len(distinct) == 1 or len(data) < 2 * k:
        # Too few pixels to cluster (OpenCV also reads a single row as a column of samples): one mean colour.
        mean = data.mean(axis=0)
        rgb = (round(float(mean[0])), round(float(mean[1])), round(float(mean[2])))
        return [{"name": name_of(rgb), "hex": to_hex(rgb), "share": 1.0}]
    k = min(k, len(distinct))
    cv2.setRNGSeed(17)  # the same photo gives the same palette
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 1.0)
    _, labels, centers = cv2.kmeans(data, k, None, criteria, 1, cv2.KMEANS_PP_CENTERS)
    counts = np.bincount(labels.ravel(), minlength=k)
    merged: dict[str, dict[str, Any]] = {}
    for index in np.argsort(-counts):
        rgb = (round(float(centers[index][0])), round(float(centers[index][1])), round(float(centers[index][2])))
        name = name_of(rgb)
        share = float(counts[index]) / len(data)
        if name in merged:
            merged[name]["share"] += share
        else:
            merged[name] = {"name": name, "hex": to_hex(rgb), "share": share}
    colours = sorted(merged.values(), key=lambda c: -c["share"])
    for c in colours:
        c["share"] = round(c["share"], 3)
    return [c for c in colours if c["share"] >= 0.02]


def _orientation(width: int, height: int) -> str:
    ratio = width / height
    return "landscape" if ratio > 1.1 else "portrait" if ratio < 0.9 else "square"


def _mood(brightness: float, contrast: float, saturation: float, warmth: float) -> str:
    """A mood read from light and colour only (documented as such): the words a prompt can use."""
    light = "bright" if brightness > 0.62 else "dark" if brightness < 0.35 else "soft"
    if saturation > 0.45:
        colour = "vivid"
    elif saturation < 0.15:
        colour = "muted"
    else:
        colour = "warm" if warmth > 0.05 else "cool" if warmth < -0.05 else "natural"
    feel = {
        ("bright", "vivid"): "cheerful",
        ("dark", "muted"): "moody",
        ("dark", "vivid"): "dramatic",
        ("dark", "cool"): "mysterious",
        ("bright", "warm"): "sunny",
        ("soft", "cool"): "calm",
        ("bright", "muted"): "airy",
    }.get((light, colour), "dramatic" if contrast > 0.55 else "gentle")
    return f"{light}, {colour} and {feel}"


def _subject_mask(height: int, width: int, faces: list[tuple[float, float, float, float]]) -> NDArray[np.bool_]:
    """Where the subject likely is: under each face, a body-sized box (the face's width x3, down to the bottom);
    without faces, the centre of the frame (what a photo of someone's pet or costume usually has)."""
    mask = np.zeros((height, width), dtype=bool)
    if faces:
        for fx, fy, fw, fh in faces:
            x0, x1 = int((fx - fw) * width), int((fx + 2 * fw) * width)
            y0 = int(max(0.0, fy - fh * 0.4) * height)
            mask[y0:, max(0, x0) : max(0, x1)] = True
    else:
        mask[height // 4 : height - height // 4, width // 4 : width - width // 4] = True
    return mask


class OfflineDescriber:
    """Pixel statistics and packaged face detection; no weights, no network."""

    name = "offline"
    model = ""

    def describe(self, photo: Photo, template: str, instruction: str) -> DescriberReply:
        import cv2

        image = photo.image.convert("RGB")
        width, height = image.size
        small = np.asarray(image.resize(_fit(width, height, _PALETTE_SIDE), Image.Resampling.BILINEAR), dtype=np.uint8)
        hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV).astype(np.float32) / 255.0
        luma = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
        brightness = float(luma.mean())
        contrast = float(min(1.0, luma.std() * 2.0))  # RMS contrast, 0.5 luma std (black/white halves) -> 1
        saturation = float(hsv[..., 1].mean())
        warmth = float((small[..., 0].astype(np.float32) - small[..., 2].astype(np.float32)).mean() / 255.0)

        face_w, face_h = _fit(width, height, _FACE_SIDE)
        gray = cv2.equalizeHist(np.asarray(image.resize((face_w, face_h), Image.Resampling.BILINEAR).convert("L")))
        faces = [
            (x / face_w, y / face_h, w / face_w, h / face_h)
            for x, y, w, h in sorted(_faces.find(gray), key=lambda b: -b[2] * b[3])[:8]
        ]
        sh, sw = small.shape[:2]
        subject = _subject_mask(sh, sw, faces)
        subject_colours = palette(small[subject], 3)
        background_colours = palette(small[~subject], 3) if (~subject).any() else []
        if background_colours:
            # The subject's box holds some of the wall behind it: the background's main colour is the subject's only
            # where it covers at least half of the box (a teal shirt on a teal wall).
            wall = background_colours[0]["name"]
            own = [c for c in subject_colours if c["name"] != wall or c["share"] >= 0.5]
            subject_colours = own or subject_colours

        n = len(faces)
        subject_text = "" if n == 0 else "a person" if n == 1 else f"a group of {n} people"
        data: dict[str, Any] = {
            "subject": subject_text,
            "species": "",
            "archetype": "",
            "colors": palette(small, 5),
            "features": [],
            "clothing": [],
            "mood": _mood(brightness, contrast, saturation, warmth),
            "setting": "",
            "brightness": round(brightness, 3),
            "contrast": round(contrast, 3),
            "saturation": round(saturation, 3),
            "orientation": _orientation(width, height),
            "faces": [{"x": round(x, 4), "y": round(y, 4), "w": round(w, 4), "h": round(h, 4)} for x, y, w, h in faces],
            "subject_colors": subject_colours,
            "background_colors": background_colours,
        }
        return DescriberReply(data=data, model="")


def _fit(width: int, height: int, side: int) -> tuple[int, int]:
    scale = min(1.0, side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))
