"""A tiny, randomly initialised Stable Video Diffusion pipeline for tests (no hub, no downloads).

The components follow diffusers' own SVD test (``get_dummy_components``): a two-block spatio-temporal UNet, a
two-block temporal-decoder VAE (2x spatial scale), a small CLIP vision encoder with its image processor, and SVD's
Euler scheduler settings. ``make_tiny_svd_pipeline`` saves them with ``save_pretrained`` (a diffusers folder of a
few MB whose model_index.json names ``StableVideoDiffusionPipeline``), so tests load it back through Studiolo's own
inspection and loader. Its native size is 32x32 (UNet sample_size 16, VAE scale 2), 4 frames.
"""

from __future__ import annotations

from pathlib import Path

TINY_SVD_FRAMES = 4
TINY_SVD_SIZE = 32  # native width and height in pixels: sample_size x the VAE's 2x scale


def make_tiny_svd_pipeline(folder: Path, *, seed: int = 0) -> Path:
    """Write a tiny random ``StableVideoDiffusionPipeline`` to ``folder`` (created) and return it."""
    import torch
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        EulerDiscreteScheduler,
        StableVideoDiffusionPipeline,
        UNetSpatioTemporalConditionModel,
    )
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    unet = UNetSpatioTemporalConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=TINY_SVD_SIZE // 2,
        in_channels=8,
        out_channels=4,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        cross_attention_dim=32,
        num_attention_heads=8,
        projection_class_embeddings_input_dim=96,  # 3 added time ids (fps, motion bucket, noise) x 32
        addition_time_embed_dim=32,
        num_frames=TINY_SVD_FRAMES,
    )
    scheduler = EulerDiscreteScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        interpolation_type="linear",
        num_train_timesteps=1000,
        prediction_type="v_prediction",
        sigma_max=700.0,
        sigma_min=0.002,
        steps_offset=1,
        timestep_spacing="leading",
        timestep_type="continuous",
        use_karras_sigmas=True,
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLTemporalDecoder(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        latent_channels=4,
    )
    torch.manual_seed(seed + 2)
    image_encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=32,
            projection_dim=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=224,  # the pipeline resizes its input to CLIP's 224x224 itself
            intermediate_size=37,
            patch_size=28,
        )
    )
    feature_extractor = CLIPImageProcessor(crop_size=224, size=224)
    pipe = StableVideoDiffusionPipeline(
        vae=vae,
        image_encoder=image_encoder,
        unet=unet,
        scheduler=scheduler,
        feature_extractor=feature_extractor,
    )
    folder.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(str(folder))
    return folder
