"""A tiny random IP-Adapter for the tiny pipeline (tests/tiny_pipeline.py), in the layout users download.

``make_tiny_ip_adapter`` writes ``ip-adapter_tiny.safetensors`` with the published ``ip-adapter_sd15.safetensors``
keys (``image_proj.proj.*`` / ``image_proj.norm.*``: the image projection to 4 tokens; ``ip_adapter.<k>.to_k_ip``
/ ``to_v_ip``: the extra key/value of each cross-attention, numbered 1, 3, 5... over the UNet's attention
layers in order) and the CLIP vision encoder it expects as a transformers folder (``image_encoder/``), the way the
h94/IP-Adapter repository ships them. Random weights, drawn large enough to change the tiny model's pictures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TINY_IMAGE_SIZE = 32
TINY_PROJECTION_DIM = 32
IP_TOKENS = 4  # a plain IP-Adapter's image tokens
WEIGHT_NAME = "ip-adapter_tiny.safetensors"


def _tiny_image_encoder(seed: int) -> Any:
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=37,
        projection_dim=TINY_PROJECTION_DIM,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=TINY_IMAGE_SIZE,
        patch_size=8,
        num_channels=3,
    )
    return CLIPVisionModelWithProjection(config).eval()


def _cross_attention_widths(model_dir: Path) -> list[int]:
    """The hidden width of each cross-attention layer of the model's UNet, in ``attn_processors`` order."""
    from diffusers import UNet2DConditionModel

    config = json.loads((model_dir / "unet" / "config.json").read_text(encoding="utf-8"))
    unet = UNet2DConditionModel.from_config(config)
    channels = list(unet.config.block_out_channels)
    widths = []
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        if name.startswith("mid_block"):
            widths.append(channels[-1])
        elif name.startswith("up_blocks"):
            widths.append(list(reversed(channels))[int(name[len("up_blocks.")])])
        else:
            widths.append(channels[int(name[len("down_blocks.")])])
    return widths


def make_tiny_ip_adapter(dir: Path, model_dir: Path, seed: int = 0, *, cross_attention_dim: int = 32) -> Path:
    """Write the adapter file and its ``image_encoder/`` folder into ``dir``; return the file's path.

    ``model_dir``: the tiny diffusers model it is made for (its UNet decides how many cross-attentions there are).
    """
    import torch
    from safetensors.torch import save_file

    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    _tiny_image_encoder(seed).save_pretrained(str(dir / "image_encoder"))
    generator = torch.Generator().manual_seed(seed + 1)

    def randn(*shape: int, scale: float) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * scale

    state = {
        "image_proj.proj.weight": randn(IP_TOKENS * cross_attention_dim, TINY_PROJECTION_DIM, scale=0.5),
        "image_proj.proj.bias": randn(IP_TOKENS * cross_attention_dim, scale=0.1),
        "image_proj.norm.weight": torch.ones(cross_attention_dim),
        "image_proj.norm.bias": torch.zeros(cross_attention_dim),
    }
    for i, width in enumerate(_cross_attention_widths(Path(model_dir))):
        key = 2 * i + 1
        state[f"ip_adapter.{key}.to_k_ip.weight"] = randn(width, cross_attention_dim, scale=0.5)
        state[f"ip_adapter.{key}.to_v_ip.weight"] = randn(width, cross_attention_dim, scale=0.5)
    path = dir / WEIGHT_NAME
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path
