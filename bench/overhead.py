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
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from bench._architectures import build_sd_turbo_architecture, call_pipeline
from bench._server import ok, rss_mb, sign_in, studiolo_server

PROMPT = "a lighthouse at dusk, cinematic"


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
        return call_pipeline(raw, side, seed, PROMPT)

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
