"""Live previews of a running job: when to send one, and how it travels (a small WebP as a data URL).

Engines offer a preview with every step (engines/base.py ``Preview``); the worker asks ``PreviewGate`` whether
to make one and publishes ``{"type": "preview", "step", "total", "image", "images", "data_url"}`` on the job's
event stream (the progress of the step it shows, and the picture).
"""

from __future__ import annotations

import base64
import io
import time
from dataclasses import dataclass

from PIL import Image

from studiolo.engines.base import Preview

# Sent at most this often per job: a progress bar needs no more, and every preview crosses Redis and each
# open event stream (tests/integration/test_events.py::test_previews_are_rate_limited_and_skip_the_last_step).
PREVIEW_INTERVAL_SECONDS = 0.5
PREVIEW_MAX_SIDE = 256
# Low quality keeps a preview at a few KB; it is replaced by the real image moments later.
PREVIEW_QUALITY = 50


def preview_data_url(image: Image.Image) -> str:
    """``image`` scaled to at most PREVIEW_MAX_SIDE on its longest side, as a ``data:image/webp;base64,`` URL."""
    small = image.convert("RGB")
    if max(small.size) > PREVIEW_MAX_SIDE:
        small.thumbnail((PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    # method 0: the fastest encoder effort; at this size the bytes saved by more effort are not worth it.
    small.save(buf, format="WEBP", quality=PREVIEW_QUALITY, method=0)
    return "data:image/webp;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


@dataclass
class PreviewGate:
    """Per-job throttle: a preview at most every ``interval`` seconds, never for the last step (the final
    image follows at once), and none after one failed (a broken preview must not cost every step)."""

    interval: float = PREVIEW_INTERVAL_SECONDS
    last_sent: float = float("-inf")
    broken: bool = False

    def due(self, step: int, total: int) -> bool:
        return not self.broken and step < total and time.monotonic() - self.last_sent >= self.interval

    def render(self, preview: Preview) -> str | None:
        """The data URL for ``preview`` (None when the engine could not make one now); starts the interval."""
        self.last_sent = time.monotonic()
        image = preview() if callable(preview) else preview
        return None if image is None else preview_data_url(image)
