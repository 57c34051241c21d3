"""The output check every generated image passes in the worker before it is stored (issue 17).

In order: the NSFW classifier scores it and the owner's policy decides (allow: kept, score stored; blur: kept with
blurred thumbnails and a private original until an administrator approves it; block: not stored at all); the
visible watermark (when the owner's plan or the install says so) and the invisible one are drawn into the pixels;
after the PNG is encoded, ``seal`` signs it with C2PA Content Credentials. Each step is off when its setting or
adapter is, so an install chooses what it pays for (bench/safety.py measures each).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image as PILImage
from PIL import ImageFilter

from studiolo.domain.safety import invisible, visible
from studiolo.domain.safety.ports import Claim, ContentCredentials, NsfwClassifier, NsfwPolicy

log = logging.getLogger(__name__)

REVIEW_PENDING = "pending"
REVIEW_APPROVED = "approved"
REVIEW_REJECTED = "rejected"


@dataclass(frozen=True)
class OwnerTerms:
    """What the owner's plan (or the install, billing off) says of their outputs."""

    watermark: bool
    nsfw_policy: NsfwPolicy


@dataclass
class GuardedImage:
    """An image that passed the check: what to store, what to make thumbnails from, and what to record."""

    image: PILImage.Image  # the stored original (watermarked where the terms say)
    thumbnail_source: PILImage.Image  # blurred while the image waits for review
    nsfw_score: float | None
    review_state: str | None
    safety: dict[str, Any] = field(default_factory=dict)  # kept in the image's metadata as "safety"


def blurred(image: PILImage.Image) -> PILImage.Image:
    """Past recognition: reduced to 12 pixels on its longer side, scaled back and softened, so only the broad colours
    remain (a Gaussian blur of InvokeAI's 32 px at 512 still shows a figure's outline)."""
    scale = 12 / max(image.size)
    small = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), _BOX)
    return small.resize(image.size, _BICUBIC).filter(ImageFilter.GaussianBlur(radius=max(2, max(image.size) // 32)))


_BOX, _BICUBIC = PILImage.Resampling.BOX, PILImage.Resampling.BICUBIC


class OutputGuard:
    def __init__(
        self,
        *,
        classifier: NsfwClassifier | None,
        threshold: float,
        credentials: ContentCredentials | None,
        mark: visible.VisibleMark | None,
        payload: bytes | None,
        terms: Callable[[str], OwnerTerms],
    ) -> None:
        self.classifier = classifier
        self.threshold = threshold
        self.credentials = credentials
        self.mark = mark  # None: the visible watermark is never drawn (STUDIOLO_WATERMARK_VISIBLE=never)
        self.payload = payload  # None: no invisible watermark
        self.terms = terms

    def inspect(self, owner_id: str, image: PILImage.Image) -> GuardedImage | None:
        """Check and mark one output; None when the owner's policy blocks it (it must not be stored)."""
        terms = self.terms(owner_id)
        score = round(self.classifier.score(image), 4) if self.classifier is not None else None
        flagged = score is not None and score >= self.threshold
        if flagged and terms.nsfw_policy == "block":
            return None
        review = REVIEW_PENDING if flagged and terms.nsfw_policy == "blur" else None
        safety: dict[str, Any] = {"nsfw_score": score, "nsfw_classifier": getattr(self.classifier, "name", None)}
        marked = image
        if self.mark is not None and terms.watermark:
            marked = visible.apply_visible(marked, self.mark)
            safety["visible_watermark"] = True
        if self.payload is not None and invisible.fits(marked):
            marked = invisible.embed(marked, self.payload)
            safety["invisible_watermark"] = True
        return GuardedImage(
            image=marked,
            thumbnail_source=blurred(marked) if review else marked,
            nsfw_score=score,
            review_state=review,
            safety=safety,
        )

    def seal(self, png: bytes, claim: Claim) -> tuple[bytes, bool]:
        """``png`` signed with Content Credentials, and whether it was. A signing failure (a broken certificate
        file, a c2pa-rs error) stores the image unsigned and logs why: losing a user's finished image to a
        provenance fault would be worse than an image without credentials, which the lightbox then shows."""
        if self.credentials is None:
            return png, False
        try:
            return self.credentials.sign(png, "image/png", claim), True
        except Exception:
            log.exception("signing an output with C2PA Content Credentials failed; storing it unsigned")
            return png, False
