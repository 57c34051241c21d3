"""Live previews of Stable Diffusion latents without the VAE: a fixed linear map from latent channels to RGB.

Decoding with the VAE would cost about as much as a denoising step; this map costs well under a millisecond
at the latent size (1/8 of the image). The factors are the widely used least-squares fits between
4-channel latents and the decoded colours (as published in ComfyUI's ``comfy/latent_formats.py``, classes
SD15 and SDXL): SD 1.x and 2.x share one VAE, SDXL has its own. Only the diffusers engine imports this.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

# Rows: latent channels 1-4; columns: R, G, B.
SD_FACTORS = (
    (0.3512, 0.2297, 0.3227),
    (0.3250, 0.4974, 0.2350),
    (-0.2829, 0.1762, 0.2721),
    (-0.2120, -0.2616, -0.7177),
)
SD_BIAS = (0.0, 0.0, 0.0)
SDXL_FACTORS = (
    (0.3651, 0.4232, 0.4341),
    (-0.2533, -0.0042, 0.1068),
    (0.1076, 0.1111, -0.0362),
    (-0.3165, -0.2492, -0.2188),
)
SDXL_BIAS = (0.1084, -0.0175, -0.0011)


def is_sdxl(pipeline: Any) -> bool:
    """SDXL pipelines (txt2img, img2img, inpaint) all carry "XL" in their class name."""
    return "XL" in type(pipeline).__name__


def latent_preview(latents: Any, *, sdxl: bool) -> Image.Image | None:
    """The first latent of a (B, 4, h, w) batch as an RGB picture of w x h pixels; None for other layouts
    (16-channel SD3/Flux latents, video), whose factors we do not have."""
    if getattr(latents, "ndim", 0) != 4 or latents.shape[1] != len(SD_FACTORS):
        return None
    factors, bias = (SDXL_FACTORS, SDXL_BIAS) if sdxl else (SD_FACTORS, SD_BIAS)
    # To the CPU first: one (4, h, w) copy is cheaper than moving the factors to the GPU and back.
    first = latents[0].detach().float().cpu().numpy()
    rgb = np.einsum("chw,cr->hwr", first, np.asarray(factors, dtype=np.float32)) + np.asarray(bias, np.float32)
    pixels = ((rgb + 1.0) * 127.5).clip(0, 255).round().astype(np.uint8)
    return Image.fromarray(pixels, "RGB")
