"""The demo model's image-to-image and inpainting inputs and outputs, between the request's size and the model's.

The model draws a square of ``size`` pixels that ``fit_to_size`` (engine.py) enlarges to cover the request's frame
and crops at the centre. Inputs go the opposite way: the init image (and mask) at the request's size, placed at the
centre of that square (the bands the crop will cut off filled by repeating the edge, and always repainted), then
shrunk to the model's size. No torch here (the engine converts the arrays).

On the way back the model's picture has only ``size`` pixels of detail. Two things keep what the model was not
asked to change at full resolution: the init image's fine detail (what the trip down to the model and back loses) is
added back in proportion to ``1 - strength``, so strength 0 returns the init image itself and strength 1 none of it;
and for inpainting the kept region (mask black) is the init image's own pixels, blended at the mask's soft edges
(AUTOMATIC1111 overlays the original the same way).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

Fit = Callable[[Image.Image, int, int], Image.Image]


def _square_pad(array: np.ndarray, width: int, height: int, fill: float | None) -> np.ndarray:
    side = max(width, height)
    left, top = (side - width) // 2, (side - height) // 2
    pad = [(top, side - height - top), (left, side - width - left)] + [(0, 0)] * (array.ndim - 2)
    if fill is None:
        return np.pad(array, pad, mode="edge")
    return np.pad(array, pad, mode="constant", constant_values=fill)


def init_at_request_size(init: Image.Image, width: int, height: int) -> np.ndarray:
    """The init image stretched to the request's size, as float RGB (H, W, 3) in 0..255 (as diffusers resizes it)."""
    resized = init.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
    return np.asarray(resized, dtype=np.float32)


def mask_at_request_size(mask: Image.Image, width: int, height: int) -> np.ndarray:
    """The mask at the request's size, float (H, W) in 0..1, 1 = repaint (white, as the API and diffusers take it)."""
    resized = mask.convert("L").resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32) / 255.0


def init_to_model(init: np.ndarray, size: int) -> np.ndarray:
    """``init_at_request_size``'s array as the model's square, float (3, size, size) in [-1, 1]."""
    height, width = init.shape[:2]
    square = _square_pad(init, width, height, None).round().clip(0, 255).astype(np.uint8)
    small = Image.fromarray(square, "RGB").resize((size, size), Image.Resampling.LANCZOS)
    return (np.asarray(small, dtype=np.float32) / 127.5 - 1.0).transpose(2, 0, 1)


def mask_to_model(mask: np.ndarray, size: int) -> np.ndarray:
    """``mask_at_request_size``'s array as the model's square, float (1, size, size) in 0..1; the bands outside the
    frame are 1 (repainted: they are cropped off again, and nothing there needs keeping)."""
    height, width = mask.shape
    square = _square_pad(mask, width, height, 1.0)
    image = Image.fromarray((square * 255).round().astype(np.uint8), "L")
    small = image.resize((size, size), Image.Resampling.BILINEAR)
    return (np.asarray(small, dtype=np.float32) / 255.0)[None]


def finish(
    generated: Image.Image,
    init: np.ndarray,
    model_init: np.ndarray,
    strength: float,
    mask: np.ndarray | None,
    fit: Fit,
) -> Image.Image:
    """The model's ``generated`` picture (already at the request's size) with the init image's fine detail added
    back by ``1 - strength`` and, for inpainting, the kept region's own pixels; ``model_init``: the init as the model
    saw it (``init_to_model``), enlarged the same way as ``generated`` to find the detail the trip lost."""
    height, width = init.shape[:2]
    seen = ((model_init.transpose(1, 2, 0) + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)
    round_trip = np.asarray(fit(Image.fromarray(seen, "RGB"), width, height), dtype=np.float32)
    out = np.asarray(generated, dtype=np.float32) + (1.0 - strength) * (init - round_trip)
    if mask is not None:
        out = mask[..., None] * out + (1.0 - mask[..., None]) * init
    return Image.fromarray(out.round().clip(0, 255).astype(np.uint8), "RGB")
