"""Render the 40 held-out-combination prompts to a labelled contact sheet for the blind check.

    python -m training.demo_model.evaluate                                  # packaged weights -> docs/
    python -m training.demo_model.evaluate --checkpoint /tmp/studiolo-demo-train/checkpoint.pt --out /tmp/s.png

Each cell shows the sample (seed = its index) with the prompt under it; ``--truth`` adds the scene's
attributes as a second line, which the blind check leaves off until the images have been judged.
"""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from studiolo.engines.demo.engine import DEMO_WEIGHTS, config_path
from studiolo.engines.demo.model import DemoConfig, DemoModel, euler_sample
from training.demo_model.captions import evaluation_prompts
from training.demo_model.world import Scene

ROOT = Path(__file__).resolve().parents[2]
CELL, PAD, TEXT_H, COLUMNS = 160, 8, 44, 8


def load(checkpoint: Path | None) -> DemoModel:
    """The EMA weights of a training checkpoint, or the exported package weights."""
    if checkpoint is not None:
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        model = DemoModel(DemoConfig.from_dict(state["config"]))
        model.load_state_dict(state["ema"])
    else:
        from safetensors.torch import load_file

        model = DemoModel(DemoConfig.from_dict(json.loads(config_path(DEMO_WEIGHTS).read_text())))
        model.load_state_dict({k: v.float() for k, v in load_file(str(DEMO_WEIGHTS)).items()})
    return model.eval().requires_grad_(False)


def sample(model: DemoModel, prompts: list[str], steps: int, guidance: float, seed0: int = 0) -> list[Image.Image]:
    tokenizer = model.config.tokenizer()
    uncond = torch.tensor([tokenizer.encode("")])
    images = []
    for index, prompt in enumerate(prompts):
        noise = torch.randn((1, 3, 64, 64), generator=torch.Generator().manual_seed(seed0 + index))
        with torch.inference_mode():
            x = euler_sample(
                model, noise, torch.tensor([tokenizer.encode(prompt, drop_unknown=True)]), uncond, steps, guidance
            )
        assert x is not None
        pixels = ((x[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
        images.append(Image.fromarray(pixels, "RGB"))
    return images


def truth(scene: Scene) -> str:
    if scene.kind == "landscape":
        extra = f" {scene.color}" if scene.main == "house" else ""
        return f"[{scene.main}{extra} / {scene.setting} / {scene.time} / {scene.style}]"
    return f"[{scene.color} {scene.main} on {scene.background} / {scene.style}]"


def contact_sheet(images: list[Image.Image], labels: list[str]) -> Image.Image:
    rows = (len(images) + COLUMNS - 1) // COLUMNS
    sheet = Image.new("RGB", (COLUMNS * (CELL + PAD) + PAD, rows * (CELL + TEXT_H + PAD) + PAD), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=11)
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        x = PAD + (index % COLUMNS) * (CELL + PAD)
        y = PAD + (index // COLUMNS) * (CELL + TEXT_H + PAD)
        sheet.paste(image.resize((CELL, CELL), Image.Resampling.LANCZOS), (x, y))
        lines = textwrap.wrap(f"{index + 1}. {label}", width=30)[:4]
        draw.multiline_text((x, y + CELL + 1), "\n".join(lines), fill="black", font=font, spacing=0)
    return sheet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "demo-model-contact-sheet.png")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=4.0)
    parser.add_argument("--truth", action="store_true", help="print the scene attributes under each prompt")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--prompts", nargs="*", help="your own prompts instead of the 40 held-out ones")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load(args.checkpoint)
    if args.prompts:
        prompts, labels = list(args.prompts), list(args.prompts)
    else:
        chosen = evaluation_prompts()
        prompts = [prompt for _, prompt in chosen]
        labels = [f"{p} {truth(s)}" if args.truth else p for s, p in chosen]
    images = sample(model, prompts, args.steps, args.guidance)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    contact_sheet(images, labels).save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
