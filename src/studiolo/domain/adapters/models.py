"""Adapters ORM (issue 19): LoRA, embeddings, ControlNets, IP-Adapters and ControlNet preprocessors installed
beside the models. Their files live under ``<models_dir>/adapters/``; the row says what they are and which base
family they fit."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from studiolo.db.base import Base, UTCDateTime, utcnow


class InstalledAdapter(Base):
    __tablename__ = "adapters"

    # Unique among adapters and models alike: a name in `<lora:NAME:0.8>`, a prompt's embedding word, a ControlNet
    # a request names, and what `studiolo models remove NAME` removes.
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)  # engines.base.ADAPTER_KINDS
    # "sd15", "sd21", "sdxl" (the models' arch labels); NULL: the tensors did not say (a custom base).
    family: Mapped[str | None] = mapped_column(String(16), nullable=True)
    source: Mapped[str] = mapped_column(String(16))  # "single_file", "folder", "hub"
    path: Mapped[str] = mapped_column(Text)
    # How the tensors are laid out ("kohya", "peft", "diffusers", "a1111", "ldm").
    format: Mapped[str | None] = mapped_column(String(32), nullable=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # What the importer learned: control_type, context_dim, vectors, rank, image_encoder, trigger words...
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
