"""The plan catalogue file (STUDIOLO_BILLING_PLANS_FILE, TOML or JSON) and the one credit formula (cost.py,
docs/billing.md): the figures the docs promise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from studiolo.domain.billing import cost
from studiolo.domain.billing.plans import DEFAULT_PLANS, MAX_COUNT, PlanPatch, PlanSpec, load_catalogue_file
from studiolo.errors import InvalidInput

TOML = """
[[plans]]
slug = "team"
name = "Team"
price_cents = 4900
monthly_images = 500
daily_images = 100
monthly_credits = 5000
max_pixels = 2097152
features = ["txt2img", "img2img"]
models = ["echo"]

[[credit_packs]]
slug = "credits-100"
credits = 100
price_cents = 100

[model_credits]
"sdxl-base-1.0" = 2.0
"""


def test_a_toml_catalogue_is_read(tmp_path: Path) -> None:
    path = tmp_path / "plans.toml"
    path.write_text(TOML)
    catalogue = load_catalogue_file(path)
    [team] = catalogue.plans
    assert (team.slug, team.price_cents, team.monthly_images, team.daily_images) == ("team", 4900, 500, 100)
    assert team.features == ["txt2img", "img2img"] and team.models == ["echo"]
    assert team.max_steps is None and team.currency == "usd"  # unset: unlimited, dollars
    assert catalogue.credit_packs is not None and catalogue.credit_packs[0].credits == 100
    assert catalogue.model_credits == {"sdxl-base-1.0": 2.0}


def test_a_json_catalogue_is_read_and_packs_are_optional(tmp_path: Path) -> None:
    path = tmp_path / "plans.json"
    path.write_text(json.dumps({"plans": [{"slug": "solo", "name": "Solo", "monthly_credits": 10}]}))
    catalogue = load_catalogue_file(path)
    assert [p.slug for p in catalogue.plans] == ["solo"]
    assert catalogue.credit_packs is None and catalogue.model_credits == {}  # the defaults stay


@pytest.mark.parametrize(
    ("name", "text", "words"),
    [
        ("plans.toml", "[[plans]\nslug = ", "plans.toml cannot be used"),
        ("plans.json", '{"plans": [', "plans.json cannot be used"),
        ("plans.toml", '[[plans]]\nslug = "Bad Slug"\nname = "x"', "slug"),
        ("plans.toml", '[[plans]]\nslug = "x"\nname = "x"\nfeatures = ["teleport"]', "teleport"),
        ("plans.toml", '[[plans]]\nslug = "x"\nname = "x"\nmonthly_images = -1', "monthly_images"),
        ("plans.toml", '[[plans]]\nslug = "x"\nname = "x"\nquota = 5', "quota"),
        ("plans.json", '{"plans": [], "currency": "usd"}', "currency"),
        ("plans.toml", '[[credit_packs]]\nslug = "c"\ncredits = 10\nprice_cents = 10', "price_cents"),
    ],
)
def test_a_broken_catalogue_stops_the_start_saying_what_is_wrong(
    tmp_path: Path, name: str, text: str, words: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InvalidInput) as caught:
        load_catalogue_file(path)
    assert caught.value.code == "invalid_plans_file" and words in caught.value.message


def test_a_missing_file_and_an_absurd_model_factor_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as missing:
        load_catalogue_file(tmp_path / "nowhere.toml")
    assert missing.value.code == "invalid_plans_file"
    path = tmp_path / "plans.toml"
    for factor in ("0", "-1", "1001"):
        path.write_text(f'[model_credits]\n"m" = {factor}\n')
        with pytest.raises(InvalidInput, match="model_credits"):
            load_catalogue_file(path)


def test_the_default_plans_are_seed_003s() -> None:
    free, basic, pro = DEFAULT_PLANS
    assert (free.monthly_images, free.daily_images, free.monthly_credits, free.price_cents) == (5, 5, 50, 0)
    assert (free.max_pixels, free.max_images_per_job, free.max_steps, free.max_running_jobs) == (1024 * 1024, 4, 50, 1)
    assert free.watermark and "film" not in free.features
    assert (basic.price_cents, basic.monthly_images, basic.monthly_credits, basic.queue_priority) == (999, 50, 1000, 1)
    assert (pro.price_cents, pro.monthly_images, pro.monthly_credits, pro.queue_priority) == (1999, None, 10000, 2)


def test_limits_fit_the_columns() -> None:
    """A count past a 32-bit integer column is a 422 at the door, not a database error."""
    with pytest.raises(ValidationError):
        PlanSpec(slug="x", name="x", max_pixels=MAX_COUNT + 1)
    with pytest.raises(ValidationError):
        PlanPatch(monthly_images=2**40)
    assert PlanPatch(monthly_images=None).model_dump(exclude_unset=True) == {"monthly_images": None}  # unlimited


@pytest.mark.parametrize(
    ("width", "height", "steps", "factor", "credits"),
    [
        (512, 512, 25, 1.0, 1),  # the reference image
        (1024, 1024, 25, 1.0, 4),
        (512, 512, 1, 1.0, 1),  # a 1-step turbo image: the minimum
        (64, 64, 2, 1.0, 1),
        (512, 512, 50, 1.0, 2),
        (768, 768, 25, 1.0, 3),  # 2.25, rounded up
        (512, 512, 26, 1.0, 2),  # 1.04, rounded up
        (1024, 1024, 25, 2.0, 8),  # a model the catalogue makes twice as dear
        (512, 512, 25, 0.5, 1),  # cheaper, never below 1
        (2048, 1024, 150, 1.0, 48),
    ],
)
def test_image_credits(width: int, height: int, steps: int, factor: float, credits: int) -> None:
    assert cost.image_credits(width, height, steps, factor) == credits


def test_job_credits_multiply_by_n_and_use_the_models_factor() -> None:
    params = {"width": 1024, "height": 1024, "steps": 25, "n": 3}
    assert cost.job_images("txt2img", params) == 3
    assert cost.job_credits("txt2img", params, "echo", {}) == 12
    assert cost.job_credits("txt2img", params, "sdxl", {"sdxl": 2.0}) == 24
    assert cost.job_credits("txt2img", params, "echo", {"sdxl": 2.0}) == 12  # another model's factor
    # An upscale is one image of its output size, whatever n its source had.
    upscale = {"width": 2048, "height": 2048, "steps": 1, "n": 4}
    assert cost.job_images("upscale", upscale) == 1 and cost.job_credits("upscale", upscale, "lanczos", {}) == 1
