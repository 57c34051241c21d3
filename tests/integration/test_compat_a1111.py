"""The AUTOMATIC1111 face (/sdapi/v1) driven by the real ``webuiapi`` 0.9.17 client and by httpx replays of Open
WebUI's and SillyTavern's requests (research/01-a1111-api.md §5), against one real server (uvicorn, one inline
worker, the echo engine) shared by the module."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import webuiapi
from PIL import Image
from sqlalchemy import select

from studiolo.app import create_app
from studiolo.domain.accounts.models import User
from studiolo.engines.echo import EchoEngine
from studiolo.services import Services, build_services
from tests.conftest import PgDatabases, make_settings
from tests.helpers import auth_headers, create_user
from tests.threaded_server import ThreadedServer

# Processed.js()'s keys (research/01-a1111-api.md §3).
INFO_KEYS = (
    "prompt",
    "all_prompts",
    "negative_prompt",
    "all_negative_prompts",
    "seed",
    "all_seeds",
    "subseed",
    "all_subseeds",
    "subseed_strength",
    "width",
    "height",
    "sampler_name",
    "cfg_scale",
    "steps",
    "batch_size",
    "restore_faces",
    "face_restoration_model",
    "sd_model_name",
    "sd_model_hash",
    "sd_vae_name",
    "sd_vae_hash",
    "seed_resize_from_w",
    "seed_resize_from_h",
    "denoising_strength",
    "extra_generation_params",
    "index_of_first_image",
    "infotexts",
    "styles",
    "job_timestamp",
    "clip_skip",
    "is_using_inpainting_conditioning",
    "version",
)


@dataclass
class Face:
    base: str
    services: Services
    alice_key: str
    bob_key: str

    @property
    def port(self) -> int:
        return int(self.base.rsplit(":", 1)[1])

    def webui(self, key: str | None = None) -> webuiapi.WebUIApi:
        api = webuiapi.WebUIApi(host="127.0.0.1", port=self.port, use_https=False, steps=2)
        api.set_auth("anyone", key or self.alice_key)
        return api

    def http(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=f"{self.base}/sdapi/v1", auth=("user", key or self.alice_key), timeout=30)


def _key(base: str, services: Services, user_id: str) -> str:
    r = httpx.post(
        f"{base}/api/v1/api-keys", json={"name": "a1111"}, headers=auth_headers(services, user_id), timeout=30
    )
    assert r.status_code == 201, r.text
    return str(r.json()["key"])


@pytest.fixture(scope="module")
def face(
    tmp_path_factory: pytest.TempPathFactory, migrated_db_template: Path, pg_databases: PgDatabases | None
) -> Iterator[Face]:
    data = tmp_path_factory.mktemp("a1111") / "data"
    data.mkdir()
    url = pg_databases.fresh() if pg_databases else ""
    if not url:
        (data / "studiolo.db").write_bytes(migrated_db_template.read_bytes())
    settings = make_settings(data, database_url=url, inline_workers=1, worker_poll_seconds=0.05)
    services = build_services(settings, upgrade_db=False)
    server = ThreadedServer(create_app(services=services, start_workers=False), "studiolo")
    services.start_workers(1)
    try:
        base = server.start()
        alice = create_user(services, "alice@example.com")
        bob = create_user(services, "bob@example.com")
        yield Face(base, services, _key(base, services, alice), _key(base, services, bob))
    finally:
        server.stop()
        services.close()
        if url and pg_databases:
            pg_databases.drop(url)


def _png(color: str, size: int = 64) -> Image.Image:
    return Image.new("RGB", (size, size), color)


def test_txt2img_with_webuiapi(face: Face) -> None:
    result = face.webui().txt2img(
        prompt="a lighthouse", negative_prompt="fog", seed=1234, width=64, height=64, batch_size=2, cfg_scale=5
    )
    assert [im.size for im in result.images] == [(64, 64), (64, 64)]
    info = result.info
    for key in INFO_KEYS:
        assert key in info, key
    assert info["seed"] == 1234 and info["all_seeds"] == [1234, 1235]
    assert info["prompt"] == "a lighthouse" and info["negative_prompt"] == "fog"
    assert info["sampler_name"] == "Euler a" and info["steps"] == 2 and info["cfg_scale"] == 5
    assert info["sd_model_name"] == "echo" and len(info["job_timestamp"]) == 14
    assert info["infotexts"][1].startswith("a lighthouse\nNegative prompt: fog\nSteps: 2, Sampler: Euler a")
    assert "Seed: 1235" in info["infotexts"][1]
    # The images carry the same text as the PNG's parameters chunk, and the request is echoed back.
    assert result.images[0].info["parameters"] == info["infotexts"][0]
    assert result.parameters["prompt"] == "a lighthouse" and result.parameters["batch_size"] == 2


def test_img2img_with_a_mask_and_a_style(face: Face) -> None:
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    result = face.webui().img2img(
        images=[_png("red")],
        mask_image=mask,
        prompt="a boat",
        styles=["Cinematic"],
        denoising_strength=0.4,
        width=64,
        height=64,
        seed=7,
    )
    assert len(result.images) == 1 and result.images[0].size == (64, 64)
    info = result.info
    assert info["is_using_inpainting_conditioning"] is True and info["denoising_strength"] == 0.4
    assert info["styles"] == ["cinematic"] and info["prompt"].startswith("cinematic film still of a boat, ")
    assert "init_images" not in result.parameters or result.parameters["init_images"] is None
    # The job is an ordinary inpaint job with the blurred mask, in the gallery.
    jobs = face.services.generation.list(_owner(face, "alice@example.com"), limit=1).items
    assert jobs[0].kind == "inpaint" and jobs[0].params["strength"] == 0.4


def _owner(face: Face, email: str) -> str:
    with face.services.db.session() as session:
        return str(session.scalar(select(User.id).where(User.email == email)))


def test_img2img_without_init_images_is_404_like_a1111(face: Face) -> None:
    with face.http() as http:
        r = http.post("/img2img", json={"prompt": "x", "width": 64, "height": 64})
    assert r.status_code == 404
    assert r.json()["error"] == "init_image_not_found" and r.json()["detail"] == "Init image not found"


def test_several_styles_apply_in_a1111_order(face: Face) -> None:
    with face.http() as http:
        styles = {s["name"]: s for s in http.get("/prompt-styles").json()}
        assert {"cinematic", "photorealistic"} <= set(styles)
        r = http.post(
            "/txt2img",
            json={"prompt": "a cat", "styles": ["photorealistic", "cinematic"], "width": 64, "height": 64, "steps": 1},
        )
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    inner = styles["photorealistic"]["prompt"].replace("{prompt}", "a cat")
    assert info["prompt"] == styles["cinematic"]["prompt"].replace("{prompt}", inner)
    assert info["styles"] == ["photorealistic", "cinematic"]


def test_progress_while_a_job_runs_then_interrupt(face: Face) -> None:
    engine = face.services.engines["echo"]
    assert isinstance(engine, EchoEngine)
    api = face.webui()
    assert api.get_progress()["state"]["job_count"] == 0
    engine.step_delay = 0.05
    answer: dict[str, Any] = {}

    def run() -> None:
        with face.http() as http:
            answer["r"] = http.post("/txt2img", json={"prompt": "slow", "steps": 150, "width": 64, "height": 64})

    thread = threading.Thread(target=run)
    thread.start()
    try:
        seen: dict[str, Any] = {}
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            seen = api.get_progress()
            if seen["state"]["sampling_step"] >= 3 and seen["current_image"]:
                break
            time.sleep(0.05)
        assert 0 < seen["progress"] < 1 and seen["state"]["job_count"] == 1
        assert seen["state"]["sampling_steps"] == 150 and seen["textinfo"].startswith("Step ")
        assert Image.open(io.BytesIO(base64.b64decode(seen["current_image"]))).format == "PNG"
        # Another user's queue is not this user's: Bob is idle.
        assert face.webui(face.bob_key).get_progress()["state"]["job_count"] == 0
        assert api.interrupt() == {}
        thread.join(15)
    finally:
        engine.step_delay = 0.0
    r = answer["r"]
    assert r.status_code == 200 and r.json()["images"] == []  # interrupted before any image was made
    api.util_wait_for_ready(check_interval=0.05)
    idle = api.get_progress()
    assert idle["progress"] == 0 and idle["state"]["job_count"] == 0 and idle["current_image"] is None


def test_png_info_reads_back_a_produced_image(face: Face) -> None:
    api = face.webui()
    made = api.txt2img(prompt="a red kite", seed=99, width=64, height=64, steps=3)
    result = api.png_info(made.images[0])
    assert result.info == made.info["infotexts"][0]
    parsed = result.json["parameters"]
    assert parsed["prompt"] == "a red kite" and parsed["seed"] == 99 and parsed["steps"] == 3
    assert "studiolo" in result.json["items"]


def test_set_model_is_per_user(face: Face) -> None:
    alice, bob = face.webui(), face.webui(face.bob_key)
    titles = alice.util_get_model_names()
    assert all(t.endswith("]") for t in titles) and any(t.startswith("echo [") for t in titles)
    other = next(t for t in titles if not t.startswith("echo ["))
    alice.util_set_model(other)
    assert alice.util_get_current_model() == other
    assert bob.util_get_current_model().startswith("echo [")
    with face.http() as http:
        r = http.post("/options", json={"sd_model_checkpoint": "no-such-model [0123456789]"})
        assert r.status_code == 404 and r.json()["error"] == "model_not_found"
        echo = next(t for t in titles if t.startswith("echo ["))
        assert http.post("/options", json={"sd_model_checkpoint": echo}).json() is None
    assert alice.util_get_current_model() == echo


def test_lists(face: Face) -> None:
    api = face.webui()
    models = api.get_sd_models()
    assert {"title", "model_name", "hash", "sha256", "filename", "config"} <= set(models[0])
    assert all(m["model_name"] != "lanczos" for m in models)  # upscalers draw nothing
    assert {"Euler a", "DPM++ 2M", "DPM++ 2M Karras"} <= set(api.util_get_sampler_names())
    assert {s["name"] for s in api.get_schedulers()} >= {"automatic", "karras", "exponential"}
    assert any(u["name"] for u in api.get_upscalers())
    assert api.get_cmd_flags()["api"] is True
    assert api.get_memory()["ram"]["total"] > 0
    assert api.get_embeddings() == {"loaded": {}, "skipped": {}}
    assert api.get_sd_vae() == [] and api.get_loras() == []
    assert api.skip() is None  # idle: nothing to skip


def test_open_webui_sequence(face: Face) -> None:
    """Open WebUI: GET /options, POST the whole dict back with its model, GET /sd-models, POST /txt2img."""
    with face.http() as http:
        options = http.get("/options").json()
        models = http.get("/sd-models").json()
        options["sd_model_checkpoint"] = models[0]["title"]
        assert http.post("/options", json=options).status_code == 200
        r = http.post("/txt2img", json={"prompt": "owl", "batch_size": 1, "width": 64, "height": 64, "steps": 1})
    assert r.status_code == 200, r.text
    body = r.json()
    assert not body["images"][0].startswith("data:")
    assert Image.open(io.BytesIO(base64.b64decode(body["images"][0]))).format == "PNG"
    assert isinstance(body["info"], str)


def test_sillytavern_payload(face: Face) -> None:
    payload = {
        "prompt": "a knight",
        "negative_prompt": "blurry",
        "sampler_name": "DPM++ 2M",
        "scheduler": "Karras",
        "steps": 2,
        "cfg_scale": 6,
        "width": 64,
        "height": 64,
        "seed": -1,
        "restore_faces": False,
        "enable_hr": True,
        "hr_upscaler": "Latent",
        "hr_scale": 2,
        "hr_second_pass_steps": 0,
        "denoising_strength": 0.7,
        "override_settings": {"CLIP_stop_at_last_layers": 1, "sd_vae": "Automatic", "forge_additional_modules": []},
        "override_settings_restore_afterwards": True,
        "save_images": False,
        "send_images": True,
        "do_not_save_grid": False,
        "do_not_save_samples": False,
        "an_extension_field": {"enabled": False},  # unknown fields are accepted and ignored, as A1111 clients need
    }
    with face.http() as http:
        r = http.post("/txt2img", json=payload)
        old_style = http.post("/txt2img", json={**payload, "sampler_name": "DPM++ 2M Karras", "scheduler": None})
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert info["sampler_name"] == "DPM++ 2M" and info["extra_generation_params"]["Schedule type"] == "Karras"
    assert info["extra_generation_params"]["Ignored by Studiolo"] == "enable_hr"
    assert 0 <= info["seed"] < 2**32
    assert json.loads(old_style.json()["info"])["sampler_name"] == "DPM++ 2M Karras"


def test_auth_and_errors(face: Face) -> None:
    none = httpx.get(f"{face.base}/sdapi/v1/options", timeout=30)
    assert none.status_code == 401 and none.headers["www-authenticate"] == 'Basic realm="studiolo"'
    wrong = httpx.get(f"{face.base}/sdapi/v1/options", auth=("u", "ais_wrong"), timeout=30)
    assert wrong.status_code == 401
    with face.http() as http:
        bad = http.post("/txt2img", json={"prompt": "x", "sampler_name": "Nope", "width": 64, "height": 64})
        too_many = http.post("/txt2img", json={"prompt": "x", "batch_size": 3, "n_iter": 3, "width": 64, "height": 64})
        bad_image = http.post("/png-info", json={"image": base64.b64encode(b"not a png").decode()})
    assert bad.status_code == 404 and set(bad.json()) == {"error", "detail", "body", "errors"}
    assert bad.json()["error"] == "sampler_not_found"
    assert too_many.status_code == 422 and too_many.json()["error"] == "too_many_images"
    assert bad_image.status_code == 415
