"""ControlNet control maps made from a user's picture (issue 19).

The maps that need no downloaded weights are made here with OpenCV, the way AUTOMATIC1111's ControlNet extension makes
them: canny (``cv2.Canny``, thresholds 100/200), scribble (its "scribble_xdog": difference of Gaussians, thresholded),
lineart (its "lineart_standard": dark strokes against a blurred copy), softedge (blurred gradient magnitude, a no-model
stand-in for HED/PiDiNet) and tile (the picture itself). Every map is white lines/values on black, as the ControlNet
1.1 models were trained on (the lineart model too: drawn black-on-white lineart is inverted).

Depth needs a model: an installed preprocessor (AdapterRef kind "preprocessor", ``meta.preprocessor == "depth"``) that
is a transformers depth-estimation folder (DPT, Depth Anything...). Pose, seg, normal and mlsd have no preprocessor
here; those maps must be uploaded ready-made (``preprocess=false``). Both cases are ``preprocessor_unavailable``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from studiolo.engines.base import AdapterRef, EngineError

# GenerationRequest.extra key under which the worker passes the installed preprocessors (a list of AdapterRefs).
PREPROCESSORS_EXTRA = "preprocessors"
# Control types whose map is made here from any picture, and those whose map needs an installed preprocessor model.
BUILTIN_TYPES = ("canny", "scribble", "lineart", "softedge", "tile")
MODEL_TYPES = ("depth",)
CANNY_LOW, CANNY_HIGH = 100, 200  # A1111's defaults
SCRIBBLE_THRESHOLD = 32  # A1111's scribble_xdog default


def make_control_map(
    type: str, image: Image.Image, width: int, height: int, *, preprocessors: Sequence[AdapterRef] | None = None
) -> Image.Image:
    """The ``type`` control map of ``image`` at ``width`` x ``height``, an RGB picture.

    The picture is first resized to the target size (no crop, as init images are), so a map lines up with an img2img
    init picture made from the same upload. ``preprocessors``: installed preprocessor models (for depth)."""
    rgb = image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
    if type == "tile":
        return rgb
    if type in MODEL_TYPES:
        ref = find_preprocessor(type, preprocessors or ())
        if ref is None:
            raise EngineError(
                f"No {type} preprocessor is installed, so a {type} map cannot be made from this picture. Upload a "
                f"ready {type} map with preprocess=false, or install a {type}-estimation model as a preprocessor.",
                code="preprocessor_unavailable",
            )
        return _depth_map(ref, rgb)
    if type not in BUILTIN_TYPES:
        raise EngineError(
            f"Studiolo cannot make a {type} map itself (no {type} preprocessor). Upload a ready {type} map with "
            "preprocess=false.",
            code="preprocessor_unavailable",
        )
    pixels = np.asarray(rgb, dtype=np.uint8)
    maker = {"canny": _canny, "scribble": _scribble, "lineart": _lineart, "softedge": _softedge}[type]
    out = maker(pixels)
    return Image.fromarray(np.stack([out] * 3, axis=-1), "RGB")


def find_preprocessor(type: str, preprocessors: Sequence[AdapterRef]) -> AdapterRef | None:
    """The first installed preprocessor for ``type`` (``meta.preprocessor``), or None."""
    for ref in preprocessors:
        if ref.kind == "preprocessor" and ref.meta.get("preprocessor") == type:
            return ref
    return None


def available_types(preprocessors: Sequence[AdapterRef]) -> list[str]:
    """The control types whose map can be made now: the built-in ones plus those with an installed preprocessor."""
    return [*BUILTIN_TYPES, *(t for t in MODEL_TYPES if find_preprocessor(t, preprocessors) is not None)]


# --- no-model maps (uint8 HxWx3 in, uint8 HxW out) ------------------------------------------------------------


def _canny(pixels: np.ndarray) -> np.ndarray:
    import cv2

    return np.asarray(cv2.Canny(pixels, CANNY_LOW, CANNY_HIGH), dtype=np.uint8)


def _scribble(pixels: np.ndarray) -> np.ndarray:
    """A1111's scribble_xdog: where the picture is darker than its blurred surroundings is a stroke (works for a
    black-on-white drawing and for a photo alike); strokes come out white on black, as the scribble model expects."""
    import cv2

    x = pixels.astype(np.float32)
    fine = cv2.GaussianBlur(x, (0, 0), 0.5)
    coarse = cv2.GaussianBlur(x, (0, 0), 5.0)
    darker = np.min(coarse - fine, axis=2)
    return np.where(2 * darker > SCRIBBLE_THRESHOLD, 255, 0).astype(np.uint8)


def _lineart(pixels: np.ndarray) -> np.ndarray:
    """A1111's lineart_standard ("from white bg & black line"): how much darker each pixel is than a wide blur of the
    picture, scaled by the median stroke strength. Thin lines keep their grey antialiasing, white on black."""
    import cv2

    x = pixels.astype(np.float32)
    blurred = cv2.GaussianBlur(x, (0, 0), 6.0)
    intensity = np.min(blurred - x, axis=2).clip(0, 255)
    strokes = intensity[intensity > 8]
    scale = max(16.0, float(np.median(strokes))) if strokes.size else 16.0
    return np.asarray((intensity / scale * 127).clip(0, 255), dtype=np.uint8)


def _softedge(pixels: np.ndarray) -> np.ndarray:
    """Soft edges (what HED/PiDiNet give, without their models): the gradient magnitude of a smoothed picture,
    normalised and blurred, so edges are soft white bands of varying strength."""
    import cv2

    gray = cv2.GaussianBlur(cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY).astype(np.float32), (0, 0), 1.5)
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
    magnitude = np.hypot(gx, gy)
    peak = float(magnitude.max())
    if peak <= 1e-6:  # a flat picture has no edges
        return np.zeros(gray.shape, dtype=np.uint8)
    soft = cv2.GaussianBlur(magnitude / peak, (0, 0), 2.0)
    return np.asarray((np.sqrt(soft / max(float(soft.max()), 1e-6)) * 255).clip(0, 255), dtype=np.uint8)


# --- depth (a transformers depth-estimation model) ------------------------------------------------------------

_depth_lock = threading.Lock()
_depth_cache: dict[str, tuple[Any, Any]] = {}  # one model at a time: path -> (processor, model)


def _depth_model(ref: AdapterRef) -> tuple[Any, Any]:
    key = str(ref.path)
    cached = _depth_cache.get(key)
    if cached is not None:
        return cached
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation

    from studiolo.engines.hf_libraries import quiet_hf_libraries

    quiet_hf_libraries()
    folder = Path(ref.path)
    if not folder.is_dir():
        raise EngineError(
            f"Depth preprocessor '{ref.id}' is missing: no folder at {folder}.", code="preprocessor_unavailable"
        )
    try:
        processor = AutoImageProcessor.from_pretrained(str(folder), local_files_only=True)
        model = AutoModelForDepthEstimation.from_pretrained(str(folder), local_files_only=True).eval()
    except Exception as exc:
        raise EngineError(
            f"Could not load depth preprocessor '{ref.id}' from {folder}: {type(exc).__name__}: {exc}.",
            code="model_file_corrupt",
        ) from exc
    _depth_cache.clear()  # keep one: a depth model can be hundreds of MB
    _depth_cache[key] = (processor, model)
    return processor, model


def _depth_map(ref: AdapterRef, rgb: Image.Image) -> Image.Image:
    """Relative depth as the depth ControlNets take it: near is white, far is black (min-max normalised)."""
    import torch

    with _depth_lock:  # one estimate at a time per process: the model is shared and CPU-heavy
        processor, model = _depth_model(ref)
        inputs = processor(images=rgb, return_tensors="pt")
        with torch.inference_mode():
            # DPT and Depth Anything predict relative inverse depth (disparity): larger is nearer.
            predicted = model(**inputs).predicted_depth
    depth = torch.nn.functional.interpolate(
        predicted.unsqueeze(1).float(), size=(rgb.height, rgb.width), mode="bicubic", align_corners=False
    )[0, 0].numpy()
    low, high = float(depth.min()), float(depth.max())
    scaled = (depth - low) / (high - low) if high - low > 1e-8 else np.zeros_like(depth)
    gray = (scaled * 255).clip(0, 255).astype(np.uint8)
    return Image.fromarray(np.stack([gray] * 3, axis=-1), "RGB")
