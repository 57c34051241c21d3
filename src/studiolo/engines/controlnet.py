"""ControlNet units on a loaded diffusers model (issue 19).

A job's units are turned into the task's ControlNet pipeline built with ``AutoPipelineFor*.from_pipe`` from the cached
base pipeline: it shares the base's UNet, VAE and text encoders (no second copy of the base weights) and adds the
ControlNet(s). Each ControlNet is loaded once per cached model and kept beside it in ``entry.extras["controlnet"]``
(a small LRU), its bytes reported in ``entry.extra_bytes["controlnet"]`` so the engine's byte budget counts them.

A unit at strength 0, or with an empty start..end window, does nothing; when no unit acts the plain pipeline runs, so
such a job gives exactly the pixels of the same job without control.
"""

from __future__ import annotations

import json
import tempfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from studiolo.engines.base import AdapterRef, ControlSpec, EngineError, GenerationRequest
from studiolo.engines.diffusers_entry import LoadedPipeline, module_bytes
from studiolo.engines.model_files import CONFIGS_DIR
from studiolo.engines.preprocess import PREPROCESSORS_EXTRA, make_control_map

EXTRAS_KEY = "controlnet"
# ControlNets kept per cached model: an SD1.5 one is ~1.4 GB in fp32, so a few at most; the least recently used goes.
MAX_CONTROLNETS = 4
# Architecture configs of the published ControlNets per base family, for single files (there is no hub to ask).
PACKAGED_CONFIGS = {"sd15": "controlnet-sd15", "sdxl": "controlnet-sdxl"}
_WEIGHT_SUFFIXES = (".safetensors",)


@dataclass
class ControlNetState:
    """What one cached model holds for ControlNet: the loaded nets (LRU) and the task pipelines built with them."""

    nets: OrderedDict[str, Any] = field(default_factory=OrderedDict)
    pipes: dict[tuple[str, tuple[str, ...]], Any] = field(default_factory=dict)
    loads: int = 0  # how many ControlNets were read from disk (tests check that a cached one is not read again)


def _state(entry: LoadedPipeline) -> ControlNetState:
    state = entry.extras.get(EXTRAS_KEY)
    if not isinstance(state, ControlNetState):
        state = ControlNetState()
        entry.extras[EXTRAS_KEY] = state
    return state


def acting_units(request: GenerationRequest) -> list[ControlSpec]:
    """The units that change anything: strength above 0 and a non-empty share of the steps."""
    return [u for u in request.controls if u.strength > 0 and u.end > u.start]


def control_pipeline(entry: LoadedPipeline, request: GenerationRequest, pipe: Any, kwargs: dict[str, Any]) -> Any:
    """The pipeline to run ``request`` with: ``pipe`` itself when no ControlNet unit acts, else the task's ControlNet
    pipeline sharing ``entry``'s modules, with the units' maps and settings added to ``kwargs``."""
    units = acting_units(request)
    if not units:
        return pipe
    if request.kind not in ("txt2img", "img2img", "inpaint"):
        raise EngineError(f"ControlNet does not apply to {request.kind} jobs.", code="adapters_unsupported")
    preprocessors = request.extra.get(PREPROCESSORS_EXTRA)
    refs = [r for r in preprocessors if isinstance(r, AdapterRef)] if isinstance(preprocessors, list) else []
    maps: list[Image.Image] = []
    for unit in units:
        if unit.preprocess:
            control = make_control_map(unit.type, unit.image, request.width, request.height, preprocessors=refs)
        else:  # the picture already is the map, as the user drew or made it
            control = unit.image.convert("RGB").resize((request.width, request.height), Image.Resampling.LANCZOS)
        maps.append(control)
    # Maps first: a map that cannot be made (no depth preprocessor) fails the job before any ControlNet is loaded.
    nets = [controlnet_for(entry, unit.adapter) for unit in units]
    control_pipe = _task_pipeline(entry, request.kind, [unit.adapter for unit in units], nets)
    several = len(units) > 1
    # txt2img ControlNet pipelines take the map as ``image``; img2img/inpaint ones use ``image`` for the init picture.
    # One map per unit, not a per-image list: every pipeline repeats a single map for each image of the batch (the
    # same tensor a per-image list would give, so image k of a batch still equals that seed alone), while the
    # img2img/inpaint/SDXL pipelines refuse per-image lists when there are several ControlNets.
    kwargs["image" if request.kind == "txt2img" else "control_image"] = maps if several else maps[0]
    kwargs["controlnet_conditioning_scale"] = [u.strength for u in units] if several else units[0].strength
    kwargs["control_guidance_start"] = [u.start for u in units] if several else units[0].start
    kwargs["control_guidance_end"] = [u.end for u in units] if several else units[0].end
    return control_pipe


def _net_key(ref: AdapterRef) -> str:
    return f"{ref.id}\0{ref.path}\0{ref.sha256 or ''}"


def controlnet_for(entry: LoadedPipeline, ref: AdapterRef) -> Any:
    """The ControlNet ``ref`` loaded onto ``entry``'s device and dtype, read from disk once per cached model."""
    state = _state(entry)
    key = _net_key(ref)
    net = state.nets.get(key)
    if net is not None:
        state.nets.move_to_end(key)
        return net
    net = load_controlnet(ref, entry.base.unet, entry.device)
    state.loads += 1
    state.nets[key] = net
    while len(state.nets) > MAX_CONTROLNETS:
        old_key, _old = state.nets.popitem(last=False)
        old_id = old_key.split("\0", 1)[0]
        # Pipelines built with the dropped net would keep it alive: they go too (rebuilt cheaply when needed).
        state.pipes = {k: p for k, p in state.pipes.items() if old_id not in k[1]}
    entry.extra_bytes[EXTRAS_KEY] = module_bytes(*state.nets.values())
    return net


def _task_pipeline(entry: LoadedPipeline, kind: str, refs: list[AdapterRef], nets: list[Any]) -> Any:
    import diffusers
    from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

    state = _state(entry)
    key = (kind, tuple(r.id for r in refs))
    pipe = state.pipes.get(key)
    if pipe is not None and _pipe_nets(pipe) == [id(n) for n in nets]:
        return pipe
    auto = {
        "txt2img": diffusers.AutoPipelineForText2Image,
        "img2img": diffusers.AutoPipelineForImage2Image,
        "inpaint": diffusers.AutoPipelineForInpainting,
    }[kind]
    controlnet = nets[0] if len(nets) == 1 else MultiControlNetModel(nets)
    try:
        # from_pipe shares the base's modules: only the ControlNet is new.
        pipe = auto.from_pipe(entry.base, controlnet=controlnet)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise EngineError(
            f"This model's pipeline ({type(entry.base).__name__}) has no ControlNet variant for {kind}: {exc}",
            code="adapters_unsupported",
        ) from exc
    pipe.set_progress_bar_config(disable=True)
    state.pipes[key] = pipe
    return pipe


def _pipe_nets(pipe: Any) -> list[int]:
    net = getattr(pipe, "controlnet", None)
    inner = getattr(net, "nets", None)
    return [id(n) for n in inner] if inner is not None else [id(net)]


# --- loading ----------------------------------------------------------------------------------------------------


def load_controlnet(ref: AdapterRef, base_unet: Any, device: str) -> Any:
    """Read ControlNet ``ref`` (a diffusers folder, or one .safetensors file in the original ``control_model.*``
    layout or with diffusers keys) in the base UNet's dtype, on ``device``."""
    import diffusers

    from studiolo.engines.diffusers_engine import _dtype_kwarg  # imported here: that module imports this one
    from studiolo.engines.hf_libraries import quiet_hf_libraries

    quiet_hf_libraries()
    path = Path(ref.path)
    dtype = _dtype_kwarg(base_unet.dtype)
    try:
        if path.is_dir() and (path / "config.json").is_file():
            net = diffusers.ControlNetModel.from_pretrained(str(path), local_files_only=True, **dtype, **_variant(path))
        else:
            weights = _single_file(ref, path)
            with tempfile.TemporaryDirectory(prefix="studiolo-controlnet-") as tmp:
                config_dir = _config_dir(ref, base_unet, weights, Path(tmp))
                net = diffusers.ControlNetModel.from_single_file(
                    str(weights), config=str(config_dir), local_files_only=True, **dtype
                )
    except EngineError:
        raise
    except FileNotFoundError as exc:
        raise EngineError(f"ControlNet '{ref.id}' is missing its files: {exc}", code="adapter_unavailable") from exc
    except Exception as exc:
        raise EngineError(
            f"Could not load ControlNet '{ref.id}' from {path}: {type(exc).__name__}: {exc}. The file may be damaged "
            "or made for another base model; re-import it.",
            code="model_file_corrupt",
        ) from exc
    return net.to(device).eval()


def _variant(folder: Path) -> dict[str, Any]:
    """``variant="fp16"`` when the folder holds only ``*.fp16.*`` weights (as a hub download may)."""
    weights = [p.name for p in folder.iterdir() if p.suffix in (".safetensors", ".bin")]
    return {"variant": "fp16"} if weights and all(".fp16" in name for name in weights) else {}


def _single_file(ref: AdapterRef, path: Path) -> Path:
    """The weights file of a single-file ControlNet: ``path`` itself, or the one named (or only) file in its folder."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise EngineError(f"ControlNet '{ref.id}' is missing: nothing at {path}.", code="adapter_unavailable")
    name = ref.meta.get("weight_name")
    if isinstance(name, str) and (path / name).is_file():
        return path / name
    files = sorted(p for p in path.iterdir() if p.suffix in _WEIGHT_SUFFIXES)
    if len(files) != 1:
        raise EngineError(
            f"ControlNet '{ref.id}': expected one .safetensors file in {path}, found {len(files)}.",
            code="model_file_corrupt",
        )
    return files[0]


def _config_dir(ref: AdapterRef, base_unet: Any, weights: Path, tmp: Path) -> Path:
    """The architecture config for a single-file ControlNet.

    SD1.5 and SDXL ones use the published configs shipped in the package. Others (SD2.x, or a base of no known family,
    such as the tiny test models) have no published config to ship; a ControlNet is a copy of its base UNet's encoder
    half, so its architecture is derived from the base UNet it will run with (what ``ControlNetModel.from_unet``
    does), built on the meta device so no weights are allocated for it. Only the conditioning embedding (which
    brings the map down to the latents' size, so it follows the VAE, not the UNet) is read from the file's shapes."""
    packaged = PACKAGED_CONFIGS.get(ref.family or "")
    if packaged is not None:
        return CONFIGS_DIR / packaged
    import torch
    from diffusers import ControlNetModel

    options: dict[str, Any] = {}
    channels = _cond_channels(weights)
    if channels:
        options["conditioning_embedding_out_channels"] = tuple(channels)
    with torch.device("meta"):
        shape = ControlNetModel.from_unet(base_unet, load_weights_from_unet=False, **options)
    config = {k: v for k, v in dict(shape.config).items() if not k.startswith("_")}
    config["_class_name"] = "ControlNetModel"
    (tmp / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return tmp


def _cond_channels(weights: Path) -> list[int]:
    """The conditioning embedding's channel widths, from the tensor shapes of a single file (either layout): its first
    conv's output, then every second conv's (the ones that downsample and widen). Empty when the file has none."""
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as f:
        shapes = {k.removeprefix("control_model."): f.get_slice(k).get_shape() for k in f.keys()}  # noqa: SIM118
    if "controlnet_cond_embedding.conv_in.weight" in shapes:
        first = "controlnet_cond_embedding.conv_in.weight"
        blocks = [f"controlnet_cond_embedding.blocks.{2 * k + 1}.weight" for k in range(len(shapes))]
    else:  # the original layout: input_hint_block.0 (conv in), then convs at 2, 4, 6... (SiLUs between)
        first = "input_hint_block.0.weight"
        blocks = [f"input_hint_block.{4 * (k + 1)}.weight" for k in range(len(shapes))]
    if first not in shapes:
        return []
    channels = [int(shapes[first][0])]
    for key in blocks:
        if key not in shapes:
            break
        channels.append(int(shapes[key][0]))
    return channels
