"""What a file says of where it came from (issue 17): its C2PA Content Credentials, Studiolo's invisible watermark
and the generation settings in its PNG text chunks. For POST /provenance/check (any file a user holds) and
GET /images/{id}/provenance (the lightbox's "Content Credentials" line).
"""

from __future__ import annotations

import io
from typing import Any, Final

from PIL import Image as PILImage
from pydantic import BaseModel, Field

from studiolo.db.session import Database
from studiolo.domain.gallery import imaging
from studiolo.domain.gallery.models import Image
from studiolo.domain.gallery.service import GalleryService
from studiolo.domain.ownership import get_owned
from studiolo.domain.safety import invisible
from studiolo.domain.safety.ports import ContentCredentials, ProvenanceReport
from studiolo.errors import InvalidInput, UnsupportedMediaType
from studiolo.settings import Settings

# The formats a C2PA manifest and the watermark are read from (GIF carries neither).
CHECKED_FORMATS: Final = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


class WatermarkReport(BaseModel):
    """The invisible watermark read from the pixels."""

    found: bool = Field(description="a payload was read with confidence (always true when it is this install's)")
    payload_hex: str | None = Field(description="the 8 bytes read, hex; null when the image is too small to carry any")
    this_install: bool = Field(description="the payload is this install's (STUDIOLO_WATERMARK_PAYLOAD or derived)")
    confidence: float | None = Field(description="the share of agreeing votes: 0.5 is noise, 1.0 every block agreed")


class PngMetadata(BaseModel):
    """The generation settings in a PNG's text chunks (null for JPEG and WebP, or when absent)."""

    parameters: str | None = Field(description='the AUTOMATIC1111 "parameters" text')
    studiolo: dict[str, Any] | None = Field(description='Studiolo\'s "studiolo" JSON chunk')


class ProvenanceCheck(BaseModel):
    """Everything a file says of its origin."""

    c2pa: ProvenanceReport
    watermark: WatermarkReport
    metadata: PngMetadata


class ProvenanceService:
    """Reads a file's provenance; the credentials verify C2PA, the install key names this install's watermark."""

    def __init__(
        self,
        *,
        db: Database,
        gallery: GalleryService,
        settings: Settings,
        credentials: ContentCredentials,
        install_key: bytes,
    ) -> None:
        self.db = db
        self.gallery = gallery
        self.settings = settings
        self.credentials = credentials
        self.payload = invisible.payload_for(settings.watermark_payload, install_key)

    def check(self, data: bytes) -> ProvenanceCheck:
        """The provenance of an uploaded file: PNG, JPEG or WebP, within the upload limits."""
        image_format = imaging.sniff_image_format(data) if data else None
        if data and len(data) <= self.settings.max_upload_bytes and image_format not in CHECKED_FORMATS:
            raise UnsupportedMediaType(
                "Check a PNG, JPEG or WebP image.",
                code="unsupported_media_type",
                details={"field": "file", "allowed": sorted(CHECKED_FORMATS.values())},
            )
        # The gallery's upload checks: empty, too many bytes or pixels (from the header), truncated or corrupt.
        image = imaging.load_upload(
            data, max_bytes=self.settings.max_upload_bytes, max_pixels=self.settings.max_upload_pixels, field="file"
        )
        return self._report(data, CHECKED_FORMATS[image_format or "PNG"], image)

    def for_image(self, owner_id: str, image_id: str) -> ProvenanceCheck:
        """The provenance of one of the owner's stored originals (in the gallery or the Trash).

        An original held for review is read too: the report shows no pixels, only what the owner's file says."""
        with self.db.session() as session:
            key = get_owned(session, Image, image_id, owner_id, what="image").original_key
        data = self.gallery.read(key)
        try:
            with PILImage.open(io.BytesIO(data), formats=["PNG"]) as opened:
                image = opened.convert("RGB")
        except (OSError, SyntaxError, ValueError) as exc:
            raise InvalidInput(
                "The stored file of this image cannot be decoded.", code="image_corrupt", details={"image_id": image_id}
            ) from exc
        return self._report(data, "image/png", image)

    def _report(self, data: bytes, mime: str, image: PILImage.Image) -> ProvenanceCheck:
        return ProvenanceCheck(
            c2pa=self.credentials.verify(data, mime),
            watermark=self._watermark(image),
            metadata=self._metadata(data, mime),
        )

    def _watermark(self, image: PILImage.Image) -> WatermarkReport:
        if not invisible.fits(image):  # embed() skips such images, so nothing can be read from them
            return WatermarkReport(found=False, payload_hex=None, this_install=False, confidence=None)
        # Another install's payload is not known here, so "found" for it rests on the vote (invisible.FOUND_AT:
        # unmarked images vote as noise); all 64 bits of this install's own payload cannot match by chance.
        reading = invisible.read(image, nbytes=len(self.payload))
        ours = reading.payload == self.payload
        found = ours or reading.found
        return WatermarkReport(
            found=found,
            payload_hex=reading.payload.hex() if found else None,
            this_install=ours,
            confidence=round(reading.confidence, 4),
        )

    @staticmethod
    def _metadata(data: bytes, mime: str) -> PngMetadata:
        if mime != "image/png":
            return PngMetadata(parameters=None, studiolo=None)
        try:
            parameters, studiolo = imaging.read_png_metadata(data)
        except (OSError, SyntaxError, ValueError):  # text chunks Pillow cannot read: the pixels decoded fine
            return PngMetadata(parameters=None, studiolo=None)
        return PngMetadata(parameters=parameters, studiolo=studiolo)
