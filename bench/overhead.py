"""Studiolo's overhead over a raw diffusers call, on a full-size SD-Turbo architecture with random weights.

(a) ``StableDiffusionPipeline(...)`` called directly, model loaded, 512x512, 1 step, guidance 0, CPU fp32;
(b) the same parameters submitted to a real ``studiolo serve`` over HTTP, timed until the job is
    ``succeeded`` (image encoded, thumbnails made, files and rows stored), model loaded.
Runs alternate a, b, a, b ... so machine drift hits both; prints each run, the medians and b/a
(target <= 1.05). Random weights cost exactly what the real SD-Turbo costs (same architecture); the
weights are built once and cached under --cache (about 5 GB fp32). ``--tiny`` builds the same pipeline
shrunk to a few MB instead (its figures measure nothing but that the script runs: tests/e2e/test_bench.py).

    python -m bench.overhead [--runs 3] [--cache /tmp/studiolo-bench] [--tiny --size 64]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from bench._server import ok, rss_mb, sign_in, studiolo_server

CONFIGS = Path(__file__).resolve().parents[1] / "src" / "studiolo" / "engines" / "configs" / "sd21"
PROMPT = "a lighthouse at dusk, cinematic"


# The same pipeline classes shrunk to a few MB (--tiny): what the smoke test runs, in seconds.
TINY: dict[str, dict[str, Any]] = {
    "unet": {
        "block_out_channels": [32, 64],
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
        "attention_head_dim": [2, 4],
        "layers_per_block": 1,
        "cross_attention_dim": 32,
    },
    "vae": {
        "block_out_channels": [32, 64],
        "down_block_types": ["DownEncoderBlock2D"] * 2,
        "up_block_types": ["UpDecoderBlock2D"] * 2,
        "layers_per_block": 1,
    },
    "text_encoder": {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2},
}


def build_sd_turbo_architecture(dest: Path, tiny: bool = False) -> Path:
    """SD-Turbo = the SD 2.1-base architecture (865M UNet, OpenCLIP ViT-H text encoder, SD VAE)."""
    if (dest / "model_index.json").exists():
        return dest
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from studiolo.engines.diffusers_engine import clip_tokenizer_from_package

    def cfg(name: str) -> dict[str, Any]:
        values = {
            k: v for k, v in json.loads((CONFIGS / name / "config.json").read_text()).items() if not k.startswith("_")
        }
        return {**values, **(TINY.get(name, {}) if tiny else {})}

    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config({**cfg("unet"), "sample_size": 64})  # 512 px base, as SD-Turbo
    vae = AutoencoderKL.from_config(cfg("vae"))
    text_encoder = CLIPTextModel(CLIPTextConfig(**cfg("text_encoder")))
    tokenizer_cfg = json.loads((CONFIGS / "tokenizer" / "tokenizer_config.json").read_text())
    tokenizer = clip_tokenizer_from_package(tokenizer_cfg)
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="trailing"
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    tmp = dest.with_name(dest.name + ".tmp")
    pipe.save_pretrained(tmp, safe_serialization=True)
    tmp.rename(dest)
    return dest


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "studiolo-bench")
    ap.add_argument("--tiny", action="store_true", help="a few-MB pipeline of the same classes (a smoke run)")
    ap.add_argument("--size", type=int, default=512, help="image side in pixels")
    args = ap.parse_args()

    import torch
    from diffusers import StableDiffusionPipeline

    t = time.perf_counter()
    name = "sd-turbo-architecture-tiny" if args.tiny else "sd-turbo-architecture"
    model_dir = build_sd_turbo_architecture(args.cache / name, tiny=args.tiny)
    print(f"model folder ready in {time.perf_counter() - t:.0f} s: {model_dir}")
    side = args.size
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU fp32, {side}x{side}, 1 step, guidance 0"
        + (" (--tiny: a few-MB model, not SD-Turbo's cost)" if args.tiny else "")
    )

    raw = StableDiffusionPipeline.from_pretrained(model_dir, local_files_only=True)
    raw.set_progress_bar_config(disable=True)

    def run_raw(seed: int) -> tuple[float, np.ndarray]:
        t = time.perf_counter()
        with torch.inference_mode():
            out = raw(
                PROMPT,
                num_inference_steps=1,
                guidance_scale=0.0,
                height=side,
                width=side,
                generator=torch.Generator("cpu").manual_seed(seed),
                output_type="np",
            )
        return time.perf_counter() - t, out.images[0]

    # fp32 as loaded on both sides: this measures what Studiolo adds around the same computation (the accelerated
    # CPU path, which changes the computation, is bench/cpu.py's subject).
    with tempfile.TemporaryDirectory() as tmp, studiolo_server(Path(tmp), cpu_accel="off") as (base, proc):
        env = {"STUDIOLO_DATA_DIR": tmp}
        # Accounts came after this script: without signing in every request got 401 (issue 13).
        headers = sign_in(base, Path(tmp))
        subprocess.run(
            [
                sys.executable,
                "-m",
                "studiolo",
                "models",
                "import",
                str(model_dir),
                "--id",
                "sd-turbo-arch",
                "--link",
                "--default",
            ],
            check=True,
            env={**os.environ, **env},
        )
        body = {"prompt": PROMPT, "size": f"{side}x{side}", "steps": 1, "guidance": 0.0, "model": "sd-turbo-arch"}
        with httpx.Client(base_url=base, timeout=600, headers=headers) as client:

            def run_job(seed: int) -> tuple[float, dict[str, float], np.ndarray]:
                """Submit, follow the job's event stream (as the web studio does) to the end, fetch the PNG."""
                t = time.perf_counter()
                job = ok(client.post("/api/v1/generations", json={**body, "seed": seed}))
                with client.stream("GET", job["urls"]["events"]) as events:
                    events.raise_for_status()
                    for line in events.iter_lines():
                        if line.startswith("event: ") and line[7:] in ("succeeded", "failed", "canceled"):
                            break
                elapsed = time.perf_counter() - t
                view = ok(client.get(job["urls"]["get"]))
                if view["status"] != "succeeded":
                    raise RuntimeError(f"job {view['status']}: {view.get('error')}")
                png = client.get(view["outputs"][0]["url"])
                png.raise_for_status()
                return elapsed, view["timings"], np.asarray(Image.open(io.BytesIO(png.content)).convert("RGB"))

            # Warm-up: loads the model in both places (not timed) and checks they draw the same picture.
            _, raw_img = run_raw(1)
            _, _, job_img = run_job(1)
            raw_u8 = (raw_img * 255).round().clip(0, 255).astype(np.uint8)
            diff = np.abs(raw_u8.astype(int) - job_img.astype(int)).max()
            print(f"same seed, raw vs Studiolo: max pixel difference {diff}")
            print(f"server RSS with the model loaded: {rss_mb(proc.pid):.0f} MB")
            a, b, added = [], [], []
            for i in range(args.runs):
                ta, _ = run_raw(100 + i)
                tb, timings, _ = run_job(100 + i)
                a.append(ta)
                b.append(tb)
                # Everything but the engine's own pipeline call: HTTP, queue, PNG + thumbnails, files, rows.
                added.append(tb - timings["generate"])
                print(
                    f"run {i + 1}: raw {ta:6.2f} s   job over HTTP {tb:6.2f} s   ratio {tb / ta:.3f}   "
                    f"(pipeline call inside the job {timings['generate']:.2f} s, "
                    f"Studiolo's own share {added[-1] * 1000:.0f} ms: "
                    f"queue wait {timings['queue_wait'] * 1000:.1f} ms, store {timings['store'] * 1000:.0f} ms)"
                )
    ma, mb = statistics.median(a), statistics.median(b)
    print(
        f"Studiolo's own time per job (job wall time minus its pipeline call): median "
        f"{statistics.median(added) * 1000:.0f} ms = {statistics.median(added) / ma * 100:.2f}% of a raw call"
    )
    print(
        f"median raw {ma:.2f} s, median job {mb:.2f} s, overhead {mb - ma:+.2f} s, "
        f"ratio b/a {mb / ma:.3f} (target <= 1.05)"
    )


if __name__ == "__main__":
    main()
