"""What an OpenAI Images API request means in Studiolo's terms (issue 18, docs/compatibility.md "OpenAI Images API").

One request model for all three routes (JSON for generations, multipart form fields for edits and variations: the
same names, pydantic's lax mode turns "2" into 2), then ``generation_params`` maps it onto ``GenerationParams``:
OpenAI's sizes to the nearest size the model may make, its quality names to Studiolo's presets, ``vivid`` to a style
preset, the end-user id to a gallery tag. Studiolo's own knobs travel at the top level, where the openai SDK's
``extra_body`` puts them.
"""

from __future__ import annotations

import io
import math
from typing import Any, Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from studiolo.domain.gallery import imaging
from studiolo.domain.gallery.imaging import A1111_SAMPLER_NAMES
from studiolo.domain.generation.catalog import draws_images
from studiolo.domain.generation.rules import MAX_SIDE, MIN_SIDE, SIDE_MULTIPLE, SIZE_PATTERN, params_error
from studiolo.domain.generation.schemas import (
    MAX_CONTROLS,
    MAX_LORAS,
    ControlParam,
    GenerationParams,
    HiresParam,
    LoraParam,
)
from studiolo.domain.generation.service import Upload
from studiolo.errors import InvalidInput, NotFound
from studiolo.services import Services

# OpenAI's model names answer with the install's default model, as llama-swap's aliases do: clients such as Open
# WebUI offer only these names for their "openai" engine, and would otherwise never reach a Studiolo model.
OPENAI_MODEL_PREFIXES = ("dall-e-", "gpt-image-", "chatgpt-image-")
# OpenAI quality -> Studiolo preset (auto: Studiolo's default), and the GPT-image name the response reports.
QUALITY_PRESETS: dict[str, Literal["draft", "standard", "high"]] = {
    "low": "draft",
    "medium": "standard",
    "standard": "standard",
    "auto": "standard",
    "high": "high",
    "hd": "high",
}
PRESET_NAMES = {"draft": "low", "standard": "medium", "high": "high"}
# DALL·E 3's style: vivid ("hyper-real and dramatic") is the cinematic preset; natural is Studiolo's own unstyled
# rendering, so it adds no template.
OPENAI_STYLES: dict[str, str | None] = {"vivid": "cinematic", "natural": None}
# Variations have no prompt: the job's prompt, kept with the images, says what was asked.
VARIATION_PROMPT = "a variation of the input image"
VARIATION_STRENGTH = 0.6
USER_TAG_PREFIX = "openai-user:"
# A generation's default size, as OpenAI's own default ("auto" on GPT image models is a square here).
DEFAULT_SQUARE = 1024


class OpenAIImageRequest(BaseModel):
    """The fields of /v1/images/generations, /edits and /variations, with Studiolo's extras. Unknown fields are
    refused (as OpenAI does), so a mistyped extra is not silently ignored."""

    model_config = ConfigDict(extra="forbid")

    prompt: str | None = Field(default=None, max_length=32_000)
    model: str | None = Field(default=None, max_length=200)
    n: int = Field(default=1, ge=1, le=10)
    size: str | None = Field(default=None, max_length=11)
    quality: Literal["auto", "low", "medium", "high", "standard", "hd"] | None = None
    style: str | None = Field(default=None, max_length=64)
    response_format: Literal["b64_json", "url"] | None = None
    output_format: Literal["png", "jpeg", "webp"] | None = None
    output_compression: int | None = Field(default=None, ge=0, le=100)
    background: Literal["transparent", "opaque", "auto"] | None = None
    moderation: Literal["low", "auto"] | None = None
    stream: bool = False
    partial_images: int | None = Field(default=None, ge=0, le=3)
    user: str | None = Field(default=None, max_length=256)
    safety_identifier: str | None = Field(default=None, max_length=256)
    # Accepted and ignored: GPT-image 2.x tuning that has no counterpart here.
    input_fidelity: Literal["high", "low"] | None = None
    complexity: Literal["low", "medium", "high"] | None = None
    # Studiolo's extras (the SDK's extra_body).
    seed: int | None = Field(default=None, ge=0, lt=2**32)
    negative_prompt: str | None = Field(default=None, max_length=10_000)
    steps: int | None = None
    guidance: float | None = None
    cfg_scale: float | None = None
    sampler: str | None = Field(default=None, max_length=32)
    scheduler: str | None = Field(default=None, max_length=32)
    strength: float | None = None
    # Issue 19's adapters, as POST /api/v1/generations takes them (pictures as data: URLs or gallery image ids).
    loras: list[LoraParam] | None = Field(default=None, max_length=MAX_LORAS)
    controls: list[ControlParam] | None = Field(default=None, max_length=MAX_CONTROLS)
    reference_image: str | None = Field(default=None, max_length=40_000_000)
    reference_strength: float | None = Field(default=None, ge=0.0, le=1.0)
    hires: HiresParam | None = None

    @property
    def format(self) -> Literal["png", "jpeg", "webp"]:
        return self.output_format or "png"

    @property
    def quality_name(self) -> str:
        """The GPT-image quality name of the preset used (standard -> medium, hd -> high)."""
        return PRESET_NAMES[QUALITY_PRESETS[self.quality or "auto"]]


def parse_request(data: Any) -> OpenAIImageRequest:
    try:
        return OpenAIImageRequest.model_validate(data)
    except ValidationError as exc:
        raise params_error(exc) from exc


def resolve_model(services: Services, name: str | None) -> str | None:
    """The Studiolo model a request names (None: the default); OpenAI's own names mean the default, any other name
    must be an installed image model (404 model_not_found, as OpenAI answers)."""
    if name is None or name == "" or name.startswith(OPENAI_MODEL_PREFIXES):
        return None
    if name not in image_model_ids(services):
        raise NotFound(
            f"The model '{name}' does not exist here. GET /v1/models lists this server's image models.",
            code="model_not_found",
            details={"param": "model"},
        )
    return name


def image_model_ids(services: Services) -> list[str]:
    """The models that draw images (not upscalers or image-to-video models)."""
    return [m.id for m in services.catalog.models() if draws_images(m.arch)]


def max_pixels(services: Services, model: str | None, owner_id: str) -> tuple[int, int]:
    """(the most pixels ``model`` may make here for ``owner_id``, its native square side): the server's, the model's
    and the caller's plan's limits, so a client asking 1024x1024 on a plan that allows 512x512 gets the largest
    image of that aspect its plan allows instead of a refusal."""
    ref = services.catalog.resolve(model)
    caps = services.engines[ref.engine].capabilities(ref)
    native = 1024 if (ref.arch or "").startswith("sdxl") or "xl" in ref.id.lower() else 512
    limits = [services.settings.max_pixels, caps.max_pixels, services.billing.plan_max_pixels(owner_id)]
    return min(limit for limit in limits if limit is not None), native


def fit_size(width: int, height: int, limit: int) -> tuple[int, int]:
    """The size nearest to ``width`` x ``height`` that Studiolo can make: the same aspect ratio, sides multiples of
    8 between 64 and 8192, at most ``limit`` pixels; InvalidInput ``invalid_size`` when no such size exists."""
    scale = min(1.0, math.sqrt(limit / (width * height)), MAX_SIDE / max(width, height))
    scale = max(scale, MIN_SIDE / min(width, height))  # small legacy sizes grow to the smallest side allowed
    w, h = (max(MIN_SIDE, int(side * scale) // SIDE_MULTIPLE * SIDE_MULTIPLE) for side in (width, height))
    if w * h > limit or max(w, h) > MAX_SIDE:
        raise InvalidInput(
            f"No size of this aspect ratio fits the limits here (sides {MIN_SIDE}-{MAX_SIDE}, at most {limit} "
            f"pixels): {width}x{height}.",
            code="invalid_size",
            details={"param": "size", "limit": limit},
        )
    return w, h


def output_size(
    services: Services, req: OpenAIImageRequest, model: str | None, like: Upload | None, owner_id: str
) -> str:
    """The ``WxH`` the job makes: the asked size fitted to the model's limits; ``auto`` (or none) is the input
    image's size for edits and variations, else 1024x1024 fitted likewise."""
    limit, _native = max_pixels(services, model, owner_id)
    size = req.size or "auto"
    if size == "auto":
        if like is not None:
            with Image.open(io.BytesIO(like.png)) as img:
                width, height = img.size
        else:
            width = height = DEFAULT_SQUARE
    else:
        match = SIZE_PATTERN.fullmatch(size)
        if match is None or int(match[1]) == 0 or int(match[2]) == 0:
            raise InvalidInput(
                f"size must be 'auto' or WIDTHxHEIGHT, such as 1024x1024 or 1536x1024 (got {size!r}).",
                code="invalid_size",
                details={"param": "size"},
            )
        width, height = int(match[1]), int(match[2])
    w, h = fit_size(width, height, limit)
    return f"{w}x{h}"


def generation_params(
    services: Services, req: OpenAIImageRequest, *, prompt: str, model: str | None, size: str
) -> GenerationParams:
    """The Studiolo request: OpenAI's fields mapped, the extras passed through, the end user kept as a tag."""
    style = OPENAI_STYLES.get(req.style, req.style) if req.style else None
    _check_sampler(services, req.sampler, model)
    fields: dict[str, Any] = {
        "prompt": prompt,
        "model": model,
        "n": req.n,
        "size": size,
        "quality": QUALITY_PRESETS[req.quality or "auto"],
        "style": style,
        "seed": req.seed,
        "negative_prompt": req.negative_prompt or "",
        "steps": req.steps,
        "guidance": req.guidance if req.guidance is not None else req.cfg_scale,
        "sampler": req.sampler,
        "scheduler": req.scheduler,
    }
    if req.strength is not None:
        fields["strength"] = req.strength
    for extra in ("loras", "controls", "reference_image", "reference_strength", "hires"):
        value = getattr(req, extra)
        if value is not None:
            fields[extra] = value.model_dump() if isinstance(value, BaseModel) else value
    end_user = req.safety_identifier or req.user
    if end_user:
        fields["tags"] = [(USER_TAG_PREFIX + end_user)[:64]]
    try:
        return GenerationParams.model_validate(
            {k: v for k, v in fields.items() if v is not None}, context=services.generation.validation_context
        )
    except ValidationError as exc:
        raise params_error(exc) from exc


def _check_sampler(services: Services, sampler: str | None, model: str | None) -> None:
    """Refuse a sampler no engine here knows at once (400), as the A1111 face does: the generic params accept any
    name, and the job would otherwise fail at run time, a 500 for what is the caller's typo."""
    if not sampler:
        return
    ref = services.catalog.resolve(model)
    known = {"default", *A1111_SAMPLER_NAMES, *services.engines[ref.engine].capabilities(ref).samplers}
    if sampler not in known:
        raise InvalidInput(
            f"Unknown sampler {sampler!r}; use one of {', '.join(sorted(known))}.",
            code="invalid_sampler",
            details={"param": "sampler"},
        )


def openai_mask(services: Services, data: bytes, image: Upload) -> Upload:
    """OpenAI's mask (a PNG whose transparent pixels are the area to edit, the first image's size) as Studiolo's
    (L, white = repaint): white is 255 - alpha, so a soft edge stays soft."""
    settings = services.settings
    rgba = imaging.load_upload(
        data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_upload_pixels, field="mask", mode="RGBA"
    )
    alpha = rgba.getchannel("A")
    if alpha.getextrema() == (255, 255):
        raise InvalidInput(
            "The mask has no transparent pixels: its transparent area is the part to edit (a PNG with an alpha "
            "channel).",
            code="invalid_mask",
            details={"param": "mask"},
        )
    with Image.open(io.BytesIO(image.png)) as first:
        if first.size != rgba.size:
            raise InvalidInput(
                f"The mask is {rgba.size[0]}x{rgba.size[1]} and the image {first.size[0]}x{first.size[1]}; they must "
                "be the same size.",
                code="invalid_mask",
                details={"param": "mask"},
            )
    mask = alpha.point(lambda a: 255 - a)
    return Upload(png=imaging.encode_png(mask, parameters="", metadata={}))


def encode_output(png: bytes, fmt: Literal["png", "jpeg", "webp"], compression: int | None) -> bytes:
    """The stored PNG's pixels in the asked format (the gallery keeps the PNG): ``compression`` 0-100 is OpenAI's
    output_compression (100 = best quality), used as the JPEG/WebP quality."""
    if fmt == "png":
        return png
    quality = 100 if compression is None else max(1, compression)
    with Image.open(io.BytesIO(png)) as img:
        rgb = img.convert("RGB")
    buf = io.BytesIO()
    rgb.save(buf, format="JPEG" if fmt == "jpeg" else "WEBP", quality=quality)
    return buf.getvalue()


def prompt_tokens(prompt: str) -> int:
    """``usage.input_tokens``: the prompt's words (Studiolo has no tokenizer of OpenAI's to count with)."""
    return len(prompt.split())
