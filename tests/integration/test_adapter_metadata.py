"""Issue 19: a finished job's LoRAs, embeddings, ControlNet units, reference and hires fix in its image: the PNG's A1111
text and Studiolo chunk (outputs.write_outputs), the image view, PNG-info, and a remix.

The engines that apply adapters are not needed for what is tested here: a job row is given adapter params directly
and its outputs written by the real writer into the real store, as the worker does once the engine returns."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from PIL import Image as PILImage
from sqlalchemy import insert

from studiolo.domain.adapters.prompt import lora_tags
from studiolo.domain.gallery import imaging
from studiolo.domain.gallery.models import Image
from studiolo.domain.generation.models import Job
from studiolo.domain.generation.outputs import write_outputs
from studiolo.engines.base import (
    AdapterRef,
    ControlSpec,
    GeneratedImage,
    GenerationRequest,
    HiresSpec,
    LoraSpec,
    ModelRef,
    ReferenceSpec,
)
from studiolo.services import Services
from tests.helpers import drain

HASH = {name: f"{i + 1:x}" * 64 for i, name in enumerate(["detail", "easyneg", "cn-canny-sd15", "ipa-sd15"])}
HIRES = {"scale": 2.0, "upscaler": "lanczos", "strength": 0.45, "steps": 6, "width": 128, "height": 128}
ADAPTERS: dict[str, Any] = {
    "loras": [{"name": "detail", "weight": 0.7}],
    "embeddings": ["easyneg"],
    "controls": [
        {"type": "canny", "model": "cn-canny-sd15", "strength": 0.8, "start": 0.0, "end": 0.9, "preprocess": True}
    ],
    "reference": {"model": "ipa-sd15", "strength": 0.35},
    "hires": HIRES,
}


def _ref(name: str, kind: str) -> AdapterRef:
    return AdapterRef(name, kind, Path(name), family="sd15", sha256=HASH[name])  # type: ignore[arg-type]


def _adapter_image(client: TestClient, services: Services) -> tuple[str, str]:
    """A plain job run by the worker, then its params given adapters and a hires fix and an image written for it as
    the worker writes one (a 128x128 final image of a 64x64 first pass). Returns (job id, image id)."""
    r = client.post("/api/v1/generations", json={"prompt": "a knight, easyneg", "size": "64x64"})
    assert r.status_code == 202, r.text
    drain(services)
    job_id = r.json()["id"]
    picture = PILImage.new("RGB", (64, 64), (200, 30, 30))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    keys = {}
    for name in ("control0", "reference"):  # the pictures a remix passes again (kept with the job's inputs)
        keys[name] = imaging.content_key(buffer.getvalue() + name.encode(), "png", prefix="inputs")
        services.store.put(keys[name], buffer.getvalue(), "image/png")
    with services.db.session() as session:
        job = session.get(Job, job_id)
        assert job is not None
        typed = "a knight <lora:detail:0.7>, easyneg"  # the prompt as typed keeps its tag
        job.params = {**job.params, "prompt": typed, "final_prompt": lora_tags(typed)[0], **ADAPTERS}
        job.input_keys = keys
        session.flush()
        session.expunge(job)
    request = GenerationRequest(
        model=ModelRef("echo", "echo", "builtin"),
        prompt="a knight, easyneg",
        seeds=[5],
        width=64,
        height=64,
        loras=[LoraSpec(_ref("detail", "lora"), 0.7)],
        embeddings=[_ref("easyneg", "embedding")],
        controls=[ControlSpec(_ref("cn-canny-sd15", "controlnet"), "canny", picture, 0.8, 0.0, 0.9)],
        reference=ReferenceSpec(_ref("ipa-sd15", "ip_adapter"), picture, 0.35),
        hires=HiresSpec(scale=2.0, strength=0.45, steps=6),
    )
    final = GeneratedImage(PILImage.new("RGB", (128, 128), (20, 90, 160)), seed=5, sampler="euler")
    rows = write_outputs(services.gallery, job, request, [final], [])
    with services.db.session() as session:
        session.execute(insert(Image), rows)
    return job_id, rows[0]["id"]


def test_the_png_the_view_and_png_info_carry_the_adapters(client: TestClient, services: Services) -> None:
    _, image_id = _adapter_image(client, services)
    view = client.get(f"/api/v1/images/{image_id}").json()
    assert (view["width"], view["height"]) == (128, 128)  # the final image
    assert view["loras"] == ADAPTERS["loras"] and view["embeddings"] == ["easyneg"]
    assert view["controls"] == ADAPTERS["controls"] and view["reference"] == ADAPTERS["reference"]
    assert view["hires"] == {"scale": 2.0, "upscaler": "lanczos", "strength": 0.45, "steps": 6}
    assert (view["metadata"]["width"], view["metadata"]["height"]) == (64, 64)  # the first pass asked for

    png = client.get(f"/api/v1/images/{image_id}/file").content
    parameters, _ = imaging.read_png_metadata(png)
    assert parameters is not None
    settings = imaging.parse_a1111_parameters(parameters)
    assert settings["prompt"] == "a knight <lora:detail:0.7>, easyneg"  # the tag where it was typed
    assert settings["Size"] == "64x64"  # A1111 writes the first pass's size with hires fix
    assert (settings["Hires upscale"], settings["Hires steps"], settings["Hires upscaler"]) == ("2", "6", "Lanczos")
    assert settings["Denoising strength"] == "0.45"
    assert settings["Lora hashes"] == "detail: " + HASH["detail"][:12]
    assert settings["TI hashes"] == "easyneg: " + HASH["easyneg"][:12]
    canny, ipa = HASH["cn-canny-sd15"][:8], HASH["ipa-sd15"][:8]
    assert settings["ControlNet 0"].startswith(f"Module: canny, Model: cn-canny-sd15 [{canny}], Weight: 0.8, ")
    assert settings["ControlNet 1"].startswith(f"Module: ip-adapter_clip_sd15, Model: ipa-sd15 [{ipa}], Weight: 0.35")

    r = client.post("/api/v1/png-info", files={"file": ("k.png", png, "image/png")})
    assert r.status_code == 200, r.text
    read = r.json()["parameters"]
    assert (read["width"], read["height"], read["hires"]) == (64, 64, view["hires"])
    assert read["loras"] == ADAPTERS["loras"] and read["controls"] == ADAPTERS["controls"]
    assert (read["reference_model"], read["reference_strength"]) == ("ipa-sd15", 0.35)


def test_a_remix_asks_for_the_same_adapters_and_pictures(client: TestClient, services: Services) -> None:
    """The echo engine takes no adapters: the remix's refusal names every kind the image was made with, so the
    LoRA, the ControlNet unit (with the job's picture) and the reference reached the submission."""
    _, image_id = _adapter_image(client, services)
    r = client.post(f"/api/v1/images/{image_id}/regenerate", json={"seed": "same"})
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "adapters_unsupported"
    assert error["details"]["kinds"] == ["controlnet", "ip_adapter", "lora"]
