"""API shapes for the gallery: images, pages, collections."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class ImageUrls(BaseModel):
    file: str
    thumbnails: dict[str, str]


class ImageLora(BaseModel):
    name: str
    weight: float


class ImageControl(BaseModel):
    """A ControlNet unit an image was made with (its picture stays with the job: a regenerate reuses it)."""

    type: str
    model: str | None = None
    strength: float = 1.0
    start: float = 0.0
    end: float = 1.0
    preprocess: bool = True


class ImageReference(BaseModel):
    model: str | None = None
    strength: float


class ImageHires(BaseModel):
    """Hires fix: the request's width and height (the image's ``metadata``) were sampled, enlarged ``scale`` times,
    then refined; the image is the final size."""

    scale: float
    upscaler: str
    strength: float
    steps: int | None = None


# Issue 19: the adapter settings an image's metadata keeps (domain/generation/infotext.py adapter_meta), shown as
# fields of their own; read from ``metadata`` so every place that builds an ImageView gets them.
_ADAPTER_VIEW_FIELDS = ("loras", "embeddings", "controls", "reference", "hires")


class ImageView(BaseModel):
    id: str
    job_id: str | None
    kind: str
    # The image this one was made from (an upscale's source); null when it has none or it was purged.
    parent_id: str | None = None
    prompt: str
    negative_prompt: str
    style: str | None
    model: str
    seed: int
    steps: int
    guidance: float
    sampler: str | None
    width: int
    height: int
    size_bytes: int
    tags: list[str]
    starred: bool
    public: bool
    metadata: dict[str, Any]
    created_at: datetime
    trashed_at: datetime | None = Field(description="When the image was moved to the Trash; null in the gallery")
    purge_at: datetime | None = Field(
        description="When housekeeping deletes the trashed image for good (trashed_at + STUDIOLO_TRASH_DAYS)"
    )
    nsfw_score: float | None = Field(
        default=None, description="The output check's NSFW score, 0 to 1; null when the image was not checked"
    )
    review_state: str | None = Field(
        default=None,
        description="pending: held back by the output check (blurred thumbnails, original private) until an "
        "administrator approves or rejects it; approved; rejected; null: never held",
    )
    description_id: str | None = Field(
        default=None, description="The photo description it was rendered from (POST /api/v1/describe), if any"
    )
    urls: ImageUrls
    loras: list[ImageLora] = Field(default_factory=list, description="The LoRAs and weights it was made with")
    embeddings: list[str] = Field(default_factory=list, description="The embeddings its prompts used")
    controls: list[ImageControl] = Field(default_factory=list, description="Its ControlNet units")
    reference: ImageReference | None = Field(default=None, description="Its IP-Adapter reference (not the picture)")
    hires: ImageHires | None = Field(default=None, description="Its hires fix; null when it had none")

    @model_validator(mode="before")
    @classmethod
    def _adapters_from_metadata(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(meta := data.get("metadata"), dict):
            given = {k: meta[k] for k in _ADAPTER_VIEW_FIELDS if meta.get(k) is not None and k not in data}
            return {**data, **given} if given else data
        return data


class ImagePage(BaseModel):
    items: list[ImageView]
    next_cursor: str | None


def clean_tags(v: list[str] | None) -> list[str] | None:
    """Tags are trimmed, lower-cased, 1-64 characters, without repeats (order kept)."""
    if v is None:
        return None
    out: list[str] = []
    for tag in v:
        t = tag.strip().lower()
        if not t or len(t) > 64:
            raise ValueError("tags must be 1-64 characters")
        if t not in out:
            out.append(t)
    return out


MAX_TAGS = 32


class ImagePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tags: list[str] | None = Field(default=None, max_length=MAX_TAGS)
    starred: bool | None = None
    public: bool | None = None

    _tags = field_validator("tags")(clean_tags)


# A generation seed: 32 bits, as the engines' generators take them (GenerationParams and regenerate alike).
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]


class RegenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: Literal["same", "new"] | Seed = Field(default="same")
    # The limit is the settings' (checked with the other generation rules): a fixed le=64 here told n=65 "<= 64",
    # then n=64 "at most 8".
    n: int = Field(default=1, ge=1, description="At most STUDIOLO_MAX_IMAGES_PER_JOB (8) images")


class CollectionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=120)
    description: str = Field(default="", max_length=2000)


class CollectionPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=120)
    description: str | None = Field(default=None, max_length=2000)


class CollectionView(BaseModel):
    id: str
    name: str
    description: str
    image_count: int
    cover_thumbnail_url: str | None
    created_at: datetime


class CollectionPage(BaseModel):
    items: list[CollectionView]
    next_cursor: str | None


class CollectionItems(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image_ids: list[str] = Field(min_length=1, max_length=500)


# delete moves to the Trash, restore brings back from it, purge deletes for good (files too), trashed or not.
BulkAction = Literal["delete", "restore", "purge", "star", "unstar", "add_tags", "remove_tags"]
TAG_ACTIONS = ("add_tags", "remove_tags")
# Ids and filters that reach a query: PostgreSQL text cannot hold NUL, and a NUL would otherwise surface as a
# 500 instead of a 422 (found by fuzzing the routes signed in, on PostgreSQL).
NO_CONTROL_CHARS = r"^[^\x00-\x1f\x7f]*$"


class BulkImageRequest(BaseModel):
    """One action on many of the caller's images; ``tags`` is for add_tags and remove_tags (and only them)."""

    model_config = ConfigDict(extra="forbid")

    image_ids: list[Annotated[str, Field(min_length=1, max_length=64, pattern=NO_CONTROL_CHARS)]] = Field(
        min_length=1, max_length=500
    )
    action: BulkAction
    tags: list[Annotated[str, Field(pattern=NO_CONTROL_CHARS)]] | None = Field(default=None, max_length=MAX_TAGS)

    _tags = field_validator("tags")(clean_tags)


class TrashEmptied(BaseModel):
    purged: int = Field(description="How many images were deleted for good")


class BulkImageResult(BaseModel):
    action: BulkAction
    done: list[str] = Field(description="The ids acted on, in the order given (repeats once)")
    not_found: list[str] = Field(description="Ids that are not images of yours: unknown, deleted or another user's")
