"""API shapes of the film studio (``/api/v1/films``, docs/film.md). ORM rows are in models.py."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Aspect = Literal["16:9", "9:16", "1:1"]
Resolution = Literal["720p", "1080p"]
ASPECTS: tuple[str, ...] = ("16:9", "9:16", "1:1")
RESOLUTIONS: tuple[str, ...] = ("720p", "1080p")
TARGET_SECONDS_MIN = 60
TARGET_SECONDS_MAX = 300
SCRIPT_MAX_CHARS = 200_000  # a body bound; the word limit (STUDIOLO_FILM_MAX_WORDS) is the real one
FILE_NAMES: tuple[str, ...] = ("film.mp4", "film.srt", "film.vtt", "thumbnail.jpg")
# The render's stages, in order (CONTRACTS.md section 3): the names of its "stage" events and of FilmView.render.
STAGES: tuple[str, ...] = ("images", "narration", "music", "mix", "motion", "subtitles", "encode", "thumbnail", "check")
ImageState = Literal["none", "queued", "running", "ready", "stale", "failed"]
FilmStatus = Literal["draft", "rendering", "rendered", "failed", "canceled"]
SceneSeed = int

_SEED = Field(default=None, ge=0, le=2**32 - 1)
_SPEAKERS = Field(default=None, max_length=20, description="Podcast mode: speaker NAME -> voice id")


class FilmCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=200)
    script: str = Field(max_length=SCRIPT_MAX_CHARS, description="At most STUDIOLO_FILM_MAX_WORDS (500) words")
    style: str | None = Field(default=None, max_length=64, description="A style slug (GET /api/v1/styles)")
    model: str | None = Field(default=None, max_length=200, description="The scene images' model; null: the default")
    aspect: Aspect = "16:9"
    resolution: Resolution = "720p"
    target_seconds: int = Field(default=60, ge=TARGET_SECONDS_MIN, le=TARGET_SECONDS_MAX)
    voice: str | None = Field(default=None, max_length=120, description="A voice id (GET /films/voices); null: default")
    speed: float = Field(default=1.0, ge=0.5, le=2.0, description="Narration speed, 1.0 normal")
    music: str = Field(default="calm", max_length=32, description='A mood (GET /films/options) or "none"')
    podcast: bool = Field(default=False, description='Lines written "NAME: text" are spoken by a voice per speaker')
    speaker_voices: dict[str, str] = Field(default_factory=dict, max_length=20)
    burn_subtitles: bool = False
    motion: str = Field(
        default="kenburns",
        max_length=200,
        description='How stills move: "kenburns" (pan and zoom), or an installed image-to-video model id '
        "(GET /films/options)",
    )
    seed: int | None = _SEED


class FilmPatch(BaseModel):
    """Every field optional; ``resplit`` makes the storyboard again from the (new) script."""

    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(default=None, min_length=1, max_length=200)
    script: str | None = Field(default=None, max_length=SCRIPT_MAX_CHARS)
    style: str | None = Field(default=None, max_length=64)
    model: str | None = Field(default=None, max_length=200)
    aspect: Aspect | None = None
    resolution: Resolution | None = None
    target_seconds: int | None = Field(default=None, ge=TARGET_SECONDS_MIN, le=TARGET_SECONDS_MAX)
    voice: str | None = Field(default=None, max_length=120)
    speed: float | None = Field(default=None, ge=0.5, le=2.0)
    music: str | None = Field(default=None, max_length=32)
    podcast: bool | None = None
    speaker_voices: dict[str, str] | None = _SPEAKERS
    burn_subtitles: bool | None = None
    motion: str | None = Field(default=None, max_length=200)
    seed: int | None = _SEED
    public: bool | None = None
    resplit: bool = False


class SceneCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    after: str | None = Field(default=None, max_length=36, description="The scene it follows; null: the first scene")
    text: str = Field(min_length=1, max_length=20_000)
    prompt: str | None = Field(default=None, min_length=1, max_length=2000, description="null: from the text")


class ScenePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(default=None, min_length=1, max_length=20_000)
    prompt: str | None = Field(default=None, min_length=1, max_length=2000)
    seed: int | None = _SEED


class SceneReorder(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scene_ids: list[str] = Field(min_length=1, max_length=60, description="Every scene of the film, in the new order")


class SceneSplit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sentence: int = Field(ge=1, description="The new scene starts at this sentence (0-based) of the scene's text")


class SceneRegenerate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int | None = Field(default=None, ge=0, le=2**32 - 1, description="null: a new random seed")
    prompt: str | None = Field(default=None, min_length=1, max_length=2000)


class FilmError(BaseModel):
    code: str
    message: str


class StageView(BaseModel):
    state: str
    done: int = 0
    total: int = 0
    seconds: float | None = None


class RenderView(BaseModel):
    job_id: str
    stage: str | None
    stages: dict[str, StageView]


class OutputsView(BaseModel):
    video_url: str | None
    srt_url: str | None
    vtt_url: str | None
    thumbnail_url: str | None
    duration: float | None
    width: int | None
    height: int | None
    bytes: int | None


class SceneView(BaseModel):
    id: str
    position: int
    text: str
    prompt: str
    seed: int
    planned_seconds: float
    narration_seconds: float | None
    image_id: str | None
    image_url: str | None
    image_job_id: str | None
    image_state: ImageState


class CharacterView(BaseModel):
    id: str
    name: str
    image_url: str


class FilmView(BaseModel):
    id: str
    title: str
    script: str
    style: str | None
    model: str | None
    aspect: str
    resolution: str
    width: int
    height: int
    target_seconds: int
    voice: str
    speed: float
    music: str
    podcast: bool
    speaker_voices: dict[str, str]
    burn_subtitles: bool
    motion: str
    seed: int
    public: bool
    share_url: str | None
    collection_id: str | None
    status: FilmStatus
    error: FilmError | None
    render: RenderView | None
    outputs: OutputsView | None
    scenes: list[SceneView]
    characters: list[CharacterView]
    words: int
    max_words: int
    planned_seconds: float
    created_at: datetime
    updated_at: datetime
    rendered_at: datetime | None
    deleted_at: datetime | None


class FilmSummary(BaseModel):
    id: str
    title: str
    status: FilmStatus
    aspect: str
    resolution: str
    scene_count: int
    planned_seconds: float
    duration: float | None
    thumbnail_url: str | None
    public: bool
    created_at: datetime
    updated_at: datetime
    rendered_at: datetime | None
    deleted_at: datetime | None


class FilmPage(BaseModel):
    items: list[FilmSummary]
    next_cursor: str | None


class QuoteImages(BaseModel):
    count: int = Field(description="Scene images to make: missing, or stale after an edit")
    credits: int


class QuoteVideo(BaseModel):
    seconds: float = Field(description="Planned seconds of the clips to (re)render")
    credits: int


class FilmQuote(BaseModel):
    credits: int = Field(description="images.credits + video.credits")
    images: QuoteImages
    video: QuoteVideo


class FilmRenderAccepted(BaseModel):
    film_id: str
    job_id: str
    quote: FilmQuote
    events_url: str


class VoiceView(BaseModel):
    id: str
    name: str
    language: str
    gender: str | None
    age: str | None
    engine: str
    quality: str


class VoiceList(BaseModel):
    voices: list[VoiceView]
    default: str | None = Field(description="The voice a film gets when it names none; null: no voice installed")


class TargetRange(BaseModel):
    min: int
    max: int


class FilmOptions(BaseModel):
    moods: list[str] = Field(description='Music moods; "none" (no music) is always accepted too')
    motions: list[str] = Field(description='"kenburns", then the installed image-to-video (SVD) model ids')
    aspects: list[str]
    resolutions: list[str]
    styles: list[str]
    max_words: int
    target_seconds: TargetRange


class SharedFilmView(BaseModel):
    """What anyone with the share link sees of a public film."""

    title: str
    status: FilmStatus
    aspect: str
    outputs: OutputsView | None
    rendered_at: datetime | None
