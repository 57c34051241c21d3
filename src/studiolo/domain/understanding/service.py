"""DescribeService: a user's photo -> a stored description with a ready prompt (docs/describe.md).

Order of a describe: the upload is checked and re-encoded (the gallery's rules), the describer answers, the answer
is validated, then the photo goes to the store and the row to the database; a failed insert deletes the photo."""

from __future__ import annotations

import logging
import time
from typing import Any

from PIL import Image as PILImage
from sqlalchemy import delete, select, update

from studiolo.db.session import Database
from studiolo.domain.billing.service import BillingService
from studiolo.domain.gallery import imaging
from studiolo.domain.gallery.models import Image as GalleryImage
from studiolo.domain.ownership import get_owned
from studiolo.domain.understanding.charge import DescribeCharge
from studiolo.domain.understanding.gemini import GeminiDescriber
from studiolo.domain.understanding.models import Description
from studiolo.domain.understanding.offline import VISION_ONLY, OfflineDescriber
from studiolo.domain.understanding.openai_vision import OpenAIVisionDescriber
from studiolo.domain.understanding.ports import MAX_INSTRUCTION_CHARS, TEMPLATES, Describer, DescriberReply, Photo
from studiolo.domain.understanding.prompts import NEGATIVE, build_prompt, pick_style
from studiolo.domain.understanding.schemas import (
    DescriptionPage,
    DescriptionUrls,
    DescriptionUsage,
    DescriptionView,
    PhotoDescription,
)
from studiolo.domain.understanding.validate import normalize, suggested
from studiolo.errors import InvalidInput, NotFound
from studiolo.settings import Settings
from studiolo.storage.base import ObjectNotFound, ObjectStore

log = logging.getLogger(__name__)
PROVIDER_SIDE = 1024


def build_describer(settings: Settings) -> Describer:
    """The configured describer (STUDIOLO_DESCRIBER): offline (default), openai or gemini."""
    common: dict[str, Any] = {
        "timeout": settings.describe_timeout_seconds,
        "retries": settings.describe_retries,
    }
    if settings.describer == "openai":
        base = settings.describe_api_base.strip() or "https://api.openai.com/v1"
        return OpenAIVisionDescriber(base, settings.describe_api_key, settings.describe_model, **common)
    if settings.describer == "gemini":
        base = settings.describe_api_base.strip() or settings.gemini_api_base
        return GeminiDescriber(base, settings.describe_api_key, settings.describe_model, **common)
    return OfflineDescriber()


def check_request(template: str, instruction: str) -> str:
    """The instruction, trimmed; 422 invalid_template / invalid_instruction otherwise."""
    if template not in TEMPLATES:
        raise InvalidInput(
            f"Unknown template '{template[:40]}'.",
            code="invalid_template",
            details={"field": "template", "allowed": list(TEMPLATES)},
        )
    instruction = instruction.strip()
    if len(instruction) > MAX_INSTRUCTION_CHARS:
        raise InvalidInput(
            f"The instruction is longer than {MAX_INSTRUCTION_CHARS} characters.",
            code="invalid_instruction",
            details={"field": "instruction", "limit": MAX_INSTRUCTION_CHARS, "actual": len(instruction)},
        )
    if template == "custom" and not instruction:
        raise InvalidInput(
            "The custom template needs an instruction.", code="invalid_instruction", details={"field": "instruction"}
        )
    return instruction


class DescribeService:
    def __init__(
        self,
        db: Database,
        store: ObjectStore,
        settings: Settings,
        describer: Describer,
        billing: BillingService | None = None,
    ) -> None:
        self.db = db
        self.store = store
        self.settings = settings
        self.describer = describer
        self.charge = DescribeCharge(billing, settings.describe_credits)

    def describe(self, owner_id: str, data: bytes, template: str, instruction: str = "") -> DescriptionView:
        """Describe an uploaded photo and keep it (the photo, the description, the prompt)."""
        instruction = check_request(template, instruction)
        upright = imaging.load_upload(
            data,
            max_bytes=self.settings.max_upload_bytes,
            max_pixels=self.settings.max_upload_pixels,
            field="photo",
        )
        png = imaging.encode_png(upright, parameters="", metadata={})
        if self.charge.active:
            with self.db.session() as session:
                self.charge.check(session, owner_id)
        started = time.perf_counter()
        reply = self.describer.describe(Photo(upright, self._for_provider(upright, png)), template, instruction)
        duration_ms = round((time.perf_counter() - started) * 1000)
        result = self._result(reply, template, instruction)
        key = imaging.content_key(png, "png", prefix="descriptions")
        self.store.put(key, png, "image/png")
        try:
            with self.db.session() as session:
                row = Description(
                    owner_id=owner_id,
                    photo_key=key,
                    template=template,
                    instruction=instruction,
                    describer=self.describer.name,
                    model=reply.model,
                    result=result["stored"],
                    prompt=result["prompt"],
                    style=result["style"],
                    cost=result["cost"],
                    duration_ms=duration_ms,
                )
                session.add(row)
                session.flush()
                self.charge.take(session, owner_id, row.id)
                return self._view(row)
        except Exception:
            self._drop_photo_if_unused(key)
            raise

    def _for_provider(self, image: PILImage.Image, png: bytes) -> bytes:
        """What a vision provider is sent: at most PROVIDER_SIDE px on the long side. Providers scale larger photos
        down themselves (OpenAI's high detail to 2048 then 768 on the short side), so more is upload time and, with
        tile-priced models, tokens for nothing. The offline describer reads the decoded image and is sent nothing."""
        if self.describer.name == "offline" or max(image.size) <= PROVIDER_SIDE:
            return b"" if self.describer.name == "offline" else png
        copy = image.copy()
        copy.thumbnail((PROVIDER_SIDE, PROVIDER_SIDE), PILImage.Resampling.LANCZOS)
        return imaging.encode_png(copy, parameters="", metadata={})

    def _result(self, reply: DescriberReply, template: str, instruction: str) -> dict[str, Any]:
        offline = self.describer.name == "offline"
        # The offline describer's facts are already in the schema's shape; a model's answer is repaired first.
        description = PhotoDescription.model_validate(reply.data) if offline else normalize(reply.data)
        vision_only = [f for f in VISION_ONLY if not getattr(description, f)] if offline else []
        if offline and not description.subject:
            vision_only.insert(0, "subject")
        max_chars = self.settings.max_prompt_chars
        own_prompt = "" if offline else suggested(reply.data, "prompt")
        prompt = own_prompt[:max_chars] or build_prompt(description, template, instruction, max_chars)
        style = pick_style(suggested(reply.data, "style"), template)
        usage = DescriptionUsage(
            prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens, attempts=reply.attempts
        )
        cost = reply.extra.get("cost")
        stored = {
            "description": description.model_dump(mode="json"),
            "known_by_vision_only": vision_only,
            "negative_prompt": NEGATIVE,
            "usage": usage.model_dump(),
        }
        return {"stored": stored, "prompt": prompt, "style": style, "cost": float(cost or 0.0)}

    def list(self, owner_id: str, *, limit: int = 50, cursor: str | None = None) -> DescriptionPage:
        with self.db.session() as session:
            stmt = select(Description).where(Description.owner_id == owner_id)
            if cursor:
                stmt = stmt.where(Description.id < cursor)
            rows = list(session.scalars(stmt.order_by(Description.id.desc()).limit(limit + 1)))
            items = [self._view(r) for r in rows[:limit]]
        return DescriptionPage(items=items, next_cursor=items[-1].id if len(rows) > limit else None)

    def get(self, owner_id: str, description_id: str) -> DescriptionView:
        with self.db.session() as session:
            return self._view(get_owned(session, Description, description_id, owner_id, what="description"))

    def photo(self, owner_id: str, description_id: str) -> bytes:
        """The photo as kept (PNG, upright, no metadata)."""
        with self.db.session() as session:
            key = get_owned(session, Description, description_id, owner_id, what="description").photo_key
        try:
            return self.store.get(key)
        except ObjectNotFound:
            raise NotFound("The photo of this description is gone from storage.", code="file_missing") from None

    def delete(self, owner_id: str, description_id: str) -> None:
        """Delete the description and its photo; images rendered from it stay (their description_id becomes null)."""
        with self.db.session() as session:
            row = get_owned(session, Description, description_id, owner_id, what="description", for_update=True)
            key = row.photo_key
            # SQLite does not enforce the foreign key's ON DELETE SET NULL unless asked: say it for both databases.
            session.execute(
                update(GalleryImage).where(GalleryImage.description_id == description_id).values(description_id=None)
            )
            session.execute(delete(Description).where(Description.id == description_id))
        self._drop_photo_if_unused(key)

    def _drop_photo_if_unused(self, key: str) -> None:
        # The same photo described twice (by anyone) shares one content-addressed object: only the last row drops it.
        with self.db.session() as session:
            if session.scalar(select(Description.id).where(Description.photo_key == key).limit(1)) is not None:
                return
        try:
            self.store.delete(key)
        except OSError:
            log.warning("Could not delete the photo %s from storage.", key, exc_info=True)

    @staticmethod
    def _view(row: Description) -> DescriptionView:
        result = row.result or {}
        base = f"/api/v1/describe/{row.id}"
        return DescriptionView(
            id=row.id,
            template=row.template,
            instruction=row.instruction,
            describer=row.describer,
            model=row.model,
            description=PhotoDescription.model_validate(result.get("description") or {}),
            known_by_vision_only=list(result.get("known_by_vision_only") or []),
            prompt=row.prompt,
            negative_prompt=str(result.get("negative_prompt") or ""),
            style=row.style,
            cost=row.cost,
            usage=DescriptionUsage.model_validate(result.get("usage") or {}),
            duration_ms=row.duration_ms,
            created_at=row.created_at,
            urls=DescriptionUrls(self=base, photo=f"{base}/photo"),
        )
