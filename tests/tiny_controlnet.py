"""Tiny random ControlNets (and a tiny depth-estimation model) for tests: no hub, no downloads.

``make_tiny_controlnet`` shapes a ControlNet after the tiny pipeline's UNet (tests/tiny_pipeline.py) with
``ControlNetModel.from_unet`` and writes it three ways, as users get them: a diffusers folder, one ``.safetensors``
file with diffusers keys, and one in the original (LDM) ``control_model.*`` layout. ``from_unet`` zero-initialises
the "zero convolutions" (and the conditioning embedding's last conv), which makes a fresh ControlNet add nothing;
they are filled with random values here so the ControlNet changes the picture and different maps differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.tiny_pipeline import _UNET_RESNET, _UNET_TOP, _unet_prefix_map


@dataclass(frozen=True)
class TinyControlNet:
    folder: Path  # a diffusers folder (config.json + diffusion_pytorch_model.safetensors)
    diffusers_file: Path  # the same weights, one .safetensors with diffusers keys
    ldm_file: Path  # the same weights, one .safetensors in the original ``control_model.*`` layout


def make_tiny_controlnet(dir: Path, pipeline_dir: Path, seed: int = 1) -> TinyControlNet:
    """Write a tiny random ControlNet for the tiny pipeline saved in ``pipeline_dir`` under ``dir``."""
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel
    from safetensors.torch import save_file

    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    unet = UNet2DConditionModel.from_pretrained(str(pipeline_dir), subfolder="unet", local_files_only=True)
    # The conditioning embedding halves the map's size per extra level: the tiny VAE shrinks by 2 (one level more
    # than its input), where SD's VAE shrinks by 8 (16, 32, 96, 256).
    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in net.named_parameters():
            if name.startswith(("controlnet_down_blocks", "controlnet_mid_block", "controlnet_cond_embedding")):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
            else:  # not a copy of the base UNet: the ControlNet's own (trained) encoder
                param.add_(torch.randn(param.shape, generator=generator) * 0.02)
    folder = dir / "folder"
    net.save_pretrained(str(folder), safe_serialization=True)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    diffusers_file = dir / "tiny-controlnet-diffusers.safetensors"
    save_file(state, str(diffusers_file))
    ldm_file = dir / "tiny-controlnet-ldm.safetensors"
    save_file(_controlnet_to_ldm(state, net.config, unet.config), str(ldm_file))
    return TinyControlNet(folder=folder, diffusers_file=diffusers_file, ldm_file=ldm_file)


def _controlnet_to_ldm(state: dict[str, Any], config: Any, unet_config: Any) -> dict[str, Any]:
    """Diffusers ControlNet keys -> the original ``control_model.*`` layout (the inverse of diffusers' converter);
    the encoder half is laid out as in the UNet the ControlNet was shaped after."""
    prefixes = [(hf, ldm) for hf, ldm in _unet_prefix_map(unet_config) if not hf.startswith("up_blocks.")]
    n_cond_blocks = len(config.conditioning_embedding_out_channels) * 2 - 2
    cond = {"controlnet_cond_embedding.conv_in.": "input_hint_block.0."}
    # The original embedding is one nn.Sequential (convs and SiLUs) of 16 modules, its last conv at index 14; diffusers'
    # converter looks for it there, so this shorter tiny embedding keeps that index too.
    cond["controlnet_cond_embedding.conv_out."] = "input_hint_block.14."
    for i in range(n_cond_blocks):
        cond[f"controlnet_cond_embedding.blocks.{i}."] = f"input_hint_block.{2 * (i + 1)}."
    out: dict[str, Any] = {}
    for key, value in state.items():
        new = None
        if key.startswith("controlnet_down_blocks."):
            _, index, rest = key.split(".", 2)
            new = f"zero_convs.{index}.0.{rest}"
        elif key.startswith("controlnet_mid_block."):
            new = "middle_block_out.0." + key[len("controlnet_mid_block.") :]
        for table in (cond, _UNET_TOP):
            for hf, ldm in table.items():
                if new is None and key.startswith(hf):
                    new = ldm + key[len(hf) :]
        for hf, ldm in prefixes:
            if new is None and key.startswith(hf):
                rest = key[len(hf) :]
                if ".resnets." in hf:
                    for hf_part, ldm_part in _UNET_RESNET:
                        rest = rest.replace(hf_part, ldm_part)
                new = ldm + rest
        if new is None:
            raise KeyError(f"unmapped ControlNet key {key}")
        out["control_model." + new] = value
    return out


def make_tiny_depth_model(dir: Path, seed: int = 0) -> Path:
    """Save a tiny random DPT depth-estimation model and its image processor to ``dir``; returns ``dir``."""
    import torch
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    dir = Path(dir)
    torch.manual_seed(seed)
    config = DPTConfig(
        image_size=32,
        patch_size=8,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=4,
        backbone_out_indices=[0, 1, 2, 3],
        num_attention_heads=4,
        intermediate_size=37,
        neck_hidden_sizes=[16, 16, 32, 32],
        reassemble_factors=[4, 2, 1, 0.5],
        fusion_hidden_size=16,
        head_in_index=-1,
        is_hybrid=False,
    )
    DPTForDepthEstimation(config).save_pretrained(str(dir))
    processor = DPTImageProcessor(size={"height": 32, "width": 32}, keep_aspect_ratio=False, do_pad=False)
    processor.save_pretrained(str(dir))
    return dir
