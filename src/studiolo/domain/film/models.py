"""Film ORM: projects (a script and how to render it), their scenes (the storyboard), character images, YouTube
publications and the Google tokens they use (issue 16).

A render is an ordinary row of ``jobs`` (kind "film", pseudo-model ``FILM_MODEL_ID``): the same durable queue,
leases, retries and credits as an image. Its stages' artefacts are content-addressed objects in the store, so the
project row only remembers what the last render produced and how far the current one got.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from studiolo.db.base import Base, UTCDateTime, new_id, utcnow

# The model id of film jobs: workers that can render films (ffmpeg found) claim it like a model (served.py).
FILM_MODEL_ID = "studiolo-film"

PROJECT_STATUSES = ("draft", "rendering", "rendered", "failed", "canceled")


class FilmProject(Base):
    __tablename__ = "film_projects"
    __table_args__ = (
        Index("ix_film_projects_owner", "owner_id", "deleted_at", "id"),
        UniqueConstraint("share_token", name="uq_film_projects_share_token"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(String(36), ForeignKey("users.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(200))
    script: Mapped[str] = mapped_column(Text)
    style: Mapped[str | None] = mapped_column(String(64), nullable=True)  # a built-in or the owner's style slug
    model_id: Mapped[str | None] = mapped_column(String(200), nullable=True)  # the scene images' model; None: default
    aspect: Mapped[str] = mapped_column(String(8), default="16:9")  # 16:9 | 9:16 | 1:1
    resolution: Mapped[str] = mapped_column(String(8), default="720p")  # 720p | 1080p
    target_seconds: Mapped[int] = mapped_column(Integer, default=60)
    voice: Mapped[str] = mapped_column(String(120))  # a voice id of the speech engines (engines/speech.py)
    speed: Mapped[float] = mapped_column(Float, default=1.0)  # narration speed, 0.5 .. 2.0
    music: Mapped[str] = mapped_column(String(32), default="calm")  # a mood of engines/music.py, or "none"
    podcast: Mapped[bool] = mapped_column(Boolean, default=False)  # "NAME: text" lines, one voice per speaker
    speaker_voices: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)  # podcast: speaker -> voice id
    burn_subtitles: Mapped[bool] = mapped_column(Boolean, default=False)
    # How still images move: "kenburns" (pan and zoom, ffmpeg), or the id of an installed image-to-video model
    # (Stable Video Diffusion, engines/image_to_video.py).
    motion: Mapped[str] = mapped_column(String(200), default="kenburns")
    seed: Mapped[int] = mapped_column(BigInteger, default=0)  # music and motion; scene images have their own
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    share_token: Mapped[str | None] = mapped_column(String(64), nullable=True)
    collection_id: Mapped[str | None] = mapped_column(String(36), nullable=True)  # the gallery collection of its images
    status: Mapped[str] = mapped_column(String(16), default="draft")
    render_job_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    # How far the current or last render got: {"stage": name, "stages": {name: {"state", "done", "total"}}}.
    render_state: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # What the last successful render made: object keys (mp4, srt, vtt, thumb), duration, width, height, bytes.
    outputs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # The planned timeline of the last render: per scene start, length and subtitle cues (pipeline.Timeline).
    timeline: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    rendered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)  # in the Trash since


class FilmScene(Base):
    __tablename__ = "film_scenes"
    __table_args__ = (Index("ix_film_scenes_project", "project_id", "position"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(String(36), ForeignKey("film_projects.id", ondelete="CASCADE"))
    owner_id: Mapped[str] = mapped_column(String(36), ForeignKey("users.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)  # what is narrated (podcast: "NAME: line" lines)
    prompt: Mapped[str] = mapped_column(Text)  # the image prompt (editable)
    seed: Mapped[int] = mapped_column(BigInteger)
    planned_seconds: Mapped[float] = mapped_column(Float)  # estimate from the word count until narrated
    narration_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)  # from the last narration
    image_id: Mapped[str | None] = mapped_column(String(36), nullable=True)  # the gallery image it shows
    image_job_id: Mapped[str | None] = mapped_column(String(36), nullable=True)  # the generation job making it
    # The prompt/seed/style/model hash the image was made for: a different one means a new image is due.
    image_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class FilmCharacter(Base):
    """A character image the owner uploaded: scenes that name the character start from it (img2img)."""

    __tablename__ = "film_characters"
    __table_args__ = (UniqueConstraint("project_id", "name", name="uq_film_characters_project_name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(String(36), ForeignKey("film_projects.id", ondelete="CASCADE"))
    owner_id: Mapped[str] = mapped_column(String(36), ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(80))
    image_key: Mapped[str] = mapped_column(String(300))  # a validated PNG in the store
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class FilmPublication(Base):
    """An upload of a film to YouTube: the resumable session survives a restart, so an interrupted upload goes on."""

    __tablename__ = "film_publications"
    __table_args__ = (Index("ix_film_publications_project", "project_id", "id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(String(36), ForeignKey("film_projects.id", ondelete="CASCADE"))
    owner_id: Mapped[str] = mapped_column(String(36), ForeignKey("users.id", ondelete="CASCADE"))
    provider: Mapped[str] = mapped_column(String(16), default="youtube")
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|uploading|processing|done|failed
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    privacy: Mapped[str] = mapped_column(String(16), default="private")  # private | unlisted | public
    media_key: Mapped[str] = mapped_column(String(300))  # the MP4 uploaded (the render's, at the time)
    session_url: Mapped[str | None] = mapped_column(Text, nullable=True)  # the resumable upload session
    bytes_sent: Mapped[int] = mapped_column(BigInteger, default=0)
    total_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    video_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    captions_uploaded: Mapped[bool] = mapped_column(Boolean, default=False)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ProviderToken(Base):
    """A user's OAuth tokens at a provider for an extra scope (YouTube upload). Encrypted with a key derived from
    the server's secret key: unlike passwords they must be usable, so they cannot be hashed."""

    __tablename__ = "provider_tokens"

    user_id: Mapped[str] = mapped_column(String(36), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    provider: Mapped[str] = mapped_column(String(32), primary_key=True)  # "google"
    scopes: Mapped[str] = mapped_column(Text, default="")
    access_token: Mapped[str] = mapped_column(Text)  # encrypted
    refresh_token: Mapped[str | None] = mapped_column(Text, nullable=True)  # encrypted
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
