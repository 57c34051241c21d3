"""Studiolo on a CUDA GPU vs raw diffusers, on full-size architectures with random weights (issue 20).

SDXL at 1024x1024, 30 steps, guidance 5 (CFG: the UNet runs on 2 latents per image), and SD-Turbo at 512x512,
1 step, guidance 0. For each: (a) the diffusers pipeline as people run it (``from_pretrained(..., fp16)``,
``.to("cuda")``, called directly) and (b) Studiolo's ``DiffusersEngine(device="cuda").generate()`` with the same
parameters, in the same process, runs alternating a, b, a, b ... Prints seconds/image, images/s and the share of
the GPU's dense fp16/bf16 tensor peak that the FLOPs of one image (counted exactly with torch's FlopCounterMode
over one pipeline call: text encoders + every UNet step + VAE decode) come to at that speed. ``--batch B``
also times SD-Turbo with B images per call (B seeds in one request); ``--compile`` adds Studiolo with
``gpu_compile="max-autotune"`` for SD-Turbo (it compiles for minutes). Random weights cost exactly what the
real models cost (same architectures); they are built once under --cache (SDXL about 7 GB in fp16, SD-Turbo
about 5 GB in fp32, shared with bench/overhead.py).

Without CUDA it stops (status 2), unless ``--tiny``: then the same code runs on the CPU with pipelines of the
same classes shrunk to a few MB, whose figures measure nothing but that the script runs (tests/e2e/test_bench.py).

    python -m bench.gpu [--cache DIR] [--runs 3] [--batch 8] [--only sdxl|turbo] [--compile] [--tiny]
"""

from __future__ import annotations

import argparse
import gc
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from bench._architectures import build_sd_turbo_architecture, build_sdxl_architecture
from bench.overhead import PROMPT

NO_GPU = "bench/gpu.py needs a CUDA GPU; this machine has none (--tiny runs its logic on the CPU, figures meaningless)"
TARGET_SDXL_PEAK_PERCENT = 50.0
TARGET_TURBO_IMAGES_PER_S = 40.0
RAW = "raw diffusers"
STUDIOLO = "Studiolo"
COMPILED = "Studiolo max-autotune"

# Dense (no sparsity) fp16/bf16 tensor-core peaks with fp32 accumulation, TFLOP/s, from the vendors' data sheets,
# as (words the name must hold, words it must not hold, peak); matched on the words of torch's device name so
# "L4" does not match an L40S, nor "H100" an H100 NVL (another peak: measured instead).
PEAK_TFLOPS: tuple[tuple[tuple[str, ...], tuple[str, ...], float], ...] = (
    (("h100", "pcie"), (), 756.0),
    (("h100",), ("nvl",), 989.4),  # SXM: "NVIDIA H100 80GB HBM3"
    (("h200",), ("nvl",), 989.4),
    (("a100",), (), 312.0),
    (("l4",), (), 121.0),
    (("rtx", "4090"), ("d",), 165.2),
)


@dataclass(frozen=True)
class Case:
    key: str  # the --only name
    label: str
    side: int
    steps: int
    guidance: float


@dataclass
class Row:
    case: Case
    variant: str
    batch: int
    seconds: float  # median time of one call (``batch`` images)
    flops_per_image: int
    peak: float  # FLOP/s

    @property
    def images_per_s(self) -> float:
        return self.batch / self.seconds

    @property
    def peak_percent(self) -> float:
        return self.flops_per_image * self.images_per_s / self.peak * 100


def table_peak(device_name: str) -> float | None:
    """The data-sheet peak (FLOP/s) for this GPU, or None for one not in PEAK_TFLOPS."""
    words = set(re.split(r"[\s\-_/]+", device_name.lower()))
    for needed, excluded, tflops in PEAK_TFLOPS:
        if words.issuperset(needed) and words.isdisjoint(excluded):
            return tflops * 1e12
    return None


def measured_matmul_peak(device: str, side: int, iterations: int, dtype_name: str = "bfloat16") -> float:
    """What a big matrix product achieves here (FLOP/s): the stand-in peak for an unlisted device."""
    import torch

    dtype = getattr(torch, dtype_name)
    a = torch.randn(side, side, device=device, dtype=dtype)
    b = torch.randn(side, side, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(iterations):
        a @ b
    _sync(device)
    return 2 * side**3 * iterations / (time.perf_counter() - start)


def count_flops(pipe: Any, case: Case, device: str) -> tuple[int, dict[str, int]]:
    """FLOPs of one image, one pipeline call (batch 1) counted op by op; and per component."""
    import torch
    from torch.utils import flop_counter

    def cpu_sdpa(query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
        return int(flop_counter.sdpa_flop_count(query, key, value))

    # torch counts the CUDA attention kernels (flash, memory-efficient, cuDNN) but not the CPU one (--tiny).
    extra = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_sdpa}
    with flop_counter.FlopCounterMode(display=False, custom_mapping=extra) as counter:
        call_raw(pipe, case, [0], device)
    counts = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items() if "." not in name}
    total = int(counter.get_total_flops())
    text = sum(v for k, v in counts.items() if k.startswith("CLIPTextModel"))
    unet = counts.get("UNet2DConditionModel", 0)
    return total, {"text encoders": text, "UNet": unet, "VAE decode": total - text - unet}


def call_raw(pipe: Any, case: Case, seeds: list[int], device: str) -> list[Any]:
    """One plain diffusers call for len(seeds) images (num_images_per_prompt, as people batch); PIL images."""
    import torch

    generators = [torch.Generator(device).manual_seed(seed) for seed in seeds]
    with torch.inference_mode():
        out = pipe(
            PROMPT,
            num_inference_steps=case.steps,
            guidance_scale=case.guidance,
            height=case.side,
            width=case.side,
            num_images_per_prompt=len(seeds),
            generator=generators,
        )
    return list(out.images)


def call_engine(engine: Any, model: Any, case: Case, seeds: list[int]) -> list[Any]:
    """One Studiolo job of len(seeds) images, as the worker runs it; PIL images."""
    from studiolo.engines.base import GenerationRequest

    request = GenerationRequest(
        model=model,
        prompt=PROMPT,
        seeds=seeds,
        width=case.side,
        height=case.side,
        steps=case.steps,
        guidance=case.guidance,
    )
    return [g.image for g in engine.generate(request, lambda step, total, preview=None, image=0: None, lambda: False)]


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(device: str, call: Callable[[list[int]], list[Any]], seeds: list[int]) -> tuple[float, list[Any]]:
    _sync(device)
    start = time.perf_counter()
    images = call(seeds)
    _sync(device)  # PIL images are made on the host, but a stray queued kernel must not slip into the next run
    return time.perf_counter() - start, images


def _flops(n: float) -> str:
    return f"{n / 1e12:.2f} TFLOP" if n >= 1e11 else f"{n / 1e9:.3f} GFLOP"


def bench_model(
    case: Case, model_dir: Path, args: argparse.Namespace, device: str, peak: float, variants: list[str]
) -> list[Row]:
    """Load ``model_dir`` raw and in each Studiolo engine of ``variants``, count one image's FLOPs, time them."""
    import diffusers
    import torch

    from studiolo.engines.base import ModelRef
    from studiolo.engines.diffusers_engine import DiffusersEngine, _dtype_kwarg

    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    start = time.perf_counter()
    raw = diffusers.DiffusionPipeline.from_pretrained(model_dir, local_files_only=True, **_dtype_kwarg(dtype))
    raw.to(device)
    raw.set_progress_bar_config(disable=True)
    print(f"{case.label}: raw {type(raw).__name__} loaded in {time.perf_counter() - start:.1f} s ({dtype})")
    model = ModelRef(id=f"{case.key}-architecture", engine="diffusers", source="folder", path=model_dir)
    engines: dict[str, Any] = {}
    for variant in variants:
        engine = DiffusersEngine(
            device=device,
            memory_budget_bytes=64 * 2**30,  # never evict: each engine holds one model
            accel_cache_dir=args.cache / "accel",
            gpu_compile="max-autotune" if variant == COMPILED else "off",
        )
        start = time.perf_counter()
        engine.load(model)
        accel = engine._cache[model.id].accel
        print(f"{case.label}: {variant} loaded in {time.perf_counter() - start:.1f} s: {accel.describe()}")
        engines[variant] = engine

    calls: dict[str, Callable[[list[int]], list[Any]]] = {RAW: partial(call_raw, raw, case, device=device)}
    for variant, engine in engines.items():
        calls[variant] = partial(call_engine, engine, model, case)

    flops, parts = count_flops(raw, case, device)
    guidance = f"guidance {case.guidance:g}" + (" (CFG: UNet batch 2 per image)" if case.guidance > 1 else "")
    print(
        f"{case.label} {case.side}x{case.side}, {case.steps} step(s), {guidance}: one image = {_flops(flops)} ("
        + ", ".join(f"{name} {_flops(n)}" for name, n in parts.items())
        + ")"
    )
    batches = [1] + ([args.batch] if case.key == "turbo" and args.batch > 1 else [])
    rows: list[Row] = []
    for batch in batches:
        tag = f"{case.label} batch {batch}"
        first: dict[str, list[Any]] = {}
        for name, call in calls.items():  # first calls: CUDA kernels chosen, compilation (untimed)
            seconds, first[name] = _timed(device, call, list(range(1, batch + 1)))
            print(f"{tag}: {name} first call {seconds:.2f} s (warm-up, untimed)")
        reference = np.asarray(first[RAW][0], dtype=np.int16)
        for name in engines:
            diff = int(np.abs(reference - np.asarray(first[name][0], dtype=np.int16)).max())
            print(f"{tag}: same seed, raw vs {name}: max pixel difference {diff}")
        times: dict[str, list[float]] = {name: [] for name in calls}
        for run in range(args.runs):
            seeds = list(range(100 + run * batch, 100 + (run + 1) * batch))
            for name, call in calls.items():
                times[name].append(_timed(device, call, seeds)[0])
            print(f"{tag} run {run + 1}: " + "   ".join(f"{name} {t[-1]:.3f} s" for name, t in times.items()))
        rows += [Row(case, name, batch, statistics.median(t), flops, peak) for name, t in times.items()]
    return rows


def _target(row: Row) -> str:
    """The issue's targets, for Studiolo's rows: SDXL's share of peak; SD-Turbo's images/s when batched."""
    if row.variant == RAW:
        return ""
    if row.case.key == "sdxl":
        met = row.peak_percent >= TARGET_SDXL_PEAK_PERCENT
        return f">= {TARGET_SDXL_PEAK_PERCENT:g} % of peak: {'met' if met else 'not met'}"
    if row.batch > 1:
        met = row.images_per_s >= TARGET_TURBO_IMAGES_PER_S
        return f">= {TARGET_TURBO_IMAGES_PER_S:g} images/s: {'met' if met else 'not met'}"
    return ""


def print_results(rows: list[Row], runs: int, device_label: str, tiny: bool) -> None:
    print()
    note = " -- --tiny: few-MB models on the CPU, these figures measure nothing" if tiny else ""
    print(f"results, median of {runs} run(s), {device_label}{note}")
    print(f"{'model':<9} {'variant':<22} {'batch':>5} {'s/image':>9} {'images/s':>9} {'% of peak':>9}  target")
    for row in rows:
        print(
            f"{row.case.label:<9} {row.variant:<22} {row.batch:>5} {row.seconds / row.batch:>9.4f} "
            f"{row.images_per_s:>9.2f} {row.peak_percent:>8.2f}%  {_target(row)}".rstrip()
        )
    print("ratios, images/s of Studiolo / raw diffusers (above 1: Studiolo is faster):")
    raw = {(r.case.key, r.batch): r for r in rows if r.variant == RAW}
    for row in rows:
        if row.variant != RAW:
            base = raw[(row.case.key, row.batch)]
            print(f"  {row.case.label} batch {row.batch}, {row.variant}: {row.images_per_s / base.images_per_s:.3f}")
    singles = {(r.case.key, r.variant): r for r in rows if r.batch == 1}
    for row in rows:
        if row.batch > 1:
            alone = singles[(row.case.key, row.variant)]
            print(
                f"  {row.case.label} {row.variant}, batch {row.batch} / batch 1 images/s: "
                f"{row.images_per_s / alone.images_per_s:.2f}"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "studiolo-bench")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per variant (after one warm-up call each)")
    ap.add_argument("--batch", type=int, default=8, help="SD-Turbo images per call for the batched timing (1: none)")
    ap.add_argument("--only", choices=["sdxl", "turbo"], help="one model only")
    ap.add_argument("--compile", action="store_true", help="also SD-Turbo with gpu_compile=max-autotune (minutes)")
    ap.add_argument("--tiny", action="store_true", help="few-MB pipelines on the CPU: checks the script, no figures")
    args = ap.parse_args()

    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.tiny:
        print(NO_GPU, file=sys.stderr)
        sys.exit(2)
    device = "cpu" if args.tiny else "cuda"
    if device == "cuda":
        name = torch.cuda.get_device_name()
        listed = table_peak(name)
        peak = listed if listed is not None else measured_matmul_peak(device, 8192, 50)
        how = "dense fp16/bf16, data sheet" if listed is not None else "measured matmul peak, bf16 8192^3"
        device_label = f"{name}, peak {peak / 1e12:.1f} TFLOP/s ({how})"
        versions = f"CUDA {torch.version.cuda}, fp16 weights"
    else:
        # fp32, as the tiny models run (a CPU without bf16 arithmetic emulates it, slowly)
        peak = measured_matmul_peak(device, 256, 5, "float32")
        device_label = f"CPU, peak {peak / 1e12:.4f} TFLOP/s (measured matmul peak, fp32 256^3)"
        versions = f"{torch.get_num_threads()} threads, fp32"
    import diffusers

    print(f"{device_label}; torch {torch.__version__}, diffusers {diffusers.__version__}, {versions}")
    if args.tiny:
        print("--tiny: the same code on few-MB models of the same classes, on the CPU; the figures measure nothing")

    cases = {
        "sdxl": Case("sdxl", "SDXL", 1024, 30, 5.0),
        "turbo": Case("turbo", "SD-Turbo", 512, 1, 0.0),
    }
    if args.tiny:  # a smoke run in seconds on a small CPU: 32 px pictures, and 3 SDXL steps instead of 30
        cases = {
            "sdxl": Case("sdxl", "SDXL", 32, 3, 5.0),
            "turbo": Case("turbo", "SD-Turbo", 32, 1, 0.0),
        }
    suffix = "-tiny" if args.tiny else ""
    rows: list[Row] = []
    for key in [args.only] if args.only else ["sdxl", "turbo"]:
        start = time.perf_counter()
        if key == "sdxl":
            folder = build_sdxl_architecture(
                args.cache / f"sdxl-architecture-fp16{suffix}", args.tiny, device=device, half=True
            )
        else:
            with torch.device(device):  # random initialisation on the GPU: seconds instead of a minute
                folder = build_sd_turbo_architecture(args.cache / f"sd-turbo-architecture{suffix}", tiny=args.tiny)
        print(f"{cases[key].label} model folder ready in {time.perf_counter() - start:.0f} s: {folder}")
        variants = [STUDIOLO] + ([COMPILED] if key == "turbo" and args.compile else [])
        rows += bench_model(cases[key], folder, args, device, peak, variants)
        gc.collect()  # the model's pipelines, gone with bench_model's frame: free their GPU memory for the next
        if cuda:
            torch.cuda.empty_cache()
    print_results(rows, args.runs, device_label, args.tiny)


if __name__ == "__main__":
    main()
