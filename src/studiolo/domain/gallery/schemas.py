"""API shapes for the gallery: images, pages, collections."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ImageUrls(BaseModel):
    file: str
    thumbnails: dict[str, str]


class ImageView(BaseModel):
    id: str
    job_id: str | None
    kind: str
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
    urls: ImageUrls


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


class ImagePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tags: list[str] | None = Field(default=None, max_length=32)
    starred: bool | None = None
    public: bool | None = None

    _tags = field_validator("tags")(clean_tags)


class RegenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: Literal["same", "new"] | int = Field(default="same")
    n: int = Field(default=1, ge=1, le=64)


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
