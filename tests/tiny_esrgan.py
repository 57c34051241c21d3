"""Tiny random ESRGAN-family upscaler files (.safetensors), written with the tensor names and shapes of the files
users download, independently of the engine's own module definitions: RRDBNet in the original ESRGAN layout
(``model.1.sub.N.RDB1.conv1.0.weight``) and in Real-ESRGAN's (``body.N.rdb1.conv1.weight``), x4 or x2
(pixel-unshuffled input, like RealESRGAN_x2plus), and SRVGGNetCompact (``body.N`` convs and PReLUs)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import save_file


def _conv(
    state: dict[str, torch.Tensor], name: str, cin: int, cout: int, g: torch.Generator, bias: float = 0.0
) -> None:
    # Weights scaled to the fan-in keep the signal's spread through the layers, so the random net's picture
    # varies with its input (a mid-grey bias on the last conv keeps it off the clamp at 0).
    state[f"{name}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * (1.0 / (cin * 9) ** 0.5)
    state[f"{name}.bias"] = torch.randn(cout, generator=g) * 0.01 + bias


def rrdb_state(scale: int = 4, nf: int = 8, nb: int = 1, gc: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """Real-ESRGAN's RRDBNet keys: x4 has 3 input channels, x2 12 (pixel-unshuffle 2), x1 48 (unshuffle 4)."""
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    _conv(state, "conv_first", 3 * {4: 1, 2: 4, 1: 16}[scale], nf, g)
    for b in range(nb):
        for r in (1, 2, 3):
            for j in range(1, 6):
                _conv(state, f"body.{b}.rdb{r}.conv{j}", nf + (j - 1) * gc, gc if j < 5 else nf, g)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        _conv(state, name, nf, nf, g)
    _conv(state, "conv_last", nf, 3, g, bias=0.5)
    return state


def to_old_layout(state: dict[str, torch.Tensor], nb: int = 1) -> dict[str, torch.Tensor]:
    """The same tensors under the original ESRGAN names (model.0, model.1.sub.N.RDBk.convj.0, model.3/6/8/10)."""
    prefixes = {
        "conv_first.": "model.0.",
        "conv_body.": f"model.1.sub.{nb}.",
        "conv_up1.": "model.3.",
        "conv_up2.": "model.6.",
        "conv_hr.": "model.8.",
        "conv_last.": "model.10.",
    }
    old: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key.startswith("body."):
            _body, b, rdb, conv, kind = key.split(".")
            old[f"model.1.sub.{b}.{rdb.upper()}.{conv}.0.{kind}"] = tensor
        else:
            prefix = next(p for p in prefixes if key.startswith(p))
            old[prefixes[prefix] + key[len(prefix) :]] = tensor
    return old


def make_rrdb(
    path: Path, *, scale: int = 4, layout: Literal["esrgan", "real-esrgan"] = "real-esrgan", seed: int = 0, nb: int = 1
) -> Path:
    state = rrdb_state(scale, nb=nb, seed=seed)
    if layout == "esrgan":
        state = to_old_layout(state, nb)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def compact_state(scale: int = 4, nf: int = 8, num_conv: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    _conv(state, "body.0", 3, nf, g)
    for i in range(num_conv + 1):
        state[f"body.{2 * i + 1}.weight"] = torch.full((nf,), 0.25)  # PReLU, PyTorch's initial slope
        if i < num_conv:
            _conv(state, f"body.{2 * i + 2}", nf, nf, g)
    _conv(state, f"body.{2 * num_conv + 2}", nf, 3 * scale * scale, g)
    return state


def make_compact(path: Path, *, scale: int = 4, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(compact_state(scale, seed=seed), str(path))
    return path
