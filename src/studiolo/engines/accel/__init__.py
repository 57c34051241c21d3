"""Faster inference for the diffusers engine (issue 20), behind the same ``Engine`` contract.

On a CPU a loaded Stable Diffusion model runs on one of three paths, chosen when it loads (``plan.py``):

- ``openvino``: the UNet and the VAE decoder run as OpenVINO models (bf16 on CPUs with avx512_bf16/AMX), converted
  once from the loaded diffusers modules and cached on disk per model (``cache.py``, ``openvino_modules.py``); the
  rest of the pipeline (text encoders, VAE encoder, and any job with LoRA, ControlNet or a reference image) runs
  on the torch modules in bf16;
- ``bf16``: every module in torch bfloat16, channels-last;
- ``fp32``: diffusers as loaded (the reference, and the only path on CPUs without bf16 arithmetic).

A path is chosen automatically only when it passes the quality gate (``gate.py``): the same seed's picture must stay
within ``GATE_PSNR_DB`` of the fp32 one. ``STUDIOLO_CPU_ACCEL`` forces one path or turns acceleration off.
"""
