"""The safety ports: what the output check, the watermarks and provenance need from their adapters.

Adapters: nsfw.py (open_nsfw on onnxruntime), provenance.py (C2PA with c2pa-python). The watermarks are plain
functions (visible.py, invisible.py): nothing about them varies by install but their settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from PIL import Image as PILImage

NsfwPolicy = Literal["allow", "blur", "block"]
NSFW_POLICIES: tuple[NsfwPolicy, ...] = ("allow", "blur", "block")


class NsfwClassifier(Protocol):
    """Scores an image: the probability (0..1) that it is not safe for work. Loads its model on first use."""

    name: str

    def score(self, image: PILImage.Image) -> float: ...


@dataclass(frozen=True)
class Claim:
    """What a C2PA manifest says of one generated image."""

    title: str  # the file's name, e.g. "<image id>.png"
    model: str  # the model id that made it
    kind: str  # txt2img | img2img | inpaint | upscale
    # A user's upload (a photo) was an input: img2img and inpaint; the manifest says so (seed 003's photo to character).
    photo_input: bool = False
    # The stored image this one was made from (an upscale's source): its bytes become the parent ingredient.
    parent: bytes | None = None
    parent_mime: str = "image/png"
    # The org.studiolo.generation assertion: prompt, seed, steps, guidance, sampler, size.
    generation: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProvenanceReport:
    """What a file's Content Credentials say, for POST /provenance/check and the lightbox.

    state: "valid" (signed by a certificate this install trusts), "untrusted" (signature intact, signer not trusted:
    another install or a self-signed certificate), "invalid" (the manifest does not match the pixels or is broken),
    "none" (no manifest)."""

    state: Literal["valid", "untrusted", "invalid", "none"]
    issuer: str | None = None  # the signing certificate's subject (common name / organisation)
    signed_at: str | None = None  # ISO time when the manifest carries a time stamp
    software: str | None = None  # the claim generator / software agent
    actions: list[str] = field(default_factory=list)  # e.g. ["c2pa.created"]
    digital_source_type: str | None = None
    generation: dict[str, Any] = field(default_factory=dict)  # our org.studiolo.generation assertion, when present
    failures: list[str] = field(default_factory=list)  # validation failure codes (c2pa-rs's), for "invalid"


class ContentCredentials(Protocol):
    """Signs generated images with a C2PA manifest and verifies a file's."""

    def sign(self, data: bytes, mime: str, claim: Claim) -> bytes: ...

    def verify(self, data: bytes, mime: str | None = None) -> ProvenanceReport: ...
