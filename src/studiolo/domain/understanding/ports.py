"""The Describer port: what any describer (offline attribute extractor, a vision model behind a provider) is given and
what it answers, plus the errors a provider's describer raises (docs/describe.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

from PIL import Image

from studiolo.errors import InvalidInput, ServiceUnavailable, StudioloError

Template = Literal["character", "fursona", "portrait", "scene", "custom"]
TEMPLATES: Final[tuple[str, ...]] = ("character", "fursona", "portrait", "scene", "custom")
MAX_INSTRUCTION_CHARS: Final = 1000


@dataclass(frozen=True)
class Photo:
    """The user's photo, decoded upright (RGB, no metadata) and as the PNG the store keeps (what providers are sent)."""

    image: Image.Image
    png: bytes


@dataclass
class DescriberReply:
    """A describer's raw structured answer (validate.py checks it) and what it cost."""

    data: dict[str, Any]
    model: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    attempts: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


class Describer(Protocol):
    """Describe a photo as a character, fursona, portrait or scene."""

    name: str  # "offline" | "openai" | "gemini": stored with the description and shown by the UI
    model: str  # "" for the offline describer

    def describe(self, photo: Photo, template: str, instruction: str) -> DescriberReply:
        """The structured description of ``photo`` (fields of schemas.PhotoDescription); raises the errors below."""
        ...


class DescriberInvalidReply(StudioloError):
    """The provider answered, but not with a description that can be repaired into the schema (502)."""

    status_code = 502
    code = "describer_invalid_reply"


def refused(reason: str) -> InvalidInput:
    """The model declined to describe the photo (422 describe_refused); its own words are kept, short."""
    return InvalidInput(
        "The vision model declined to describe this photo.",
        code="describe_refused",
        details={"reason": reason[:300]},
    )


def unavailable(what: str, attempts: int) -> ServiceUnavailable:
    """The provider could not be reached or kept failing after every retry (503 describer_unavailable)."""
    return ServiceUnavailable(
        f"The describer is unavailable ({what}); try again later.",
        code="describer_unavailable",
        details={"reason": what[:300], "attempts": attempts},
    )
