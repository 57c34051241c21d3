"""API shapes of /api/v1/describe (docs/describe.md): the structured description and its stored view."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class Colour(BaseModel):
    name: str = Field(description="An everyday colour name a prompt understands")
    hex: str | None = Field(default=None, description="#rrggbb; null when a model named a colour without one")
    share: float | None = Field(default=None, ge=0, le=1, description="Part of the picture (offline), when known")


class FaceBox(BaseModel):
    """A face found by the offline describer, as fractions of the photo's width and height."""

    x: float
    y: float
    w: float
    h: float


class PhotoDescription(BaseModel):
    """What a describer said. Vision models fill the words; the offline describer the measured facts."""

    subject: str = Field(default="", description="Who or what the photo shows, in a few words")
    species: str = Field(default="", description="The animal a fursona would be (fursona), else any species seen")
    archetype: str = Field(default="", description="A character archetype (the knight, the trickster...)")
    colors: list[Colour] = Field(default_factory=list, description="The dominant colours, most first")
    features: list[str] = Field(default_factory=list, description="Distinctive features")
    clothing: list[str] = Field(default_factory=list, description="Clothing and accessories")
    mood: str = ""
    setting: str = ""
    brightness: float | None = Field(default=None, description="Mean luminance 0..1 (offline)")
    contrast: float | None = Field(default=None, description="RMS contrast 0..1 (offline)")
    saturation: float | None = Field(default=None, description="Mean saturation 0..1 (offline)")
    orientation: str | None = Field(default=None, description="landscape | portrait | square (offline)")
    faces: list[FaceBox] = Field(default_factory=list, description="Faces found (offline; Haar cascade)")
    subject_colors: list[Colour] = Field(default_factory=list, description="Colours of the subject (offline)")
    background_colors: list[Colour] = Field(default_factory=list, description="Colours of the background (offline)")


class DescriptionUsage(BaseModel):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    attempts: int = 1


class DescriptionUrls(BaseModel):
    self: str
    photo: str


class DescriptionView(BaseModel):
    id: str
    template: str
    instruction: str
    describer: str = Field(description="Which describer answered: offline | openai | gemini")
    model: str
    description: PhotoDescription
    known_by_vision_only: list[str] = Field(
        description="Fields this describer cannot know and a vision model would add (empty for a vision model)"
    )
    prompt: str
    negative_prompt: str
    style: str | None = Field(description="A suggested style slug (GET /api/v1/styles)")
    cost: float = Field(description="The provider's cost in USD where it reports one, else 0")
    usage: DescriptionUsage
    duration_ms: int
    created_at: datetime
    urls: DescriptionUrls


class DescriptionPage(BaseModel):
    items: list[DescriptionView]
    next_cursor: str | None
