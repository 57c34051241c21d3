"""The sd-webui-controlnet extension's API on the A1111 face (issue 19): ``alwayson_scripts.controlnet.args`` of a
txt2img/img2img request turned into Studiolo's ``controls`` (and an IP-Adapter unit into ``reference_image``), so
tools that drive ControlNet through A1111's API work unchanged.

Each unit is a dict: ``enabled`` (default true), ``module`` (the preprocessor: "canny", "depth_midas",
"openpose_full", "none", "ip-adapter_clip_sd15", ...), ``model`` ("control_v11p_sd15_canny [d14c016b]" or "None"),
``weight``, ``image`` (base64, with or without a data: prefix; older clients send ``input_image``, some a dict with
an ``image`` key), ``guidance_start``/``guidance_end``. Settings Studiolo does not take (processor_res, thresholds,
control_mode, resize_mode, pixel_perfect) are named in the answer's ``info`` as ignored, not pretended.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from studiolo.domain.generation.infotext import control_type_of
from studiolo.errors import InvalidInput

_MODEL_HASH = re.compile(r"\s*\[[0-9a-fA-F]{4,64}\]\s*$")
# Unit settings Studiolo has no counterpart for, when set to something other than the extension's default.
_DEFAULTS: Mapping[str, Any] = {
    "processor_res": (-1, 512),
    "threshold_a": (-1, 64, 100),
    "threshold_b": (-1, 64, 200),
    "control_mode": (0, "Balanced", "balanced"),
    "resize_mode": (1, "Crop and Resize", "Just Resize", 0),
    "pixel_perfect": (False,),
    "low_vram": (False,),
    "guess_mode": (False,),
}


def _image(unit: Mapping[str, Any], index: int) -> str | None:
    value = unit.get("image", unit.get("input_image"))
    if isinstance(value, dict):  # {"image": b64, "mask": b64}
        value = value.get("image")
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidInput(
            f"ControlNet unit {index}: image must be a base64 string.",
            code="invalid_image",
            details={"field": f"alwayson_scripts.controlnet.args.{index}.image"},
        )
    return value if value.startswith("data:") else f"data:image/png;base64,{value}"


def _float(unit: Mapping[str, Any], key: str, default: float, index: int) -> float:
    value = unit.get(key, default)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidInput(
            f"ControlNet unit {index}: {key} must be a number (got {value!r}).",
            code="invalid_input",
            details={"field": f"alwayson_scripts.controlnet.args.{index}.{key}"},
        ) from None


def _model(name: object, installed: Iterable[str]) -> tuple[str | None, str | None]:
    """(our adapter id, a note when the named model is not installed here)."""
    text = _MODEL_HASH.sub("", str(name or "")).strip()
    if not text or text.lower() == "none":
        return None, None
    by_lower = {i.lower(): i for i in installed}
    for candidate in (text, text.rsplit("/", 1)[-1].rsplit(".", 1)[0]):
        if candidate.lower() in by_lower:
            return by_lower[candidate.lower()], None
    return None, f"controlnet model {text} (not installed; the one fitting the model used)"


def controlnet_fields(
    alwayson_scripts: Mapping[str, Any], installed: Iterable[str]
) -> tuple[dict[str, Any], list[str]]:
    """GenerationParams fields (``controls``, ``reference_image``, ``reference_strength``, ``reference_model``) for
    the request's ControlNet units, and what was ignored of them. ``installed``: the adapter ids here."""
    script = alwayson_scripts.get("controlnet") or alwayson_scripts.get("ControlNet") or {}
    args = script.get("args") if isinstance(script, Mapping) else None
    if not isinstance(args, list):
        return {}, []
    installed = list(installed)
    fields: dict[str, Any] = {}
    controls: list[dict[str, Any]] = []
    ignored: list[str] = []
    for index, unit in enumerate(args):
        if not isinstance(unit, Mapping) or not unit.get("enabled", True):
            continue
        module = str(unit.get("module") or "none").strip().lower()
        model, note = _model(unit.get("model"), installed)
        image = _image(unit, index)
        if image is None:
            # The extension takes the init image of an img2img when a unit has none; Studiolo asks for it.
            raise InvalidInput(
                f"ControlNet unit {index} has no image.",
                code="missing_control_image",
                details={"field": f"alwayson_scripts.controlnet.args.{index}.image"},
            )
        weight = _float(unit, "weight", 1.0, index)
        if module.startswith("ip-adapter"):
            fields.update(reference_image=image, reference_strength=min(max(weight, 0.0), 1.0))
            if model:
                fields["reference_model"] = model
        else:
            control_type = control_type_of(module, str(unit.get("model") or ""))
            if control_type is None:
                raise InvalidInput(
                    f"ControlNet unit {index}: Studiolo has no control type for module {module!r}.",
                    code="invalid_control_type",
                    details={"field": f"alwayson_scripts.controlnet.args.{index}.module", "module": module},
                )
            entry: dict[str, Any] = {
                "type": control_type,
                "image": image,
                "strength": weight,
                "start": _float(unit, "guidance_start", 0.0, index),
                "end": _float(unit, "guidance_end", 1.0, index),
                "preprocess": module != "none",
            }
            if model:
                entry["model"] = model
            controls.append(entry)
        if note:
            ignored.append(note)
        for key, defaults in _DEFAULTS.items():
            if key in unit and not any(unit[key] == d and type(unit[key]) is type(d) for d in defaults):
                ignored.append(f"controlnet {key}")
    if controls:
        fields["controls"] = controls
    return fields, sorted(set(ignored), key=ignored.index)
