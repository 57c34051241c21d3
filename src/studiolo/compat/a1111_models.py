"""AUTOMATIC1111's txt2img/img2img request bodies and how they become a Studiolo GenerationParams.

Field names and defaults are A1111's (its models are generated from the ``StableDiffusionProcessing*`` signatures):
every field is optional and unknown ones are accepted and ignored, because clients send many (webuiapi sends every
field it knows, extensions add their own). What Studiolo cannot do is accepted and named in ``info`` instead
(``extra_generation_params["Ignored"]``), never silently pretended.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from studiolo.compat.a1111_controlnet import controlnet_fields
from studiolo.domain.gallery.imaging import A1111_SAMPLER_NAMES
from studiolo.domain.generation import styles as st
from studiolo.domain.generation.catalog import UpscalerInfo
from studiolo.domain.generation.rules import params_error
from studiolo.domain.generation.schemas import GenerationParams, StyleView
from studiolo.engines.schedules import A1111_LABELS, normalize_schedule
from studiolo.errors import InvalidInput, NotFound

# A1111 display name (lower case) or Studiolo id -> Studiolo sampler id; None: the model's own default.
SAMPLER_IDS: Final[dict[str, str | None]] = {
    **{name.lower(): sampler_id for sampler_id, name in A1111_SAMPLER_NAMES.items()},
    **{sampler_id: sampler_id for sampler_id in A1111_SAMPLER_NAMES},
    "automatic": None,
    "default": None,
}
# Before A1111 1.9 the schedule was part of the sampler's name ("DPM++ 2M Karras"): these suffixes split off.
_SCHEDULE_SUFFIX = re.compile(r"^(?P<sampler>.+?)\s+(?P<schedule>" + "|".join(A1111_LABELS.values()) + r")$", re.I)
_DATA_URL = re.compile(r"^data:[^,;]*(;[^,;]*)*;base64,", re.I)


class A1111Request(BaseModel):
    """What txt2img and img2img share (A1111's defaults)."""

    model_config = ConfigDict(extra="allow")

    prompt: str | list[str] = ""
    negative_prompt: str = ""
    styles: list[str] | None = None
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    sampler_name: str | None = None
    sampler_index: str | None = None
    scheduler: str | None = None
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    eta: float | None = None
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool = True
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    script_name: str | None = None
    script_args: list[Any] = Field(default_factory=list)
    send_images: bool = True
    save_images: bool = False
    alwayson_scripts: dict[str, Any] = Field(default_factory=dict)
    denoising_strength: float | None = None
    # What of the ControlNet units was not taken (a1111_controlnet.py), set by to_params.
    _controlnet_ignored: list[str] = PrivateAttr(default_factory=list)

    def ignored(self) -> list[str]:
        """The fields set to something Studiolo does not do (said in ``info``)."""
        names = [f for f in ("restore_faces", "tiling") if getattr(self, f)]
        if self.script_name:
            names.append("script_name")
        # sd-webui-controlnet's units are Studiolo's controls (issue 19); any other script is not run.
        if any(name.lower() != "controlnet" for name in self.alwayson_scripts):
            names.append("alwayson_scripts")
        names += self._controlnet_ignored
        if self.refiner_checkpoint:
            names.append("refiner_checkpoint")
        return names


class Txt2ImgRequest(A1111Request):
    """POST /sdapi/v1/txt2img. ``enable_hr`` is Studiolo's hires fix (``GenerationParams.hires``, see hires_param)."""

    enable_hr: bool = False
    hr_scale: float = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    # Set when the checkpoint cannot do hires fix: clients send enable_hr whatever the model, so it is then named as
    # ignored in ``info`` rather than refused.
    _hires_skipped: bool = PrivateAttr(default=False)

    def skip_hires(self) -> None:
        self._hires_skipped = True

    @property
    def wants_hires(self) -> bool:
        return self.enable_hr and not self._hires_skipped

    def hires_scale(self) -> float:
        """A1111's hires target as a scale of the first pass: ``hr_resize_x``/``hr_resize_y`` when given (one of
        them: the other follows the aspect ratio; both: the scale that covers them both), else ``hr_scale``."""
        if self.hr_resize_x <= 0 and self.hr_resize_y <= 0:
            return self.hr_scale
        by_x = self.hr_resize_x / max(self.width, 1)
        by_y = self.hr_resize_y / max(self.height, 1)
        return max(by_x, by_y)

    def ignored(self) -> list[str]:
        names = super().ignored()
        if self.enable_hr and self._hires_skipped:
            return ["enable_hr", *names]
        if not self.enable_hr:
            return names
        # Studiolo has one latent enlargement and one picture resize: other A1111 modes are named as replaced.
        chosen = (self.hr_upscaler or "").strip().lower()
        if chosen == "nearest" or (chosen.startswith("latent (") and chosen in HR_UPSCALERS):
            names.append(f"hr_upscaler {self.hr_upscaler} ({'Lanczos' if chosen == 'nearest' else 'Latent'} used)")
        if self.hr_resize_x > 0 and self.hr_resize_y > 0:
            by_x, by_y = self.hr_resize_x / max(self.width, 1), self.hr_resize_y / max(self.height, 1)
            if abs(by_x - by_y) > 1e-3:  # A1111 would crop to the asked aspect ratio; Studiolo keeps the first's
                names.append("hr_resize crop")
        return names


class Img2ImgRequest(A1111Request):
    """POST /sdapi/v1/img2img."""

    init_images: list[str] | None = None
    resize_mode: int = 0
    mask: str | None = None
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    mask_blur: int | None = None
    inpainting_fill: int = 0
    inpainting_mask_invert: int = 0
    include_init_images: bool = False

    def blur_radius(self) -> int:
        """The mask's blur in pixels (A1111: ``mask_blur`` sets both axes; Studiolo blurs both alike)."""
        radius = self.mask_blur if self.mask_blur is not None else max(self.mask_blur_x, self.mask_blur_y)
        return max(0, min(radius, 64))

    def ignored(self) -> list[str]:
        return [*(["resize_mode"] if self.resize_mode else []), *super().ignored()]


class PngInfoRequest(BaseModel):
    """POST /sdapi/v1/png-info."""

    model_config = ConfigDict(extra="allow")

    image: str = ""


def decode_image(text: str, field: str) -> bytes:
    """The bytes of a raw base64 image or a ``data:image/...;base64,`` URL (what webuiapi sends)."""
    body = _DATA_URL.sub("", text.strip(), count=1)
    try:
        return base64.b64decode(body + "=" * (-len(body) % 4), validate=False)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(
            f"{field} is not base64 image data.", code="invalid_image", details={"field": field}
        ) from exc


def model_id_of(title: str) -> str:
    """The model id in an A1111 checkpoint title (``"name [hash]"`` or just the name)."""
    return re.sub(r"\s*\[[0-9a-fA-F]{6,64}\]$", "", title.strip())


def split_sampler(sampler_name: str | None, scheduler: str | None) -> tuple[str | None, str | None]:
    """(Studiolo sampler id or None, schedule) from A1111's new-style pair or an old-style "DPM++ 2M Karras".
    Raises NotFound ``sampler_not_found`` (A1111 answers 404 "Sampler not found") for a name it does not know."""
    schedule = normalize_schedule(scheduler.strip()) if scheduler and scheduler.strip() else None
    if not sampler_name or not sampler_name.strip():
        return None, schedule
    key = sampler_name.strip().lower()
    if key in SAMPLER_IDS:
        return SAMPLER_IDS[key], schedule
    match = _SCHEDULE_SUFFIX.match(sampler_name.strip())
    if match and match["sampler"].lower() in SAMPLER_IDS:
        suffix = normalize_schedule(match["schedule"])
        return SAMPLER_IDS[match["sampler"].lower()], suffix if schedule in (None, "automatic") else schedule
    offered = ", ".join(A1111_SAMPLER_NAMES.values())
    raise NotFound(
        f"Sampler not found: {sampler_name!r}. GET /sdapi/v1/samplers lists them ({offered}).",
        code="sampler_not_found",
        details={"field": "sampler_name", "value": sampler_name},
    )


def find_styles(names: list[str], catalog: list[StyleView]) -> list[st.Style]:
    """The styles named (by Studiolo slug or display name, any case), in the order given."""
    by_key: dict[str, StyleView] = {}
    for view in catalog:
        by_key.setdefault(view.name.lower(), view)
        by_key[view.slug.lower()] = view
    found = []
    for name in names:
        found_view = by_key.get(name.strip().lower())
        if found_view is None:
            raise InvalidInput(
                f"Unknown style {name!r}. GET /sdapi/v1/prompt-styles lists the styles you can use.",
                code="unknown_style",
                details={"field": "styles", "style": name},
            )
        v = found_view
        found.append(st.Style(v.slug, v.name, v.category, v.prompt_template, v.negative_template))
    return found


# A1111's hires upscaler names (lower case) -> Studiolo's hires upscalers: its latent modes all enlarge the latents
# ("latent"), "None" resizes the decoded picture (Lanczos here); an installed upscaler is found by id or name.
LATENT_MODE_NAMES: Final = (
    "Latent",
    "Latent (antialiased)",
    "Latent (bicubic)",
    "Latent (bicubic antialiased)",
    "Latent (nearest)",
    "Latent (nearest-exact)",
)
HR_UPSCALERS: Final[dict[str, str]] = {
    **{name.lower(): "latent" for name in LATENT_MODE_NAMES},
    "none": "lanczos",
    "lanczos": "lanczos",
    "nearest": "lanczos",
}


def hr_upscaler_id(name: str | None, upscalers: Sequence[UpscalerInfo]) -> str:
    """The Studiolo hires upscaler for A1111's ``hr_upscaler`` (None: A1111's default, "Latent"); 422
    ``unknown_upscaler`` for a name neither A1111's nor installed here."""
    key = (name or "latent").strip().lower()
    if key in HR_UPSCALERS:
        return HR_UPSCALERS[key]
    for upscaler in upscalers:
        if key in (upscaler.id.lower(), upscaler.name.lower()):
            return upscaler.id
    offered = ["Latent", "Lanczos", "None", *(u.name for u in upscalers if u.arch is not None)]
    raise InvalidInput(
        f"could not find upscaler named {name}. Upscalers: {', '.join(offered)} (GET /sdapi/v1/upscalers).",
        code="unknown_upscaler",
        details={"field": "hr_upscaler", "upscaler": name, "upscalers": offered},
    )


def hires_param(req: Txt2ImgRequest, upscalers: Sequence[UpscalerInfo]) -> dict[str, Any] | None:
    """``GenerationParams.hires`` for a txt2img with ``enable_hr`` (None without): the scale (hr_scale or
    hr_resize_x/y), the upscaler, the denoising strength (A1111's txt2img default 0.75) and second-pass steps (0:
    the job's)."""
    if not req.wants_hires:
        return None
    strength = req.denoising_strength if req.denoising_strength is not None else 0.75
    return {
        "scale": round(req.hires_scale(), 4),
        "upscaler": hr_upscaler_id(req.hr_upscaler, upscalers),
        "strength": strength,
        "steps": req.hr_second_pass_steps or None,
    }


def to_params(
    req: A1111Request,
    *,
    model: str | None,
    styles: list[st.Style],
    strength: float | None,
    context: dict[str, Any],
    upscalers: Sequence[UpscalerInfo] = (),
    adapters: Sequence[str] = (),
) -> GenerationParams:
    """The Studiolo request for an A1111 one. Several styles apply in A1111's order (each wraps the prompt made by
    the ones before): all but the last are applied here, the last is the job's own ``style`` (kept in the gallery)."""
    prompt = req.prompt if isinstance(req.prompt, str) else (req.prompt[0] if req.prompt else "")
    negative = req.negative_prompt
    for style in styles[:-1]:
        prompt, negative = style.apply(prompt, negative)
    sampler, scheduler = split_sampler(req.sampler_name or req.sampler_index, req.scheduler)
    fields: dict[str, Any] = {
        "prompt": prompt,
        "negative_prompt": negative,
        "style": styles[-1].slug if styles else None,
        "model": model,
        "width": req.width,
        "height": req.height,
        "steps": req.steps,
        "guidance": req.cfg_scale,
        "sampler": sampler,
        "scheduler": scheduler,
        "seed": None if req.seed < 0 else req.seed,
        "n": max(req.batch_size, 1) * max(req.n_iter, 1),
    }
    if req.subseed_strength > 0:
        fields["variation_strength"] = req.subseed_strength
        fields["variation_seed"] = None if req.subseed < 0 else req.subseed
    if strength is not None:
        fields["strength"] = strength
    if isinstance(req, Txt2ImgRequest) and (hires := hires_param(req, upscalers)) is not None:
        fields["hires"] = hires
    if req.alwayson_scripts:  # sd-webui-controlnet's units (``adapters``: the installed adapter ids)
        controlnet, req._controlnet_ignored = controlnet_fields(req.alwayson_scripts, adapters)
        fields.update(controlnet)
    try:
        return GenerationParams.model_validate(fields, context=context)
    except ValidationError as exc:
        raise params_error(exc) from exc
