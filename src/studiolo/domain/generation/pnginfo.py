"""Generation settings read back from a PNG: Studiolo's own "studiolo" chunk, AUTOMATIC1111's "parameters" text and
ComfyUI's "prompt" graph, mapped to GenerationParams field names (POST /png-info; the generator fills its form
with them when a PNG is dropped). Pure functions: no database, no store; the pixels are never decoded."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal

from PIL import Image
from pydantic import BaseModel, Field

from studiolo.domain.gallery.imaging import A1111_SAMPLER_NAMES, PNG_MAGIC, parse_a1111_parameters
from studiolo.domain.generation.infotext import read_adapter_settings
from studiolo.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType

Source = Literal["studiolo", "a1111", "comfyui"]

# A1111 display names -> our sampler ids ("Euler a" -> "euler_a"); the reverse of what outputs.py writes.
_SAMPLER_IDS: Final = {name.lower(): sampler_id for sampler_id, name in A1111_SAMPLER_NAMES.items()}
# ComfyUI's sampler_name values that have one of our ids.
_COMFY_SAMPLERS: Final = {
    "euler": "euler",
    "euler_ancestral": "euler_a",
    "heun": "heun",
    "dpmpp_2m": "dpmpp_2m",
    "ddim": "ddim",
    "lms": "lms",
    "uni_pc": "unipc",
}
# Fields of Studiolo's own chunk that are GenerationParams fields under the same name.
_STUDIOLO_FIELDS: Final = (
    "prompt",
    "negative_prompt",
    "style",
    "model",
    "seed",
    "steps",
    "guidance",
    "sampler",
    "scheduler",
    "width",
    "height",
    "strength",
    "variation_seed",
    "variation_strength",
)
# A ControlNet unit's request fields that Studiolo's chunk keeps (its picture is not kept in a PNG).
_CONTROL_FIELDS: Final = ("type", "model", "strength", "start", "end", "preprocess")
# Keys of an A1111 text that say nothing a generation could use again (hashes, versions): not "unmapped". The LoRAs
# and embeddings the hashes name are in the prompt, as tags and words.
_A1111_NOISE: Final = frozenset({"Model hash", "VAE hash", "Version", "Lora hashes", "TI hashes", "Hashes"})


class PngInfo(BaseModel):
    """What ``POST /png-info`` answers."""

    source: Source | None = Field(description="Which metadata was read; null when the PNG carries none we know")
    parameters: dict[str, Any] = Field(description="GenerationParams field names and their values")
    raw: str | None = Field(description="The text the settings came from (A1111 text, or the JSON of the others)")
    unmapped: list[str] = Field(description="Settings found that have no Studiolo field (e.g. 'Clip skip: 2')")


def _text_chunks(data: bytes, max_bytes: int) -> dict[str, str]:
    if not data:
        raise InvalidInput("The uploaded file is empty.", code="empty_upload", details={"field": "file"})
    if len(data) > max_bytes:
        raise PayloadTooLarge(
            f"The file is larger than {max_bytes} bytes.",
            code="upload_too_large",
            details={"field": "file", "limit": max_bytes, "actual": len(data)},
        )
    if not data.startswith(PNG_MAGIC):
        raise UnsupportedMediaType(
            "Upload a PNG image: settings are read from a PNG's text chunks.",
            code="unsupported_media_type",
            details={"field": "file", "allowed": ["image/png"]},
        )
    try:
        # Pillow reads the chunks before the image data here (where every tool writes its text); no pixels.
        with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
            info = dict(image.info)
    except Exception as exc:  # any parser failure is a broken upload, never a 500
        raise InvalidInput("The PNG could not be read.", code="image_corrupt", details={"field": "file"}) from exc
    return {str(k): v for k, v in info.items() if isinstance(v, str)}


def read_png_info(data: bytes, *, max_bytes: int) -> PngInfo:
    """The generation settings a PNG carries. Studiolo's chunk wins over the A1111 text it also writes (it keeps
    the prompt as typed, before the style was applied); then A1111 text; then a ComfyUI graph."""
    chunks = _text_chunks(data, max_bytes)
    own = _json_object(chunks.get("studiolo"))
    if own is not None and own.get("generator") == "studiolo":
        params = {k: own[k] for k in _STUDIOLO_FIELDS if own.get(k) is not None}
        if params.get("sampler") == "default":
            del params["sampler"]
        params.update(_own_adapters(own))
        return PngInfo(source="studiolo", parameters=params, raw=json.dumps(own, ensure_ascii=False), unmapped=[])
    if text := chunks.get("parameters"):
        params, unmapped = from_a1111(text)
        return PngInfo(source="a1111", parameters=params, raw=text, unmapped=unmapped)
    graph = _json_object(chunks.get("prompt"))
    if graph is not None and (found := from_comfyui(graph)) is not None:
        params, unmapped = found
        return PngInfo(source="comfyui", parameters=params, raw=chunks["prompt"], unmapped=unmapped)
    return PngInfo(source=None, parameters={}, raw=None, unmapped=[])


def _own_adapters(own: Mapping[str, Any]) -> dict[str, Any]:
    """Issue 19: the LoRAs, ControlNet units (their pictures are not in a PNG), reference and hires fix of Studiolo's
    chunk, as request fields. Embeddings are prompt words: the prompt brings them back."""
    params: dict[str, Any] = {}
    if isinstance(loras := own.get("loras"), list) and loras:
        params["loras"] = [
            {"name": x["name"], "weight": x.get("weight", 1.0)}
            for x in loras
            if isinstance(x, dict) and isinstance(x.get("name"), str)
        ]
    if isinstance(controls := own.get("controls"), list) and controls:
        params["controls"] = [
            {k: x[k] for k in _CONTROL_FIELDS if x.get(k) is not None}
            for x in controls
            if isinstance(x, dict) and isinstance(x.get("type"), str)
        ]
    if isinstance(reference := own.get("reference"), dict):
        params["reference_strength"] = reference.get("strength")
        if reference.get("model"):
            params["reference_model"] = reference["model"]
    if isinstance(hires := own.get("hires"), dict):
        params["hires"] = {k: hires[k] for k in ("scale", "upscaler", "strength", "steps") if hires.get(k) is not None}
    return {k: v for k, v in params.items() if v is not None and v != [] and v != {}}


def _json_object(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _number(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    def read(text: str) -> Any:
        try:
            return convert(text.strip())
        except ValueError:
            return None

    return read


def _size(text: str) -> dict[str, int] | None:
    width, _, height = text.strip().partition("x")
    if width.isdigit() and height.isdigit():
        return {"width": int(width), "height": int(height)}
    return None


def _sampler(text: str) -> str | None:
    return _SAMPLER_IDS.get(text.strip().lower())


# A1111 key -> (our field, how to read the value); a reader's None means "found but not usable".
_A1111_FIELDS: Final[Mapping[str, tuple[str, Callable[[str], Any]]]] = {
    "Steps": ("steps", _number(int)),
    "Sampler": ("sampler", _sampler),
    "CFG scale": ("guidance", _number(float)),
    "Seed": ("seed", _number(int)),
    "Model": ("model", str.strip),
    "Schedule type": ("scheduler", lambda v: v.strip().lower() or None),
    "Variation seed": ("variation_seed", _number(int)),
    "Variation seed strength": ("variation_strength", _number(float)),
    "Denoising strength": ("strength", _number(float)),
}


def from_a1111(text: str) -> tuple[dict[str, Any], list[str]]:
    """GenerationParams fields from A1111 "parameters" text, and the settings that have no field (as "Key: value")."""
    parsed = parse_a1111_parameters(text)
    params: dict[str, Any] = {}
    if prompt := parsed.pop("prompt"):
        params["prompt"] = prompt
    if negative := parsed.pop("negative_prompt"):
        params["negative_prompt"] = negative
    # Issue 19: hires fix (its "Denoising strength" is the second pass's) and ControlNet units. LoRAs stay as
    # <lora:name:weight> tags in the prompt, which is how submit reads them.
    adapters, used, unmapped = read_adapter_settings(parsed)
    params.update(adapters)
    for key, value in parsed.items():
        if key in used:
            continue
        if key == "Size" and (size := _size(value)):
            params.update(size)
        elif key in _A1111_FIELDS and (read := _A1111_FIELDS[key][1](value)) is not None:
            params[_A1111_FIELDS[key][0]] = read
        elif key not in _A1111_NOISE:
            unmapped.append(f"{key}: {value}")
    return params, unmapped


def _node(graph: Mapping[str, Any], link: Any) -> dict[str, Any] | None:
    """The node a ComfyUI input links to (``[node_id, output_index]``)."""
    if isinstance(link, list) and link and isinstance(node := graph.get(str(link[0])), dict):
        return node
    return None


def _inputs(node: Mapping[str, Any] | None) -> dict[str, Any]:
    value = node.get("inputs") if node else None
    return value if isinstance(value, dict) else {}


def _checkpoint(graph: Mapping[str, Any], link: Any, depth: int = 0) -> str | None:
    """Follow a model link back through LoRA loaders and the like to the checkpoint loader."""
    node = _node(graph, link)
    if node is None or depth > 20:
        return None
    if isinstance(name := _inputs(node).get("ckpt_name"), str):
        return name
    return _checkpoint(graph, _inputs(node).get("model"), depth + 1)


def from_comfyui(graph: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]] | None:
    """GenerationParams fields from a ComfyUI API-format graph (the PNG's "prompt" chunk): its first KSampler's
    seed, steps, cfg, sampler and scheduler, the CLIPTextEncode texts it links to, the EmptyLatentImage size and
    the checkpoint. None when the graph has no KSampler (nothing of it maps)."""
    kinds = ("KSampler", "KSamplerAdvanced")
    samplers = [n for _, n in sorted(graph.items()) if isinstance(n, dict) and n.get("class_type") in kinds]
    if not samplers:
        return None
    inputs = _inputs(samplers[0])
    params: dict[str, Any] = {}
    unmapped: list[str] = []
    seed = inputs.get("seed", inputs.get("noise_seed"))
    if isinstance(seed, int) and 0 <= seed <= 2**32 - 1:
        params["seed"] = seed
    elif seed is not None:
        unmapped.append(f"seed: {seed}")
    if isinstance(steps := inputs.get("steps"), int):
        params["steps"] = steps
    if isinstance(cfg := inputs.get("cfg"), int | float):
        params["guidance"] = float(cfg)
    if isinstance(name := inputs.get("sampler_name"), str):
        if name in _COMFY_SAMPLERS:
            params["sampler"] = _COMFY_SAMPLERS[name]
        else:
            unmapped.append(f"sampler_name: {name}")
    if isinstance(scheduler := inputs.get("scheduler"), str):
        params["scheduler"] = scheduler
    if isinstance(denoise := inputs.get("denoise"), int | float) and denoise < 1:
        unmapped.append(f"denoise: {denoise}")
    for field, key in (("prompt", "positive"), ("negative_prompt", "negative")):
        node = _node(graph, inputs.get(key))
        text = _inputs(node).get("text")
        if isinstance(text, str):
            if text.strip() or field == "prompt":
                params[field] = text
        elif node is not None:
            unmapped.append(f"{key}: {node.get('class_type', 'node')}")
    latent = _node(graph, inputs.get("latent_image"))
    if latent and latent.get("class_type") == "EmptyLatentImage":
        width, height = _inputs(latent).get("width"), _inputs(latent).get("height")
        if isinstance(width, int) and isinstance(height, int):
            params.update(width=width, height=height)
    elif latent is not None:
        unmapped.append(f"latent_image: {latent.get('class_type', 'node')}")
    if checkpoint := _checkpoint(graph, inputs.get("model")):
        params["model"] = checkpoint
    return params, unmapped
