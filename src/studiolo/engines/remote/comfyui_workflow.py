"""ComfyUI workflows (API format) for the ComfyUI engine: the built-in templates and placeholder substitution.

A template is a workflow exported with ComfyUI's "Save (API Format)": ``{node_id: {"class_type", "inputs"}}``.
Any string in it may hold placeholders, filled per image:

==================== ======= ==========================================================================
placeholder          type    value
==================== ======= ==========================================================================
``{{prompt}}``       str     the prompt (after Studiolo's style, if any)
``{{negative_prompt}}`` str  the negative prompt
``{{seed}}``         int     this image's seed (one prompt is queued per image)
``{{width}}``        int     pixels
``{{height}}``       int     pixels
``{{steps}}``        int     sampling steps
``{{cfg}}``          float   guidance (CFG scale)
``{{denoise}}``      float   1.0 for txt2img, the strength for img2img/inpaint
``{{sampler_name}}`` str     ComfyUI's sampler name (``euler`` unless the job names one)
``{{scheduler}}``    str     ComfyUI's scheduler name (``normal`` unless the job names one)
``{{model}}``        str     the model row's remote model (a checkpoint file name at the server)
``{{image}}``        str     img2img/inpaint: the uploaded init image's name, for a LoadImage node
``{{mask}}``         str     inpaint: the uploaded mask's name (white = repaint), for LoadImageMask
==================== ======= ==========================================================================

A string that is exactly one placeholder becomes the typed value (``"{{seed}}"`` -> ``42``); a placeholder inside
longer text is replaced by its text (``"masterpiece, {{prompt}}"``). A template that names ``{{image}}`` can run
img2img jobs, one that also names ``{{mask}}`` inpaint jobs. An unknown placeholder is refused when the model loads.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

Graph = dict[str, Any]

PLACEHOLDERS = (
    "prompt",
    "negative_prompt",
    "seed",
    "width",
    "height",
    "steps",
    "cfg",
    "denoise",
    "sampler_name",
    "scheduler",
    "model",
    "image",
    "mask",
)
PLACEHOLDER_RE = re.compile(r"\{\{\s*(\w+)\s*\}\}")

# Studiolo's sampler ids -> ComfyUI's (sampler, scheduler); "pndm" has no ComfyUI sampler, so it is not offered.
SAMPLERS: dict[str, tuple[str, str | None]] = {
    "euler": ("euler", None),
    "euler_a": ("euler_ancestral", None),
    "heun": ("heun", None),
    "dpmpp_2m": ("dpmpp_2m", None),
    "dpmpp_2m_karras": ("dpmpp_2m", "karras"),
    "ddim": ("ddim", None),
    "lms": ("lms", None),
    "unipc": ("uni_pc", None),
}
# Studiolo's schedules that ComfyUI has under the same name ("uniform" has no exact twin there).
SCHEDULERS = ("karras", "exponential", "beta")
DEFAULT_SAMPLER, DEFAULT_SCHEDULER = "euler", "normal"


def _txt2img() -> Graph:
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "{{model}}"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "{{prompt}}", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "{{negative_prompt}}", "clip": ["4", 1]}},
        "5": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": "{{width}}", "height": "{{height}}", "batch_size": 1},
        },
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": "{{seed}}",
                "steps": "{{steps}}",
                "cfg": "{{cfg}}",
                "sampler_name": "{{sampler_name}}",
                "scheduler": "{{scheduler}}",
                "denoise": "{{denoise}}",
                "model": ["4", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "studiolo", "images": ["8", 0]}},
    }


def builtin_template(kind: str) -> Graph:
    """The built-in workflow for ``kind``: txt2img; img2img (LoadImage -> VAEEncode); inpaint (+ a noise mask)."""
    graph = _txt2img()
    if kind in ("img2img", "inpaint"):
        del graph["5"]
        graph["10"] = {"class_type": "LoadImage", "inputs": {"image": "{{image}}"}}
        graph["11"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}
        graph["3"]["inputs"]["latent_image"] = ["11", 0]
    if kind == "inpaint":
        graph["12"] = {"class_type": "LoadImageMask", "inputs": {"image": "{{mask}}", "channel": "red"}}
        graph["13"] = {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["11", 0], "mask": ["12", 0]}}
        graph["3"]["inputs"]["latent_image"] = ["13", 0]
    return graph


def placeholders_in(value: Any) -> set[str]:
    """Every placeholder name used anywhere in ``value``."""
    if isinstance(value, str):
        return set(PLACEHOLDER_RE.findall(value))
    if isinstance(value, dict):
        return set().union(*(placeholders_in(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(placeholders_in(v) for v in value)) if value else set()
    return set()


def load_template(path: str) -> Graph:
    """A custom workflow file, checked: API-format JSON whose placeholders are all known. Raises ValueError."""
    try:
        graph = json.loads(Path(path).expanduser().read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read the workflow file {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise ValueError(f"the workflow file {path} is not JSON: {exc}") from exc
    if (
        not isinstance(graph, dict)
        or not graph
        or not all(isinstance(node, dict) and isinstance(node.get("class_type"), str) for node in graph.values())
    ):
        raise ValueError(f"the workflow file {path} is not in ComfyUI's API format (save it with 'Save (API Format)')")
    unknown = placeholders_in(graph) - set(PLACEHOLDERS)
    if unknown:
        known = ", ".join("{{" + p + "}}" for p in PLACEHOLDERS)
        raise ValueError(f"the workflow file {path} uses unknown placeholders {sorted(unknown)}; known: {known}")
    return graph


def fill(value: Any, values: dict[str, Any]) -> Any:
    """``value`` with its placeholders replaced (typed when a string is exactly one placeholder)."""
    if isinstance(value, str):
        whole = PLACEHOLDER_RE.fullmatch(value)
        if whole and whole.group(1) in values:
            return values[whole.group(1)]
        return PLACEHOLDER_RE.sub(lambda m: str(values.get(m.group(1), m.group(0))), value)
    if isinstance(value, dict):
        return {k: fill(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, values) for v in value]
    return value


def comfy_sampler(sampler: str | None, scheduler: str | None) -> tuple[str, str]:
    """ComfyUI's (sampler_name, scheduler) for a job's sampler and schedule (None/"default"/"automatic": defaults)."""
    name, implied = SAMPLERS.get(sampler or "", (DEFAULT_SAMPLER, None))
    if scheduler in SCHEDULERS:
        return name, scheduler
    return name, implied or DEFAULT_SCHEDULER
