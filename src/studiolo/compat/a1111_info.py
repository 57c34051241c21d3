"""What the AUTOMATIC1111 face answers, built from Studiolo's own records: a finished job's ``info`` string, the
checkpoint titles, and the lists (samplers, schedulers, upscalers, styles) in A1111's shapes. Pure functions."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from typing import Any, Final

from PIL import Image

from studiolo import __version__
from studiolo.compat.a1111_models import LATENT_MODE_NAMES, A1111Request, Img2ImgRequest
from studiolo.domain.gallery.imaging import A1111_SAMPLER_NAMES, a1111_sampler_name
from studiolo.domain.generation.catalog import ModelInfo, UpscalerInfo, draws_images
from studiolo.domain.generation.schemas import JobView, StyleView
from studiolo.engines.schedules import A1111_LABELS, SCHEDULES

VERSION: Final = f"studiolo-{__version__}"
# Studiolo samplers that carry their schedule in the name, as A1111's pre-1.9 ones did.
_SAMPLER_OPTIONS: Final = {"dpmpp_2m_karras": {"scheduler": "karras"}}


def model_hash(model_id: str) -> str:
    """A stable sha256 standing for the model in A1111's ``hash``/``sha256`` fields. It is derived from the model's
    id, not its files (hashing gigabytes of weights per request would cost seconds): clients only compare it."""
    return hashlib.sha256(f"studiolo-model:{model_id}".encode()).hexdigest()


def checkpoint_title(model_id: str) -> str:
    """A1111's checkpoint selector: ``name [shorthash]`` (what /options and override_settings take back)."""
    return f"{model_id} [{model_hash(model_id)[:10]}]"


def sd_models(models: Sequence[ModelInfo]) -> list[dict[str, Any]]:
    """GET /sd-models: the models that draw images (upscalers and video models are left out), default first."""
    drawing = sorted((m for m in models if draws_images(m.arch)), key=lambda m: (not m.is_default, m.id))
    return [
        {
            "title": checkpoint_title(m.id),
            "model_name": m.id,
            "hash": model_hash(m.id)[:10],
            "sha256": model_hash(m.id),
            "filename": m.path or m.id,
            "config": None,
        }
        for m in drawing
    ]


def samplers() -> list[dict[str, Any]]:
    """GET /samplers: A1111's names for Studiolo's samplers; the alias is Studiolo's id."""
    return [
        {"name": name, "aliases": [sampler_id], "options": _SAMPLER_OPTIONS.get(sampler_id, {})}
        for sampler_id, name in A1111_SAMPLER_NAMES.items()
    ]


def schedulers() -> list[dict[str, Any]]:
    """GET /schedulers (A1111 1.9+): the sigma schedules Studiolo offers, under A1111's names and labels."""
    return [
        {"name": name, "label": A1111_LABELS[name], "aliases": None, "default_rho": -1, "need_inner_model": False}
        for name in SCHEDULES
    ]


def upscalers(items: Sequence[UpscalerInfo]) -> list[dict[str, Any]]:
    """GET /upscalers: A1111's "None" (hires fix then resizes with Lanczos), then Studiolo's upscalers (the built-in
    Lanczos one and installed models), which txt2img's ``hr_upscaler`` and POST /api/v1/upscale take by name."""
    none = {"name": "None", "model_name": None, "model_path": None, "model_url": None, "scale": 4.0}
    return [none] + [
        {
            "name": u.name,
            "model_name": u.id,
            "model_path": None,
            "model_url": None,
            "scale": float(_native_scale(u.arch) or max(u.factors)),
        }
        for u in items
    ]


def _native_scale(arch: str | None) -> int | None:
    """An upscaler model's own factor from its arch label ("esrgan-x4" -> 4), as A1111 reports ``scale``."""
    tail = (arch or "").rpartition("-x")[2]
    return int(tail) if tail.isdigit() else None


def latent_upscale_modes() -> list[dict[str, Any]]:
    """GET /latent-upscale-modes: A1111's latent modes; hires fix enlarges the latents the same way for each."""
    return [{"name": name} for name in LATENT_MODE_NAMES]


def prompt_styles(styles: Sequence[StyleView]) -> list[dict[str, Any]]:
    """GET /prompt-styles. Studiolo's templates already use A1111's ``{prompt}`` placeholder; a template without it
    is appended to the prompt in both, so the text passes as it is. The name is the slug (unique, what
    ``styles`` takes back; display names are accepted too)."""
    return [{"name": s.slug, "prompt": s.prompt_template, "negative_prompt": s.negative_template} for s in styles]


def infotext(png: bytes) -> str:
    """The A1111 ``parameters`` text Studiolo wrote into one of its PNGs ("" if there is none)."""
    with Image.open(io.BytesIO(png), formats=["PNG"]) as image:
        value = image.info.get("parameters", "")
    return value if isinstance(value, str) else ""


def echo_parameters(req: A1111Request) -> dict[str, Any]:
    """The request as A1111 echoes it: img2img leaves its images out unless ``include_init_images``."""
    echoed = req.model_dump(mode="json")
    if isinstance(req, Img2ImgRequest) and not req.include_init_images:
        echoed["init_images"] = None
        echoed["mask"] = None
    return echoed


def job_info(req: A1111Request, view: JobView, pngs: Sequence[bytes], *, styles: list[str]) -> str:
    """``info``: the JSON string A1111's ``Processed.js()`` makes, from the finished job."""
    p = view.params
    seeds = [o.seed for o in view.outputs] or list(view.seeds)
    variation = p.get("variation_seed")
    subseeds = [variation + i for i in range(len(seeds))] if variation is not None else seeds
    extra: dict[str, Any] = {}
    if p.get("scheduler"):
        extra["Schedule type"] = A1111_LABELS.get(p["scheduler"], p["scheduler"])
    if hires := p.get("hires"):  # A1111's own keys for its hires fix
        extra["Hires upscale"] = hires["scale"]
        extra["Hires steps"] = hires["steps"]
        extra["Hires upscaler"] = {"latent": "Latent", "lanczos": "Lanczos"}.get(hires["upscaler"], hires["upscaler"])
    if ignored := req.ignored():
        extra["Ignored by Studiolo"] = ", ".join(ignored)
    if len(view.outputs) < len(view.seeds) or view.blocked_outputs:
        extra["Studiolo job"] = view.id  # held or blocked images are missing: the job says why
    count = len(pngs)
    info = {
        "prompt": p["final_prompt"],
        "all_prompts": [p["final_prompt"]] * count,
        "negative_prompt": p["final_negative_prompt"],
        "all_negative_prompts": [p["final_negative_prompt"]] * count,
        "seed": seeds[0] if seeds else -1,
        "all_seeds": seeds,
        "subseed": subseeds[0] if subseeds else -1,
        "all_subseeds": subseeds,
        "subseed_strength": p.get("variation_strength") or 0.0,
        "width": p["width"],
        "height": p["height"],
        "sampler_name": a1111_sampler_name(p["sampler"]) if p.get("sampler") else "Automatic",
        "cfg_scale": p["guidance"],
        "steps": p["steps"],
        "batch_size": max(req.batch_size, 1),
        "restore_faces": False,
        "face_restoration_model": None,
        "sd_model_name": view.model,
        "sd_model_hash": model_hash(view.model)[:10],
        "sd_vae_name": None,
        "sd_vae_hash": None,
        "seed_resize_from_w": req.seed_resize_from_w,
        "seed_resize_from_h": req.seed_resize_from_h,
        "denoising_strength": p["strength"] if view.kind != "txt2img" else (hires or {}).get("strength"),
        "extra_generation_params": extra,
        "index_of_first_image": 0,
        "infotexts": [infotext(png) for png in pngs],
        "styles": styles,
        "job_timestamp": view.created_at.strftime("%Y%m%d%H%M%S"),
        "clip_skip": 1,
        "is_using_inpainting_conditioning": view.kind == "inpaint",
        "version": VERSION,
    }
    return json.dumps(info, ensure_ascii=False)


def options(model_id: str) -> dict[str, Any]:
    """GET /options: the settings clients read (the current checkpoint first), with A1111's values for the rest so
    a client that shows or round-trips them finds them. Only ``sd_model_checkpoint`` is ever applied."""
    return {
        "sd_model_checkpoint": checkpoint_title(model_id),
        "sd_checkpoint_hash": model_hash(model_id),
        "sd_vae": "Automatic",
        "CLIP_stop_at_last_layers": 1,
        "samples_format": "png",
        "samples_save": True,
        "grid_save": False,
        "enable_pnginfo": True,
        "save_txt": False,
        "outdir_samples": "",
        "jpeg_quality": 80,
        "eta_noise_seed_delta": 0,
        "sd_checkpoints_limit": 1,
        "live_previews_enable": True,
        "show_progress_every_n_steps": 1,
        "live_preview_content": "Combined",
        "interrogate_clip_num_beams": 1,
        "upscaler_for_img2img": None,
        "img2img_fix_steps": False,
        "sdxl_refiner_low_aesthetic_score": 2.5,
        "api_enable_requests": False,
        "api_forbid_local_requests": True,
        "samplers_in_dropdown": True,
        "hide_samplers": [],
    }


def cmd_flags(port: int | None) -> dict[str, Any]:
    """GET /cmd-flags: the launch flags A1111 would need to behave as this face does."""
    return {
        "api": True,
        "api_auth": "<user>:<Studiolo API key>",
        "api_log": False,
        "nowebui": False,
        "listen": True,
        "port": port,
        "share": False,
        "lowvram": False,
        "medvram": False,
        "xformers": False,
        "no_half": False,
        "ckpt_dir": None,
        "enable_insecure_extension_access": False,
    }
