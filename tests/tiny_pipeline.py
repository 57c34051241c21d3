"""Tiny, randomly initialised Stable Diffusion pipelines for tests (no hub, no downloads).

``make_tiny_sd_pipeline`` writes a diffusers folder (about 8 MB) that loads and generates 64x64 images in well
under a second on a CPU. ``make_tiny_single_file`` writes the same weights as one ``.safetensors`` file in the
original Stable Diffusion (LDM) key layout, plus the small architecture config folder that the single-file loader
needs, so the single-file import path is exercised for real.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from studiolo.engines.model_files import bytes_to_unicode

TINY_TEXT_VOCAB_SIZE = 49408  # the real CLIP vocabulary size, so the packaged CLIP BPE tokenizer fits too
TINY_UNET_LAYERS_PER_BLOCK = 2
TINY_VAE_LAYERS_PER_BLOCK = 1
# ``make_tiny_single_file`` puts its architecture configs here, laid out like the engine's packaged ones
# (``<config_root>/sd15/...``): pass ``config_root=<dir>/TINY_CONFIG_ROOT_NAME`` to DiffusersEngine.
TINY_CONFIG_ROOT_NAME = "configs"


def _write_byte_level_tokenizer(folder: Path) -> None:
    # With no merges every character is its own token, so the vocab needs each byte character and its
    # end-of-word form; that is all a CLIPTokenizer needs to run offline.
    folder.mkdir(parents=True, exist_ok=True)
    chars = bytes_to_unicode()
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")


def _tiny_text_encoder(vocab_size: int) -> Any:
    """A 2-layer CLIP text encoder with 32-wide states (random weights from torch's current seed)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=2,
            hidden_size=32,
            intermediate_size=37,
            layer_norm_eps=1e-05,
            num_attention_heads=4,
            num_hidden_layers=2,
            pad_token_id=1,
            vocab_size=vocab_size,
            max_position_embeddings=77,
        )
    )


def _build_components(seed: int, in_channels: int) -> dict[str, Any]:
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=TINY_UNET_LAYERS_PER_BLOCK,
        sample_size=32,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=32,
        attention_head_dim=8,
    )
    vae = AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=32,
        layers_per_block=TINY_VAE_LAYERS_PER_BLOCK,
        sample_size=64,
    )
    text_encoder = _tiny_text_encoder(TINY_TEXT_VOCAB_SIZE)
    # The same scheduler SD 1.5 ships with, so "default" sampler behaviour matches a real model.
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        steps_offset=1,
        set_alpha_to_one=False,
    )
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "scheduler": scheduler}


def make_tiny_sd_pipeline(dir: Path, seed: int = 0, *, inpaint: bool = False) -> Path:
    """Save a tiny random StableDiffusionPipeline to ``dir`` and return ``dir``.

    ``inpaint=True`` builds a dedicated inpainting model instead (9-channel UNet saved as
    StableDiffusionInpaintPipeline), which can inpaint but not do txt2img/img2img.
    """
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline
    from transformers import CLIPTokenizer

    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    components = _build_components(seed, in_channels=9 if inpaint else 4)
    tokenizer_dir = dir / "tokenizer"
    _write_byte_level_tokenizer(tokenizer_dir)
    tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_dir), model_max_length=77)
    pipeline_cls = StableDiffusionInpaintPipeline if inpaint else StableDiffusionPipeline
    pipe = pipeline_cls(
        **components,
        tokenizer=tokenizer,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(dir))
    return dir


# --- Diffusers -> original (LDM) key layout -------------------------------------------------------------
# The inverse of diffusers' single-file conversion, written for the general UNet/VAE layout (any number of
# blocks and layers per block) so it fits the tiny model; real SD 1.x checkpoints use the same scheme.


def _unet_prefix_map(config: Any) -> list[tuple[str, str]]:
    """(diffusers prefix, ldm prefix) pairs for the UNet blocks."""
    layers = int(config.layers_per_block)
    n_blocks = len(config.block_out_channels)
    pairs: list[tuple[str, str]] = []
    for i, block_type in enumerate(config.down_block_types):
        has_attn = "CrossAttn" in block_type
        for j in range(layers):
            idx = 1 + i * (layers + 1) + j
            pairs.append((f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{idx}.0."))
            if has_attn:
                pairs.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{idx}.1."))
        if i < n_blocks - 1:
            pairs.append((f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{(i + 1) * (layers + 1)}.0.op."))
    for i, block_type in enumerate(config.up_block_types):
        has_attn = "CrossAttn" in block_type
        for j in range(layers + 1):
            idx = i * (layers + 1) + j
            pairs.append((f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{idx}.0."))
            if has_attn:
                pairs.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{idx}.1."))
        if i < n_blocks - 1:
            last = i * (layers + 1) + layers
            slot = 2 if has_attn else 1
            pairs.append((f"up_blocks.{i}.upsamplers.0.", f"output_blocks.{last}.{slot}."))
    pairs.append(("mid_block.attentions.0.", "middle_block.1."))
    pairs.append(("mid_block.resnets.0.", "middle_block.0."))
    pairs.append(("mid_block.resnets.1.", "middle_block.2."))
    return pairs


_UNET_TOP = {
    "time_embedding.linear_1.": "time_embed.0.",
    "time_embedding.linear_2.": "time_embed.2.",
    "conv_in.": "input_blocks.0.0.",
    "conv_norm_out.": "out.0.",
    "conv_out.": "out.2.",
}
_UNET_RESNET = [
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv_shortcut", "skip_connection"),
]


def _unet_to_ldm(state: dict[str, Any], config: Any) -> dict[str, Any]:
    prefixes = _unet_prefix_map(config)
    out: dict[str, Any] = {}
    for key, value in state.items():
        new = key
        for hf, ldm in _UNET_TOP.items():
            if key.startswith(hf):
                new = ldm + key[len(hf) :]
                break
        else:
            for hf, ldm in prefixes:
                if key.startswith(hf):
                    rest = key[len(hf) :]
                    if ".resnets." in hf:
                        for hf_part, ldm_part in _UNET_RESNET:
                            rest = rest.replace(hf_part, ldm_part)
                    new = ldm + rest
                    break
            else:
                raise KeyError(f"unmapped UNet key {key}")
        out["model.diffusion_model." + new] = value
    return out


def _vae_to_ldm(state: dict[str, Any], config: Any) -> dict[str, Any]:
    n_blocks = len(config.block_out_channels)
    pairs: list[tuple[str, str]] = [
        ("encoder.conv_norm_out.", "encoder.norm_out."),
        ("decoder.conv_norm_out.", "decoder.norm_out."),
    ]
    for i in range(n_blocks):
        pairs.append((f"encoder.down_blocks.{i}.resnets.", f"encoder.down.{i}.block."))
        pairs.append((f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample."))
        pairs.append((f"decoder.up_blocks.{i}.resnets.", f"decoder.up.{n_blocks - 1 - i}.block."))
        pairs.append((f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{n_blocks - 1 - i}.upsample."))
    for part in ("encoder", "decoder"):
        pairs.append((f"{part}.mid_block.resnets.0.", f"{part}.mid.block_1."))
        pairs.append((f"{part}.mid_block.resnets.1.", f"{part}.mid.block_2."))
        pairs.append((f"{part}.mid_block.attentions.0.", f"{part}.mid.attn_1."))
    attn_parts = {
        "group_norm.": "norm.",
        "to_q.": "q.",
        "to_k.": "k.",
        "to_v.": "v.",
        "to_out.0.": "proj_out.",
    }
    out: dict[str, Any] = {}
    for key, value in state.items():
        new = key
        for hf, ldm in pairs:
            if key.startswith(hf):
                rest = key[len(hf) :]
                if hf.endswith("attentions.0."):
                    for hf_part, ldm_part in attn_parts.items():
                        if rest.startswith(hf_part):
                            rest = ldm_part + rest[len(hf_part) :]
                            # The original VAE attention uses 1x1 convolutions, not linear layers.
                            if rest.endswith("weight") and value.ndim == 2:
                                value = value.reshape(*value.shape, 1, 1)
                            break
                new = ldm + rest.replace("conv_shortcut", "nin_shortcut")
                break
        out["first_stage_model." + new] = value
    return out


def _text_encoder_to_ldm(state: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in state.items():
        # transformers >= 5.6 flattened CLIPTextModel (no ``text_model.`` level); the LDM layout keeps it.
        full = key if key.startswith("text_model.") else "text_model." + key
        out["cond_stage_model.transformer." + full] = value
    return out


def _write_arch_config(pipeline_dir: Path, config_dir: Path) -> None:
    """An SD 1.x-style config folder (model_index.json + component configs, no weights, no tokenizer files)."""
    config_dir.mkdir(parents=True, exist_ok=True)
    index = json.loads((pipeline_dir / "model_index.json").read_text(encoding="utf-8"))
    (config_dir / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    for component, filename in (
        ("unet", "config.json"),
        ("vae", "config.json"),
        ("text_encoder", "config.json"),
        ("scheduler", "scheduler_config.json"),
    ):
        (config_dir / component).mkdir(exist_ok=True)
        source = pipeline_dir / component / filename
        (config_dir / component / filename).write_text(source.read_text(encoding="utf-8"), encoding="utf-8")
    # Only the tokenizer settings: the engine fills in the packaged CLIP BPE vocabulary, as for real models.
    (config_dir / "tokenizer").mkdir(exist_ok=True)
    tokenizer_config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "pad_token": "<|endoftext|>",
    }
    (config_dir / "tokenizer" / "tokenizer_config.json").write_text(json.dumps(tokenizer_config), encoding="utf-8")


def make_tiny_single_file(dir: Path, seed: int = 0) -> Path:
    """Write ``dir/tiny-sd15.safetensors`` (original SD 1.x key layout) and ``dir/configs/sd15/``.

    Returns the checkpoint path. Load it with ``DiffusersEngine(config_root=dir / TINY_CONFIG_ROOT_NAME)``
    and ``ModelRef(source="single_file", path=<returned path>)``.
    """
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import save_file

    dir = Path(dir)
    pipeline_dir = make_tiny_sd_pipeline(dir / "pipeline", seed)
    pipe = StableDiffusionPipeline.from_pretrained(str(pipeline_dir), local_files_only=True)
    state: dict[str, Any] = {}
    state.update(_unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config))
    state.update(_vae_to_ldm(pipe.vae.state_dict(), pipe.vae.config))
    state.update(_text_encoder_to_ldm(pipe.text_encoder.state_dict()))
    checkpoint = dir / "tiny-sd15.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(checkpoint))
    _write_arch_config(pipeline_dir, dir / TINY_CONFIG_ROOT_NAME / "sd15")
    return checkpoint


def make_tiny_upscale_pipeline(dir: Path, seed: int = 0, *, latent: bool = False) -> Path:
    """Save a tiny random upscaler to ``dir`` and return ``dir``: diffusers' SD x4 upscaler
    (StableDiffusionUpscalePipeline, 4x), or with ``latent=True`` the latent x2 upscaler
    (StableDiffusionLatentUpscalePipeline, 2x). Shaped like diffusers' own test components for them."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        DDPMScheduler,
        EulerDiscreteScheduler,
        StableDiffusionLatentUpscalePipeline,
        StableDiffusionUpscalePipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTokenizer

    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    tokenizer_dir = dir / "tokenizer"
    _write_byte_level_tokenizer(tokenizer_dir)
    tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_dir), model_max_length=77)
    torch.manual_seed(seed)
    text_encoder = _tiny_text_encoder(1000)  # the byte-level tokenizer's ids are all under 1000
    pipe: Any
    if latent:
        levels = 4
        unet = UNet2DConditionModel(
            act_fn="gelu",
            attention_head_dim=8,
            norm_num_groups=None,
            block_out_channels=[32, 32, 64, 64],
            time_cond_proj_dim=160,  # the noise level's Fourier features (128) and the pooled text (32)
            conv_in_kernel=1,
            conv_out_kernel=1,
            cross_attention_dim=32,
            down_block_types=(
                "KDownBlock2D",
                "KCrossAttnDownBlock2D",
                "KCrossAttnDownBlock2D",
                "KCrossAttnDownBlock2D",
            ),
            in_channels=8,
            mid_block_type=None,
            only_cross_attention=False,
            out_channels=5,
            resnet_time_scale_shift="scale_shift",
            time_embedding_type="fourier",
            timestep_post_act="gelu",
            up_block_types=("KCrossAttnUpBlock2D", "KCrossAttnUpBlock2D", "KCrossAttnUpBlock2D", "KUpBlock2D"),
        )
    else:
        levels = 3
        unet = UNet2DConditionModel(
            block_out_channels=(32, 32, 64),
            layers_per_block=2,
            sample_size=32,
            in_channels=7,  # the latents and the low-resolution image
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=8,
            use_linear_projection=True,
            only_cross_attention=(True, True, False),
            num_class_embeds=100,  # the noise level
        )
    vae = AutoencoderKL(
        block_out_channels=[32, 32, 64, 64][:levels],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * levels,
        up_block_types=["UpDecoderBlock2D"] * levels,
        latent_channels=4,
    )
    if latent:
        pipe = StableDiffusionLatentUpscalePipeline(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=EulerDiscreteScheduler(prediction_type="sample"),
        )
    else:
        pipe = StableDiffusionUpscalePipeline(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            low_res_scheduler=DDPMScheduler(),
            scheduler=DDIMScheduler(prediction_type="v_prediction"),
            max_noise_level=350,
        )
    pipe.save_pretrained(str(dir))
    return dir
