"""Adapter files with the tensor names and shapes the real ones have (kohya/PEFT LoRAs, LyCORIS, textual-inversion
embeddings, ControlNets, IP-Adapters, a depth preprocessor), made locally with small random tensors: what the
importer reads (engines/adapter_files.py) is names and shapes, so these are real files of each kind, only tiny.
The LoRA rank and layer widths are the real ones only where the importer reads them (the cross-attention input)."""

from __future__ import annotations

import json
from pathlib import Path

# A kohya key for the first cross-attention's key projection in the diffusers-style UNet naming.
KOHYA_TO_K = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
PEFT_TO_K = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"


def save(path: Path, shapes: dict[str, tuple[int, ...]], metadata: dict[str, str] | None = None) -> Path:
    import torch
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    tensors = {name: torch.randn(shape, generator=generator) for name, shape in shapes.items()}
    save_file(tensors, str(path), metadata=metadata)
    return path


def kohya_lora(path: Path, context_dim: int = 768, rank: int = 4, *, sdxl: bool = False) -> Path:
    shapes: dict[str, tuple[int, ...]] = {
        f"{KOHYA_TO_K}.lora_down.weight": (rank, context_dim),
        f"{KOHYA_TO_K}.lora_up.weight": (8, rank),
        f"{KOHYA_TO_K}.alpha": (),
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (rank, 8),
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": (8, rank),
    }
    if sdxl:
        shapes["lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"] = (rank, 768)
        shapes["lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"] = (rank, 1280)
    else:
        shapes["lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"] = (rank, context_dim)
    return save(path, shapes)


def peft_lora(path: Path, context_dim: int = 32, rank: int = 2) -> Path:
    return save(
        path,
        {
            f"{PEFT_TO_K}.lora_A.weight": (rank, context_dim),
            f"{PEFT_TO_K}.lora_B.weight": (32, rank),
            "unet.down_blocks.0.attentions.0.proj_in.lora_A.weight": (rank, 32),
            "unet.down_blocks.0.attentions.0.proj_in.lora_B.weight": (32, rank),
        },
    )


def embedding(path: Path, dim: int = 768, vectors: int = 2) -> Path:
    return save(path, {"emb_params": (vectors, dim)})


def sdxl_embedding(path: Path, vectors: int = 3) -> Path:
    return save(path, {"clip_l": (vectors, 768), "clip_g": (vectors, 1280)})


def controlnet_ldm_file(path: Path, context_dim: int = 768) -> Path:
    return save(
        path,
        {
            "control_model.input_hint_block.0.weight": (16, 3, 3, 3),
            "control_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (8, context_dim),
            "control_model.zero_convs.0.0.weight": (8, 8, 1, 1),
        },
    )


def controlnet_diffusers_file(path: Path, context_dim: int = 2048) -> Path:
    return save(
        path,
        {
            "controlnet_cond_embedding.conv_in.weight": (16, 3, 3, 3),
            "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight": (8, context_dim),
            "controlnet_down_blocks.0.weight": (8, 8, 1, 1),
        },
    )


def controlnet_folder(folder: Path, context_dim: int = 32, *, sdxl: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config: dict[str, object] = {"_class_name": "ControlNetModel", "cross_attention_dim": context_dim}
    if sdxl:
        config["addition_embed_type"] = "text_time"
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    controlnet_diffusers_file(folder / "diffusion_pytorch_model.safetensors", context_dim)
    return folder


def image_encoder(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = {"architectures": ["CLIPVisionModelWithProjection"], "model_type": "clip_vision_model"}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    save(folder / "model.safetensors", {"vision_model.embeddings.patch_embedding.weight": (8, 3, 4, 4)})
    return folder


def ip_adapter(path: Path, context_dim: int = 768) -> Path:
    return save(
        path,
        {
            "image_proj.proj.weight": (4 * context_dim, 32),
            "image_proj.norm.weight": (context_dim,),
            "ip_adapter.1.to_k_ip.weight": (8, context_dim),
            "ip_adapter.1.to_v_ip.weight": (8, context_dim),
        },
    )


def depth_preprocessor(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "dpt", "architectures": ["DPTForDepthEstimation"]}))
    save(folder / "model.safetensors", {"dpt.embeddings.cls_token": (1, 1, 8)})
    return folder
