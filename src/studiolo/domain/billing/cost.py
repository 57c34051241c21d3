"""What a job costs in credits: the one formula (docs/billing.md), used by the quote and the reservation alike.

    credits = n x max(1, ceil(width x height / 512^2  x  steps / 25  x  model factor))

so one standard 512x512 image at 25 steps costs 1 credit, a 1024x1024 image at 25 steps 4, a 1-step turbo image 1
(the minimum), and a model the catalogue gives a factor of 2 twice as much. An upscale job is one image of its
output size at its own steps: a Lanczos upscale (1 step) costs 1 credit up to 3.2 megapixels, a model upscale more.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

REFERENCE_PIXELS = 512 * 512
REFERENCE_STEPS = 25


def image_credits(width: int, height: int, steps: int, factor: float = 1.0) -> int:
    """The credits of one image. Rounded up, at least 1; exact to 1e-9 so 512x512 at 25 steps is exactly 1."""
    units = width * height / REFERENCE_PIXELS * max(steps, 1) / REFERENCE_STEPS * factor
    return max(1, math.ceil(units - 1e-9))


def job_images(kind: str, params: Mapping[str, Any]) -> int:
    """How many images a job makes (what quotas count). A film render makes none itself: its scene images are
    generation jobs of their own, counted and charged as such."""
    if kind == "film":
        return 0
    return 1 if kind == "upscale" else int(params.get("n") or 1)


def film_credits(seconds: float, per_minute: int) -> int:
    """The credits of rendering ``seconds`` of film video (motion, narration, mix, encode): ``per_minute`` a minute,
    rounded up, at least 1."""
    return max(1, math.ceil(seconds * per_minute / 60 - 1e-9))


def job_credits(kind: str, params: Mapping[str, Any], model_id: str, factors: Mapping[str, float]) -> int:
    """The credits a queued job's row costs (its ``params``: width, height, steps, n; a film render's: credits, the
    video part of its quote, film/service.py)."""
    if kind == "film":
        return int(params["credits"])
    factor = factors.get(model_id, 1.0)
    per_image = image_credits(int(params["width"]), int(params["height"]), int(params["steps"]), factor)
    return per_image * job_images(kind, params)
