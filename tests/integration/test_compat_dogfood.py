"""Studiolo as the remote worker of another Studiolo (issue 18): both ends of the wire are ours.

Studiolo A serves for real (uvicorn, one inline worker, the echo engine, accounts, an API key). Studiolo B knows A
twice: as an OpenAI-compatible server (engines/remote/openai_images.py against A's /v1, with ``extra_params`` so
seeds travel) and as an AUTOMATIC1111 server (engines/remote/a1111.py against A's /sdapi/v1, HTTP Basic with A's key).
B's jobs run in this thread (drain); their images are made by A's worker, land in A's gallery, and are stored by B.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image, ImageChops

from studiolo.app import create_app
from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.domain.generation.schemas import GenerationParams, JobView
from studiolo.engines.base import JobKind
from studiolo.services import Services, build_services
from tests.conftest import PgDatabases, make_settings
from tests.helpers import auth_headers, create_user, drain, png_bytes, submit
from tests.threaded_server import ThreadedServer

STEP_DELAY = 0.02  # A's echo engine: long enough to cancel a 200-step job mid-run, short for the 2-step ones


@dataclass
class Pair:
    a: Services
    a_base: str
    a_key: str
    b: Services

    def a_get(self, path: str, **params: Any) -> Any:
        r = httpx.get(f"{self.a_base}{path}", params=params, headers={"Authorization": f"Bearer {self.a_key}"})
        assert r.status_code == 200, r.text
        return r.json()

    def a_jobs(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.a_get("/api/v1/jobs", limit=100)["items"]
        return items

    def b_run(self, job_id: str) -> JobView:
        drain(self.b)
        return self.b.generation.get(LOCAL_USER_ID, job_id)

    def b_pixels(self, view: JobView) -> list[Image.Image]:
        found = []
        for out in view.outputs:
            key, _media = self.b.gallery.file(LOCAL_USER_ID, out.image_id, "original")
            found.append(Image.open(io.BytesIO(self.b.gallery.read(key))).convert("RGB"))
        return found


def _fresh(tmp: Path, template: Path, pg: PgDatabases | None, name: str) -> tuple[Path, str]:
    data = tmp / name
    data.mkdir()
    url = pg.fresh() if pg else ""
    if not url:
        (data / "studiolo.db").write_bytes(template.read_bytes())
    return data, url


@pytest.fixture(scope="module")
def pair(
    tmp_path_factory: pytest.TempPathFactory, migrated_db_template: Path, pg_databases: PgDatabases | None
) -> Iterator[Pair]:
    tmp = tmp_path_factory.mktemp("dogfood")
    a_data, a_url = _fresh(tmp, migrated_db_template, pg_databases, "a")
    b_data, b_url = _fresh(tmp, migrated_db_template, pg_databases, "b")
    a = build_services(
        make_settings(a_data, database_url=a_url, worker_poll_seconds=0.05, echo_step_delay=STEP_DELAY),
        upgrade_db=False,
    )
    server = ThreadedServer(create_app(services=a, start_workers=False), "studiolo A")
    a.start_workers(1)
    b: Services | None = None
    try:
        a_base = server.start()
        owner = create_user(a, "a-owner@example.com")
        r = httpx.post(f"{a_base}/api/v1/api-keys", json={"name": "studiolo B"}, headers=auth_headers(a, owner))
        assert r.status_code == 201, r.text
        a_key = str(r.json()["key"])
        b = build_services(
            make_settings(
                b_data,
                database_url=b_url,
                provider_openai_api_key=a_key,
                provider_openai_base_url=f"{a_base}/v1",
                provider_a1111_base_url=a_base,
                provider_a1111_auth=f"user:{a_key}",
            ),
            upgrade_db=False,
        )
        b.engines["a1111"].poll_seconds = 0.05  # type: ignore[attr-defined]
        titles = httpx.get(f"{a_base}/sdapi/v1/sd-models", auth=("user", a_key)).json()
        echo_title = next(m["title"] for m in titles if m["model_name"] == "echo")
        b.catalog.add_remote("a-openai", provider="openai", remote_model="echo", options={"extra_params": True})
        b.catalog.add_remote("a-a1111", provider="a1111", remote_model=echo_title)
        yield Pair(a, a_base, a_key, b)
    finally:
        server.stop()
        if b is not None:
            b.close(timeout=10)
        a.close(timeout=10)
        for url in (a_url, b_url):
            if url and pg_databases:
                pg_databases.drop(url)


def same_pixels(x: Image.Image, y: Image.Image) -> bool:
    return x.size == y.size and ImageChops.difference(x, y).getbbox() is None


@pytest.mark.parametrize("model", ["a-openai", "a-a1111"])
def test_a_b_job_is_made_by_a_and_kept_by_b(pair: Pair, model: str) -> None:
    before = {j["id"] for j in pair.a_jobs()}
    job_id = submit(pair.b, model=model, prompt="a harbour at dawn", seed=4242, n=2, steps=2)
    view = pair.b_run(job_id)
    assert view.status == "succeeded", view.error
    assert [o.seed for o in view.outputs] == [4242, 4243]
    images = pair.b_pixels(view)
    assert [im.size for im in images] == [(64, 64), (64, 64)]
    # Made by A: its jobs (one per seed through /v1, one batch through /sdapi) hold the same prompt and seeds.
    made = [j for j in pair.a_jobs() if j["id"] not in before]
    assert made and all(j["status"] == "succeeded" and j["params"]["prompt"] == "a harbour at dawn" for j in made)
    assert sorted(s for j in made for s in j["seeds"]) == [4242, 4243]
    gallery = pair.a_get("/api/v1/images", limit=100)["items"]
    assert {o["image_id"] for j in made for o in j["outputs"]} <= {i["id"] for i in gallery}


@pytest.mark.parametrize("model", ["a-openai", "a-a1111"])
def test_the_same_seed_makes_the_same_pixels_twice(pair: Pair, model: str) -> None:
    runs = [pair.b_run(submit(pair.b, model=model, prompt="red sails", seed=77, steps=2)) for _ in range(2)]
    first, second = (pair.b_pixels(v)[0] for v in runs)
    assert same_pixels(first, second)
    other = pair.b_pixels(pair.b_run(submit(pair.b, model=model, prompt="red sails", seed=78, steps=2)))[0]
    assert not same_pixels(first, other)


def _edit(pair: Pair, model: str, kind: JobKind) -> JobView:
    init = pair.b.generation.validate_upload(png_bytes((64, 64), (20, 200, 40)), field="init_image")
    mask = None
    if kind == "inpaint":
        square = Image.new("L", (64, 64), 0)
        square.paste(255, (16, 16, 48, 48))  # white = repaint
        buf = io.BytesIO()
        square.save(buf, format="PNG")
        mask = pair.b.generation.validate_upload(buf.getvalue(), field="mask_image", mode="L")
    params = GenerationParams(prompt="a boat", model=model, size="64x64", steps=2, seed=5, strength=0.5)
    accepted, _ = pair.b.generation.submit(
        LOCAL_USER_ID, params, kind=kind, init_image=init, mask_image=mask, as_admin=True
    )
    return pair.b_run(accepted.id)


@pytest.mark.parametrize("kind", ["img2img", "inpaint"])
@pytest.mark.parametrize("model", ["a-openai", "a-a1111"])
def test_edits_travel_with_their_images(pair: Pair, model: str, kind: JobKind) -> None:
    view = _edit(pair, model, kind)
    assert view.status == "succeeded", view.error
    newest = pair.a_jobs()[0]
    assert newest["kind"] == kind and newest["status"] == "succeeded"
    image = pair.b_pixels(view)[0]
    if kind == "inpaint":  # outside the mask the init image's pixels stay (A's echo paints inside it only)
        assert image.getpixel((2, 2)) == (20, 200, 40)
        assert image.getpixel((32, 32)) != (20, 200, 40)


def test_canceling_a_b_job_cancels_its_job_at_a(pair: Pair) -> None:
    job_id = submit(pair.b, model="a-a1111", prompt="a long one", seed=9, steps=150)
    runner = threading.Thread(target=drain, args=(pair.b,))
    runner.start()
    deadline = time.monotonic() + 20
    while not any(j["status"] == "running" and j["params"]["prompt"] == "a long one" for j in pair.a_jobs()):
        assert time.monotonic() < deadline, "A never ran the job"
        time.sleep(0.05)
    pair.b.generation.cancel(LOCAL_USER_ID, job_id)
    runner.join(30)
    assert pair.b.generation.get(LOCAL_USER_ID, job_id).status == "canceled"
    at_a = next(j for j in pair.a_jobs() if j["params"]["prompt"] == "a long one")
    deadline = time.monotonic() + 10
    while at_a["status"] != "canceled":
        assert time.monotonic() < deadline, at_a["status"]
        time.sleep(0.05)
        at_a = next(j for j in pair.a_jobs() if j["params"]["prompt"] == "a long one")


def test_both_routes_make_what_b_would_make_itself(pair: Pair) -> None:
    """Seed, prompt, size and steps survive both wires unchanged: A's echo pixels are B's own echo pixels."""
    made = [
        pair.b_pixels(pair.b_run(submit(pair.b, model=model, prompt="red sails", seed=77, steps=2)))[0]
        for model in ("a-openai", "a-a1111", "echo")
    ]
    assert same_pixels(made[0], made[2]) and same_pixels(made[1], made[2])
