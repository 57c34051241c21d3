"""Request and answer shapes of the YouTube publishing routes (youtube_router.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from studiolo.domain.film.models import FilmPublication

Privacy = Literal["private", "unlisted", "public"]


class PublishRequest(BaseModel):
    title: str | None = Field(default=None, min_length=1, max_length=100)
    description: str | None = Field(default=None, max_length=5000)
    tags: list[str] | None = Field(default=None, max_length=50)
    privacy: Privacy = "private"

    @field_validator("title", "description")
    @classmethod
    def _no_angle_brackets(cls, value: str | None) -> str | None:
        # YouTube refuses < and > in titles and descriptions (invalidTitle / invalidDescription).
        if value is not None and ("<" in value or ">" in value):
            raise ValueError("must not contain < or >")
        return value

    @field_validator("tags")
    @classmethod
    def _tags_fit(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        tags = [t.strip() for t in value if t.strip()]
        if any(len(t) > 100 or "<" in t or ">" in t for t in tags) or sum(len(t) for t in tags) > 500:
            raise ValueError("at most 500 characters of tags, each at most 100, without < or >")
        return tags


class PublicationError(BaseModel):
    code: str
    message: str


class PublicationView(BaseModel):
    id: str
    film_id: str
    provider: str
    status: str  # pending | uploading | processing | done | failed
    title: str
    description: str
    tags: list[str]
    privacy: str
    bytes_sent: int
    total_bytes: int
    video_id: str | None
    url: str | None
    captions_uploaded: bool
    error: PublicationError | None
    created_at: datetime
    updated_at: datetime


class ConnectionView(BaseModel):
    available: bool  # this server has a Google OAuth client: the "Connect YouTube" button can work
    connected: bool
    scopes: list[str]


def publication_view(row: FilmPublication) -> PublicationView:
    error = PublicationError(code=row.error_code, message=row.error_message or "") if row.error_code else None
    return PublicationView(
        id=row.id,
        film_id=row.project_id,
        provider=row.provider,
        status=row.status,
        title=row.title,
        description=row.description,
        tags=list(row.tags or []),
        privacy=row.privacy,
        bytes_sent=row.bytes_sent,
        total_bytes=row.total_bytes,
        video_id=row.video_id,
        url=f"https://youtu.be/{row.video_id}" if row.video_id else None,
        captions_uploaded=row.captions_uploaded,
        error=error,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
