"""What a live preview costs: making the picture, encoding it as the SSE data URL, and its size.

For the demo model (its x0 estimate, real weights, a 512x512 job at step 12 of 25: half of
--steps) and for the diffusers latent map on SD (64x64 latents of a 512x512 image) and SDXL (128x128 of
1024x1024). Latents are random normal (the first steps of a run); later, smoother latents encode smaller.
Medians of --runs after one warm-up (the first WebP encode of a process also loads the codec).

    python -m bench.previews [--runs 20] [--steps 25]
"""

from __future__ import annotations

import argparse
import base64
import statistics
import time
from collections.abc import Callable

from PIL import Image

from studiolo.domain.generation.previews import preview_data_url
from studiolo.engines.base import GenerationRequest, ModelRef, Preview
from studiolo.engines.demo.engine import DEMO_MODEL_ID, DemoEngine, weights_available


def _measure(name: str, make: Callable[[], Image.Image | None], runs: int) -> None:
    make_ms, encode_ms = [], []
    url = ""
    for _ in range(runs + 1):
        t0 = time.perf_counter()
        image = make()
        t1 = time.perf_counter()
        assert image is not None
        url = preview_data_url(image)
        make_ms.append((t1 - t0) * 1000)
        encode_ms.append((time.perf_counter() - t1) * 1000)
    size = len(base64.b64decode(url.partition(",")[2]))
    print(
        f"{name:34s} make {statistics.median(make_ms[1:]):6.2f} ms  encode {statistics.median(encode_ms[1:]):6.2f} ms"
        f"  {size:6d} bytes WebP  {len(url):6d} chars in the event"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=25, help="steps of the demo job (its preview: the middle one)")
    args = parser.parse_args()
    middle = max(1, args.steps // 2)
    import torch

    from studiolo.engines.latent_preview import latent_preview

    torch.manual_seed(0)
    sd, xl = torch.randn(1, 4, 64, 64), torch.randn(1, 4, 128, 128)
    _measure("diffusers SD 512 (64x64 latents)", lambda: latent_preview(sd, sdxl=False), args.runs)
    _measure("diffusers SDXL 1024 (128x128)", lambda: latent_preview(xl, sdxl=True), args.runs)
    if weights_available():

        def on_step(step: int, total: int, preview: Preview | None = None, image: int = 0) -> None:
            if step == middle and preview is not None:
                name = f"demo 512x512, step {middle} of {total}"
                _measure(name, lambda: preview() if callable(preview) else preview, args.runs)

        request = GenerationRequest(
            model=ModelRef(id=DEMO_MODEL_ID, engine="demo", source="builtin"),
            prompt="a lighthouse by the sea at dusk",
            seeds=[7],
            steps=args.steps,
        )
        DemoEngine().generate(request, on_step, lambda: False)


if __name__ == "__main__":
    main()
