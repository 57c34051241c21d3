"""A Stable Diffusion pipeline's UNet and VAE decoder run by OpenVINO on the CPU (issue 20).

Conversion traces the loaded fp32 diffusers modules with ``openvino.convert_model`` (no hub, no optimum) into IR
files with dynamic batch and spatial sizes, written once into the model's cache entry (``cache.py``). Loading
compiles them with OpenVINO's own compiled-blob cache beside them, so a restart reads a ready blob in about a
second instead of recompiling.

While a job runs (``patched``), the UNet's ``forward`` and the VAE's ``decode`` are replaced on those module
instances by calls into OpenVINO, so diffusers' pipelines, schedulers and callbacks are untouched. A call the
converted graph does not cover (ControlNet residuals, IP-Adapter image embeddings, attention kwargs, a latent side
that is not a multiple of 8, a tiled VAE) goes to the torch module instead, so nothing changes behaviour.
"""

from __future__ import annotations

import gc
import importlib.util
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

UNET_IR = "unet.xml"
VAE_DECODER_IR = "vae_decoder.xml"
OV_CACHE_DIR = "ov-cache"
MADV_DONTNEED = 4  # <sys/mman.h>, the same on every Linux architecture
# The example inputs only fix ranks and dtypes (sizes stay dynamic); small ones keep tracing fast.
EXAMPLE_LATENT_SIDE = 16


def openvino_available() -> bool:
    return importlib.util.find_spec("openvino") is not None


def unet_size_factor(unet: Any) -> int:
    """The UNet's total downsampling: latent sides that are multiples of it take the traced (common) route."""
    return int(2 ** (len(unet.config.block_out_channels) - 1))


def _is_sdxl_unet(unet: Any) -> bool:
    return getattr(unet.config, "addition_embed_type", None) == "text_time"


def _unet_wrapper(unet: Any) -> Any:
    import torch

    sdxl = _is_sdxl_unet(unet)

    class UNetInputs(torch.nn.Module):  # type: ignore[misc]
        """The UNet with plain tensor inputs (SDXL's added conditions as two of them)."""

        def __init__(self) -> None:
            super().__init__()
            self.unet = unet

        def forward(self, sample: Any, timestep: Any, encoder_hidden_states: Any, *added: Any) -> Any:
            extra = {"added_cond_kwargs": {"text_embeds": added[0], "time_ids": added[1]}} if sdxl else {}
            return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states, return_dict=False, **extra)[
                0
            ]

    latent = torch.randn(1, unet.config.in_channels, EXAMPLE_LATENT_SIDE, EXAMPLE_LATENT_SIDE)
    context = torch.randn(1, 77, unet.config.cross_attention_dim)
    example: tuple[Any, ...] = (latent, torch.tensor([999.0]), context)
    if sdxl:
        time_ids = 6  # original size, crop, target size: two numbers each
        pooled = unet.config.projection_class_embeddings_input_dim - time_ids * unet.config.addition_time_embed_dim
        example += (torch.randn(1, pooled), torch.tensor([[512.0, 512.0, 0.0, 0.0, 512.0, 512.0]]))
    return UNetInputs(), example


def _vae_decoder_wrapper(vae: Any) -> Any:
    import torch

    class VaeDecoder(torch.nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.vae = vae

        def forward(self, latents: Any) -> Any:
            return self.vae.decode(latents, return_dict=False)[0]

    latents = torch.randn(1, vae.config.latent_channels, EXAMPLE_LATENT_SIDE, EXAMPLE_LATENT_SIDE)
    return VaeDecoder(), (latents,)


def without_telemetry() -> None:
    """Keep OpenVINO's converter from reporting conversions to Google Analytics.

    ``openvino.convert_model`` sends usage events through the ``openvino-telemetry`` package (a dependency of
    ``openvino``) unless a consent file says no; without that package it uses a no-op stub. A self-hosted studio
    sends nothing anywhere, so the converter gets the stub, whether or not it was imported already.
    """
    if "openvino.tools.ovc.telemetry_utils" not in sys.modules:
        sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]  # its import then fails: stub
    import openvino.tools.ovc.telemetry_stub as stub
    import openvino.tools.ovc.telemetry_utils as telemetry

    telemetry.tm = stub


def convert(base: Any, folder: Path) -> None:
    """Write the UNet and VAE decoder of ``base`` (fp32 modules) as OpenVINO IR files into ``folder``."""
    without_telemetry()
    import openvino as ov
    import torch

    for name, (module, example) in (
        (UNET_IR, _unet_wrapper(base.unet)),
        (VAE_DECODER_IR, _vae_decoder_wrapper(base.vae)),
    ):
        # Tracing warns about every shape-dependent Python branch in diffusers; the ones that matter (the UNet's
        # upsampling for odd latent sides) are routed to torch at run time (``patched``).
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = ov.convert_model(module, example_input=example)
        # Weights stored as fp16 halve the disk space; the CPU computes in bf16 (or f32) either way.
        ov.save_model(model, str(folder / name), compress_to_fp16=True)
        del model
        gc.collect()


def release_mapped_pages(folder: Path) -> int:
    """Drop this process's resident pages of the files under ``folder`` that it has memory-mapped; returns bytes.

    OpenVINO maps its compiled blob (the weights, as stored) and repacks the weights into its kernels' own layout
    at the first call of each shape; the mapped copy then sits in the process's memory unused, ~1.7 GB for SD 2.1's
    UNet. ``madvise(MADV_DONTNEED)`` on a read-only file mapping just unmaps those pages: a later read (a new shape)
    faults them back in from the file. Linux only; elsewhere nothing happens.
    """
    maps = Path("/proc/self/maps")
    if not maps.exists():
        return 0
    import ctypes

    prefix = str(folder.resolve()) + "/"
    madvise = ctypes.CDLL(None, use_errno=True).madvise
    released = 0
    for line in maps.read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or not fields[5].startswith(prefix) or "w" in fields[1]:
            continue
        start, end = (int(v, 16) for v in fields[0].split("-"))
        if madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), MADV_DONTNEED) == 0:
            released += end - start
    return released


class OpenVinoModules:
    """The compiled UNet and VAE decoder of one model, and the patches that route a pipeline's calls to them."""

    def __init__(self, folder: Path, *, threads: int, bf16: bool):
        import openvino as ov

        core = ov.Core()
        config = {
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32",
            "CACHE_DIR": str(folder / OV_CACHE_DIR),
        }
        self.folder = folder
        self.unet = core.compile_model(str(folder / UNET_IR), "CPU", config).create_infer_request()
        self.vae_decoder = core.compile_model(str(folder / VAE_DECODER_IR), "CPU", config).create_infer_request()
        self.precision = "bf16" if bf16 else "fp32"

    @property
    def size_bytes(self) -> int:
        """Weight bytes OpenVINO holds (fp16 on disk, bf16 or f32 in memory)."""
        stored = sum(p.stat().st_size for p in self.folder.glob("*.bin"))
        return stored if self.precision == "bf16" else 2 * stored

    def _run(self, request: Any, inputs: list[Any], dtype: Any) -> Any:
        import numpy as np
        import torch

        request.infer([x.detach().float().contiguous().numpy() for x in inputs])
        # The output buffer belongs to the request and is overwritten by its next call: copy it out.
        out = torch.from_numpy(np.array(request.get_output_tensor(0).data, copy=True)).to(dtype)
        release_mapped_pages(self.folder / OV_CACHE_DIR)
        return out

    @contextmanager
    def patched(self, base: Any) -> Iterator[None]:
        """Route ``base``'s UNet and VAE decode calls to OpenVINO for the duration of the block."""
        unet, vae = base.unet, base.vae
        unet_forward, vae_decode = unet.forward, vae.decode  # bound methods: the torch fallback
        sdxl = _is_sdxl_unet(unet)
        up_factor = unet_size_factor(unet)

        def forward(sample: Any, timestep: Any, encoder_hidden_states: Any = None, *args: Any, **kw: Any) -> Any:
            return_dict = kw.pop("return_dict", True)
            added = kw.get("added_cond_kwargs") or {}
            other = {k: v for k, v in kw.items() if v is not None and k not in ("added_cond_kwargs",)}
            covered = (
                not args
                and not other.get("cross_attention_kwargs")
                and not {k for k in other if k != "cross_attention_kwargs"}
                and encoder_hidden_states is not None
                and set(added) == ({"text_embeds", "time_ids"} if sdxl else set())
                # diffusers' UNet changes its upsampling for other latent sides; the traced graph did not.
                and sample.shape[-1] % up_factor == 0
                and sample.shape[-2] % up_factor == 0
            )
            if not covered:
                return unet_forward(sample, timestep, encoder_hidden_states, *args, return_dict=return_dict, **kw)
            import torch
            from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

            steps = torch.as_tensor(timestep, dtype=torch.float32).reshape(-1).expand(sample.shape[0])
            inputs = [sample, steps, encoder_hidden_states]
            if sdxl:
                inputs += [added["text_embeds"], added["time_ids"]]
            out = self._run(self.unet, inputs, sample.dtype)
            return UNet2DConditionOutput(sample=out) if return_dict else (out,)

        def decode(z: Any, return_dict: bool = True, generator: Any = None) -> Any:
            if getattr(vae, "use_tiling", False) or getattr(vae, "use_slicing", False):
                return vae_decode(z, return_dict=return_dict, generator=generator)
            import torch
            from diffusers.models.autoencoders.vae import DecoderOutput

            # The picture stays float32 (torch's bf16 would round it to about half a level of 255).
            out = self._run(self.vae_decoder, [z], torch.float32)
            return DecoderOutput(sample=out) if return_dict else (out,)

        unet.forward, vae.decode = forward, decode
        try:
            yield
        finally:
            # The instance attributes hid the class's methods; removing them brings those back.
            del unet.forward, vae.decode
