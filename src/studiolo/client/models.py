"""What the API returns, as typed objects. They mirror the server's schemas (domain/*/schemas.py) without importing
them, so the client needs only httpx and pydantic; unknown fields a newer server adds are ignored."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled"})


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class JobUrls(_Model):
    get: str
    cancel: str
    events: str


class JobAccepted(_Model):
    """POST /generations' answer: the job is queued (``replayed``: an earlier request with the same
    Idempotency-Key queued it, so this one queued nothing)."""

    id: str
    status: str
    queue_position: int | None = None
    queue_position_capped: bool = False
    urls: JobUrls
    replayed: bool = False


class JobProgress(_Model):
    step: int = 0
    total: int = 0
    image: int = 0
    images: int = 1


class JobError(_Model):
    code: str
    message: str


class JobOutput(_Model):
    image_id: str
    seed: int
    url: str
    thumbnail_url: str
    review_state: str | None = None


class Job(_Model):
    id: str
    kind: str
    status: str
    model: str
    params: dict[str, Any]
    seeds: list[int]
    priority: int = 0
    system_priority: int = 0
    attempts: int = 0
    max_attempts: int = 0
    queue_position: int | None = None
    queue_position_capped: bool = False
    progress: JobProgress = Field(default_factory=JobProgress)
    error: JobError | None = None
    cost: float = 0.0
    duration_seconds: float | None = None
    timings: dict[str, float | None] = Field(default_factory=dict)
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    outputs: list[JobOutput] = Field(default_factory=list)
    blocked_outputs: int = 0
    urls: JobUrls

    @property
    def done(self) -> bool:
        return self.status in TERMINAL_STATUSES


class JobPage(_Model):
    items: list[Job]
    next_cursor: str | None = None


class JobEvent(_Model):
    """One event of GET /jobs/{id}/events. ``type`` says which fields are set: queued (position, capped), started
    (attempt), progress and preview (step, total, image, images; preview's data_url), output (image_id, seed),
    succeeded/failed/canceled (job; image_ids or error), shutdown (message: the server stops, the job goes on)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: str
    position: int | None = None
    capped: bool = False
    attempt: int | None = None
    step: int | None = None
    total: int | None = None
    image: int | None = None
    images: int | None = None
    data_url: str | None = None
    image_id: str | None = None
    seed: int | None = None
    job: Job | None = None
    image_ids: list[str] = Field(default_factory=list)
    error: JobError | None = None
    message: str | None = None

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_STATUSES

    def progress(self) -> JobProgress | None:
        """The step counts of a progress or preview event."""
        if self.step is None or self.total is None:
            return None
        return JobProgress(step=self.step, total=self.total, image=self.image or 0, images=self.images or 1)


class Image(_Model):
    id: str
    job_id: str | None = None
    kind: str
    parent_id: str | None = None
    prompt: str
    negative_prompt: str = ""
    style: str | None = None
    model: str
    seed: int
    steps: int
    guidance: float
    sampler: str | None = None
    width: int
    height: int
    size_bytes: int
    tags: list[str] = Field(default_factory=list)
    starred: bool = False
    public: bool = False
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    trashed_at: datetime | None = None
    purge_at: datetime | None = None
    nsfw_score: float | None = None
    review_state: str | None = None


class ImagePage(_Model):
    items: list[Image]
    next_cursor: str | None = None


class ModelCapabilities(_Model):
    txt2img: bool
    img2img: bool
    inpaint: bool
    upscale: bool
    max_pixels: int
    samplers: list[str] = Field(default_factory=list)
    schedulers: list[str] = Field(default_factory=list)
    variation_seed: bool = False


class ModelInfo(_Model):
    id: str
    engine: str
    source: str
    arch: str | None = None
    size_bytes: int = 0
    is_default: bool = False
    loaded: bool = False
    demo: bool = False
    remote_model: str | None = None  # a hosted provider's model: its name there (engine = the provider)
    capabilities: ModelCapabilities


class ModelList(_Model):
    default: str
    items: list[ModelInfo]


class Style(_Model):
    slug: str
    name: str
    category: str
    prompt_template: str
    negative_template: str = ""
    builtin: bool = False
    thumbnail_url: str | None = None


class SizeOption(_Model):
    width: int
    height: int
    label: str


class StyleCatalog(_Model):
    styles: list[Style]
    sizes: list[SizeOption] = Field(default_factory=list)
    aspect_ratios: list[str] = Field(default_factory=list)
    qualities: dict[str, int] = Field(default_factory=dict)
