"""The plan catalogue: what each plan allows and costs, the credit packs on sale, and the per-model credit factors.

Defaults are seed 003's three plans; an operator replaces or extends them with ``STUDIOLO_BILLING_PLANS_FILE``
(TOML or JSON, applied at every start: the plans it names are created or updated, others are left alone) or the
admin API. The file's shape (docs/billing.md)::

    [[plans]]
    slug = "basic"
    name = "Basic"
    price_cents = 999
    monthly_images = 50
    monthly_credits = 1000
    features = ["txt2img", "img2img", "inpaint", "upscale"]

    [[credit_packs]]
    slug = "credits-500"
    credits = 500
    price_cents = 500

    [model_credits]
    "sdxl-base-1.0" = 2.0
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from studiolo.domain.safety.ports import NsfwPolicy
from studiolo.errors import InvalidInput

# What a plan can unlock: the job kinds, and the film studio (issue 16).
FEATURES = ("txt2img", "img2img", "inpaint", "upscale", "film")
SLUG_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,39}$"
# The largest count a limit may be: the columns are 32-bit integers on PostgreSQL (a larger one was a 500).
MAX_COUNT = 1_000_000_000


class PlanSpec(BaseModel):
    """A plan as the catalogue file and the admin API give it. ``None`` limits are unlimited."""

    model_config = ConfigDict(extra="forbid")

    slug: str = Field(pattern=SLUG_PATTERN)
    name: str = Field(min_length=1, max_length=80)
    description: str = Field(default="", max_length=2000)
    price_cents: int = Field(default=0, ge=0, le=10_000_000)
    currency: str = Field(default="usd", pattern=r"^[a-z]{3}$")
    stripe_price_id: str | None = Field(default=None, max_length=120)
    monthly_images: int | None = Field(default=None, ge=0, le=MAX_COUNT)
    daily_images: int | None = Field(default=None, ge=0, le=MAX_COUNT)
    monthly_credits: int = Field(default=0, ge=0, le=1_000_000_000)
    max_pixels: int | None = Field(default=None, ge=64 * 64, le=MAX_COUNT)
    max_images_per_job: int | None = Field(default=None, ge=1, le=MAX_COUNT)
    max_steps: int | None = Field(default=None, ge=1, le=MAX_COUNT)
    queue_priority: int = Field(default=0, ge=0, le=100)
    max_running_jobs: int | None = Field(default=None, ge=1, le=1000)
    watermark: bool = False
    # Issue 17: what the output check does with this plan's images above the NSFW threshold (allow: keep; blur: hold
    # for review; block: not stored); None: the install's STUDIOLO_NSFW_POLICY.
    nsfw_policy: NsfwPolicy | None = None
    features: list[str] = Field(default_factory=lambda: list(FEATURES))
    models: list[str] | None = None
    sort_order: int = Field(default=0, ge=-MAX_COUNT, le=MAX_COUNT)

    def model_post_init(self, _context: Any) -> None:
        unknown = sorted(set(self.features) - set(FEATURES))
        if unknown:
            raise ValueError(f"unknown features {unknown}; known: {', '.join(FEATURES)}")


class PlanPatch(BaseModel):
    """A partial update of a plan (admin API): only the fields given change."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=80)
    description: str | None = Field(default=None, max_length=2000)
    price_cents: int | None = Field(default=None, ge=0, le=10_000_000)
    currency: str | None = Field(default=None, pattern=r"^[a-z]{3}$")
    stripe_price_id: str | None = Field(default=None, max_length=120)
    monthly_images: int | None = Field(default=None, ge=0, le=MAX_COUNT)
    daily_images: int | None = Field(default=None, ge=0, le=MAX_COUNT)
    monthly_credits: int | None = Field(default=None, ge=0, le=1_000_000_000)
    max_pixels: int | None = Field(default=None, ge=64 * 64, le=MAX_COUNT)
    max_images_per_job: int | None = Field(default=None, ge=1, le=MAX_COUNT)
    max_steps: int | None = Field(default=None, ge=1, le=MAX_COUNT)
    queue_priority: int | None = Field(default=None, ge=0, le=100)
    max_running_jobs: int | None = Field(default=None, ge=1, le=1000)
    watermark: bool | None = None
    nsfw_policy: NsfwPolicy | None = None  # null: back to the install's policy
    features: list[str] | None = None
    models: list[str] | None = None
    sort_order: int | None = Field(default=None, ge=-MAX_COUNT, le=MAX_COUNT)


class CreditPack(BaseModel):
    """Credits sold once (Stripe Checkout in payment mode); they never expire."""

    model_config = ConfigDict(extra="forbid")

    slug: str = Field(pattern=SLUG_PATTERN)
    name: str = ""
    credits: int = Field(ge=1, le=100_000_000)
    price_cents: int = Field(ge=50, le=10_000_000)  # Stripe's smallest charge is about 50 cents
    currency: str = Field(default="usd", pattern=r"^[a-z]{3}$")
    stripe_price_id: str | None = None


# Seed 003: free 5 generations a month, basic $9.99 for 50, pro $19.99 unlimited. Credits: a standard 512x512
# image at 25 steps costs 1 (cost.py); the grants cover each plan's quota several times over, so the quota is
# what a user meets first, and credits matter for large images, many steps and the film studio.
DEFAULT_PLANS: tuple[PlanSpec, ...] = (
    PlanSpec(
        slug="free",
        name="Free",
        description="Try Studiolo: 5 images a month.",
        monthly_images=5,
        daily_images=5,
        monthly_credits=50,
        max_pixels=1024 * 1024,
        max_images_per_job=4,
        max_steps=50,
        max_running_jobs=1,
        watermark=True,
        features=["txt2img", "img2img", "inpaint", "upscale"],
        sort_order=0,
    ),
    PlanSpec(
        slug="basic",
        name="Basic",
        description="50 images a month, every feature.",
        price_cents=999,
        monthly_images=50,
        monthly_credits=1000,
        max_pixels=2 * 1024 * 1024,
        max_images_per_job=8,
        max_steps=100,
        queue_priority=1,
        max_running_jobs=2,
        sort_order=1,
    ),
    PlanSpec(
        slug="pro",
        name="Pro",
        description="No monthly image limit; first in the queue.",
        price_cents=1999,
        monthly_credits=10000,
        max_images_per_job=8,
        max_steps=150,
        queue_priority=2,
        max_running_jobs=4,
        sort_order=2,
    ),
)

DEFAULT_CREDIT_PACKS: tuple[CreditPack, ...] = (
    CreditPack(slug="credits-500", name="500 credits", credits=500, price_cents=500),
    CreditPack(slug="credits-2500", name="2,500 credits", credits=2500, price_cents=2000),
)


class CatalogueFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    plans: list[PlanSpec] = Field(default_factory=list)
    credit_packs: list[CreditPack] | None = None
    model_credits: dict[str, float] = Field(default_factory=dict)


def load_catalogue_file(path: Path) -> CatalogueFile:
    """Read a TOML (``.toml``) or JSON plan catalogue; a broken file stops the start with what is wrong in it."""
    try:
        raw = path.read_bytes()
        data = tomllib.loads(raw.decode()) if path.suffix.lower() == ".toml" else json.loads(raw)
        catalogue = CatalogueFile.model_validate(data)
    except (OSError, ValueError, ValidationError) as exc:
        raise InvalidInput(f"The plans file {path} cannot be used: {exc}", code="invalid_plans_file") from exc
    for factor in catalogue.model_credits.values():
        if not 0 < factor <= 1000:
            raise InvalidInput(f"The plans file {path}: model_credits factors must be in (0, 1000].")
    return catalogue
