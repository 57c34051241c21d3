"""The API's view of installed adapters (GET /api/v1/adapters, issue 19)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from studiolo.domain.adapters.catalog import AdapterInfo, family_label

AdapterKindName = Literal["lora", "embedding", "controlnet", "ip_adapter", "preprocessor"]


class AdapterView(BaseModel):
    id: str = Field(description="The name requests use: loras[].name, <lora:NAME:w>, an embedding's prompt word")
    kind: AdapterKindName
    family: str | None = Field(description="sd15, sd21 or sdxl; null when its tensors did not say (a custom base)")
    family_label: str = Field(description="The family in words, e.g. 'SD 1.x'")
    format: str | None = Field(description="How its tensors are laid out: kohya, peft, a1111, diffusers, ldm...")
    size_bytes: int
    control_type: str | None = Field(default=None, description="A ControlNet's control type (canny, depth, pose...)")
    preprocessor: str | None = Field(default=None, description="A preprocessor's map (depth)")
    created_at: datetime | None = None


class AdapterList(BaseModel):
    items: list[AdapterView]


def adapter_view(info: AdapterInfo) -> AdapterView:
    control_type = info.meta.get("control_type") if info.kind == "controlnet" else None
    preprocessor = info.meta.get("preprocessor") if info.kind == "preprocessor" else None
    return AdapterView(
        id=info.id,
        kind=info.kind,
        family=info.family,
        family_label=family_label(info.family),
        format=info.format,
        size_bytes=info.size_bytes,
        control_type=str(control_type) if control_type else None,
        preprocessor=str(preprocessor) if preprocessor else None,
        created_at=info.created_at,
    )
