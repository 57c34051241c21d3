"""The quality gate: an accelerated path must draw what fp32 draws (issue 20).

For one fixed prompt and seed, one step, at a small size (``gate_side``), the path's picture is compared with the
fp32 pipeline's: PSNR over [0, 1] pixel values and the largest absolute difference. A path under ``GATE_PSNR_DB``
is not chosen automatically. The figures are kept in the model's cache entry (``gate.json``), so the fp32 reference
runs once per model version, not at every load.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

GATE_PSNR_DB = 30.0
GATE_PROMPT = "a lighthouse on a cliff at dusk, oil painting"
GATE_SEED = 20
GATE_FILE = "gate.json"
# Big enough to exercise every block at a realistic shape, small enough to cost a few seconds in fp32.
GATE_MAX_SIDE = 256


@dataclass(frozen=True)
class GateResult:
    psnr_db: float  # inf when identical
    max_abs: float  # largest per-pixel difference, in [0, 1] units
    side: int

    @property
    def passed(self) -> bool:
        return self.psnr_db >= GATE_PSNR_DB

    def describe(self) -> str:
        psnr = "identical" if math.isinf(self.psnr_db) else f"PSNR {self.psnr_db:.1f} dB"
        return f"{psnr}, max abs {self.max_abs:.4f} vs fp32 at {self.side}x{self.side}"


def gate_side(base: Any) -> int:
    """The gate's picture side: the model's native size, capped at ``GATE_MAX_SIDE``, with a latent side that the
    UNet divides evenly (what every accelerated path covers)."""
    from studiolo.engines.accel.openvino_modules import unet_size_factor

    scale = 2 ** (len(base.vae.config.block_out_channels) - 1)
    native = int(base.unet.config.sample_size) * scale
    unit = unet_size_factor(base.unet) * scale
    return int(max(unit, min(native, GATE_MAX_SIDE) // unit * unit))


def render(base: Any, side: int) -> Any:
    """The gate's picture from ``base`` as it is now (float32 HxWx3 in [0, 1])."""
    import torch

    with torch.inference_mode():
        out = base(
            GATE_PROMPT,
            num_inference_steps=1,
            guidance_scale=0.0,
            height=side,
            width=side,
            generator=torch.Generator("cpu").manual_seed(GATE_SEED),
            output_type="np",
        )
    return out.images[0]


def compare(reference: Any, image: Any, side: int) -> GateResult:
    import numpy as np

    diff = np.asarray(image, dtype=np.float64) - np.asarray(reference, dtype=np.float64)
    mse = float(np.mean(diff**2))
    psnr = math.inf if mse == 0 else 10 * math.log10(1.0 / mse)
    return GateResult(psnr_db=psnr, max_abs=float(np.abs(diff).max()), side=side)


def read_results(folder: Path) -> dict[str, GateResult]:
    """The gate figures stored in a cache entry (none if missing or unreadable: they are then measured again)."""
    try:
        raw = json.loads((folder / GATE_FILE).read_text(encoding="utf-8"))
        return {path: GateResult(**figures) for path, figures in raw.items()}
    except (OSError, ValueError, TypeError):
        return {}


def write_results(folder: Path, results: dict[str, GateResult]) -> None:
    tmp = folder / f".{GATE_FILE}.{os.getpid()}"
    # json cannot write inf; an identical picture is stored as a huge PSNR instead.
    data = {path: {**asdict(r), "psnr_db": min(r.psnr_db, 1e9)} for path, r in results.items()}
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, folder / GATE_FILE)
