"""IP-Adapter reference images on a loaded diffusers model (issue 19).

An IP-Adapter file (``ip-adapter_sd15.safetensors`` and its kin: ``image_proj.*`` and ``ip_adapter.*`` keys) adds
a projection from a CLIP image embedding to a few extra "words", and an extra key/value to every cross-attention
of the UNet that reads them. Its CLIP vision encoder is a separate folder (the adapter's ``meta["image_encoder"]``,
written by the importer).

It is loaded once per cached model with diffusers' own loader (``load_ip_adapter``, from the tensors we read, so
nothing is fetched from a hub), then kept: the attention processors it installs, its image projection and the
image encoder. A job with a reference switches them in (cheap: a swap of processor objects, no copy of weights);
a job without one switches the UNet back to the very processor objects it had before, so it draws exactly the
plain model's pixels. Strength 0 is the same as no reference. One IP-Adapter stays loaded per model: a job with
another one drops the first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studiolo.engines.base import AdapterRef, EngineError, GenerationRequest
from studiolo.engines.diffusers_entry import LoadedPipeline, module_bytes
from studiolo.engines.hf_libraries import quiet_hf_libraries

MODULE = "ip_adapter"
_WEIGHT_SUFFIXES = (".safetensors", ".bin")


@dataclass
class _Loaded:
    """One IP-Adapter loaded onto a model: what its UNet runs with the adapter on, and what it ran without."""

    adapter_id: str
    encoder: Any  # CLIPVisionModelWithProjection
    feature_extractor: Any  # CLIPImageProcessor sized for the encoder
    with_procs: dict[str, Any]
    with_projection: Any  # the UNet's encoder_hid_proj with the adapter: MultiIPAdapterImageProjection
    without_procs: dict[str, Any]
    without_projection: Any
    without_hid_type: Any
    active: bool = True

    def switch(self, unet: Any, on: bool) -> None:
        if on == self.active:
            return
        # set_attn_processor pops from the dict it is given: hand it a copy.
        unet.set_attn_processor(dict(self.with_procs if on else self.without_procs))
        unet.encoder_hid_proj = self.with_projection if on else self.without_projection
        # As diffusers' own loader and unload_ip_adapter set it: the UNet reads the image embeds only with this type.
        unet.config.encoder_hid_dim_type = "ip_image_proj" if on else self.without_hid_type
        self.active = on


def apply_reference(entry: LoadedPipeline, pipe: Any, request: GenerationRequest, kwargs: dict[str, Any]) -> None:
    """Set ``pipe`` up for ``request.reference`` (its image embeds into ``kwargs``), or leave it without one."""
    reference = request.reference
    state: _Loaded | None = entry.extras.get(MODULE)
    unet = entry.base.unet if hasattr(entry.base, "unet") else None
    if reference is None or reference.strength == 0:
        if state is not None and unet is not None:
            state.switch(unet, on=False)
        return
    if unet is None or not hasattr(pipe, "set_ip_adapter_scale"):
        raise EngineError(
            f"Model '{request.model.id}' cannot take a reference image for {request.kind}.",
            code="adapters_unsupported",
        )
    if state is None or state.adapter_id != reference.adapter.id:
        if state is not None:
            state.switch(unet, on=False)
            entry.extras.pop(MODULE, None)
            entry.extra_bytes.pop(MODULE, None)
            del state
        state = _load(entry, reference.adapter)
        entry.extras[MODULE] = state
        entry.extra_bytes[MODULE] = module_bytes(state.encoder, state.with_projection, *state.with_procs.values())
    state.switch(unet, on=True)
    # The task pipelines share the UNet but each has its own image encoder slot (from_pipe copies them at load).
    if getattr(pipe, "image_encoder", None) is not state.encoder:
        pipe.register_modules(image_encoder=state.encoder, feature_extractor=state.feature_extractor)
    pipe.set_ip_adapter_scale(float(reference.strength))
    # One entry per loaded IP-Adapter (diffusers' list); its embeds are made once and repeated for every image of
    # the batch, so image k of a batch equals the same seed alone.
    kwargs["ip_adapter_image"] = [reference.image.convert("RGB")]


# --- loading --------------------------------------------------------------------------------------------------


def _load(entry: LoadedPipeline, adapter: AdapterRef) -> _Loaded:
    quiet_hf_libraries()
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    base = entry.base
    unet = base.unet
    state_dict = _read_weights(adapter)
    encoder_dir = _encoder_folder(adapter)
    try:
        encoder = CLIPVisionModelWithProjection.from_pretrained(str(encoder_dir), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise EngineError(
            f"The image encoder of IP-Adapter '{adapter.id}' at {encoder_dir} could not be loaded: {exc}",
            code="model_file_corrupt",
        ) from exc
    encoder = encoder.to(device=entry.device, dtype=unet.dtype).eval()
    proj = state_dict["image_proj"].get("proj.weight")
    if proj is not None and int(proj.shape[-1]) != int(encoder.config.projection_dim):
        raise EngineError(
            f"IP-Adapter '{adapter.id}' takes {proj.shape[-1]}-wide image embeddings but its image encoder makes "
            f"{encoder.config.projection_dim}-wide ones: the encoder folder is for another IP-Adapter.",
            code="adapter_incompatible",
        )
    size = int(encoder.config.image_size)
    feature_extractor = CLIPImageProcessor(size=size, crop_size=size)
    without_procs = dict(unet.attn_processors)
    without_projection = unet.encoder_hid_proj
    without_hid_type = unet.config.encoder_hid_dim_type
    # Registered on the loaded pipeline first so diffusers' loader neither looks for an encoder nor makes its own
    # feature extractor.
    base.register_modules(image_encoder=encoder, feature_extractor=feature_extractor)
    try:
        base.load_ip_adapter(state_dict, subfolder="", weight_name="", image_encoder_folder=None)
    except (RuntimeError, ValueError, KeyError) as exc:
        # The loader may have swapped some processors in before failing: put the model back as it was.
        unet.set_attn_processor(dict(without_procs))
        unet.encoder_hid_proj = without_projection
        unet.config.encoder_hid_dim_type = without_hid_type
        raise EngineError(
            f"IP-Adapter '{adapter.id}' does not fit model '{entry.base.__class__.__name__}': {exc}",
            code="adapter_incompatible",
        ) from exc
    return _Loaded(
        adapter_id=adapter.id,
        encoder=encoder,
        feature_extractor=feature_extractor,
        with_procs=dict(unet.attn_processors),
        with_projection=unet.encoder_hid_proj,
        without_procs=without_procs,
        without_projection=without_projection,
        without_hid_type=without_hid_type,
    )


def _weights_file(adapter: AdapterRef) -> Path:
    path = Path(adapter.path)
    if path.is_dir():
        named = adapter.meta.get("weight_name")
        candidates = [path / str(named)] if named else sorted(p for p in path.iterdir() if p.suffix in _WEIGHT_SUFFIXES)
        path = candidates[0] if candidates else path / "ip-adapter.safetensors"
    if not path.is_file():
        raise EngineError(f"IP-Adapter '{adapter.id}' is missing: nothing at {path}.", code="adapter_unavailable")
    return path


def _read_weights(adapter: AdapterRef) -> dict[str, dict[str, Any]]:
    """The adapter's tensors split as diffusers' loader takes them: {"image_proj": {...}, "ip_adapter": {...}}."""
    path = _weights_file(adapter)
    state: dict[str, dict[str, Any]] = {"image_proj": {}, "ip_adapter": {}}
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt", device="cpu") as f:
                for key in f.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
                    group, _, name = key.partition(".")
                    if group in state:
                        state[group][name] = f.get_tensor(key)
        else:
            import torch

            # The original .bin release: a pickled {"image_proj": ..., "ip_adapter": ...}; tensors only.
            loaded = torch.load(str(path), map_location="cpu", weights_only=True)
            state = {group: dict(loaded.get(group) or {}) for group in state}
    except Exception as exc:  # a damaged file surfaces as many error types, all meaning the same to the user
        raise EngineError(
            f"IP-Adapter '{adapter.id}' ({path.name}) could not be read: {exc}", code="model_file_corrupt"
        ) from exc
    if not state["image_proj"] or not state["ip_adapter"]:
        raise EngineError(
            f"IP-Adapter '{adapter.id}' ({path.name}) has no image_proj/ip_adapter weights: not an IP-Adapter file.",
            code="model_file_corrupt",
        )
    return state


def _encoder_folder(adapter: AdapterRef) -> Path:
    """The CLIP vision encoder: the importer's ``meta["image_encoder"]``, else an ``image_encoder/`` beside the file
    (the layout of the h94/IP-Adapter repository)."""
    named = adapter.meta.get("image_encoder")
    path = Path(adapter.path)
    folder = Path(str(named)) if named else (path if path.is_dir() else path.parent) / "image_encoder"
    if not (folder / "config.json").is_file():
        raise EngineError(
            f"IP-Adapter '{adapter.id}' needs its CLIP image encoder, but there is none at {folder}; re-import the "
            "adapter with its image encoder folder.",
            code="adapter_unavailable",
        )
    return folder
