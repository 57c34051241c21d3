"""Full-size Stable Diffusion architectures with random weights, for benchmarks (bench.overhead, bench.adapters,
bench.cpu).

Random weights cost exactly what the real models cost (same modules, same shapes), and need no download. Each
folder is built once, saved as fp32 safetensors, and reused: the caller passes a folder under its --cache.
``tiny=True`` builds the same pipeline classes shrunk to a few MB (what the smoke tests run, in seconds).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

CONFIGS = Path(__file__).resolve().parents[1] / "src" / "studiolo" / "engines" / "configs"

_TINY_VAE: dict[str, Any] = {
    "block_out_channels": [32, 64],
    "down_block_types": ["DownEncoderBlock2D"] * 2,
    "up_block_types": ["UpDecoderBlock2D"] * 2,
    "layers_per_block": 1,
}
_TINY_TEXT: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
}

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
    "vae": _TINY_VAE,
    "text_encoder": _TINY_TEXT,
}
TINY_SDXL: dict[str, dict[str, Any]] = {
    "unet": {
        "block_out_channels": [32, 64],
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
        "attention_head_dim": [2, 4],
        "transformer_layers_per_block": [1, 1],
        "layers_per_block": 1,
        # Both text encoders' hidden states side by side; the pooled projection plus six time ids of 8 each.
        "cross_attention_dim": 64,
        "addition_time_embed_dim": 8,
        "projection_class_embeddings_input_dim": 32 + 6 * 8,
    },
    "vae": _TINY_VAE,
    "text_encoder": {**_TINY_TEXT, "projection_dim": 32},
    "text_encoder_2": {**_TINY_TEXT, "projection_dim": 32},
}


def _config(arch: str, name: str, tiny: dict[str, dict[str, Any]] | None) -> dict[str, Any]:
    values = json.loads((CONFIGS / arch / name / "config.json").read_text())
    return {**{k: v for k, v in values.items() if not k.startswith("_")}, **(tiny or {}).get(name, {})}


def _tokenizer(arch: str, folder: str) -> Any:
    from studiolo.engines.diffusers_engine import clip_tokenizer_from_package

    return clip_tokenizer_from_package(json.loads((CONFIGS / arch / folder / "tokenizer_config.json").read_text()))


def _save(pipe: Any, dest: Path) -> Path:
    # Saved beside and renamed: an interrupted save (GBs) leaves no folder that looks complete.
    tmp = dest.with_name(dest.name + ".tmp")
    pipe.save_pretrained(tmp, safe_serialization=True)
    tmp.rename(dest)
    return dest


def build_sd_turbo_architecture(dest: Path, tiny: bool = False) -> Path:
    """SD-Turbo = the SD 2.1-base architecture (865M UNet, OpenCLIP ViT-H text encoder, SD VAE); ~5 GB fp32."""
    if (dest / "model_index.json").exists():
        return dest
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    shrink = TINY if tiny else None
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config({**_config("sd21", "unet", shrink), "sample_size": 64})  # 512 px base
    vae = AutoencoderKL.from_config(_config("sd21", "vae", shrink))
    text_encoder = CLIPTextModel(CLIPTextConfig(**_config("sd21", "text_encoder", shrink)))
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="trailing"
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=_tokenizer("sd21", "tokenizer"),
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    return _save(pipe, dest)


def build_sdxl_architecture(
    dest: Path, tiny: bool = False, *, turbo: bool = False, device: str = "cpu", half: bool = False
) -> Path:
    """The SDXL base architecture (2.6B UNet, CLIP ViT-L and OpenCLIP ViT-bigG text encoders, SDXL VAE), ~14 GB fp32.

    ``turbo``: SDXL-Turbo (the same architecture at a 512 px native size, with its scheduler: Euler ancestral,
    trailing timesteps); else SDXL base's config (1024 px, Euler). ``device`` initialises the random weights (on a GPU
    in seconds, on one CPU thread in minutes); ``half`` saves them in fp16 (bench/gpu.py: half the disk and load).
    """
    if (dest / "model_index.json").exists():
        return dest
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerAncestralDiscreteScheduler,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    shrink = TINY_SDXL if tiny else None
    torch.manual_seed(0)
    unet_config = _config("sdxl", "unet", shrink)
    if turbo:
        unet_config["sample_size"] = 64  # 512 px base
    with torch.device(device):
        unet = UNet2DConditionModel.from_config(unet_config)
        vae = AutoencoderKL.from_config(_config("sdxl", "vae", shrink))
        text_encoder = CLIPTextModel(CLIPTextConfig(**_config("sdxl", "text_encoder", shrink)))
        text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**_config("sdxl", "text_encoder_2", shrink)))
    schedule: dict[str, Any] = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
    scheduler = (
        EulerAncestralDiscreteScheduler(**schedule, timestep_spacing="trailing")
        if turbo
        else EulerDiscreteScheduler(**schedule, timestep_spacing="leading", steps_offset=1)
    )
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=_tokenizer("sdxl", "tokenizer"),
        tokenizer_2=_tokenizer("sdxl", "tokenizer_2"),
        unet=unet,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    if half and not tiny:
        pipe.to(torch.float16)
    return _save(pipe, dest)


def build_sdxl_turbo_architecture(dest: Path, tiny: bool = False) -> Path:
    """SDXL-Turbo's architecture, fp32 on the CPU (bench/cpu.py)."""
    return build_sdxl_architecture(dest, tiny, turbo=True)


def call_pipeline(pipe: Any, side: int, seed: int, prompt: str) -> tuple[float, np.ndarray]:
    """One raw diffusers call, as a user of the library makes it; (seconds, float HxWx3 picture)."""
    import torch

    t = time.perf_counter()
    with torch.inference_mode():
        out = pipe(
            prompt,
            num_inference_steps=1,
            guidance_scale=0.0,
            height=side,
            width=side,
            generator=torch.Generator("cpu").manual_seed(seed),
            output_type="np",
        )
    return time.perf_counter() - t, out.images[0]
