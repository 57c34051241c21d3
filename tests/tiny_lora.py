"""Tiny random LoRA and textual-inversion files for tests/tiny_pipeline.py's tiny model (no hub, no downloads).

The files use the layouts users download: kohya's (``lora_unet_..._to_k.lora_down.weight`` / ``.lora_up.weight`` /
``.alpha``, and ``lora_te_...`` for the text encoder), diffusers/PEFT's (``unet.<module>.lora_A.weight`` /
``lora_B.weight``), and A1111's embedding ``.safetensors`` (``emb_params``). The up / B matrices are non-zero (a
freshly initialised LoRA has B = 0 and changes nothing), so applying one visibly changes the output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TINY_WIDTH = 32  # cross_attention_dim of the tiny UNet and hidden size of its CLIP text encoder
# (diffusers module path, in features, out features): the cross-attention key/value projections of the tiny
# UNet's attention blocks (64-channel level), which read the 32-wide text states.
UNET_TARGETS: tuple[tuple[str, int, int], ...] = (
    ("down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k", 32, 64),
    ("down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_v", 32, 64),
    ("up_blocks.0.attentions.1.transformer_blocks.0.attn2.to_k", 32, 64),
    ("up_blocks.0.attentions.1.transformer_blocks.0.attn2.to_v", 32, 64),
)
# Under the CLIP text model: all four attention projections of its first layer, as kohya trains them (diffusers
# tells kohya's text-encoder keys apart by the out_proj one).
TEXT_TARGETS: tuple[tuple[str, int, int], ...] = tuple(
    (f"encoder.layers.0.self_attn.{p}_proj", 32, 32) for p in ("q", "k", "v", "out")
)


def _pairs(seed: int, rank: int, scale: float, in_features: int, out_features: int) -> tuple[Any, Any]:
    import torch

    generator = torch.Generator().manual_seed(seed)
    down = torch.randn(rank, in_features, generator=generator) * scale
    up = torch.randn(out_features, rank, generator=generator) * scale
    return down, up


def _save(tensors: dict[str, Any], path: Path) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


def make_kohya_lora(
    path: Path, seed: int = 0, *, rank: int = 4, scale: float = 0.6, text_encoder: bool = True, width: int = TINY_WIDTH
) -> Path:
    """A kohya-ss LoRA (the layout Civitai files use). ``width`` other than 32 makes one whose tensors do not fit
    the tiny model (as an SDXL LoRA on an SD 1.5 model)."""
    import torch

    tensors: dict[str, Any] = {}
    targets = [(m, width if i == TINY_WIDTH else i, o) for m, i, o in UNET_TARGETS]
    for n, (module, in_features, out_features) in enumerate(targets):
        name = "lora_unet_" + module.replace(".", "_")
        down, up = _pairs(seed * 100 + n, rank, scale, in_features, out_features)
        tensors[f"{name}.lora_down.weight"] = down
        tensors[f"{name}.lora_up.weight"] = up
        tensors[f"{name}.alpha"] = torch.tensor(float(rank))
    for n, (module, in_features, out_features) in enumerate(TEXT_TARGETS if text_encoder else ()):
        name = "lora_te_text_model_" + module.replace(".", "_")
        down, up = _pairs(seed * 100 + 50 + n, rank, scale, in_features, out_features)
        tensors[f"{name}.lora_down.weight"] = down
        tensors[f"{name}.lora_up.weight"] = up
        tensors[f"{name}.alpha"] = torch.tensor(float(rank))
    return _save(tensors, path)


def make_peft_lora(path: Path, seed: int = 1, *, rank: int = 4, scale: float = 0.6) -> Path:
    """A diffusers/PEFT LoRA (what diffusers' training scripts save: ``unet.<module>.lora_A/lora_B.weight``)."""
    tensors: dict[str, Any] = {}
    for n, (module, in_features, out_features) in enumerate(UNET_TARGETS):
        down, up = _pairs(seed * 100 + n, rank, scale, in_features, out_features)
        tensors[f"unet.{module}.lora_A.weight"] = down
        tensors[f"unet.{module}.lora_B.weight"] = up
    return _save(tensors, path)


def make_kohya_lokr(path: Path, seed: int = 4, *, scale: float = 0.3) -> Path:
    """A LyCORIS LoKr in kohya naming: per layer the Kronecker factors ``lokr_w1`` [8, 4] and ``lokr_w2`` [8, 8] of
    the 64x32 key/value projections (full factors, the layout peft's default factorisation of 64 and 32 gives)."""
    import torch

    tensors: dict[str, Any] = {}
    for n, (module, _in_features, _out_features) in enumerate(UNET_TARGETS):
        name = "lora_unet_" + module.replace(".", "_")
        generator = torch.Generator().manual_seed(seed * 100 + n)
        tensors[f"{name}.lokr_w1"] = torch.randn(8, 4, generator=generator) * scale
        tensors[f"{name}.lokr_w2"] = torch.randn(8, 8, generator=generator) * scale
        tensors[f"{name}.alpha"] = torch.tensor(8.0)
    return _save(tensors, path)


def make_embedding(path: Path, seed: int = 2, *, vectors: int = 2, width: int = TINY_WIDTH) -> Path:
    """An A1111 textual-inversion embedding (``emb_params``: [vectors, width])."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    return _save({"emb_params": torch.randn(vectors, width, generator=generator)}, path)


def make_corrupt_file(path: Path) -> Path:
    """A .safetensors file cut short: a header announcing more bytes than follow."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((200).to_bytes(8, "little") + b'{"a": {"dtype": "F32", "shape": [4]')
    return path
