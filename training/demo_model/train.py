"""Train Studiolo's demo model on freshly rendered batches of the procedural world, and export its weights.

    python -m training.demo_model.train --out /tmp/studiolo-demo-train            # start
    python -m training.demo_model.train --out /tmp/studiolo-demo-train --resume   # continue from checkpoint
    python -m training.demo_model.train --out /tmp/studiolo-demo-train --export   # EMA -> package weights

Nothing is stored but the checkpoint: every batch is rendered on the fly (about 1 ms a picture), so the
model never sees the same picture twice and the held-out combinations (captions.is_held_out) never at all.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from studiolo.engines.demo.model import DemoConfig, DemoModel, parameter_count
from training.demo_model.captions import caption, training_scene, vocabulary
from training.demo_model.world import render

PACKAGE_WEIGHTS = Path(__file__).resolve().parents[2] / "src/studiolo/engines/demo/weights"
WEIGHTS_NAME = "studiolo-demo"
CAPTION_DROPOUT = 0.1  # how often the caption is emptied: teaches the unconditional branch CFG needs


def batch(rng: np.random.Generator, size: int, tokenizer: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Images in [-1, 1] (B, 3, 64, 64) and token ids (B, T) of a fresh training batch."""
    images, ids = [], []
    for _ in range(size):
        scene = training_scene(rng)
        images.append(render(scene, int(rng.integers(2**31))))
        text = "" if rng.random() < CAPTION_DROPOUT else caption(scene, rng)
        ids.append(tokenizer.encode(text))
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return pixels, torch.tensor(ids, dtype=torch.long)


def flow_loss(model: DemoModel, x0: torch.Tensor, ids: torch.Tensor, bf16: bool) -> torch.Tensor:
    """Rectified-flow loss with logit-normal times (more weight on the middle, where structure is decided)."""
    noise = torch.randn_like(x0)
    t = torch.sigmoid(torch.randn(x0.shape[0]))
    xt = (1 - t)[:, None, None, None] * x0 + t[:, None, None, None] * noise
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        v = model(xt, t, ids)
    return F.mse_loss(v.float(), noise - x0)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write atomically (temp file + rename): a kill mid-write must not destroy the last good checkpoint."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def export(checkpoint: Path, target_dir: Path) -> Path:
    """EMA weights as fp16 safetensors + the JSON config (vocab, architecture) the engine loads."""
    from safetensors.torch import save_file

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    target_dir.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in state["ema"].items()}
    weights = target_dir / f"{WEIGHTS_NAME}.safetensors"
    save_file(tensors, str(weights), metadata={"step": str(state["step"])})
    weights.chmod(0o644)  # safetensors writes 0600; a file shipped in the package must be world-readable
    config = dict(state["config"])
    config["trained_steps"] = state["step"]
    (target_dir / f"{WEIGHTS_NAME}.json").write_text(json.dumps(config, indent=1) + "\n")
    return weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/studiolo-demo-train"))
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--export", action="store_true", help="export the checkpoint's EMA weights and exit")
    parser.add_argument("--export-dir", type=Path, default=PACKAGE_WEIGHTS)
    parser.add_argument(
        "--init-from",
        type=Path,
        help="start from exported weights (e.g. the packaged .safetensors) instead of random ones; fresh optimizer",
    )
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=4e-4)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument(
        "--anneal-steps",
        type=int,
        default=0,
        help="decay the learning rate linearly to --lr-end over this many steps from where this run starts",
    )
    parser.add_argument("--lr-end", type=float, default=4e-5)
    parser.add_argument("--max-steps", type=int, default=1_000_000)
    parser.add_argument("--max-minutes", type=float, default=1e9)
    parser.add_argument("--checkpoint-minutes", type=float, default=4.0)
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fp32", action="store_true", help="no bf16 autocast (bf16 measured 1.5-2x faster here)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    checkpoint = args.out / "checkpoint.pt"
    if args.export:
        print(f"exported {export(checkpoint, args.export_dir)}")
        return

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    config = DemoConfig(vocab=vocabulary())
    model = DemoModel(config)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.99))
    step, seconds = 0, 0.0
    warmup_from = 0
    if args.resume and checkpoint.exists():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        config = DemoConfig.from_dict(state["config"])
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        step, seconds = state["step"], state.get("seconds", 0.0)
        torch.set_rng_state(state["torch_rng"])
        print(f"resumed at step {step} ({seconds / 60:.1f} min trained)", flush=True)
    elif args.init_from:
        # Warm start from shipped weights: a new machine has no checkpoint, but the package has the EMA weights.
        from safetensors.torch import load_file

        config = DemoConfig.from_dict(json.loads(args.init_from.with_suffix(".json").read_text()))
        model = DemoModel(config)
        model.load_state_dict({k: v.float() for k, v in load_file(str(args.init_from)).items()})
        ema = copy.deepcopy(model).requires_grad_(False)
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.99))
        step = int(json.loads(args.init_from.with_suffix(".json").read_text()).get("trained_steps", 0))
        warmup_from = step  # a fresh optimizer needs its warm-up again
        print(f"initialised from {args.init_from} (step {step})", flush=True)
    tokenizer = config.tokenizer()
    print(f"parameters {parameter_count(model):,} (text encoder {parameter_count(model.text):,})", flush=True)
    rng = np.random.default_rng([args.seed, step])
    first_step = step
    last_save = time.monotonic()
    window_loss, window_steps, window_start = 0.0, 0, time.monotonic()
    started = time.monotonic()
    stop_requested = False

    def request_stop(signum: int, frame: object) -> None:
        # SIGTERM (kill PID) finishes the current step and saves, so stopping loses no training.
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, request_stop)

    def snapshot() -> dict[str, Any]:
        return {
            "model": model.state_dict(),
            "ema": ema.state_dict(),
            "opt": opt.state_dict(),
            "step": step,
            "seconds": seconds + time.monotonic() - window_start,
            "config": config.to_dict(),
            "torch_rng": torch.get_rng_state(),
        }

    while step < args.max_steps and not stop_requested and (time.monotonic() - started) / 60 < args.max_minutes:
        lr = args.lr * min(1.0, (step - warmup_from + 1) / args.warmup)
        if args.anneal_steps > 0:
            # A short final anneal (e.g. the last 20 minutes) gives a clearly cleaner model than a constant rate.
            done = min(1.0, (step - first_step) / args.anneal_steps)
            lr = lr + (args.lr_end - lr) * done
        for group in opt.param_groups:
            group["lr"] = lr
        x0, ids = batch(rng, args.batch, tokenizer)
        loss = flow_loss(model, x0, ids, bf16=not args.fp32)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        # EMA warm-up: a short run still gets an average over its own recent steps, not the random init.
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema.parameters(), model.parameters(), strict=True):
                e.lerp_(p, 1 - decay)
        window_loss += float(loss.detach())
        window_steps += 1
        if window_steps == 50:
            elapsed = time.monotonic() - window_start
            seconds += elapsed
            print(
                f"step {step} loss {window_loss / window_steps:.4f} lr {lr:.2e} "
                f"{window_steps / elapsed:.2f} steps/s total {seconds / 60:.1f} min",
                flush=True,
            )
            window_loss, window_steps, window_start = 0.0, 0, time.monotonic()
        if not math.isfinite(float(loss.detach())):
            raise SystemExit(f"loss is {float(loss.detach())} at step {step}; the last checkpoint is kept")
        if time.monotonic() - last_save > args.checkpoint_minutes * 60:
            save_checkpoint(checkpoint, snapshot())
            last_save = time.monotonic()
            print(f"checkpoint at step {step}", flush=True)
    save_checkpoint(checkpoint, snapshot())
    print(f"stopped at step {step}", flush=True)


if __name__ == "__main__":
    main()
