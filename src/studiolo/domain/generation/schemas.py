"""API shapes for generation: requests, jobs, styles, models. ORM classes never leave the services."""

from __future__ import annotations

import datetime as dt
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from studiolo.domain.gallery.schemas import Seed, clean_tags
from studiolo.domain.generation import rules
from studiolo.domain.generation.rules import raise_broken
from studiolo.domain.generation.styles import ASPECT_RATIOS
from studiolo.engines.base import CONTROL_TYPES, Capabilities
from studiolo.engines.schedules import normalize_schedule

# What the API schema says of width and height; checked, with the messages, by rules.size_rules.
_SIDE_SCHEMA: dict[str, Any] = {"minimum": rules.MIN_SIDE, "maximum": rules.MAX_SIDE, "multipleOf": rules.SIDE_MULTIPLE}


# Issue 19: an image a ControlNet unit or a reference slot takes, in JSON: one of your gallery images by id, or a
# data: URL (base64). Multipart requests may upload it instead, as the file field control_image_<i> / reference_image.
_IMAGE_REF = (
    "One of your gallery images by id, or a data: URL (data:image/png;base64,...); in a multipart request leave it out "
    "and upload the file as {field}"
)
MAX_LORAS = 8
MAX_CONTROLS = 3


class LoraParam(BaseModel):
    """A LoRA for this job (A1111's ``<lora:name:weight>`` in the prompt is read as one too)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, description="An installed LoRA (GET /api/v1/adapters?kind=lora)")
    weight: float = Field(default=1.0, ge=-4.0, le=4.0, description="0: no effect; 1: as trained")


class ControlParam(BaseModel):
    """A ControlNet unit: the picture the composition follows, as edges, depth, pose..."""

    model_config = ConfigDict(extra="forbid")

    type: Literal[CONTROL_TYPES] = Field(description="What the map shows")  # type: ignore[valid-type]
    image: str | None = Field(
        default=None, max_length=40_000_000, description=_IMAGE_REF.format(field="control_image_<i>")
    )
    model: str | None = Field(
        default=None,
        max_length=200,
        description="The ControlNet to use; default: the installed one for this type that fits the model",
    )
    strength: float = Field(default=1.0, ge=0.0, le=2.0, description="0: no effect")
    start: float = Field(default=0.0, ge=0.0, le=1.0, description="Fraction of the steps where it starts acting")
    end: float = Field(default=1.0, ge=0.0, le=1.0, description="Fraction of the steps where it stops acting")
    preprocess: bool = Field(
        default=True,
        description="Make the map from the picture (canny, scribble, lineart, tile in-house; depth with an installed "
        "depth preprocessor); false: the picture already is the map",
    )

    @model_validator(mode="after")
    def _window(self) -> ControlParam:
        if self.start > self.end:
            rules.raise_first([rules.broken("invalid_control_window", "start must not be after end", value=self.start)])
        return self


class HiresParam(BaseModel):
    """Hires fix: sample at width x height, enlarge ``scale`` times, then refine as img2img at ``strength``."""

    model_config = ConfigDict(extra="forbid")

    scale: float = Field(default=2.0, ge=1.0, le=4.0)
    upscaler: str = Field(
        default="lanczos",
        max_length=200,
        description="lanczos, latent, or an installed upscaler model (GET /api/v1/upscalers)",
    )
    strength: float = Field(default=0.5, gt=0.0, le=1.0, description="A1111's hires denoising strength")
    steps: int | None = Field(default=None, ge=1, le=150, description="Steps of the second pass; default: the job's")


class GenerationParams(BaseModel):
    """What a user asks for. Sizes may be given as ``size``, ``aspect_ratio`` or ``width``+``height``.

    Every rule is checked in one validation and every broken one reported (rules.py); the configured limits (prompt
    length, images per job, pixels) only when the validation context carries them (``GenerationLimits.context``),
    as the API and the CLI give it, and otherwise by ``GenerationService.prepare``."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(description="At most STUDIOLO_MAX_PROMPT_CHARS (2000) characters, not blank")
    negative_prompt: str = Field(default="", max_length=10_000)
    style: str | None = Field(default=None, max_length=64)
    model: str | None = Field(default=None, max_length=200)
    size: str | None = Field(default=None, max_length=11, examples=["768x768"], description="WIDTHxHEIGHT")
    aspect_ratio: str | None = Field(default=None, examples=list(ASPECT_RATIOS))
    width: int | None = Field(default=None, json_schema_extra=_SIDE_SCHEMA)
    height: int | None = Field(default=None, json_schema_extra=_SIDE_SCHEMA)
    quality: Literal["draft", "standard", "high"] | None = None
    steps: int | None = Field(default=None, ge=1, le=150)
    guidance: float | None = Field(default=None, ge=0, le=30)
    sampler: str | None = Field(default=None, max_length=32)
    scheduler: str | None = Field(
        default=None,
        max_length=32,
        description="The sigma schedule (A1111's Schedule type): automatic (default, the sampler's own), uniform, "
        "karras, exponential, beta; GET /models lists each model's",
    )
    seed: Seed | None = None
    variation_seed: Seed | None = Field(
        default=None,
        description="A1111's variation seed (subseed): each image's starting noise is moved towards this seed's (plus "
        "the image's index) by variation_strength; random when a strength is given without it",
    )
    variation_strength: float = Field(
        default=0.0, ge=0.0, le=1.0, description="0: the seed's own picture; 1: the variation seed's picture"
    )
    n: int = Field(
        default=1, json_schema_extra={"minimum": 1}, description="At most STUDIOLO_MAX_IMAGES_PER_JOB (8) images"
    )
    priority: int = Field(
        default=0,
        ge=-10,
        le=10,
        description="Orders your own queued jobs (higher first); it never moves them ahead of other users' turns",
    )
    system_priority: int | None = Field(
        default=None,
        ge=-10,
        le=10,
        description="Administrators only (403 admin_required otherwise): orders the whole queue, ahead of the users' "
        "turns (higher first; default 0)",
    )
    strength: float = Field(default=0.75, ge=0.0, le=1.0)
    tags: list[str] = Field(default_factory=list, max_length=32)
    description_id: str | None = Field(
        default=None,
        max_length=64,
        description="A description of yours (POST /api/v1/describe) the images are rendered from: kept with them",
    )
    loras: list[LoraParam] = Field(default_factory=list, max_length=MAX_LORAS, description="LoRAs and their weights")
    controls: list[ControlParam] = Field(default_factory=list, max_length=MAX_CONTROLS, description="ControlNet units")
    reference_image: str | None = Field(
        default=None,
        max_length=40_000_000,
        description="IP-Adapter: a picture whose look the images take. " + _IMAGE_REF.format(field="reference_image"),
    )
    reference_strength: float = Field(default=0.6, ge=0.0, le=1.0, description="How strongly the reference acts")
    reference_model: str | None = Field(
        default=None, max_length=200, description="The IP-Adapter to use; default: the installed one fitting the model"
    )
    hires: HiresParam | None = Field(
        default=None, description="Hires fix (txt2img): the final size is width x height x scale"
    )
    webhook: str | None = Field(
        default=None,
        max_length=2000,
        pattern=r"^https?://",
        description="An http(s) URL that receives this job's events, signed with your account's webhook secret "
        "(docs/webhooks.md); private and loopback addresses are refused unless the install allows them",
    )
    webhook_events_filter: list[str] | None = Field(
        default=None,
        max_length=10,
        description="The events the webhook receives: job.started, job.progress, job.succeeded, job.failed, "
        "job.canceled (or Replicate's start, output, logs, completed); default: all but job.progress",
    )

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: str, info: ValidationInfo) -> str:
        rules.raise_first(rules.prompt_rules(v, rules.limits_of(info)))
        return v.strip()

    @field_validator("n")
    @classmethod
    def _images(cls, v: int, info: ValidationInfo) -> int:
        rules.raise_first(rules.images_rules(v, rules.limits_of(info)))
        return v

    @field_validator("scheduler")
    @classmethod
    def _known_scheduler(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            return None  # an empty menu choice: automatic
        rules.raise_first(rules.scheduler_rules(v))
        return normalize_schedule(v)

    @field_validator("aspect_ratio")
    @classmethod
    def _known_ratio(cls, v: str | None) -> str | None:
        if v is not None and v not in ASPECT_RATIOS:
            message = f"Must be one of {', '.join(ASPECT_RATIOS)} (got {v!r})"
            rules.raise_first([rules.broken("invalid_aspect_ratio", message, value=v)])
        return v

    _tags = field_validator("tags")(clean_tags)

    @model_validator(mode="wrap")
    @classmethod
    def _every_rule(cls, data: Any, handler: ModelWrapValidatorHandler[GenerationParams], info: ValidationInfo) -> Any:
        """The size rules span fields, so they are checked here, even when other fields broke theirs: every broken
        rule is reported at once."""
        limits = rules.limits_of(info)
        try:
            params = handler(data)
        except ValidationError as exc:
            failed = frozenset(str(e["loc"][0]) for e in exc.errors() if e["loc"])
            size = rules.raw_size_fields(data, failed)
            size_errors = rules.size_rules(**size, limits=limits, failed=failed)
            raise_broken(cls.__name__, [*rules.as_broken(exc), *size_errors])
            raise
        p = params
        raise_broken(cls.__name__, rules.size_rules(p.size, p.aspect_ratio, p.width, p.height, limits))
        return params


class BatchSubmission(BaseModel):
    """POST /generations/batch: jobs queued all together, or none of them."""

    model_config = ConfigDict(extra="forbid")

    generations: list[GenerationParams] = Field(
        min_length=1, description="Each a full generation request; at most STUDIOLO_MAX_BATCH_SUBMISSIONS (100)"
    )

    @field_validator("generations", mode="before")
    @classmethod
    def _at_most(cls, value: Any, info: ValidationInfo) -> Any:
        # The cap is a setting, so it comes in the validation context; checked before any item is validated, so
        # a huge list costs only its parsing (the router turns this error into 422 too_many_generations).
        limit = (info.context or {}).get("max_items")
        if limit is not None and isinstance(value, list) and len(value) > limit:
            raise PydanticCustomError(
                "too_many_generations", "At most {limit} generations per batch.", {"limit": limit}
            )
        return value


class JobUrls(BaseModel):
    get: str
    cancel: str
    events: str


QueuePlace = Annotated[
    int | None,
    Field(
        description="1-based place among queued jobs (by system priority, then age, your own jobs in the order of "
        "their priority; users' turns are not counted in); null once the job has left the queue"
    ),
]
QueuePlaceCapped = Annotated[
    bool,
    Field(
        description="True when more jobs wait ahead than are counted (STUDIOLO_QUEUE_POSITION_LIMIT, 1000): "
        "queue_position then shows that limit and the job is further back"
    ),
]


class JobAccepted(BaseModel):
    id: str
    status: str
    queue_position: QueuePlace
    queue_position_capped: QueuePlaceCapped = False
    urls: JobUrls


class BatchAccepted(BaseModel):
    jobs: list[JobAccepted] = Field(description="In the order of the request's generations")


class JobError(BaseModel):
    code: str
    message: str


class JobProgress(BaseModel):
    """Where a running job is, in the engine's own terms (CONTRACTS.md "Progress")."""

    step: int = Field(description="Steps done in the current sampling call")
    total: int = Field(description="Steps of the current sampling call")
    image: int = Field(
        default=0,
        description="1-based index of the image being sampled when the engine makes them one after another; 0 when "
        "it samples all of them in one call",
    )
    images: int = Field(default=1, description="Images in the job")

    def text(self) -> str:
        """How the web studio and the CLI say it: "Image 1 of 4 · step 10 of 25", "Step 10 of 25 · 4 images" (one
        call for all) or "Step 10 of 25" (one image)."""
        if self.image > 0 and self.images > 1:
            return f"Image {self.image} of {self.images} · step {self.step} of {self.total}"
        if self.images > 1:
            return f"Step {self.step} of {self.total} · {self.images} images"
        return f"Step {self.step} of {self.total}"

    def steps_done(self) -> tuple[int, int]:
        """(steps done, steps in all) over the whole job, for a progress bar that never runs backwards."""
        if self.image > 0:
            return (self.image - 1) * self.total + self.step, self.total * max(self.images, 1)
        return self.step, self.total


class JobOutput(BaseModel):
    image_id: str
    seed: int
    url: str
    thumbnail_url: str
    review_state: str | None = Field(
        default=None, description="pending: held back by the output check until reviewed (blurred thumbnail); null: not"
    )


class JobView(BaseModel):
    id: str
    kind: str
    status: str
    model: str
    params: dict[str, Any]
    seeds: list[int]
    priority: int = Field(description="The owner's own order among their jobs")
    system_priority: int = Field(description="Queue-wide order, ahead of the users' turns (set by an administrator)")
    attempts: int
    max_attempts: int
    queue_position: QueuePlace
    queue_position_capped: QueuePlaceCapped = False
    progress: JobProgress
    error: JobError | None
    cost: float
    duration_seconds: float | None
    timings: dict[str, float | None] = Field(
        description="Seconds per phase of the successful attempt: queue_wait, load, generate, store"
    )
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    outputs: list[JobOutput]
    blocked_outputs: int = Field(
        default=0, description="Images the output check refused to store (NSFW policy 'block'); not charged"
    )
    urls: JobUrls


class JobPage(BaseModel):
    items: list[JobView]
    next_cursor: str | None


class StyleView(BaseModel):
    slug: str
    name: str
    category: str
    prompt_template: str
    negative_template: str
    builtin: bool
    thumbnail_url: str | None = Field(
        default=None, description="A 128x128 WebP of the style (built-in styles only; null for your own)"
    )


class StyleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    slug: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")
    name: str = Field(min_length=1, max_length=120)
    category: str = Field(default="custom", min_length=1, max_length=64)
    prompt_template: str = Field(min_length=1, max_length=2000)
    negative_template: str = Field(default="", max_length=2000)


class SizeOption(BaseModel):
    width: int
    height: int
    label: str


class StyleCatalog(BaseModel):
    styles: list[StyleView]
    sizes: list[SizeOption]
    aspect_ratios: list[str]
    qualities: dict[str, int] = Field(
        description="The quality presets and their steps on a Stable Diffusion model; turbo models use 1/2/4 steps and "
        "the built-in demo model 4/8/25 (its own rectified-flow defaults)."
    )


class ModelCapabilities(BaseModel):
    """What a model can do: job kinds, the largest output, and the sampling options a request may choose."""

    txt2img: bool
    img2img: bool
    inpaint: bool
    upscale: bool
    max_pixels: int
    samplers: list[str] = Field(description="Besides default (the model's own)")
    schedulers: list[str] = Field(description="Besides automatic (the sampler's own)")
    variation_seed: bool = Field(description="variation_seed/variation_strength are honoured (at least for txt2img)")


def model_capabilities(caps: Capabilities, max_pixels: int) -> ModelCapabilities:
    """The API's view of an engine's ``Capabilities``; ``max_pixels``: the server's limit, which may be lower."""
    return ModelCapabilities(
        txt2img=caps.txt2img,
        img2img=caps.img2img,
        inpaint=caps.inpaint,
        upscale=caps.upscale,
        max_pixels=min(caps.max_pixels, max_pixels),
        samplers=list(caps.samplers),
        schedulers=list(caps.schedulers),
        variation_seed=caps.variation_seed,
    )


class ModelView(BaseModel):
    id: str
    engine: str
    source: str
    arch: str | None
    size_bytes: int
    is_default: bool
    loaded: bool
    # True for the built-in demo model (a 64x64 toy world, issue 6): clients label its pictures as such.
    demo: bool = False
    # A hosted provider's model (source "remote", engine = the provider): its name there.
    remote_model: str | None = None
    capabilities: ModelCapabilities
    # Issue 19: the adapter kinds the model takes (GET /adapters lists the installed ones) and whether it does a
    # hires fix; a request using others is refused before it is queued.
    adapters: list[str] = Field(default_factory=list, description="lora, embedding, controlnet, ip_adapter")
    hires: bool = False


class ModelList(BaseModel):
    default: str
    items: list[ModelView]


class StatsDay(BaseModel):
    """One UTC day of a user's usage: jobs submitted that day, how many of them failed, images made."""

    date: dt.date
    jobs: int
    images: int
    failed: int


class Stats(BaseModel):
    jobs: dict[str, int]
    images: int
    starred: int
    collections: int
    total_cost: float = Field(description="All time: credits the worker counted for succeeded jobs (a usage measure)")
    duration_seconds: dict[str, float | None] = Field(
        description="p50, p95 and mean run time of the succeeded jobs submitted in the last `days`: the admin "
        "analytics' definition (percentile_cont, linear interpolation)"
    )
    per_day: list[StatsDay] = Field(description="The last `days` UTC days, oldest first, every day present")


class AdminJobView(JobView):
    owner_id: str
    owner_email: str


class AdminJobPage(BaseModel):
    items: list[AdminJobView]
    next_cursor: str | None


class AnalyticsDay(BaseModel):
    """Jobs submitted on one UTC day, by outcome; images made that day; run time of its succeeded jobs."""

    date: dt.date
    jobs: int
    succeeded: int
    failed: int
    canceled: int
    images: int
    p50_seconds: float | None
    p95_seconds: float | None


class AnalyticsTotals(BaseModel):
    jobs: int
    succeeded: int
    failed: int
    canceled: int
    images: int
    users: int = Field(description="Accounts that exist now")
    active_users: int = Field(description="Accounts that submitted at least one job in the window")
    failure_rate: float | None = Field(description="failed / (succeeded + failed); null when both are 0")
    p50_seconds: float | None
    p95_seconds: float | None


class NameCount(BaseModel):
    name: str
    count: int


class AdminAnalytics(BaseModel):
    days: list[AnalyticsDay]
    totals: AnalyticsTotals
    top_styles: list[NameCount]
    top_models: list[NameCount]


# --- upscale (domain/generation/upscale.py) --------------------------------------------------------------------------


class UpscaleRequest(BaseModel):
    """Enlarge one of your images into a new gallery image (its ``parent_id`` names the source)."""

    model_config = ConfigDict(extra="forbid")

    factor: int = Field(
        default=2,
        json_schema_extra={"enum": [2, 4]},
        description="How many times wider and taller: 2 or 4, among the factors the upscaler offers (GET /upscalers)",
    )
    upscaler: str = Field(
        default="lanczos",
        max_length=200,
        description='"lanczos" (built in: Lanczos resampling and sharpening), or an installed upscaler model\'s id',
    )


class UpscalerView(BaseModel):
    id: str
    name: str
    factors: list[int]


class UpscalerList(BaseModel):
    items: list[UpscalerView]
