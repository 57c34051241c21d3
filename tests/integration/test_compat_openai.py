"""Studiolo's OpenAI Images API face (compat/openai_images.py) driven by the real ``openai`` SDK (3.60) against one real
server (uvicorn, an inline worker, the echo engine) shared by the module; also Open WebUI's request shapes replayed
with plain HTTP. Runs on SQLite, and on PostgreSQL when STUDIOLO_TEST_DATABASE_URL is set."""

from __future__ import annotations

import base64
import io
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI
from PIL import Image

from studiolo.app import create_app
from studiolo.compat.openai_params import VARIATION_PROMPT
from studiolo.domain.accounts.audit import Origin
from studiolo.domain.billing.plans import PlanPatch
from studiolo.services import Services, build_services
from tests.conftest import PgDatabases, make_settings
from tests.helpers import auth_headers, create_user
from tests.threaded_server import ThreadedServer

# Every image is small (fast): 1024x1024 maps to 128x128 here.
MAX_PIXELS = 128 * 128
FAST = {"steps": 2}


class CountingApp:
    """The app, counting the HTTP requests it is sent per path (to see whether the SDK retried)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests: Counter[str] = Counter()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.requests[scope["path"]] += 1
        await self.app(scope, receive, send)


@dataclass
class Studio:
    base: str
    services: Services
    counter: CountingApp
    key: str
    admin_id: str
    frugal_key: str

    def client(self, key: str | None = None, **kwargs: Any) -> OpenAI:
        return OpenAI(base_url=f"{self.base}/v1", api_key=key or self.key, **kwargs)

    def native(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.key}"}
        return httpx.request(method, f"{self.base}/api/v1{path}", headers=headers, timeout=30, **kwargs)


def _api_key(base: str, services: Services, user_id: str) -> str:
    r = httpx.post(f"{base}/api/v1/api-keys", json={"name": "openai sdk"}, headers=auth_headers(services, user_id))
    assert r.status_code == 201, r.text
    key: str = r.json()["key"]
    return key


@pytest.fixture(scope="module")
def studio(
    tmp_path_factory: pytest.TempPathFactory, migrated_db_template: Path, pg_databases: PgDatabases | None
) -> Iterator[Studio]:
    overrides: dict[str, Any] = {
        "billing": "quotas",
        "max_pixels": MAX_PIXELS,
        "echo_step_delay": 0.01,  # lets the worker publish previews for the streaming tests
    }
    database_url = pg_databases.fresh() if pg_databases is not None else ""
    if database_url:
        overrides["database_url"] = database_url
    settings = make_settings(tmp_path_factory.mktemp("openai") / "data", **overrides)
    settings.data_dir.mkdir(parents=True)
    if not database_url:
        shutil.copy(migrated_db_template, settings.data_dir / "studiolo.db")
    services = build_services(settings, upgrade_db=False)
    counter = CountingApp(create_app(services=services, start_workers=True))
    server = ThreadedServer(counter, "studio")
    base = server.start()
    services.start_workers(1)  # the server runs without its lifespan, which would start them
    try:
        # An administrator: never refused for quota (many images here); the free plan's user meets the quota.
        admin = create_user(services, "owner@example.com", role="admin")
        frugal = create_user(services, "frugal@example.com")
        yield Studio(base, services, counter, _api_key(base, services, admin), admin, _api_key(base, services, frugal))
    finally:
        server.stop()
        services.close(timeout=10)
        if pg_databases is not None:
            pg_databases.drop(database_url)


def decode(b64: str | None) -> Image.Image:
    assert b64
    img = Image.open(io.BytesIO(base64.b64decode(b64)))
    img.load()
    return img


def png(size: tuple[int, int], color: tuple[int, ...], mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


def last_job(studio: Studio) -> dict[str, Any]:
    r = studio.native("GET", "/jobs", params={"limit": 1})
    job: dict[str, Any] = r.json()["items"][0]
    return job


# --- generations ---------------------------------------------------------------------------------------------------


def test_generate_b64_maps_the_size_and_reports_usage(studio: Studio) -> None:
    r = studio.client().images.generate(
        model="gpt-image-1", prompt="a lighthouse at dusk", size="1536x1024", quality="high", extra_body=FAST
    )
    # 1536x1024 at most 128*128 pixels, the aspect ratio kept, multiples of 8.
    assert (r.size, r.output_format, r.quality, r.background) == ("152x104", "png", "high", "opaque")
    [item] = r.data
    image = decode(item.b64_json)
    assert (image.format, image.size) == ("PNG", (152, 104))
    assert item.revised_prompt is None and item.url is None
    assert r.usage is not None
    assert (r.usage.input_tokens, r.usage.output_tokens, r.usage.total_tokens) == (4, 1, 5)
    job = last_job(studio)
    assert job["model"] == "echo" and job["params"]["width"] == 152
    # OpenAI's quality names are Studiolo's presets: low is draft (12 steps on a Stable Diffusion model).
    r = studio.client().images.generate(prompt="x", size="64x64", quality="low")
    assert r.quality == "low" and last_job(studio)["params"]["steps"] == 12

    for asked, made in (("256x256", "128x128"), ("auto", "128x128"), ("1024x1792", "96x168"), ("64x64", "64x64")):
        r = studio.client().images.generate(prompt="x", size=asked, extra_body=FAST)  # type: ignore[arg-type]
        assert r.size == made, asked
        assert decode(r.data[0].b64_json).size == tuple(int(v) for v in made.split("x"))


def test_url_answers_a_signed_link_that_needs_no_credentials(studio: Studio) -> None:
    r = studio.client().images.generate(prompt="a red fox", response_format="url", size="64x64", extra_body=FAST)
    [item] = r.data
    assert item.url and item.b64_json is None and "signature=" in item.url
    linked = httpx.get(item.url)  # no credentials
    assert linked.status_code == 200 and linked.headers["content-type"] == "image/png"
    image_id = item.url.split("?")[0].rsplit("/", 1)[1]
    stored = studio.native("GET", f"/images/{image_id}/file")
    assert stored.status_code == 200 and stored.content == linked.content
    # The job went into the gallery like any other.
    gallery = studio.native("GET", "/images").json()["items"]
    assert image_id in [i["id"] for i in gallery]


def test_extras_travel_in_extra_body_and_a_seed_repeats_the_image(studio: Studio) -> None:
    client = studio.client()
    extras = {"seed": 42, "negative_prompt": "blurry", "steps": 3, "cfg_scale": 5.5, "scheduler": "karras"}
    first = client.images.generate(prompt="a castle", size="64x64", extra_body=extras)
    params = last_job(studio)["params"]
    assert (params["seed"], params["negative_prompt"], params["steps"], params["guidance"]) == (42, "blurry", 3, 5.5)
    again = client.images.generate(prompt="a castle", size="64x64", extra_body=extras)
    other = client.images.generate(prompt="a castle", size="64x64", extra_body={**extras, "seed": 43})
    pixels = [decode(x.data[0].b64_json).tobytes() for x in (first, again, other)]
    assert pixels[0] == pixels[1] != pixels[2]


def test_n_images_have_distinct_seeds_and_a_style_revises_the_prompt(studio: Studio) -> None:
    r = studio.client().images.generate(prompt="a cat", n=2, size="64x64", style="vivid", extra_body=FAST)
    assert len(r.data) == 2
    first, second = (decode(d.b64_json).tobytes() for d in r.data)
    assert first != second
    assert r.data[0].revised_prompt is not None and "cinematic film still of a cat" in r.data[0].revised_prompt
    job = last_job(studio)
    assert job["params"]["style"] == "cinematic" and len(set(job["seeds"])) == 2
    # A Studiolo style slug works too; "natural" adds no template.
    r = studio.client().images.generate(prompt="a cat", size="64x64", extra_body={**FAST, "style": "watercolor"})
    assert (
        r.data[0].revised_prompt == "watercolor painting of a cat, soft washes, paper texture, delicate bleeding edges"
    )
    r = studio.client().images.generate(prompt="a cat", size="64x64", style="natural", extra_body=FAST)
    assert r.data[0].revised_prompt is None


@pytest.mark.parametrize(("fmt", "pil"), [("jpeg", "JPEG"), ("webp", "WEBP")])
def test_output_format_reencodes_the_image(studio: Studio, fmt: str, pil: str) -> None:
    r = studio.client().images.generate(
        prompt="a boat",
        size="64x64",
        output_format=fmt,  # type: ignore[arg-type]
        output_compression=80,
        extra_body=FAST,
    )
    assert r.output_format == fmt
    image = decode(r.data[0].b64_json)
    assert (image.format, image.size) == (pil, (64, 64))


# --- edits and variations ------------------------------------------------------------------------------------------


def test_edit_with_a_mask_repaints_only_its_transparent_part(studio: Studio) -> None:
    red = png((64, 64), (200, 30, 30))
    mask_img = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    mask_img.paste((0, 0, 0, 0), (0, 0, 32, 64))  # the left half is transparent: edit it
    mask = io.BytesIO()
    mask_img.save(mask, format="PNG")
    r = studio.client().images.edit(
        image=("red.png", red, "image/png"),
        mask=("mask.png", mask.getvalue(), "image/png"),
        prompt="a blue sky",
        extra_body=FAST,
    )
    image = decode(r.data[0].b64_json).convert("RGB")
    assert image.size == (64, 64) and r.size == "64x64"
    assert image.getpixel((60, 32)) == (200, 30, 30)  # kept
    assert image.getpixel((4, 32)) != (200, 30, 30)  # repainted
    assert last_job(studio)["kind"] == "inpaint"
    assert r.usage is not None and r.usage.input_tokens == 4  # three words and one image


def test_edit_with_two_images_uses_the_first_as_img2img(studio: Studio) -> None:
    first, second = png((64, 96), (10, 200, 10)), png((96, 96), (10, 10, 200))
    r = studio.client().images.edit(
        image=[("a.png", first, "image/png"), ("b.png", second, "image/png")], prompt="a forest", extra_body=FAST
    )
    assert r.size == "64x96" and decode(r.data[0].b64_json).size == (64, 96)
    assert last_job(studio)["kind"] == "img2img"


def test_a_mask_without_transparency_is_refused(studio: Studio) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        studio.client().images.edit(
            image=("red.png", png((64, 64), (1, 2, 3)), "image/png"),
            mask=("mask.png", png((64, 64), (0, 0, 0)), "image/png"),
            prompt="x",
        )
    assert caught.value.code == "invalid_mask"


def test_variations_are_img2img_with_a_neutral_prompt(studio: Studio) -> None:
    with pytest.warns(DeprecationWarning):  # the SDK marks the endpoint deprecated; DALL·E-2-era clients use it
        r = studio.client().images.create_variation(
            image=("red.png", png((64, 64), (200, 30, 30)), "image/png"), n=1, size="256x256", extra_body=FAST
        )
    assert r.size == "128x128" and decode(r.data[0].b64_json).size == (128, 128)
    job = last_job(studio)
    assert (job["kind"], job["params"]["prompt"], job["params"]["strength"]) == ("img2img", VARIATION_PROMPT, 0.6)


# --- streaming -----------------------------------------------------------------------------------------------------


def test_stream_without_partial_images_sends_the_completed_image(studio: Studio) -> None:
    events = list(studio.client().images.generate(prompt="a lake", size="64x64", stream=True, extra_body=FAST))
    [done] = events
    assert done.type == "image_generation.completed"
    assert decode(done.b64_json).size == (64, 64) and done.size == "64x64" and done.usage.output_tokens == 1


def test_stream_with_partial_images_sends_previews_first(studio: Studio) -> None:
    stream = studio.client().images.generate(
        prompt="a lake", size="64x64", stream=True, partial_images=2, output_format="webp", extra_body={"steps": 120}
    )
    events = list(stream)
    assert [e.type for e in events] == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    partials = [e for e in events if e.type == "image_generation.partial_image"]
    assert [p.partial_image_index for p in partials] == [0, 1]
    assert all(decode(p.b64_json).format == "WEBP" and p.output_format == "webp" for p in partials)
    assert decode(events[-1].b64_json).size == (64, 64)


def test_a_job_canceled_mid_stream_raises_api_error(studio: Studio) -> None:
    stream = studio.client().images.generate(
        prompt="a lake", size="64x64", stream=True, partial_images=1, extra_body={"steps": 150}
    )
    first = next(iter(stream))
    assert first.type == "image_generation.partial_image"
    assert studio.native("POST", "/jobs/cancel-all").status_code == 200
    with pytest.raises(openai.APIError) as caught:
        list(stream)
    assert "cancel" in str(caught.value).lower()


# --- errors and models ---------------------------------------------------------------------------------------------


def test_a_size_is_fitted_to_the_callers_plan_not_refused(studio: Studio) -> None:
    """Open WebUI asks 1024x1024 whatever the plan: a plan allowing fewer pixels than the server gets the largest
    image of that aspect ratio it allows (the native API would answer 403 plan_forbids)."""
    billing, origin = studio.services.billing, Origin()
    billing.update_plan("free", PlanPatch(max_pixels=64 * 64), actor_id=studio.admin_id, origin=origin)
    try:
        r = studio.client(studio.frugal_key).images.generate(prompt="x", size="1024x1024", extra_body=FAST)
        assert r.size == "64x64"
        # The administrator is never held to a plan: the server's limit applies.
        assert studio.client().images.generate(prompt="x", size="1024x1024", extra_body=FAST).size == "128x128"
    finally:
        billing.update_plan("free", PlanPatch(max_pixels=1024 * 1024), actor_id=studio.admin_id, origin=origin)


def test_errors_arrive_as_the_sdks_typed_exceptions(studio: Studio) -> None:
    client = studio.client(max_retries=2)
    with pytest.raises(openai.BadRequestError) as bad:
        client.images.generate(prompt="x", size="banana")  # type: ignore[arg-type]
    assert bad.value.code == "invalid_size"
    with pytest.raises(openai.NotFoundError) as missing:
        client.images.generate(prompt="x", model="no-such-model")
    assert missing.value.code == "model_not_found"
    for key in ("ais_not_a_real_key", "sk-openai"):
        with pytest.raises(openai.AuthenticationError):
            studio.client(key).images.generate(prompt="x")

    # The free plan has 5 images a day: 6 meets the quota; the SDK is told not to retry.
    before = studio.counter.requests["/v1/images/generations"]
    with pytest.raises(openai.RateLimitError) as quota:
        studio.client(studio.frugal_key, max_retries=2).images.generate(prompt="x", n=4, size="64x64")
        studio.client(studio.frugal_key, max_retries=2).images.generate(prompt="x", n=2, size="64x64")
    # OpenAI's type for it; the code stays Studiolo's own (compat/errors.py keeps stable codes in ``code``).
    assert (quota.value.type, quota.value.code, quota.value.status_code) == (
        "insufficient_quota",
        "quota_exceeded",
        429,
    )
    assert studio.counter.requests["/v1/images/generations"] - before == 2


def test_models_lists_the_image_models(studio: Studio) -> None:
    client = studio.client()
    models = client.models.list()
    assert "echo" in [m.id for m in models.data]
    assert all(m.object == "model" for m in models.data)
    echo = client.models.retrieve("echo")
    assert (echo.id, echo.owned_by) == ("echo", "studiolo")
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("dall-e-3")
    generated = client.images.generate(model="echo", prompt="x", size="64x64", extra_body=FAST)
    assert len(generated.data) == 1


# --- Open WebUI's requests (backend/open_webui/routers/images.py), replayed ---------------------------------------


def test_open_webui_request_shapes(studio: Studio) -> None:
    headers = {"Authorization": f"Bearer {studio.key}"}
    body = {"model": "dall-e-3", "prompt": "a garden", "n": 1, "size": "512x512", "response_format": "b64_json"}
    r = httpx.post(f"{studio.base}/v1/images/generations", json=body, headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    assert decode(r.json()["data"][0]["b64_json"]).size == (128, 128)

    files = [
        ("image[]", ("one.png", png((64, 64), (9, 9, 9)), "image/png")),
        ("image[]", ("two.png", png((64, 64), (90, 90, 90)), "image/png")),
    ]
    data = {"model": "gpt-image-1", "prompt": "make it brighter", "n": "1", "size": "auto"}
    r = httpx.post(f"{studio.base}/v1/images/edits", data=data, files=files, headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    assert decode(r.json()["data"][0]["b64_json"]).size == (64, 64)


def test_adapter_extras_reach_the_request(studio: Studio) -> None:
    """Issue 19's fields travel in extra_body like the other extras: the echo model takes no adapters, so a LoRA or a
    hires fix is refused by the same check as on /api/v1 (its code in OpenAI's error shape)."""
    client = studio.client()
    for extra, code in (
        ({"loras": [{"name": "ink", "weight": 0.5}]}, "adapters_unsupported"),
        ({"hires": {}}, "hires_unsupported"),
    ):
        with pytest.raises(openai.BadRequestError) as refused:
            client.images.generate(prompt="a castle", size="64x64", extra_body={**FAST, **extra})
        assert refused.value.code == code, refused.value.body
    with pytest.raises(openai.BadRequestError) as typo:
        client.images.generate(prompt="a castle", size="64x64", extra_body={"loras": [{"nme": "ink"}]})
    assert typo.value.status_code == 400
