"""What adapters cost on a loaded model (issue 19), on a full-size SD-Turbo architecture with random weights.

Runs Studiolo's diffusers engine in-process (the model loaded once, as a worker holds it) at 512x512, 1 step,
guidance 0, CPU fp32, and prints:
- a plain image (the baseline of every ratio below);
- a LoRA's first use on the loaded model (its file read and its layers injected), and then jobs that switch between
  two loaded LoRAs every time: what a switch adds, as a share of one plain image (target <= 10 %), with a check
  that the base was never reloaded;
- the bytes each loaded LoRA adds (the engine's own count, and the process RSS);
- a job with one ControlNet unit (canny, strength 1): its time relative to the plain job (expected ~1.3-1.5x on
  SD 1.5-class UNets), and the ControlNet's bytes.
Random weights cost exactly what trained ones do (same architecture, same shapes); the LoRAs are rank 16 on every
attention projection of the UNet (a common trained size), written as kohya .safetensors files as users download
them. Runs alternate so machine drift hits every variant alike. ``--tiny`` builds the same classes shrunk to a few
MB (what tests/e2e/test_bench.py runs: its figures measure nothing but that the script runs).

    python -m bench.adapters [--runs 3] [--cache /tmp/studiolo-bench] [--tiny --size 64]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from bench._architectures import build_sd_turbo_architecture
from bench._server import rss_mb
from bench.overhead import PROMPT

LORA_RANK = 16


def write_kohya_lora(unet: Any, path: Path, seed: int, rank: int = LORA_RANK) -> None:
    """A random LoRA on every attention projection of ``unet``, in kohya's key layout (``lora_unet_<module path with
    '_'>.lora_down.weight`` / ``lora_up.weight`` / ``alpha``)."""
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for name, module in unet.named_modules():
        if not isinstance(module, torch.nn.Linear) or not name.endswith((".to_q", ".to_k", ".to_v", ".to_out.0")):
            continue
        key = "lora_unet_" + name.replace(".", "_")
        tensors[f"{key}.lora_down.weight"] = torch.randn(rank, module.in_features, generator=gen) * 0.05
        tensors[f"{key}.lora_up.weight"] = torch.randn(module.out_features, rank, generator=gen) * 0.05
        tensors[f"{key}.alpha"] = torch.tensor(float(rank))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))


def write_controlnet(unet: Any, dest: Path, tiny: bool = False) -> Path:
    """A ControlNet shaped from ``unet`` (as trained ones are); its zero convolutions get random weights so it acts."""
    import torch
    from diffusers import ControlNetModel

    if (dest / "config.json").exists():
        return dest
    torch.manual_seed(1)
    # The tiny VAE shrinks pictures 2x, not 8x: the map's embedding then has one downsampling, not three.
    net = (
        ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32))
        if tiny
        else ControlNetModel.from_unet(unet)
    )
    with torch.no_grad():
        for block in [*net.controlnet_down_blocks, net.controlnet_mid_block]:
            block.weight.normal_(0, 0.02)
    tmp = dest.with_name(dest.name + ".tmp")
    net.save_pretrained(tmp, safe_serialization=True)
    tmp.rename(dest)
    return dest


def edge_picture(side: int) -> Image.Image:
    image = Image.new("RGB", (side, side), "white")
    draw = ImageDraw.Draw(image)
    draw.ellipse((side // 6, side // 6, side * 5 // 6, side * 5 // 6), outline="black", width=max(1, side // 64))
    draw.rectangle((side // 3, side // 3, side * 2 // 3, side * 2 // 3), fill="gray")
    return image


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "studiolo-bench")
    ap.add_argument("--tiny", action="store_true", help="a few-MB pipeline of the same classes (a smoke run)")
    ap.add_argument("--size", type=int, default=512, help="image side in pixels")
    args = ap.parse_args()

    import torch
    from diffusers import UNet2DConditionModel

    from studiolo.engines.base import AdapterRef, ControlSpec, GenerationRequest, LoraSpec, ModelRef
    from studiolo.engines.diffusers_engine import DiffusersEngine

    t = time.perf_counter()
    name = "sd-turbo-architecture-tiny" if args.tiny else "sd-turbo-architecture"
    model_dir = build_sd_turbo_architecture(args.cache / name, tiny=args.tiny)
    unet = UNet2DConditionModel.from_pretrained(model_dir / "unet", local_files_only=True)
    loras = []
    for i in (1, 2):
        path = args.cache / f"{name}-lora-{i}.safetensors"
        if not path.exists():
            write_kohya_lora(unet, path, seed=i)
        loras.append(AdapterRef(id=f"lora-{i}", kind="lora", path=path, format="kohya"))
    controlnet_dir = write_controlnet(unet, args.cache / f"{name}-controlnet", tiny=args.tiny)
    del unet
    print(f"model, LoRA and ControlNet files ready in {time.perf_counter() - t:.0f} s under {args.cache}")
    side = args.size
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU fp32, {side}x{side}, 1 step, guidance 0"
        + (" (--tiny: a few-MB model, not SD-Turbo's cost)" if args.tiny else "")
    )

    engine = DiffusersEngine(device="cpu")
    model = ModelRef(id="sd-turbo-arch", engine="diffusers", source="folder", path=model_dir, arch="sd21")
    loads = 0
    real_load = engine._load_entry

    def counting_load(ref: ModelRef) -> Any:
        nonlocal loads
        loads += 1
        return real_load(ref)

    engine._load_entry = counting_load  # type: ignore[method-assign,assignment]
    t = time.perf_counter()
    engine.load(model)
    print(f"model load: {time.perf_counter() - t:.1f} s")
    canny = ControlSpec(
        adapter=AdapterRef(id="controlnet-canny", kind="controlnet", path=controlnet_dir, format="diffusers"),
        type="canny",
        image=edge_picture(side),
    )

    def job(seed: int, **adapters: Any) -> tuple[float, np.ndarray]:
        request = GenerationRequest(
            model=model, prompt=PROMPT, seeds=[seed], width=side, height=side, steps=1, guidance=0.0, **adapters
        )
        t = time.perf_counter()
        arrays = engine.generate_arrays(request, lambda *a, **k: None, lambda: False)
        return time.perf_counter() - t, arrays[0][1]

    def entry_bytes(module: str) -> int:
        entry = engine._cache[model.id]
        return int(entry.extra_bytes.get(module, 0))

    _, base_image = job(7)  # warm-up: the first call pays one-time costs (not timed)
    pid = os.getpid()
    rss0 = rss_mb(pid)
    t = time.perf_counter()
    job(7, loras=[LoraSpec(loras[0], 1.0)])
    first_a = time.perf_counter() - t
    rss1 = rss_mb(pid)
    bytes1 = entry_bytes("lora")
    job(7, loras=[LoraSpec(loras[1], 1.0)])
    rss2 = rss_mb(pid)
    bytes2 = entry_bytes("lora")
    _, again = job(7)
    same = bool(np.array_equal(again, base_image))
    print(f"first use of a LoRA on the loaded model (file read, layers injected, one image): {first_a:.2f} s")
    print(
        f"bytes per loaded LoRA: engine count {bytes1 / 2**20:.1f} MB, then {(bytes2 - bytes1) / 2**20:.1f} MB; "
        f"process RSS +{rss1 - rss0:.0f} MB, +{rss2 - rss1:.0f} MB"
    )
    print(f"a job without LoRA after LoRA jobs draws the base picture exactly: {same}")

    plain, switching, control = [], [], []
    for i in range(args.runs):
        plain.append(job(100 + i)[0])
        # Every LoRA job here uses the other LoRA than the job before: each one is a switch.
        switching.append(job(100 + i, loras=[LoraSpec(loras[i % 2], 1.0)])[0])
        switching.append(job(100 + i, loras=[LoraSpec(loras[(i + 1) % 2], 0.8)])[0])
        control.append(job(100 + i, controls=[canny])[0])
        print(
            f"run {i + 1}: plain {plain[-1]:.2f} s   LoRA switches {switching[-2]:.2f} s, {switching[-1]:.2f} s   "
            f"ControlNet {control[-1]:.2f} s"
        )
    mp, ms, mc = statistics.median(plain), statistics.median(switching), statistics.median(control)
    print(
        f"switching between two loaded LoRAs adds {ms - mp:+.2f} s = {(ms - mp) / mp * 100:+.1f}% of one {side}x{side} "
        "image (target <= 10%)"
    )
    print(f"base model loads during the run: {loads} (1 = the LoRAs never reloaded it)")
    print(
        f"one ControlNet unit: {mc:.2f} s vs plain {mp:.2f} s = {mc / mp:.2f}x "
        f"(ControlNet weights {entry_bytes('controlnet') / 2**20:.0f} MB)"
    )


if __name__ == "__main__":
    main()
