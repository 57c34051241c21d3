"""What the OpenAI-compatible, Gemini and Pollinations engines share: pictures fitted to the requested size, and
one provider call per seed.

Providers make their own sizes (OpenAI's fixed menu, Gemini's aspect ratios): a reply of another size is scaled to
cover the requested size and centre-cropped, never stretched, so a job's images always have its width x height
(the Engine contract) and its stored parameters tell the truth. Init images and masks sent are fitted the same way.
"""

from __future__ import annotations

from collections.abc import Callable

from PIL import Image, ImageOps

from studiolo.engines.base import CancelCheck, GeneratedImage, GenerationCanceled, GenerationRequest, StepCallback


def fit(image: Image.Image, width: int, height: int, mode: str = "RGB") -> Image.Image:
    """``image`` in ``mode`` at exactly ``width`` x ``height`` (scaled to cover, centre-cropped if shaped otherwise)."""
    converted = image if image.mode == mode else image.convert(mode)
    if converted.size == (width, height):
        return converted
    return ImageOps.fit(converted, (width, height), Image.Resampling.LANCZOS)


def one_call_per_seed(
    request: GenerationRequest,
    on_step: StepCallback,
    should_cancel: CancelCheck,
    price: float,
    call: Callable[[int], Image.Image],
) -> list[GeneratedImage]:
    """``call(seed)`` for each seed in order (a cancel is honoured between calls); progress counts the calls."""
    out: list[GeneratedImage] = []
    on_step(0, request.n)
    for k, seed in enumerate(request.seeds):
        if k and should_cancel():
            raise GenerationCanceled()
        out.append(GeneratedImage(fit(call(seed), request.width, request.height), seed, cost=price))
        on_step(k + 1, request.n)
    return out
