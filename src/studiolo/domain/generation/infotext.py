"""A job's adapters and hires fix in AUTOMATIC1111's "parameters" text (issue 19), both ways: what outputs.py writes
and what pnginfo.py reads back. One module, so the names written and the names read are the same tables.

A1111 keeps LoRAs as ``<lora:name:weight>`` tags in the prompt and their file hashes in ``Lora hashes``
(embeddings: ``TI hashes``); the sd-webui-controlnet extension writes one setting per unit,
``ControlNet N: "Module: ..., Model: name [hash], Weight: ..."``, an IP-Adapter being a unit whose module is
``ip-adapter_clip_*``; hires fix is ``Hires upscale``, ``Hires steps``, ``Hires upscaler`` and ``Denoising
strength``, with ``Size`` the FIRST pass's size. Pure functions.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from studiolo.domain.adapters.prompt import lora_tags
from studiolo.domain.generation.schemas import MAX_CONTROLS
from studiolo.engines.base import CONTROL_TYPES, AdapterRef

ParamValue = str | int | float

# Our control types -> the preprocessor (A1111 "Module") that makes that map, as sd-webui-controlnet names them. The
# in-house thresholding scribble and lineart are closest to its xdog and "standard" ones (no neural net either).
CONTROL_MODULES: Final = {
    "canny": "canny",
    "depth": "depth_midas",
    "pose": "openpose",
    "scribble": "scribble_xdog",
    "lineart": "lineart_standard",
    "softedge": "softedge_pidinet",
    "tile": "tile_resample",
    "seg": "seg_ofade20k",
    "normal": "normal_bae",
    "mlsd": "mlsd",
}
# A Module's name -> our control type, by prefix (depth_leres++, openpose_full, dw_openpose_full, scribble_hed...).
_MODULE_PREFIXES: Final = (
    ("canny", "canny"),
    ("depth", "depth"),
    ("openpose", "pose"),
    ("dw_openpose", "pose"),
    ("scribble", "scribble"),
    ("lineart", "lineart"),
    ("softedge", "softedge"),
    ("tile", "tile"),
    ("seg", "seg"),
    ("normal", "normal"),
    ("mlsd", "mlsd"),
)
# Words of a ControlNet's file name that say its type (control_v11p_sd15_openpose, t2i-adapter_canny...): how a unit
# whose Module is "none" (the picture already was the map) is typed.
_MODEL_WORDS: Final = (*((t, t) for t in CONTROL_TYPES if t != "pose"), ("openpose", "pose"), ("pose", "pose"))
# What sd-webui-controlnet writes of a unit besides module, model, weight and the window; our engine's counterparts.
_UNIT_TAIL: Final = "Resize Mode: Crop and Resize, Processor Res: 512"
_CANNY_THRESHOLDS: Final = "Threshold A: 100.0, Threshold B: 200.0"  # A1111's canny defaults (low, high)
_UNIT_END: Final = "Pixel Perfect: False, Control Mode: Balanced"
_UNIT_KEY: Final = re.compile(r"^Control[Nn]et (\d+)$")
_UNIT_PAIR: Final = re.compile(r"\s*(\w[\w \-/]*):\s*([^,]*)(?:,|$)")
_MODEL_HASH: Final = re.compile(r"\s*\[[0-9a-fA-F]{4,64}\]\s*$")

# Hires upscaler ids <-> A1111's names ("Latent (nearest-exact)" and the other latent modes read as latent; its
# "None" upscaler is a plain Lanczos resize).
HIRES_UPSCALER_NAMES: Final = {"latent": "Latent", "lanczos": "Lanczos"}
HIRES_KEYS: Final = ("Hires upscale", "Hires steps", "Hires upscaler", "Hires resize", "Denoising strength")


def _number(value: float) -> str:
    """A float as Python (and so A1111) prints it: 1.0, 0.35."""
    return str(float(value))


def _weight(value: float) -> str:
    # A1111's extra-networks cards write <lora:name:1>; 0.8 stays 0.8.
    number = float(value)
    return str(int(number)) if number.is_integer() else str(number)


def short_hash(adapter: AdapterRef | None, length: int) -> str | None:
    """The start of the hash A1111 writes for ``adapter``: a LoRA's "addnet" hash of its tensor data (what A1111's
    "Lora hashes" and Civitai use), else the file's sha256 (embeddings' "TI hashes")."""
    if adapter is None:
        return None
    addnet = adapter.meta.get("addnet_hash")
    if adapter.kind == "lora" and isinstance(addnet, str):
        return addnet[:length]
    return adapter.sha256[:length] if adapter.sha256 else None


# --------------------------------------------------------------------------- writing


def a1111_prompts(params: Mapping[str, Any]) -> tuple[str, str]:
    """The prompt and negative prompt A1111 would write for a job: its LoRAs as ``<lora:name:weight>`` tags.

    When the engine's prompt is the typed one without its tags (no style changed it), the typed text is written, so
    tags stay where the user put them; otherwise the engine's prompt. Tags of LoRAs the text does not carry (given in
    the ``loras`` field, or lost to a style) are appended, as A1111's LoRA cards add them."""
    prompt, negative = str(params["final_prompt"]), str(params["final_negative_prompt"])
    typed = [str(params.get("prompt") or ""), str(params.get("negative_prompt") or "")]
    tagged: dict[str, float] = {}
    for i, (text, final) in enumerate(((typed[0], prompt), (typed[1], negative))):
        clean, tags = lora_tags(text)
        if tags and clean == final:
            if i == 0:
                prompt = text
            else:
                negative = text
            tagged.update({str(t["name"]): float(str(t["weight"])) for t in tags})
    extra = [
        f"<lora:{lora['name']}:{_weight(lora['weight'])}>"
        for lora in params.get("loras") or []
        # A name A1111's tag cannot hold is left to "Lora hashes" (and our own chunk).
        if tagged.get(str(lora["name"])) != float(lora["weight"]) and not set(":<>") & set(str(lora["name"]))
    ]
    if extra:
        prompt = " ".join([prompt, *extra]) if prompt else " ".join(extra)
    return prompt, negative


def _hashes(names: Sequence[str], refs: Mapping[str, AdapterRef]) -> str | None:
    listed = [f"{name}: {digest}" for name in names if (digest := short_hash(refs.get(name), 12))]
    return ", ".join(listed) or None


def _model_name(model: str, ref: AdapterRef | None) -> str:
    digest = short_hash(ref, 8)
    return f"{model} [{digest}]" if digest else model


def control_unit_text(unit: Mapping[str, Any], ref: AdapterRef | None) -> str:
    """One ControlNet unit as sd-webui-controlnet writes it; Module "none" when the picture already was the map."""
    module = CONTROL_MODULES.get(str(unit["type"]), str(unit["type"])) if unit.get("preprocess", True) else "none"
    parts = [
        f"Module: {module}",
        f"Model: {_model_name(str(unit['model']), ref)}",
        f"Weight: {_number(unit.get('strength', 1.0))}",
        _UNIT_TAIL,
        *([_CANNY_THRESHOLDS] if module == "canny" else []),
        f"Guidance Start: {_number(unit.get('start', 0.0))}",
        f"Guidance End: {_number(unit.get('end', 1.0))}",
        _UNIT_END,
    ]
    return ", ".join(parts)


def reference_unit_text(reference: Mapping[str, Any], ref: AdapterRef | None) -> str:
    """The IP-Adapter as the ControlNet unit sd-webui-controlnet records it (its CLIP-vision module, the adapter)."""
    module = "ip-adapter_clip_sdxl" if ref is not None and ref.family == "sdxl" else "ip-adapter_clip_sd15"
    return ", ".join(
        [
            f"Module: {module}",
            f"Model: {_model_name(str(reference['model']), ref)}",
            f"Weight: {_number(reference['strength'])}",
            _UNIT_TAIL,
            "Guidance Start: 0.0",
            "Guidance End: 1.0",
            _UNIT_END,
        ]
    )


def adapter_settings(params: Mapping[str, Any], refs: Mapping[str, AdapterRef]) -> dict[str, ParamValue]:
    """The A1111 settings of a job's hires fix, LoRAs, embeddings, ControlNet units and reference, in A1111's order.
    ``params``: the job's params (CONTRACTS "Job params"); ``refs``: the adapters by id, for their hashes."""
    settings: dict[str, ParamValue] = {}
    if hires := params.get("hires"):
        settings["Denoising strength"] = float(hires["strength"])
        settings["Hires upscale"] = float(hires["scale"])
        if hires.get("steps"):
            settings["Hires steps"] = int(hires["steps"])
        settings["Hires upscaler"] = HIRES_UPSCALER_NAMES.get(str(hires["upscaler"]), str(hires["upscaler"]))
    if lora_hashes := _hashes([str(x["name"]) for x in params.get("loras") or []], refs):
        settings["Lora hashes"] = lora_hashes
    if ti_hashes := _hashes([str(x) for x in params.get("embeddings") or []], refs):
        settings["TI hashes"] = ti_hashes
    units = [control_unit_text(u, refs.get(str(u["model"]))) for u in params.get("controls") or []]
    if reference := params.get("reference"):
        units.append(reference_unit_text(reference, refs.get(str(reference["model"]))))
    for index, text in enumerate(units):
        settings[f"ControlNet {index}"] = text
    return settings


def adapter_meta(params: Mapping[str, Any]) -> dict[str, Any]:
    """What an image's metadata (and Studiolo's PNG chunk) keeps of its job's adapters: the request's own shapes, so
    a remix or PNG-info gives them back as they are (``hires``: HiresParam's fields; the final size is the image's)."""
    meta: dict[str, Any] = {}
    for key in ("loras", "embeddings", "controls", "reference"):
        if params.get(key):
            meta[key] = params[key]
    if hires := params.get("hires"):
        meta["hires"] = {k: hires[k] for k in ("scale", "upscaler", "strength", "steps") if k in hires}
    return meta


# --------------------------------------------------------------------------- reading


def _float_in(low: float, high: float) -> Callable[[str], float | None]:
    def read(text: str) -> float | None:
        try:
            value = float(text)
        except ValueError:
            return None
        return value if low <= value <= high else None

    return read


def hires_upscaler_id(name: str) -> str:
    """Our upscaler for an A1111 hires upscaler name: latent for every "Latent …" mode, lanczos for Lanczos and
    "None" (a plain resize), else the name (an upscaler model, refused at submit when it is not installed)."""
    name = name.strip()
    if name.lower().startswith("latent"):
        return "latent"
    if name.lower() in ("lanczos", "none"):
        return "lanczos"
    return name


def read_hires(settings: Mapping[str, str]) -> tuple[dict[str, Any] | None, list[str]]:
    """A hires fix from A1111 settings (``Hires upscale`` is what makes one; ``Denoising strength`` is then its
    strength) and the hires settings that have no field. Call only when a ``Hires …`` key is present."""
    scale = _float_in(1.0, 4.0)(settings.get("Hires upscale", ""))
    strength = _float_in(0.0, 1.0)(settings.get("Denoising strength", "0.5"))
    if scale is None or not strength:
        return None, [f"{k}: {settings[k]}" for k in HIRES_KEYS if k in settings]
    hires: dict[str, Any] = {"scale": scale, "strength": strength}
    hires["upscaler"] = hires_upscaler_id(settings.get("Hires upscaler", "Latent"))  # A1111's default upscaler
    steps = settings.get("Hires steps", "").strip()
    if steps.isdigit() and 1 <= int(steps) <= 150:
        hires["steps"] = int(steps)
    unmapped = [f"{k}: {settings[k]}" for k in ("Hires resize",) if k in settings]
    if "Hires steps" in settings and "steps" not in hires and steps != "0":  # 0: the job's own steps, as A1111 reads it
        unmapped.append(f"Hires steps: {settings['Hires steps']}")
    return hires, unmapped


def _unit_fields(text: str) -> dict[str, str]:
    return {key.strip(): value.strip() for key, value in _UNIT_PAIR.findall(text)}


def control_type_of(module: str, model: str) -> str | None:
    """Our control type for an sd-webui-controlnet Module (by prefix), or by the model's name when the Module is
    "none" (a ready map)."""
    if module == "none":
        words = model.lower()
        return next((t for word, t in _MODEL_WORDS if word in words), None)
    return next((t for prefix, t in _MODULE_PREFIXES if module.startswith(prefix)), None)


def read_control_unit(text: str) -> tuple[str, dict[str, Any]] | None:
    """One ``ControlNet N`` value: ("control", a controls entry without its image), ("reference", {"model",
    "strength"}) for an IP-Adapter unit, ("empty", {}) for a unit that was not used; None when it does not map (an
    unknown module, a value out of range)."""
    fields = _unit_fields(text)
    module = fields.get("Module", "").strip().lower()
    model = _MODEL_HASH.sub("", fields.get("Model", "")).strip()
    model = "" if model.lower() == "none" else model
    if module in ("", "none") and not model:
        return "empty", {}  # an unused unit A1111 lists anyway (Module: none, Model: None)
    weight = _float_in(0.0, 2.0)(fields.get("Weight", "1.0"))
    start = _float_in(0.0, 1.0)(fields.get("Guidance Start", "0.0"))
    end = _float_in(0.0, 1.0)(fields.get("Guidance End", "1.0"))
    if weight is None or start is None or end is None or start > end:
        return None
    if module.startswith("ip-adapter"):
        if weight > 1.0:
            return None
        return "reference", {"strength": weight, **({"model": model} if model else {})}
    control_type = control_type_of(module, model)
    if control_type is None:
        return None
    unit: dict[str, Any] = {"type": control_type, "strength": weight, "start": start, "end": end}
    if model:
        unit["model"] = model
    unit["preprocess"] = module != "none"
    return "control", unit


def read_adapter_settings(settings: Mapping[str, str]) -> tuple[dict[str, Any], set[str], list[str]]:
    """GenerationParams fields from A1111 settings' ControlNet units and hires fix; the keys used up (mapped or
    reported) and the "Key: value" entries that did not map. LoRA tags stay in the prompt: submit reads them."""
    params: dict[str, Any] = {}
    used: set[str] = set()
    unmapped: list[str] = []
    if any(key.startswith("Hires ") for key in settings):
        hires, hires_unmapped = read_hires(settings)
        used.update(k for k in HIRES_KEYS if k in settings)
        unmapped += hires_unmapped
        if hires is not None:
            params["hires"] = hires
    controls: list[dict[str, Any]] = []
    units = sorted(
        ((int(match.group(1)), key) for key in settings if (match := _UNIT_KEY.match(key))), key=lambda x: x[0]
    )
    for _, key in units:
        used.add(key)
        found = read_control_unit(settings[key])
        if found is not None and found[0] == "empty":
            continue
        if found is not None and found[0] == "control" and len(controls) < MAX_CONTROLS:
            controls.append(found[1])
        elif found is not None and found[0] == "reference" and "reference_strength" not in params:
            params["reference_strength"] = found[1]["strength"]
            if "model" in found[1]:
                params["reference_model"] = found[1]["model"]
        else:
            unmapped.append(f"{key}: {settings[key]}")
    if controls:
        params["controls"] = controls
    return params, used, unmapped
